// Cluster mode when a connection drops between Redis running a write and its reply reaching the client: ioredis
// resends the commands in flight, so the write arrives twice, and the session's op bitmap (appends) or kept outcome
// (edits) makes it apply once. Every node of the private cluster (test/support/redis-cluster.ts) is reached through a
// proxy that can lose replies (the client finds the proxies through natMap); reads that check go around them.
// Also a fork large enough to be copied in chunks between slots.
import { randomUUID } from "node:crypto";
import { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { RedisStorageBackend } from "../src/redis.js";
import { parseClusterUrl } from "../src/redis-server.js";
import { eventually, ReplyLosingProxy } from "./reliability/support.js";

const url = inject("redisClusterUrl");
const prefix = `agentix-test-${randomUUID().slice(0, 8)}`;

describe.skipIf(!url)("RedisStorageBackend in cluster mode, with connections dropped", () => {
  const nodes = parseClusterUrl((url as string) ?? "")?.nodes ?? [];
  let raw: Cluster;
  let proxies: ReplyLosingProxy[];
  let client: Cluster;
  let b: RedisStorageBackend;
  beforeAll(async () => {
    raw = new Cluster(nodes);
    await raw.ping();
    // Every master, by the address the cluster announces, behind a proxy of its own.
    const masters = (await raw.cluster("SHARDS")) as unknown[];
    expect(masters.length).toBeGreaterThanOrEqual(3);
    const ports = raw.nodes("master").map((node) => node.options.port as number);
    proxies = await Promise.all(ports.map((port) => ReplyLosingProxy.listen(port)));
    const natMap = Object.fromEntries(
      ports.map((port, i) => [`127.0.0.1:${port}`, { host: "127.0.0.1", port: (proxies[i] as ReplyLosingProxy).port }]),
    );
    client = new Cluster(
      proxies.map((proxy) => ({ host: "127.0.0.1", port: proxy.port })),
      { natMap },
    );
    b = new RedisStorageBackend({ client, prefix });
  });
  afterAll(async () => {
    await b?.close();
    client?.disconnect();
    for (const proxy of proxies ?? []) await proxy.close();
    await raw?.quit();
  });

  const list = (id: string) => raw.lrange(`${prefix}:messages:{${id}}`, 0, -1);
  /** `call` with every reply lost from the moment it is sent until Redis `applied` it; then the connections drop. */
  async function lost<T>(call: () => Promise<T>, applied: () => Promise<boolean>): Promise<T> {
    for (const proxy of proxies) proxy.swallowReplies();
    const pending = call();
    expect(await eventually(applied)).toBe(true);
    for (const proxy of proxies) proxy.cut();
    return pending;
  }

  it("a resent append and a resent batch are stored once; the backend carries on", async () => {
    const id = await b.createSession(`resent-${randomUUID()}`);
    await b.saveMessage(id, "user", "before");
    await lost(
      () => b.saveMessage(id, "user", "reply lost"),
      async () => (await list(id)).length === 2,
    );
    expect(await list(id)).toHaveLength(2);
    const batch = ["call", "result", "answer"].map((content) => ({ role: "assistant" as const, content }));
    const saved = await lost(
      () => b.saveMessages(id, batch),
      async () => (await list(id)).length === 5,
    );
    expect(saved).toEqual({ length: 5 });
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual([
      "before",
      "reply lost",
      "call",
      "result",
      "answer",
    ]);
    expect(await b.saveMessages(id, [{ role: "user", content: "after" }])).toEqual({ length: 6 });
    // The index step of the writes whose replies were lost ran too: the session is listed, newest first.
    expect((await b.listSessions((await b.getSession(id))?.agent_id as string)).map((s) => s.session_id)).toEqual([id]);
    await b.deleteSession(id);
  });

  it("a resent pop pops once and answers with the message it popped; a resent conditional write is no conflict", async () => {
    const id = await b.createSession(`resent-${randomUUID()}`);
    await b.saveMessages(
      id,
      ["one", "two", "three"].map((content) => ({ role: "user" as const, content })),
    );
    const [, , third] = await b.loadMessages(id);
    const popped = await lost(
      () => b.popMessage(id),
      async () => (await list(id)).length === 2,
    );
    expect(popped).toStrictEqual(third);
    const saved = await lost(
      () => b.saveMessages(id, [{ role: "assistant", content: "three again" }], { expectedLength: 2 }),
      async () => (await list(id)).length === 3,
    );
    expect(saved).toEqual({ length: 3 });
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["one", "two", "three again"]);
    await b.deleteSession(id);
  });

  it("forks a session of many large messages in byte-bounded chunks into the fork's slot", async () => {
    const id = await b.createSession(`fork-${randomUUID()}`);
    const pad = "p".repeat(2_000);
    for (let i = 0; i < 3_000; i += 500) {
      await b.saveMessages(
        id,
        Array.from({ length: 500 }, (_, k) => ({ role: "user" as const, content: { i: i + k, pad } })),
      );
    }
    const fork = await b.forkSession(id);
    expect(await list(fork)).toEqual(await list(id));
    const part = await b.forkSession(id, { length: 2_222 });
    expect(await list(part)).toEqual((await list(id)).slice(0, 2_222));
    for (const s of [id, fork, part]) await b.deleteSession(s);
  });
});
