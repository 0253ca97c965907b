// Redis's own time per append (INFO commandstats, µs per EVALSHA) for agentix and the floor, on a private
// redis-server (never the shared one): with many writers Redis's one thread is the bottleneck, and this is its cost.
// Run: npx tsx bench/redis-server-cost.ts [appends]
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { FloorRedis } from "./baselines/floor-redis.js";
import { redisTarget } from "./baselines/redis.js";
import { content, role } from "./workloads.js";

const n = Number(process.argv[2] ?? 5000);
const port = await new Promise<number>((resolve) => {
  const s = createServer().listen(0, "127.0.0.1", () => {
    const { port } = s.address() as { port: number };
    s.close(() => resolve(port));
  });
});
const dir = mkdtempSync(join(tmpdir(), "agentix-bench-redis-"));
const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"];
const server = spawn("redis-server", args, { stdio: "ignore" });
const url = `redis://127.0.0.1:${port}`;
const stats = new Redis(url, { retryStrategy: (t) => (t > 100 ? null : 20) });
await stats.ping();
try {
  for (const side of ["agentix", "floor", "floor", "agentix", "agentix", "floor", "floor", "agentix"] as const) {
    const target = redisTarget(url, (c, p) => new FloorRedis(c, p));
    const ns = await target.open(side);
    const ids = await Promise.all(Array.from({ length: 32 }, () => ns.admin.createSession("cost", { cwd: "/c" })));
    for (const id of ids) await ns.subject.saveMessage(id, "user", content(0)); // scripts loaded
    await stats.config("RESETSTAT");
    const cpuBefore = mainThreadCpu(await stats.info("cpu"));
    await Promise.all(
      ids.map(async (id) => {
        for (let i = 0; i < n / 32; i++) await ns.subject.saveMessage(id, role(i), content(i));
      }),
    );
    const info = await stats.info("commandstats");
    const line = /cmdstat_evalsha:calls=(\d+),usec=(\d+),usec_per_call=([\d.]+)/.exec(info);
    // CPU time of Redis's main thread: unlike the commands' wall time, not inflated while a busy machine runs others.
    const cpu = ((mainThreadCpu(await stats.info("cpu")) - cpuBefore) * 1e6) / Number(line?.[1]);
    console.log(
      `${side}: ${line?.[1]} EVALSHA, ${line?.[3]} µs of Redis time per append (wall), ` +
        `${cpu.toFixed(1)} µs of its main thread's CPU per append (all commands)`,
    );
    await ns.drop();
    await target.close();
  }
} finally {
  stats.disconnect();
  server.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}

/** Seconds of CPU (user + system) of Redis's main thread, from INFO cpu (Redis 6.2+). */
function mainThreadCpu(info: string): number {
  const value = (name: string) => Number(new RegExp(`${name}:([\\d.]+)`).exec(info)?.[1] ?? Number.NaN);
  return value("used_cpu_user_main_thread") + value("used_cpu_sys_main_thread");
}
