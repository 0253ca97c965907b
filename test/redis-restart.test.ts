// Runs against a private redis-server started by this file (so that restarting it and SCRIPT FLUSH
// disturb no other test file): the backend must carry on, with every write applied exactly once.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisStorageBackend } from "../src/redis.js";

// These calls must outlast a restart: more retries than the backend's fast-fail default of 3.
const WAIT_FOR_RESTART = { maxRetriesPerRequest: 20 };

const hasServer = spawnSync("redis-server", ["--version"]).status === 0;
if (!hasServer) console.warn("\n!!! redis-server is not on PATH: the Redis restart tests are SKIPPED.\n");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.once("error", reject);
  });
}

describe.skipIf(!hasServer)("RedisStorageBackend across a Redis restart", () => {
  let dir: string;
  let port: number;
  let server: ChildProcess | undefined;
  let raw: Redis;

  async function start(): Promise<void> {
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
    server = spawn("redis-server", [...args, "--daemonize", "no", "--dir", dir], { stdio: "ignore" });
    for (let i = 0; i < 200; i++) {
      const probe = new Redis({ port, host: "127.0.0.1", lazyConnect: true, retryStrategy: () => null });
      probe.on("error", () => {});
      const up = await probe.connect().then(
        () => true,
        () => false,
      );
      probe.disconnect();
      if (up) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`redis-server did not start on port ${port}`);
  }

  async function stop(): Promise<void> {
    const child = server;
    server = undefined;
    if (!child || child.exitCode !== null) return;
    await new Promise((resolve) => {
      child.once("exit", resolve);
      child.kill("SIGKILL");
    });
  }

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "agentix-redis-"));
    port = await freePort();
    await start();
    raw = new Redis({ port, host: "127.0.0.1" });
    raw.on("error", () => {});
  });
  afterAll(async () => {
    raw?.disconnect();
    await stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const url = () => `redis://127.0.0.1:${port}`;

  it("reloads its scripts after SCRIPT FLUSH (EVALSHA falls back to EVAL) and writes once", async () => {
    await using b = new RedisStorageBackend({ url: url(), prefix: "flush" });
    const id = await b.createSession("agent");
    await b.saveMessage(id, "user", "before");
    expect(await raw.script("FLUSH")).toBe("OK");
    await b.saveMessage(id, "user", "after");
    expect(await raw.info("errorstats")).toMatch(/errorstat_NOSCRIPT:count=1\b/);
    const fork = await b.forkSession(id);
    expect((await b.loadMessages(fork)).map((m) => m.content)).toEqual(["before", "after"]);
    expect(await raw.llen(`flush:messages:${id}`)).toBe(2);
    // The history edits and a fork from a turn too.
    expect(await raw.script("FLUSH")).toBe("OK");
    expect(await b.popMessage(id, { idempotencyKey: "pop" })).toMatchObject({ content: "after" });
    expect(await b.popMessage(id, { idempotencyKey: "pop" })).toMatchObject({ content: "after" });
    const branch = await b.forkSession(id, { length: 1, metadata: { cwd: "/b" } });
    expect((await b.loadMessages(branch, { offset: 0, limit: 5 })).map((m) => m.content)).toEqual(["before"]);
    expect(await raw.llen(`flush:messages:${id}`)).toBe(1);
  });

  it("carries on after the server is killed and started again on the same port", async () => {
    await using b = new RedisStorageBackend({ url: url(), prefix: "restart", redisOptions: WAIT_FOR_RESTART });
    const lost = await b.createSession("agent");
    await b.saveMessage(lost, "user", "in memory only");

    await stop();
    // Issued while the server is down: queued by ioredis, sent once it reconnects, applied once.
    const created = b.createSession("agent");
    const saved = created.then((id) => b.saveMessage(id, "user", "queued while down"));
    await start();
    const id = await created;
    await saved;
    await b.saveMessage(id, "assistant", "after restart");

    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["queued while down", "after restart"]);
    expect(await raw.llen(`restart:messages:${id}`)).toBe(2);
    expect((await b.listSessions("agent")).map((s) => s.session_id)).toEqual([id]);
    // No persistence: what was written before the restart is gone, and the backend says so cleanly.
    expect(await b.getSession(lost)).toBeNull();
    await expect(b.loadMessages(lost)).rejects.toThrow(/session not found/);
  });

  it("carries on after its connection is killed, resending nothing twice", async () => {
    await using b = new RedisStorageBackend({ url: url(), prefix: "kill", redisOptions: { connectionName: "victim" } });
    const killVictim = async () => {
      const line = String(await raw.client("LIST"))
        .split("\n")
        .find((l) => l.includes(" name=victim "));
      const clientId = /^id=(\d+)/.exec(line ?? "")?.[1];
      expect(clientId).toBeDefined();
      expect(await raw.client("KILL", "ID", clientId as string)).toBe(1);
    };
    const id = await b.createSession("agent");
    await b.saveMessage(id, "user", "one");
    await killVictim();
    await b.saveMessage(id, "user", "two");
    await killVictim();
    expect(await raw.llen(`kill:messages:${id}`)).toBe(2);
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["one", "two"]);
  });
});
