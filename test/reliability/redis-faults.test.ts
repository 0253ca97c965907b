// Redis faults on private servers (never the shared one): SIGKILL with calls in flight, with and without
// persistence, a server that stays down, and a connection lost between running a command and replying.
// test/redis-restart.test.ts covers calls made while the server is down, SCRIPT FLUSH and a connection killed
// between calls; this covers what happens to the calls in flight at the moment of the fault.
import { Redis } from "ioredis";
import { afterEach, describe, expect, it } from "vitest";
import { AgentixStorageError, SessionNotFoundError } from "../../src/core/errors.js";
import { RedisStorageBackend } from "../../src/redis.js";
import {
  eventually,
  figure,
  hasRedisServer,
  PrivateRedis,
  ReplyLosingProxy,
  required,
  scaled,
  sleep,
} from "./support.js";

// These calls must outlast a restart: more retries than the backend's fast-fail default of 3.
const WAIT_FOR_RESTART = { maxRetriesPerRequest: 20 };

const runs = required("redis-server", hasRedisServer);
const WRITERS = 16;
const ACKED_BEFORE_KILL = scaled(2_000, 20_000);

/** Writers appending `{ w, i }` to their own session until `stop()` or their first failure. */
function appenders(b: RedisStorageBackend, sessions: string[]) {
  const acked: number[][] = sessions.map(() => []);
  const failures: unknown[] = [];
  let stopped = false;
  const done = Promise.all(
    sessions.map(async (id, w) => {
      for (let i = 0; !stopped; i++) {
        try {
          await b.saveMessage(id, "user", { w, i });
        } catch (error) {
          failures.push(error);
          return;
        }
        acked[w]?.push(i);
      }
    }),
  );
  const total = () => acked.reduce((n, a) => n + a.length, 0);
  return {
    acked,
    failures,
    total,
    stop: async () => {
      stopped = true;
      await done;
    },
  };
}

describe.skipIf(!runs)("Redis faults on a private server", { timeout: 120_000 }, () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  const server = async (extra: string[] = []) => {
    const redis = await PrivateRedis.create(extra);
    cleanups.push(() => redis.destroy());
    return redis;
  };
  const backend = (options: ConstructorParameters<typeof RedisStorageBackend>[0]) => {
    const b = new RedisStorageBackend(options);
    cleanups.push(() => b.close());
    return b;
  };

  it("SIGKILL without persistence, calls in flight: they wait for the restart, then fail as not found; the backend carries on", async () => {
    const redis = await server();
    const b = backend({ url: redis.url, prefix: "volatile", redisOptions: WAIT_FOR_RESTART });
    const sessions = await Promise.all(Array.from({ length: WRITERS }, () => b.createSession("writer")));
    const load = appenders(b, sessions);
    await eventually(() => load.total() >= ACKED_BEFORE_KILL, 60_000);
    await redis.kill();
    await sleep(200);
    await redis.start();
    await load.stop();

    // Each call in flight was resent to the new, empty server, where its session no longer exists.
    expect(load.failures).toHaveLength(WRITERS);
    for (const failure of load.failures) expect(failure).toBeInstanceOf(SessionNotFoundError);
    for (const id of sessions) expect(await b.getSession(id)).toBeNull();
    // Without persistence a restart loses everything: the same backend object simply carries on.
    const id = await b.createSession("writer");
    await b.saveMessage(id, "user", "after the restart");
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["after the restart"]);
    figure("redis SIGKILL without persistence", { acked: load.total(), inFlight: WRITERS, notFound: WRITERS });
  });

  it("SIGKILL with the server staying down: calls fail with the cause once maxRetriesPerRequest is spent; the backend carries on", async () => {
    const redis = await server();
    const b = backend({ url: redis.url, prefix: "down", redisOptions: { maxRetriesPerRequest: 1 } });
    const id = await b.createSession("writer");
    const load = appenders(b, [id]);
    await eventually(() => load.total() >= 100);
    await redis.kill();
    const started = Date.now();
    await load.stop();
    const failure = await b.getSession(id).catch((error: unknown) => error);
    const waited = Date.now() - started;

    for (const error of [...load.failures, failure]) {
      expect(error).toBeInstanceOf(AgentixStorageError);
      expect((error as AgentixStorageError).cause).toBeInstanceOf(Error);
      expect(String((error as AgentixStorageError).cause)).toMatch(/MaxRetriesPerRequest|max retries/i);
    }
    await redis.start();
    const after = await b.createSession("writer");
    await b.saveMessage(after, "user", "after the restart");
    expect((await b.loadMessages(after)).map((m) => m.content)).toEqual(["after the restart"]);
    figure("redis down, maxRetriesPerRequest 1", { failedWithinMs: waited });
  });

  it("SIGKILL with AOF (appendfsync always): every acknowledged append survives, in order", async () => {
    const redis = await server(["--appendonly", "yes", "--appendfsync", "always"]);
    const b = backend({ url: redis.url, prefix: "durable", redisOptions: WAIT_FOR_RESTART });
    const sessions = await Promise.all(Array.from({ length: WRITERS }, () => b.createSession("writer")));
    const load = appenders(b, sessions);
    await eventually(() => load.total() >= ACKED_BEFORE_KILL, 60_000);
    await redis.kill();
    await sleep(200);
    await redis.start();
    await sleep(200); // the calls in flight are resent and the writers go on
    await load.stop();
    expect(load.failures).toEqual([]);

    let duplicates = 0;
    for (const [w, id] of sessions.entries()) {
      const stored = (await b.loadMessages(id)).map((m) => (m.content as { i: number }).i);
      // A call in flight at the kill may have been applied before it and again when ioredis resent it.
      const once = stored.filter((i, k) => k === 0 || i !== stored[k - 1]);
      duplicates += stored.length - once.length;
      expect(once).toEqual(load.acked[w]);
    }
    // ioredis resends the calls in flight; each append's op bit (in the AOF with it) keeps it from applying twice.
    expect(duplicates).toBe(0);
    figure("redis SIGKILL with AOF always", { acked: load.total(), lost: 0, duplicatedByResend: duplicates });
  });

  // ioredis resends the commands that were in flight when a connection drops (autoResendUnfulfilledCommands, on by
  // default): an append that Redis ran but whose reply was lost arrives twice, and its op bit makes it apply once.
  it("a connection lost after Redis ran an append but before its reply: the append is stored once", async () => {
    const redis = await server();
    const proxy = await ReplyLosingProxy.listen(redis.port);
    cleanups.push(() => proxy.close());
    const raw = new Redis(redis.url);
    cleanups.push(() => raw.quit());
    const b = backend({ url: `redis://127.0.0.1:${proxy.port}`, prefix: "lossy" });
    const id = await b.createSession("writer");
    await b.saveMessage(id, "user", "before");
    proxy.swallowReplies();
    const saved = b.saveMessage(id, "user", "reply lost");
    expect(await eventually(async () => (await raw.llen(`lossy:messages:${id}`)) === 2)).toBe(true);
    proxy.cut();
    // ioredis reconnects and resends the script: the call resolves, and the message is there once.
    await saved;
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["before", "reply lost"]);
  });

  // The same for a batch: the whole saveMessages is one op, so a resent batch is applied once, not in part or twice,
  // and the resent call still answers with the session's length.
  it("a connection lost after Redis ran a saveMessages batch but before its reply: the batch is stored once", async () => {
    const redis = await server();
    const proxy = await ReplyLosingProxy.listen(redis.port);
    cleanups.push(() => proxy.close());
    const raw = new Redis(redis.url);
    cleanups.push(() => raw.quit());
    const b = backend({ url: `redis://127.0.0.1:${proxy.port}`, prefix: "lossy-batch" });
    const id = await b.createSession("writer");
    await b.saveMessage(id, "user", "before");
    proxy.swallowReplies();
    const batch = ["call", "result", "answer"].map((content, i) => ({
      role: i === 1 ? ("tool" as const) : ("assistant" as const),
      content,
    }));
    const saved = b.saveMessages(id, batch);
    expect(await eventually(async () => (await raw.llen(`lossy-batch:messages:${id}`)) === 4)).toBe(true);
    proxy.cut();
    expect(await saved).toEqual({ length: 4 });
    const stored = await b.loadMessages(id);
    expect(stored.map((m) => m.content)).toEqual(["before", "call", "result", "answer"]);
    expect(stored.map((m) => m.role)).toEqual(["user", "assistant", "tool", "assistant"]);
    expect(new Set(stored.slice(1).map((m) => m.timestamp)).size).toBe(1);
    // The backend carries on, its next batch a new op.
    expect(await b.saveMessages(id, [{ role: "user", content: "after" }])).toEqual({ length: 5 });
    expect(await b.countMessages(id)).toBe(5);
  });
});
