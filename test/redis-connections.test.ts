// Misuse and unreachable servers, on private servers and ports (never the shared Redis): a cluster node, a
// database index the server does not have, a port where nothing listens.
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentixStorageError, ValidationError } from "../src/core/errors.js";
import { RedisStorageBackend } from "../src/redis.js";
import { freePort, hasRedisServer, PrivateRedis, required } from "./reliability/support.js";

const runs = required("redis-server", hasRedisServer);

describe.skipIf(!runs)("RedisStorageBackend misuse and unreachable servers", { timeout: 60_000 }, () => {
  let node: PrivateRedis;
  let plain: PrivateRedis;
  beforeAll(async () => {
    [node, plain] = await Promise.all([
      PrivateRedis.create(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]),
      PrivateRedis.create(),
    ]);
  });
  afterAll(async () => {
    await Promise.all([node?.destroy(), plain?.destroy()]);
  });

  it("refuses a cluster node on first use, with one clear error and nothing written", async () => {
    const raw = new Redis(node.url);
    const b = new RedisStorageBackend({ url: node.url, prefix: "misuse" });
    const error = await b.createSession("agent").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect(String(error)).toMatch(/Redis Cluster node.*new Cluster/);
    // Every later call says the same, and nothing reached the node.
    await expect(b.getSession(randomUUID())).rejects.toThrow(/Redis Cluster node/);
    expect(await raw.dbsize()).toBe(0);
    await b.close();
    // A client of the caller's pointed at the node: the same.
    const own = new RedisStorageBackend({ client: raw, prefix: "misuse" });
    await expect(own.listSessions("agent")).rejects.toThrow(/Redis Cluster node/);
    await own.close();
    expect(await raw.dbsize()).toBe(0);
    raw.disconnect();
  });

  it("rejects a URL whose path is not a database index", () => {
    for (const url of ["redis://127.0.0.1:6379/abc", "redis://127.0.0.1/1x", "redis://127.0.0.1/0/0", "redis://["]) {
      expect(() => new RedisStorageBackend({ url })).toThrow(ValidationError);
      expect(() => new RedisStorageBackend({ url })).toThrow(/database index/);
    }
    for (const url of ["redis://127.0.0.1", "redis://127.0.0.1/", "redis://127.0.0.1:6379/15", "rediss://h/2?x=1"]) {
      expect(() => new RedisStorageBackend({ url })).not.toThrow();
    }
  });

  it("fails clearly when the server has no such database (SELECT failed), before writing anything", async () => {
    const b = new RedisStorageBackend({ url: `${plain.url}/99`, prefix: "db" });
    const error = await b.createSession("agent").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect(String(error)).toMatch(/could not select database 99/);
    expect(String((error as AgentixStorageError).cause)).toMatch(/DB index is out of range/);
    await b.close();
    const raw = new Redis(plain.url);
    expect(await raw.dbsize()).toBe(0);
    // A valid index works, in that database.
    await using ok = new RedisStorageBackend({ url: `${plain.url}/3`, prefix: "db" });
    await ok.createSession("agent");
    expect(await raw.dbsize()).toBe(0);
    await raw.select(3);
    expect(await raw.dbsize()).toBeGreaterThan(0);
    raw.disconnect();
  });

  it("fails fast, with a typed error, against a port where nothing listens", { timeout: 20_000 }, async () => {
    const port = await freePort();
    const b = new RedisStorageBackend({ url: `redis://127.0.0.1:${port}`, prefix: "down" });
    const error = await b.getSession(randomUUID()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect(String((error as AgentixStorageError).cause)).toMatch(/max retries|MaxRetriesPerRequest/i);
    // The backend is not stuck: the next call tries again, and fails the same way.
    await expect(b.createSession("agent")).rejects.toBeInstanceOf(AgentixStorageError);
    await b.close();
  });
});
