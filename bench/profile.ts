// Where the client's CPU goes per append: `n` sequential appends through agentix or the floor, under the V8 profiler,
// then the profile's self time summed by place (agentix core, the backend, the driver, Node) and by function.
// Run: npx tsx bench/profile.ts <postgres|redis> <agentix|floor> [appends] [writers]
// (The profile itself: node --cpu-prof --import tsx bench/profile.ts ...; this script takes one through node:inspector.)
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector/promises";
import { FloorPostgres } from "./baselines/floor-postgres.js";
import { FloorRedis } from "./baselines/floor-redis.js";
import { postgresTarget } from "./baselines/postgres.js";
import { redisTarget } from "./baselines/redis.js";
import { content, role } from "./workloads.js";

const [backend = "redis", side = "agentix", count = "20000", writerCount = "1"] = process.argv.slice(2);
const n = Number(count);
const writers = Number(writerCount);
const target =
  backend === "postgres"
    ? postgresTarget("postgres://postgres@127.0.0.1:5432/test", (c, s) => new FloorPostgres(c, s))
    : redisTarget("redis://127.0.0.1:6379", (c, p) => new FloorRedis(c, p));
const ns = await target.open(side === "floor" ? "floor" : "agentix");
const ids = await Promise.all(Array.from({ length: writers }, () => ns.admin.createSession("profile", { cwd: "/p" })));
const appendAll = (per: number) =>
  Promise.all(
    ids.map(async (id) => {
      for (let i = 0; i < per; i++) await ns.subject.saveMessage(id, role(i), content(i));
    }),
  );
await appendAll(500);

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
}

const session = new Session();
session.connect();
await session.post("Profiler.enable");
await session.post("Profiler.setSamplingInterval", { interval: 100 });
await session.post("Profiler.start");
const cpu = process.cpuUsage();
const start = performance.now();
await appendAll(Math.ceil(n / writers));
const ms = performance.now() - start;
const used = process.cpuUsage(cpu);
const { profile } = (await session.post("Profiler.stop")) as { profile: Profile };
session.disconnect();
const ops = Math.ceil(n / writers) * writers;
writeFileSync(`/tmp/agentix-${backend}-${side}-${writers}.cpuprofile`, JSON.stringify(profile));

const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const self = new Map<number, number>();
profile.samples.forEach((id, i) => {
  self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
});
const place = (url: string, name: string): string => {
  if (url.includes("node_modules/")) {
    const [scope, name] = url.slice(url.lastIndexOf("node_modules/") + 13).split("/");
    return scope?.startsWith("@") ? `${scope}/${name}` : (scope ?? url);
  }
  if (url.includes("/src/core/")) return "agentix src/core";
  if (url.includes("/src/")) return `agentix ${url.slice(url.indexOf("/src/") + 1)}`;
  if (url.includes("/bench/")) return "bench harness";
  if (url.startsWith("node:")) return "Node (node:*)";
  if (name === "(garbage collector)") return "GC";
  if (name === "(idle)" || name === "(program)") return name;
  return url === "" ? `V8 / native: ${name}` : url;
};
const places = new Map<string, number>();
const functions = new Map<string, number>();
let total = 0;
for (const [id, us] of self) {
  const node = byId.get(id);
  if (!node) continue;
  const { functionName, url, lineNumber } = node.callFrame;
  if (functionName === "(idle)") continue;
  total += us;
  const p = place(url, functionName);
  places.set(p, (places.get(p) ?? 0) + us);
  const f = `${functionName || "(anonymous)"} ${url.split("/").slice(-2).join("/")}:${lineNumber + 1}`;
  functions.set(f, (functions.get(f) ?? 0) + us);
}
const top = (m: Map<string, number>, k: number) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, k)
    .map(
      ([name, us]) =>
        `  ${((us / total) * 100).toFixed(1).padStart(5)}%  ${(us / ops).toFixed(1).padStart(6)} µs/op  ${name}`,
    )
    .join("\n");
console.log(
  `${backend} ${side}, ${writers} writer(s): ${ops} appends in ${ms.toFixed(0)} ms (${Math.round((ops / ms) * 1000)}/s); ` +
    `process CPU ${((used.user + used.system) / ops).toFixed(1)} µs/op, of which the main thread's samples ${(total / ops).toFixed(1)} µs/op`,
);
console.log(`by place:\n${top(places, 14)}\nby function (self time):\n${top(functions, 25)}`);
await ns.drop();
await target.close();
