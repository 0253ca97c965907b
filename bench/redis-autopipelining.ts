// Does ioredis's enableAutoPipelining raise agentix's append throughput? 32 writers append to their own sessions
// through one backend for a fixed time, rounds interleaved off/on, on a private redis-server (never the shared one).
// Run: npx tsx bench/redis-autopipelining.ts [rounds] [ms per round]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { RedisStorageBackend } from "../src/redis.js";

const WRITERS = 32;
const rounds = Number(process.argv[2] ?? 6);
const ms = Number(process.argv[3] ?? 2_000);

const port = await new Promise<number>((resolve) => {
  const s = createServer().listen(0, "127.0.0.1", () => {
    const { port } = s.address() as { port: number };
    s.close(() => resolve(port));
  });
});
const dir = mkdtempSync(join(tmpdir(), "agentix-bench-redis-"));
const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"];
const server = spawn("redis-server", args, { stdio: "ignore" });
const raw = new Redis({ port, host: "127.0.0.1", retryStrategy: (t) => (t > 100 ? null : 20) });
await raw.ping();

async function round(autoPipelining: boolean): Promise<number> {
  const b = new RedisStorageBackend({
    url: `redis://127.0.0.1:${port}`,
    prefix: "bench",
    redisOptions: { enableAutoPipelining: autoPipelining },
  });
  const ids = await Promise.all(Array.from({ length: WRITERS }, () => b.createSession("bench")));
  let count = 0;
  const end = Date.now() + ms;
  await Promise.all(
    ids.map(async (id) => {
      while (Date.now() < end) {
        await b.saveMessage(id, "user", { text: "hello, a message of a typical short length", n: count });
        count++;
      }
    }),
  );
  await b.close();
  await raw.flushdb();
  return (count / ms) * 1000;
}

const figures: Record<"off" | "on", number[]> = { off: [], on: [] };
console.log(
  `load average before: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}`,
);
for (let i = 0; i < rounds; i++) {
  for (const on of i % 2 ? [true, false] : [false, true]) {
    const rate = await round(on);
    figures[on ? "on" : "off"].push(rate);
    console.log(`round ${i + 1} autoPipelining ${on ? "on " : "off"}: ${rate.toFixed(0)} appends/s`);
  }
}
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
console.log(`median off: ${median(figures.off).toFixed(0)} appends/s, on: ${median(figures.on).toFixed(0)} appends/s`);
console.log(
  `load average after: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}`,
);
raw.disconnect();
server.kill("SIGKILL");
rmSync(dir, { recursive: true, force: true });
