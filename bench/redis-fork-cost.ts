// Redis's own time (INFO commandstats, µs per call) for the commands a fork is made of, by list length and message
// size, on a private redis-server (never the shared one): what bounds a fork's chunks and when one COPY is short
// enough. Run: npx tsx bench/redis-fork-cost.ts
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";

const port = await new Promise<number>((resolve) => {
  const s = createServer().listen(0, "127.0.0.1", () => {
    const { port } = s.address() as { port: number };
    s.close(() => resolve(port));
  });
});
const dir = mkdtempSync(join(tmpdir(), "agentix-bench-redis-"));
const args = ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"];
const server = spawn("redis-server", args, { stdio: "ignore" });
const redis = new Redis(`redis://127.0.0.1:${port}`, { retryStrategy: (t) => (t > 100 ? null : 20) });
await redis.ping();

const CHUNK_LUA = `local lines = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
for i = 1, #lines, 1000 do redis.call('RPUSH', KEYS[2], unpack(lines, i, math.min(i + 999, #lines))) end`;

/** µs of Redis time per call of `command` while `run` runs (best of 3 runs: the machine is shared). */
async function cost(command: string, run: () => Promise<unknown>): Promise<number> {
  let best = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 3; i++) {
    await redis.config("RESETSTAT");
    await run();
    const info = await redis.info("commandstats");
    const line = new RegExp(`cmdstat_${command}:calls=(\\d+),usec=(\\d+)`).exec(info);
    if (line) best = Math.min(best, Number(line[2]) / Number(line[1]));
  }
  return best;
}

try {
  for (const size of [250, 2_500, 25_000]) {
    for (const length of [1_024, 4_096, 16_384]) {
      if (size * length > 100_000_000) continue;
      const message = `{"role":"user","content":"${"x".repeat(size - 40)}","timestamp":"2026-12-02T00:00:00.000Z"}`;
      await redis.unlink("src", "dst");
      for (let i = 0; i < length; i += 1000) {
        await redis.rpush("src", ...Array.from({ length: Math.min(1000, length - i) }, () => message));
      }
      const mb = (size * length) / 1e6;
      const copy = await cost("copy", async () => {
        await redis.unlink("dst");
        await redis.copy("src", "dst");
      });
      const lrange = await cost("lrange", () => redis.lrange("src", 0, -1));
      const lines = await redis.lrange("src", 0, -1);
      const rpush = await cost("rpush", async () => {
        await redis.unlink("dst");
        await redis.rpush("dst", ...lines);
      });
      const usage = await cost("memory\\|usage", () => redis.memory("USAGE", "src"));
      // A chunk copied inside Redis by a script: the messages go through Lua strings, never through the client.
      const lua = await cost("eval", async () => {
        await redis.unlink("dst");
        await redis.eval(CHUNK_LUA, 2, "src", "dst", 0, length - 1);
      });
      const bytes = await redis.memory("USAGE", "src");
      console.log(
        `${length} messages of ${size} B (${mb.toFixed(1)} MB, MEMORY USAGE ${((bytes ?? 0) / 1e6).toFixed(1)} MB): ` +
          `COPY ${copy.toFixed(0)} µs, LRANGE ${lrange.toFixed(0)} µs, RPUSH ${rpush.toFixed(0)} µs, ` +
          `MEMORY USAGE ${usage.toFixed(1)} µs, Lua LRANGE+RPUSH ${lua.toFixed(0)} µs`,
      );
    }
  }
} finally {
  redis.disconnect();
  server.kill("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
}
