// Client CPU per sequential append, agentix and the floor interleaved round by round in one process, no profiler:
// the medians of 7 rounds of `appends` each (after one warm-up round). Run: npx tsx bench/cpu.ts <postgres|redis> [appends]
import { FloorPostgres } from "./baselines/floor-postgres.js";
import { FloorRedis } from "./baselines/floor-redis.js";
import { postgresTarget } from "./baselines/postgres.js";
import { redisTarget } from "./baselines/redis.js";
import { content, role } from "./workloads.js";

const backend = process.argv[2] ?? "postgres";
const n = Number(process.argv[3] ?? 1000);
const target =
  backend === "postgres"
    ? postgresTarget("postgres://postgres@127.0.0.1:5432/test", (c, s) => new FloorPostgres(c, s))
    : redisTarget("redis://127.0.0.1:6379", (c, p) => new FloorRedis(c, p));
const sides = { agentix: await target.open("agentix"), floor: await target.open("floor") };
const ids = {
  agentix: await sides.agentix.admin.createSession("c"),
  floor: await sides.floor.admin.createSession("c"),
};
const out: Record<string, number[]> = { agentix: [], floor: [] };
for (let round = 0; round < 8; round++) {
  for (const side of (round % 2 ? ["floor", "agentix"] : ["agentix", "floor"]) as Array<"agentix" | "floor">) {
    const s = sides[side].subject;
    const cpu = process.cpuUsage();
    for (let i = 0; i < n; i++) await s.saveMessage(ids[side], role(i), content(i));
    const u = process.cpuUsage(cpu);
    if (round > 0) out[side]?.push((u.user + u.system) / n);
  }
}
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]?.toFixed(1);
console.log(
  backend,
  "CPU µs/append median — agentix",
  med(out.agentix ?? []),
  "floor",
  med(out.floor ?? []),
  JSON.stringify(out, (_k, v) => (typeof v === "number" ? Math.round(v) : v)),
);
for (const ns of Object.values(sides)) await ns.drop();
await target.close();
