import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentixStorageError, SessionNotFoundError, ValidationError } from "../src/core/errors.js";
import { RedisStorageBackend } from "../src/redis.js";
import { runConformanceSuite } from "../src/testing/index.js";

const url = inject("redisUrl");
const prefix = `agentix-test-${randomUUID().slice(0, 8)}`;

/** Deletes every key of a prefix: SCAN (never KEYS) with the glob characters escaped, then UNLINK. */
async function dropPrefix(redis: Redis, keyPrefix: string): Promise<void> {
  const pattern = `${keyPrefix.replace(/[*?[\]\\]/g, "\\$&")}:*`;
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== "0");
}

describe.skipIf(!url)("RedisStorageBackend", () => {
  const redisUrl = url as string;
  let raw: Redis;
  beforeAll(() => {
    raw = new Redis(redisUrl);
  });
  afterAll(async () => {
    // Every backend of the suite (and its sync twin) has been closed: none of their connections may remain.
    await eventually(async () => (await connections(prefix)) === 0);
    await dropPrefix(raw, prefix);
    await raw.quit();
  });

  const connections = async (name: string) =>
    String(await raw.client("LIST"))
      .split("\n")
      .filter((line) => line.includes(` name=${name} `)).length;
  const eventually = async (check: () => Promise<boolean>) => {
    for (let i = 0; i < 100 && !(await check()); i++) await new Promise((r) => setTimeout(r, 20));
    expect(await check()).toBe(true);
  };

  runConformanceSuite("RedisStorageBackend", {
    create: () => new RedisStorageBackend({ url: redisUrl, prefix, redisOptions: { connectionName: prefix } }),
  });

  describe("options", () => {
    const fieldOf = (make: () => unknown): string => {
      try {
        make();
      } catch (error) {
        expect(error).toBeInstanceOf(ValidationError);
        return (error as ValidationError).message;
      }
      throw new Error("no ValidationError");
    };

    it("rejects missing, doubled, mistyped and unknown options", () => {
      const client = new Redis(redisUrl, { lazyConnect: true });
      const make = (options: unknown) => () => new RedisStorageBackend(options as never);
      expect(fieldOf(make(undefined))).toMatch(/either url or client/);
      expect(fieldOf(make({ prefix: "x" }))).toMatch(/either url or client/);
      expect(fieldOf(make({ url: redisUrl, client }))).toMatch(/either url or client/);
      expect(fieldOf(make({ url: "http://localhost:6379" }))).toMatch(/options\.url: must be a redis/);
      expect(fieldOf(make({ client: {} }))).toMatch(/options\.client: must be an ioredis client/);
      // A Cluster is cluster mode (test/redis-cluster.test.ts), not an error.
      expect(make({ client: new Redis.Cluster([], { lazyConnect: true }) })).not.toThrow();
      expect(fieldOf(make({ client, redisOptions: {} }))).toMatch(/options\.redisOptions: .*only with url/);
      expect(fieldOf(make({ url: redisUrl, redisOptions: "x" }))).toMatch(/options\.redisOptions/);
      expect(fieldOf(make({ url: redisUrl, prefx: "typo" }))).toMatch(/prefx/);
      client.disconnect();
    });

    it.each(["", "a:b", "a*", "a?", "[a]", "a\\b", "a b", "é", "x".repeat(129)])("rejects the prefix %j", (bad) => {
      expect(() => new RedisStorageBackend({ url: redisUrl, prefix: bad })).toThrow(/options\.prefix/);
    });
  });

  describe("connections", () => {
    it("opens nothing until first use and closes what it opened", async () => {
      const name = `agentix-${randomUUID().slice(0, 8)}`;
      const unused = new RedisStorageBackend({ url: redisUrl, prefix, redisOptions: { connectionName: name } });
      await unused.close();
      const b = new RedisStorageBackend({ url: redisUrl, prefix, redisOptions: { connectionName: name } });
      expect(await connections(name)).toBe(0);
      await b.getSession(randomUUID());
      expect(await connections(name)).toBe(1);
      await b.close();
      await eventually(async () => (await connections(name)) === 0);
    });

    it("never closes a client it was given, and keeps to the client's keyPrefix", async () => {
      const client = new Redis(redisUrl, { keyPrefix: `${prefix}:outer:` });
      const b = new RedisStorageBackend({ client, prefix: "inner" });
      const id = await b.createSession("agent", { cwd: "/w" });
      await b.saveMessage(id, "user", "hello");
      expect(await raw.exists(`${prefix}:outer:inner:session:${id}`, `${prefix}:outer:inner:messages:${id}`)).toBe(2);
      expect(await raw.zscore(`${prefix}:outer:inner:index:agent`, id)).not.toBeNull();
      expect((await b.listSessions("agent", { cwd: "/w" })).map((s) => s.session_id)).toEqual([id]);
      expect(await b.loadMessages(id, { last: 1 })).toMatchObject([{ content: "hello" }]);
      await b.deleteSession(id);
      await b.close();
      expect(client.status).toBe("ready");
      expect(await client.ping()).toBe("PONG");
      await client.quit();
    });

    it("refuses sync methods with a client (they need a url) and with uncloneable redisOptions", async () => {
      const client = new Redis(redisUrl, { lazyConnect: true });
      const b = new RedisStorageBackend({ client, prefix });
      expect(() => b.getSessionSync(randomUUID())).toThrow(AgentixStorageError);
      expect(() => b.getSessionSync(randomUUID())).toThrow(/built from \{ url \}/);
      await b.close();
      client.disconnect();
      const c = new RedisStorageBackend({ url: redisUrl, prefix, redisOptions: { retryStrategy: () => 100 } });
      expect(() => c.getSessionSync(randomUUID())).toThrow(/structuredClone/);
      await c.close();
    });

    it("runs the sync methods on a twin that sees the same data", async () => {
      const b = new RedisStorageBackend({ url: redisUrl, prefix });
      const id = b.createSessionSync("sync-agent", { cwd: "/s" });
      await b.saveMessage(id, "user", "async");
      b.saveMessageSync(id, "assistant", { n: 1 });
      expect(b.loadMessagesSync(id)).toStrictEqual(await b.loadMessages(id));
      expect(b.listSessionsSync("sync-agent", { cwd: "/s" })).toStrictEqual(await b.listSessions("sync-agent"));
      expect(b.scanSessionsSync({ agentId: "sync-agent" })).toStrictEqual(
        await b.scanSessions({ agentId: "sync-agent" }),
      );
      b.deleteSessionSync(id);
      expect(await b.getSession(id)).toBeNull();
      await b.close();
    });
  });

  describe("atomic scripts", () => {
    it("raises a timestamp behind updated_at (compared in Lua) and leaves the index score alone", async () => {
      await using b = new RedisStorageBackend({ url: redisUrl, prefix });
      const id = await b.createSession("clamp-agent");
      const ahead = "2999-01-01T00:00:00.007Z";
      await raw.hset(`${prefix}:session:${id}`, "updated_at", ahead);
      await raw.zadd(`${prefix}:index:clamp-agent`, Date.parse(ahead), id);
      await b.saveMessage(id, "user", "from a clock behind");
      expect((await b.loadMessages(id))[0]?.timestamp).toBe(ahead);
      expect((await b.getSession(id))?.updated_at).toBe(ahead);
      expect(Number(await raw.zscore(`${prefix}:index:clamp-agent`, id))).toBe(Date.parse(ahead));
      // A batch too: every message takes updated_at, which stays, and so does the score.
      const batch = ["a", "b", "c"].map((content) => ({ role: "tool" as const, content }));
      expect(await b.saveMessages(id, batch)).toEqual({ length: 4 });
      expect((await b.loadMessages(id)).map((m) => m.timestamp)).toEqual([ahead, ahead, ahead, ahead]);
      expect((await b.getSession(id))?.updated_at).toBe(ahead);
      expect(Number(await raw.zscore(`${prefix}:index:clamp-agent`, id))).toBe(Date.parse(ahead));
      await b.deleteSession(id);
    });

    it("writes nothing when the session hash is gone", async () => {
      await using b = new RedisStorageBackend({ url: redisUrl, prefix });
      const id = await b.createSession("gone-agent");
      await raw.del(`${prefix}:session:${id}`);
      await expect(b.saveMessage(id, "user", "lost")).rejects.toBeInstanceOf(SessionNotFoundError);
      await expect(b.forkSession(id)).rejects.toBeInstanceOf(SessionNotFoundError);
      await expect(b.saveMessages(id, [{ role: "user", content: "lost" }])).rejects.toBeInstanceOf(
        SessionNotFoundError,
      );
      await expect(b.saveMessages(id, [])).rejects.toBeInstanceOf(SessionNotFoundError);
      await expect(b.countMessages(id)).rejects.toBeInstanceOf(SessionNotFoundError);
      await expect(b.updateSession(id, { metadata: { cwd: "/lost" } })).rejects.toBeInstanceOf(SessionNotFoundError);
      expect(await raw.exists(`${prefix}:messages:${id}`, `${prefix}:session:${id}`)).toBe(0);
      expect(await raw.hexists(`${prefix}:cwds`, id)).toBe(0);
      expect(await raw.zcard(`${prefix}:index:gone-agent`)).toBe(1);
      await raw.zrem(`${prefix}:index:gone-agent`, id);
      await raw.zrem(`${prefix}:sessions`, id);
    });

    it("passes content Lua's cjson could not decode (nesting deeper than its limit) untouched", async () => {
      await using b = new RedisStorageBackend({ url: redisUrl, prefix });
      const id = await b.createSession("deep-agent");
      let deep: unknown[] = ["bottom"];
      for (let i = 0; i < 500; i++) deep = [deep];
      await b.saveMessage(id, "user", deep as never);
      expect((await b.loadMessages(id))[0]?.content).toStrictEqual(deep);
      await b.deleteSession(id);
    });

    it("keeps every message exactly once and in order under concurrent writers", async () => {
      await using a = new RedisStorageBackend({ url: redisUrl, prefix });
      await using b = new RedisStorageBackend({ url: redisUrl, prefix });
      const id = await a.createSession("busy-agent");
      await Promise.all(
        Array.from({ length: 200 }, (_, i) => (i % 2 ? a : b).saveMessage(id, "user", `m${String(i)}`)),
      );
      const loaded = await a.loadMessages(id);
      expect(new Set(loaded.map((m) => m.content)).size).toBe(200);
      const times = loaded.map((m) => m.timestamp);
      expect([...times].sort()).toEqual(times);
      expect((await a.getSession(id))?.updated_at).toBe(times.at(-1));
      await a.deleteSession(id);
    });

    it("keeps each batch contiguous, in order, under concurrent writers", async () => {
      await using a = new RedisStorageBackend({ url: redisUrl, prefix });
      await using b = new RedisStorageBackend({ url: redisUrl, prefix });
      const id = await a.createSession("batch-agent");
      const lengths = await Promise.all(
        Array.from({ length: 50 }, (_, w) =>
          (w % 2 ? a : b).saveMessages(
            id,
            Array.from({ length: 7 }, (_, i) => ({ role: "user" as const, content: { w, i } })),
          ),
        ),
      );
      // Each call's length is where its batch ends: the lengths are 7, 14, ... in some order.
      expect(lengths.map((r) => r.length).sort((x, y) => x - y)).toEqual(
        Array.from({ length: 50 }, (_, k) => 7 * (k + 1)),
      );
      const loaded = await a.loadMessages(id);
      expect(loaded).toHaveLength(350);
      for (let k = 0; k < 350; k += 7) {
        const run = loaded.slice(k, k + 7);
        const w = (run[0]?.content as { w: number } | undefined)?.w ?? -1;
        expect(run.map((m) => m.content)).toEqual(Array.from({ length: 7 }, (_, i) => ({ w, i })));
        expect(new Set(run.map((m) => m.timestamp)).size).toBe(1);
        expect(lengths[w]?.length).toBe(k + 7);
      }
      expect(await a.countMessages(id)).toBe(350);
      await a.deleteSession(id);
    });
  });
});
