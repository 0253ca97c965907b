// Cluster mode against the private 3-master cluster of test/support/redis-cluster.ts: the whole conformance suite
// once, the cluster layout (every script's keys in one slot), crash-between-steps repairs, and appends while slots
// move.
import { randomUUID } from "node:crypto";
import { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentixStorageError, ValidationError } from "../src/core/errors.js";
import { RedisStorageBackend } from "../src/redis.js";
import { parseClusterUrl } from "../src/redis-server.js";
import { runConformanceSuite } from "../src/testing/index.js";
import { createStorageBackend } from "../src/url.js";

const url = inject("redisClusterUrl");
const standaloneUrl = inject("redisUrl");
const prefix = `agentix-test-${randomUUID().slice(0, 8)}`;

/** Every key of the prefix on every master (SCAN per node, never KEYS). */
export async function clusterKeysOf(cluster: Cluster, keyPrefix: string): Promise<string[]> {
  const pattern = `${keyPrefix.replace(/[*?[\]\\{}]/g, "\\$&")}:*`;
  const keys: string[] = [];
  for (const node of cluster.nodes("master")) {
    let cursor = "0";
    do {
      const [next, batch] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== "0");
  }
  return keys.sort();
}

describe.skipIf(!url)("RedisStorageBackend in cluster mode", () => {
  const clusterUrl = url as string;
  let raw: Cluster;
  beforeAll(async () => {
    raw = new Cluster(parseClusterUrl(clusterUrl)?.nodes ?? []);
    await raw.ping();
  });
  afterAll(async () => {
    for (const key of await clusterKeysOf(raw, prefix)) await raw.unlink(key);
    await raw.quit();
  });

  runConformanceSuite("RedisStorageBackend (cluster)", {
    create: () => new RedisStorageBackend({ url: clusterUrl, prefix }),
  });

  const slotOf = async (key: string) => (await raw.cluster("KEYSLOT", key)) as number;
  const dataKeys = async (p: string) =>
    (await clusterKeysOf(raw, p)).filter((key) => !key.startsWith(`${p}:op:`) && !key.startsWith(`${p}:tmp:`));

  it("writes the documented cluster layout: a session's keys in its slot, an agent's index keys in the agent's", async () => {
    const p = `${prefix}-layout`;
    await using b = new RedisStorageBackend({ url: clusterUrl, prefix: p });
    const agent = "agent:with:colons";
    const id = await b.createSession(agent, { cwd: "/w" });
    await b.saveMessage(id, "user", "hi");
    await b.saveMessages(id, [{ role: "user", content: "again" }], { idempotencyKey: "k" });
    const fork = await b.forkSession(id);
    const session = (kind: string, s: string) => `${p}:${kind}:{${s}}`;
    const agentKeys = [`${p}:index:{${agent}}`, `${p}:ids:{${agent}}`, `${p}:cwd:{${agent}}:/w`];
    expect(await dataKeys(p)).toEqual(
      [
        ...["session", "messages", "keys", "keyorder", "sessioncwd"].map((kind) => session(kind, id)),
        ...["session", "messages", "sessioncwd"].map((kind) => session(kind, fork)),
        ...agentKeys,
        `${p}:sessions`,
      ].sort(),
    );
    // Each session's keys (its op bitmaps too) share its slot; the agent's keys share the agent's.
    for (const s of [id, fork]) {
      const keys = (await clusterKeysOf(raw, p)).filter((key) => key.includes(`{${s}}`));
      expect(new Set(await Promise.all(keys.map(slotOf)))).toEqual(new Set([await slotOf(s)]));
    }
    expect(new Set(await Promise.all(agentKeys.map(slotOf)))).toEqual(new Set([await slotOf(agent)]));
    // The hash and list are the reference's; the index is scored by updated_at, the id set by id.
    expect(await raw.hgetall(session("session", id))).toStrictEqual({
      session_id: id,
      agent_id: agent,
      created_at: (await b.getSession(id))?.created_at,
      updated_at: (await b.getSession(id))?.updated_at,
      metadata: JSON.stringify({ cwd: "/w" }),
    });
    expect(await raw.get(session("sessioncwd", id))).toBe("/w");
    const updated = Date.parse((await b.getSession(id))?.updated_at as string);
    expect(Number(await raw.zscore(`${p}:index:{${agent}}`, id))).toBe(updated);
    expect(await raw.zrange(`${p}:ids:{${agent}}`, 0, "-1")).toEqual([id, fork].sort());
    // An op bitmap per session and writer, expiring.
    const ops = (await clusterKeysOf(raw, p)).filter((key) => key.startsWith(`${p}:op:{${id}}:`));
    expect(ops.length).toBeGreaterThanOrEqual(1);
    for (const key of ops) expect(await raw.pttl(key)).toBeGreaterThan(7_000_000);
    // An agent id with a brace gets a hashed tag: its keys still share one slot.
    const odd = await b.createSession("}{odd", { cwd: "/o" });
    const oddKeys = (await dataKeys(p)).filter((key) => key.includes("}{odd"));
    expect(oddKeys).toHaveLength(3);
    expect(new Set(await Promise.all(oddKeys.map(slotOf))).size).toBe(1);
    expect((await b.listSessions("}{odd", { cwd: "/o" })).map((r) => r.session_id)).toEqual([odd]);
    for (const s of [id, fork, odd]) await b.deleteSession(s);
    expect(await dataKeys(p)).toEqual([]);
  });

  it("streams an import through a temp key in the session's slot, invisible until published, gone after", async () => {
    const p = `${prefix}-import`;
    await using b = new RedisStorageBackend({ url: clusterUrl, prefix: p });
    const at = "2024-01-15T14:30:00.000Z";
    const record = { session_id: randomUUID(), agent_id: "streamed", created_at: at, updated_at: at, metadata: null };
    const messages = Array.from({ length: 50 }, (_, i) => ({ role: "user" as const, content: { i }, timestamp: at }));
    const temps = async () => (await clusterKeysOf(raw, p)).filter((key) => key.startsWith(`${p}:tmp:`));
    /** Imports `messages`, checking at message 35 (three chunks of 10 staged) what is stored; then throws if `fail`. */
    const run = async (fail: boolean) => {
      let seen: { temp: string[]; length: number; session: unknown; listed: unknown[] } | undefined;
      async function* source() {
        for (const [i, m] of messages.entries()) {
          if (i === 35) {
            const temp = await temps();
            seen = {
              temp,
              length: temp[0] ? await raw.llen(temp[0]) : 0,
              session: await b.getSession(record.session_id),
              listed: await b.listSessions(record.agent_id),
            };
            if (fail) throw new Error("source broke");
          }
          yield m;
        }
      }
      const result = await b.importSession(record, source(), { batchSize: 10 }).catch((e: unknown) => e);
      return { result, seen };
    };
    const failed = await run(true);
    expect(failed.result).toBeInstanceOf(AgentixStorageError);
    expect(failed.seen?.temp).toEqual([
      `${p}:tmp:{${record.session_id}}:import:${failed.seen?.temp[0]?.split(":import:")[1]}`,
    ]);
    expect(failed.seen?.length).toBe(30);
    expect(failed.seen?.session).toBeNull();
    expect(failed.seen?.listed).toEqual([]);
    expect(await temps()).toEqual([]);
    expect(await b.getSession(record.session_id)).toBeNull();

    const done = await run(false);
    expect(done.result).toBe(true);
    expect(done.seen?.length).toBe(30);
    expect(done.seen?.session).toBeNull();
    const temp = done.seen?.temp[0] as string;
    expect(await slotOf(temp)).toBe(await slotOf(`${p}:session:{${record.session_id}}`));
    expect(await temps()).toEqual([]);
    expect(await b.loadMessages(record.session_id)).toStrictEqual(messages);
    expect((await b.listSessions(record.agent_id)).map((s) => s.session_id)).toEqual([record.session_id]);
    // The id is taken now: a second import stages nothing and returns false.
    expect(await b.importSession(record, messages.values(), { batchSize: 10 })).toBe(false);
    expect(await temps()).toEqual([]);
  });

  it("repairs what a crash between a write's session step and its index step leaves behind", async () => {
    const p = `${prefix}-crash`;
    await using b = new RedisStorageBackend({ url: clusterUrl, prefix: p });
    const agent = `crash-${randomUUID()}`;
    const index = `${p}:index:{${agent}}`;
    const ids = `${p}:ids:{${agent}}`;
    const [a, c, d] = [randomUUID(), randomUUID(), randomUUID()];
    for (const id of [a, c, d]) await b.createSession(agent, { cwd: "/x" }, { sessionId: id });

    // A create whose index step never ran: retrying it (openSession) completes it; so does its next write.
    await raw.zrem(index, a);
    await raw.zrem(ids, a);
    await raw.zrem(`${p}:sessions`, a);
    expect((await b.openSession(agent, a)).created).toBe(false);
    expect(await raw.zscore(index, a)).not.toBeNull();
    expect(await raw.zscore(ids, a)).toBe("0");
    await raw.zrem(index, a);
    await b.saveMessage(a, "user", "moves it forward");
    expect(Number(await raw.zscore(index, a))).toBe(Date.parse((await b.getSession(a))?.updated_at as string));

    // A delete whose index step never ran: readers skip the stale entries and remove them.
    for (const kind of ["session", "messages", "sessioncwd"]) await raw.unlink(`${p}:${kind}:{${c}}`);
    expect((await b.listSessions(agent)).map((r) => r.session_id).sort()).toEqual([a, d].sort());
    expect((await b.listSessions(agent, { limit: 2 })).map((r) => r.session_id)).toHaveLength(2);
    expect((await b.scanSessions({ agentId: agent })).map((r) => r.session_id)).toEqual([a, d].sort());
    expect(await raw.zscore(index, c)).toBeNull();
    expect(await raw.zscore(ids, c)).toBeNull();
    expect(await raw.zscore(`${p}:cwd:{${agent}}:/x`, c)).not.toBeNull(); // only lists by cwd repair their index
    expect((await b.listSessions(agent, { cwd: "/x" })).map((r) => r.session_id).sort()).toEqual([a, d].sort());
    expect(await raw.zscore(`${p}:cwd:{${agent}}:/x`, c)).toBeNull();
    expect((await b.scanSessions()).map((r) => r.session_id)).toEqual([a, d].sort());
    expect(await raw.zscore(`${p}:sessions`, c)).toBeNull();

    // An append whose index step never ran: the entry lags; a list orders by the session's time and repairs it.
    await raw.zadd(index, 1, d);
    const listed = await b.listSessions(agent);
    expect(listed.map((r) => r.session_id)).toEqual(
      [await b.getSession(a), await b.getSession(d)]
        .sort((x, y) => (x?.updated_at === y?.updated_at ? 0 : (x?.updated_at ?? "") > (y?.updated_at ?? "") ? -1 : 1))
        .map((r) => r?.session_id),
    );
    expect(Number(await raw.zscore(index, d))).toBe(Date.parse((await b.getSession(d))?.updated_at as string));
    for (const id of [a, d]) await b.deleteSession(id);
    expect(await dataKeys(p)).toEqual([]);
  });

  it("fails fast, with a typed error and nothing written, against unreachable nodes or a standalone server", async () => {
    const p = `${prefix}-unreachable`;
    const targets = ["redis+cluster://127.0.0.1:1,127.0.0.1:2"];
    if (standaloneUrl) targets.push(`redis+cluster://${new URL(standaloneUrl).host}`);
    for (const target of targets) {
      const b = new RedisStorageBackend({ url: target, prefix: p });
      for (let attempt = 0; attempt < 2; attempt++) {
        const started = Date.now();
        await expect(b.createSession("agent")).rejects.toBeInstanceOf(AgentixStorageError);
        expect(Date.now() - started).toBeLessThan(10_000);
      }
      await b.close();
    }
    if (standaloneUrl) {
      const plain = new (await import("ioredis")).Redis(standaloneUrl);
      const found: string[] = [];
      for await (const keys of plain.scanStream({ match: `${p}:*`, count: 1000 })) found.push(...(keys as string[]));
      expect(found).toEqual([]);
      await plain.quit();
    }
  });

  it("takes redis+cluster:// URLs in createStorageBackend, with ?prefix= and nothing else", async () => {
    const p = `${prefix}-url`;
    const storage = await createStorageBackend(`${clusterUrl}?prefix=${p}`);
    const id = await storage.createSession("url-agent");
    expect((await clusterKeysOf(raw, p)).some((key) => key === `${p}:session:{${id}}`)).toBe(true);
    await storage.deleteSession(id);
    await storage.close();
    await expect(createStorageBackend(`${clusterUrl}?db=1`)).rejects.toThrow(/unknown query parameter "db"/);
    for (const bad of [
      "redis+cluster://",
      "redis+cluster://h:1,,h:2",
      "redis+cluster://h:99999",
      "redis+cluster://h/2",
    ]) {
      expect(() => new RedisStorageBackend({ url: bad })).toThrow(ValidationError);
    }
    expect(parseClusterUrl("rediss+cluster://u:p%40ss@a:7000,[::1]:7001,b")).toEqual({
      nodes: [
        { host: "a", port: 7000 },
        { host: "::1", port: 7001 },
        { host: "b", port: 6379 },
      ],
      username: "u",
      password: "p@ss",
      tls: true,
    });
  });
});

describe.skipIf(!url)("RedisStorageBackend in cluster mode, while slots move", () => {
  const clusterUrl = url as string;
  const movePrefix = `agentix-test-${randomUUID().slice(0, 8)}`;
  let raw: Cluster;
  beforeAll(async () => {
    raw = new Cluster(parseClusterUrl(clusterUrl)?.nodes ?? []);
    await raw.ping();
  });
  afterAll(async () => {
    for (const key of await clusterKeysOf(raw, movePrefix)) await raw.unlink(key);
    await raw.quit();
  });

  it("loses and duplicates no append of 32 writers while redis-cli --cluster reshard moves their sessions' slots", async () => {
    // The masters and their slot ranges; sessions whose slots are among the first 64 of one master, which a reshard
    // of 64 slots from it moves.
    type Slots = Array<[number, number, [string, number, string]]>;
    const slots = (await raw.cluster("SLOTS")) as unknown as Slots;
    const byNode = new Map<string, { port: number; first: number }>();
    for (const [start, , [, port, nodeId]] of slots) {
      const known = byNode.get(nodeId);
      if (!known || start < known.first) byNode.set(nodeId, { port, first: start });
    }
    const [[fromId, from], [toId]] = [...byNode.entries()] as [
      [string, { port: number; first: number }],
      [string, unknown],
    ];
    const moved = 64;
    const sessions: string[] = [];
    const sessionSlots: number[] = [];
    while (sessions.length < 4) {
      const id = randomUUID();
      const slot = (await raw.cluster("KEYSLOT", id)) as number;
      if (slot < from.first || slot >= from.first + moved) continue;
      sessions.push(id);
      sessionSlots.push(slot);
    }
    const backends = Array.from({ length: 8 }, () => new RedisStorageBackend({ url: clusterUrl, prefix: movePrefix }));
    const agent = `movers-${randomUUID()}`;
    // Long lists, so that migrating their keys takes a while.
    const prefill = Array.from({ length: 5_000 }, (_, i) => ({ role: "user" as const, content: `pre:${i}` }));
    for (const id of sessions) {
      await (backends[0] as RedisStorageBackend).createSession(agent, null, { sessionId: id });
      for (let k = 0; k < 4; k++) await (backends[0] as RedisStorageBackend).saveMessages(id, prefill);
    }

    let resharding = true;
    let duringReshard = 0;
    const acked: string[] = [];
    const failed: unknown[] = [];
    const writers = Array.from({ length: 32 }, async (_, w) => {
      const b = backends[w % backends.length] as RedisStorageBackend;
      for (let i = 0; resharding || i < 20; i++) {
        const content = `${w}:${i}`;
        try {
          await b.saveMessage(sessions[w % sessions.length] as string, "user", content);
          acked.push(content);
          if (started && resharding) duringReshard++;
        } catch (error) {
          failed.push(error);
        }
      }
    });
    let started = false;
    const reshard = (async () => {
      while (acked.length < 200) await new Promise((resolve) => setTimeout(resolve, 5));
      started = true;
      try {
        const { execFile } = await import("node:child_process");
        const { promisify } = await import("node:util");
        // biome-ignore format: one option per line
        await promisify(execFile)("redis-cli", [
          "--cluster", "reshard", `127.0.0.1:${from.port}`, "--cluster-from", fromId, "--cluster-to", toId,
          "--cluster-slots", String(moved), "--cluster-yes",
        ]);
      } finally {
        resharding = false;
      }
    })();
    await Promise.all([reshard, ...writers]);

    // The sessions' slots did move, every acknowledged append is there once, nothing else is.
    const after = (await raw.cluster("SLOTS")) as unknown as Slots;
    for (const slot of sessionSlots) {
      expect(after.find(([start, end]) => start <= slot && slot <= end)?.[2][2]).toBe(toId);
    }
    expect(failed).toEqual([]);
    const stored: string[] = [];
    for (const id of sessions) {
      const contents = (await (backends[1] as RedisStorageBackend).loadMessages(id)).map((m) => m.content as string);
      expect(contents.slice(0, 20_000)).toEqual([0, 1, 2, 3].flatMap(() => prefill.map((m) => m.content)));
      stored.push(...contents.slice(20_000));
    }
    expect(stored.length).toBe(acked.length);
    expect(new Set(stored).size).toBe(stored.length);
    expect([...stored].sort()).toEqual([...acked].sort());
    expect(duringReshard).toBeGreaterThan(100);
    for (const b of backends) await b.close();
  });
});
