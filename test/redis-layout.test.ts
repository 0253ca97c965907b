// Reads the raw keys and checks them against the reference layout and the documented extra keys.
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ConflictError, SessionExistsError, ValidationError } from "../src/core/errors.js";
import { compareSessions } from "../src/core/records.js";
import type { NewMessage, SessionRecord } from "../src/core/types.js";
import { RedisStorageBackend } from "../src/redis.js";
import { eventually, ReplyLosingProxy } from "./reliability/support.js";

const url = inject("redisUrl");
const prefix = `agentix-test-${randomUUID().slice(0, 8)}`;

/**
 * The keys that hold data: all but the writers' op bookkeeping (`{prefix}:op:{writer}:{hour}:{block}` bitmaps and
 * their `:edits` hashes, which expire).
 */
async function dataKeysOf(redis: Redis, keyPrefix: string): Promise<string[]> {
  return (await keysOf(redis, keyPrefix)).filter((key) => !key.startsWith(`${keyPrefix}:op:`));
}

async function keysOf(redis: Redis, keyPrefix: string): Promise<string[]> {
  const pattern = `${keyPrefix.replace(/[*?[\]\\]/g, "\\$&")}:*`;
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, batch] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    keys.push(...batch);
    cursor = next;
  } while (cursor !== "0");
  return keys.sort();
}

describe.skipIf(!url)("RedisStorageBackend key layout", () => {
  let raw: Redis;
  let b: RedisStorageBackend;
  beforeAll(() => {
    raw = new Redis(url as string);
    b = new RedisStorageBackend({ url: url as string, prefix });
  });
  afterAll(async () => {
    await b.close();
    const keys = await keysOf(raw, prefix);
    if (keys.length > 0) await raw.unlink(...keys);
    await raw.quit();
  });

  it("writes exactly the reference's keys plus the documented extra keys, and delete removes them all", async () => {
    const agent = "agent:with:colons";
    const cwd = "/work/ä";
    const a = await b.createSession(agent, { cwd, deep: { x: [1] } });
    const n = await b.createSession(agent);
    await b.saveMessage(a, "user", "hi");
    await b.saveMessage(a, "assistant", { text: '{"a":1}', list: [null] });
    const f = await b.forkSession(a);
    const [ra, rn, rf] = [await b.getSession(a), await b.getSession(n), await b.getSession(f)];
    const messages = await b.loadMessages(a);

    const cwdKey = `${prefix}:cwd:${Buffer.byteLength(agent)}:${agent}:${cwd}`;
    // This backend's appends so far are ops 0 and 1 of this hour's bitmap, which expires an hour after the hour ends.
    const opKeys = (await keysOf(raw, prefix)).filter((key) => key.startsWith(`${prefix}:op:`));
    expect(opKeys).toHaveLength(1);
    const hour = Math.floor(Date.now() / 3_600_000);
    expect(opKeys[0]).toMatch(new RegExp(`^${prefix}:op:[0-9a-f-]{36}:(${hour - 1}|${hour}):0$`));
    expect(await raw.bitcount(opKeys[0] as string)).toBe(2);
    expect(await raw.pttl(opKeys[0] as string)).toBeGreaterThan(7_000_000);
    expect(await dataKeysOf(raw, prefix)).toEqual(
      [
        `${prefix}:session:${a}`,
        `${prefix}:session:${n}`,
        `${prefix}:session:${f}`,
        `${prefix}:messages:${a}`,
        `${prefix}:messages:${f}`,
        `${prefix}:index:${agent}`,
        `${prefix}:sessions`,
        `${prefix}:cwds`,
        cwdKey,
      ].sort(),
    );

    // {prefix}:session:{id}: a hash of exactly the record's five fields, metadata as JSON text ("null" for null).
    expect(await raw.type(`${prefix}:session:${a}`)).toBe("hash");
    expect(await raw.hgetall(`${prefix}:session:${a}`)).toStrictEqual({
      session_id: a,
      agent_id: agent,
      created_at: ra?.created_at,
      updated_at: ra?.updated_at,
      metadata: JSON.stringify({ cwd, deep: { x: [1] } }),
    });
    expect((await raw.hgetall(`${prefix}:session:${n}`)).metadata).toBe("null");
    expect(await raw.hgetall(`${prefix}:session:${f}`)).toMatchObject({ session_id: f, created_at: rf?.created_at });

    // {prefix}:messages:{id}: a list, each element JSON.stringify({ role, content, timestamp }).
    expect(await raw.type(`${prefix}:messages:${a}`)).toBe("list");
    const json = messages.map((m) => JSON.stringify({ role: m.role, content: m.content, timestamp: m.timestamp }));
    expect(await raw.lrange(`${prefix}:messages:${a}`, 0, -1)).toEqual(json);
    expect(await raw.lrange(`${prefix}:messages:${f}`, 0, -1)).toEqual(json);

    // {prefix}:index:{agent_id}: a sorted set of session ids scored by updated_at in epoch milliseconds.
    const scored = (key: string) => raw.zrange(key, 0, "-1", "WITHSCORES");
    const ascending = (records: Array<SessionRecord | null>) =>
      (records as SessionRecord[])
        .sort((x, y) => -compareSessions(x, y))
        .flatMap((r) => [r.session_id, String(Date.parse(r.updated_at))]);
    expect(await scored(`${prefix}:index:${agent}`)).toEqual(ascending([rn, ra, rf]));

    // Extra keys: every id with score 0, the cwd of each session that has one, the cwd index.
    expect(await scored(`${prefix}:sessions`)).toEqual([a, n, f].sort().flatMap((id) => [id, "0"]));
    expect(await raw.hgetall(`${prefix}:cwds`)).toStrictEqual({ [a]: cwd, [f]: cwd });
    expect(await scored(cwdKey)).toEqual(ascending([ra, rf]));

    for (const id of [a, n, f]) await b.deleteSession(id);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });

  it("reads a session written in the reference layout alone (no extra keys)", async () => {
    const id = randomUUID();
    const agent = `py-${randomUUID()}`;
    const at = "2024-01-15T14:30:00.123Z";
    await raw.hset(`${prefix}:session:${id}`, {
      session_id: id,
      agent_id: agent,
      created_at: at,
      updated_at: at,
      metadata: '{"k":"v"}',
    });
    await raw.rpush(`${prefix}:messages:${id}`, JSON.stringify({ role: "user", content: ["x"], timestamp: at }));
    await raw.zadd(`${prefix}:index:${agent}`, Date.parse(at), id);
    const record = { session_id: id, agent_id: agent, created_at: at, updated_at: at, metadata: { k: "v" } };
    expect(await b.getSession(id)).toStrictEqual(record);
    expect(await b.listSessions(agent)).toStrictEqual([record]);
    expect(await b.loadMessages(id)).toStrictEqual([{ role: "user", content: ["x"], timestamp: at }]);
    await b.deleteSession(id);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });

  const scoreOf = async (key: string, id: string) => Number(await raw.zscore(key, id));
  const cwdKeyOf = (agent: string, cwd: string) => `${prefix}:cwd:${Buffer.byteLength(agent)}:${agent}:${cwd}`;
  const opBits = async () => {
    let bits = 0;
    for (const key of await keysOf(raw, prefix)) if (key.startsWith(`${prefix}:op:`)) bits += await raw.bitcount(key);
    return bits;
  };

  it("stores a batch as one list item per message, all with one timestamp, as one op of its writer", async () => {
    const agent = `batch-${randomUUID()}`;
    const id = await b.createSession(agent, { cwd: "/batch" });
    await b.saveMessage(id, "user", "first");
    const bitsBefore = await opBits();
    const batch: NewMessage[] = [
      { role: "assistant", content: { calls: [{ name: "ls" }] } },
      { role: "tool", content: '{"looks":"like json"}' },
      { role: "tool", content: ["a", 1, null] },
      { role: "assistant", content: "done" },
    ];
    expect(await b.saveMessages(id, batch)).toEqual({ length: 5 });
    expect(await opBits()).toBe(bitsBefore + 1);

    const lines = await raw.lrange(`${prefix}:messages:${id}`, 0, -1);
    expect(lines).toHaveLength(5);
    const stored = lines.map((line) => JSON.parse(line) as { role: string; content: unknown; timestamp: string });
    const ts = stored[1]?.timestamp as string;
    expect(ts >= (stored[0]?.timestamp as string)).toBe(true);
    // Each item is exactly JSON.stringify({ role, content, timestamp }) with the batch's one timestamp.
    expect(lines.slice(1)).toEqual(
      batch.map((m) => JSON.stringify({ role: m.role, content: m.content, timestamp: ts })),
    );
    expect(await raw.hget(`${prefix}:session:${id}`, "updated_at")).toBe(ts);
    expect(await scoreOf(`${prefix}:index:${agent}`, id)).toBe(Date.parse(ts));
    expect(await scoreOf(cwdKeyOf(agent, "/batch"), id)).toBe(Date.parse(ts));
    expect(await b.countMessages(id)).toBe(5);

    // More than one RPUSH's worth (the script pushes in chunks of 1,000): still one op, in order, one timestamp.
    const many = Array.from({ length: 2_345 }, (_, i) => ({ role: "user" as const, content: { i } }));
    expect(await b.saveMessages(id, many)).toEqual({ length: 5 + many.length });
    expect(await opBits()).toBe(bitsBefore + 2);
    const tail = (await raw.lrange(`${prefix}:messages:${id}`, 5, -1)).map((line) => JSON.parse(line));
    expect(tail.map((m) => m.content.i)).toEqual(many.map((m) => m.content.i));
    expect(new Set(tail.map((m) => m.timestamp)).size).toBe(1);
    expect(await raw.hget(`${prefix}:session:${id}`, "updated_at")).toBe(tail[0].timestamp);

    // An empty batch writes nothing: no op, no list item, updated_at unchanged.
    const before = await raw.hgetall(`${prefix}:session:${id}`);
    expect(await b.saveMessages(id, [])).toEqual({ length: 5 + many.length });
    expect(await opBits()).toBe(bitsBefore + 2);
    expect(await raw.hgetall(`${prefix}:session:${id}`)).toStrictEqual(before);
    expect(await raw.llen(`${prefix}:messages:${id}`)).toBe(5 + many.length);
    await b.deleteSession(id);
  });

  it("moves a session between cwd indexes and the cwds hash when its metadata is replaced", async () => {
    const agent = `meta-${randomUUID()}`;
    const id = await b.createSession(agent, { cwd: "/a", keep: 1 });
    const other = await b.createSession(agent, { cwd: "/a" });
    const created = await raw.hgetall(`${prefix}:session:${id}`);
    const updated = await b.updateSession(id, { metadata: { cwd: "/b" } });
    expect(await raw.hgetall(`${prefix}:session:${id}`)).toStrictEqual({
      ...created,
      metadata: JSON.stringify({ cwd: "/b" }),
      updated_at: updated.updated_at,
    });
    expect(updated).toStrictEqual(await b.getSession(id));
    expect(await raw.hget(`${prefix}:cwds`, id)).toBe("/b");
    expect(await raw.zrange(cwdKeyOf(agent, "/a"), 0, "-1")).toEqual([other]);
    expect(await raw.zrange(cwdKeyOf(agent, "/b"), 0, "-1")).toEqual([id]);
    expect(await scoreOf(cwdKeyOf(agent, "/b"), id)).toBe(Date.parse(updated.updated_at));
    expect(await scoreOf(`${prefix}:index:${agent}`, id)).toBe(Date.parse(updated.updated_at));

    // No string cwd: in no cwd index and not in the cwds hash (an emptied cwd index is no key at all).
    await b.updateSession(id, { metadata: { cwd: 42 } });
    expect(await raw.hexists(`${prefix}:cwds`, id)).toBe(0);
    expect(await raw.exists(cwdKeyOf(agent, "/b"))).toBe(0);
    await b.updateSession(id, { metadata: null });
    expect(await raw.hget(`${prefix}:session:${id}`, "metadata")).toBe("null");

    // updated_at ahead of the clock stays, and so does the score, which the new cwd index takes from the index.
    const ahead = "2999-01-01T00:00:00.007Z";
    await raw.hset(`${prefix}:session:${id}`, "updated_at", ahead);
    await raw.zadd(`${prefix}:index:${agent}`, Date.parse(ahead), id);
    expect((await b.updateSession(id, { metadata: { cwd: "/c" } })).updated_at).toBe(ahead);
    expect(await raw.hget(`${prefix}:session:${id}`, "updated_at")).toBe(ahead);
    expect(await scoreOf(`${prefix}:index:${agent}`, id)).toBe(Date.parse(ahead));
    expect(await scoreOf(cwdKeyOf(agent, "/c"), id)).toBe(Date.parse(ahead));
    expect(await raw.hget(`${prefix}:cwds`, id)).toBe("/c");
    expect((await b.listSessions(agent, { cwd: "/c" })).map((s) => s.session_id)).toEqual([id]);

    for (const s of [id, other]) await b.deleteSession(s);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });

  it("leaves an existing session's keys untouched when its id is created or opened again", async () => {
    const agent = `taken-${randomUUID()}`;
    const id = randomUUID();
    await b.createSession(agent, { cwd: "/mine" }, { sessionId: id });
    await b.saveMessages(id, [
      { role: "user", content: "q" },
      { role: "assistant", content: "a" },
    ]);
    const snapshot = async () => ({
      hash: await raw.hgetall(`${prefix}:session:${id}`),
      messages: await raw.lrange(`${prefix}:messages:${id}`, 0, -1),
      index: await raw.zrange(`${prefix}:index:${agent}`, 0, "-1", "WITHSCORES"),
      cwd: await raw.hget(`${prefix}:cwds`, id),
      cwdIndex: await raw.zrange(cwdKeyOf(agent, "/mine"), 0, "-1", "WITHSCORES"),
      all: await raw.zscore(`${prefix}:sessions`, id),
      keys: await dataKeysOf(raw, prefix),
    });
    const before = await snapshot();
    await expect(b.createSession(agent, { cwd: "/theirs" }, { sessionId: id })).rejects.toBeInstanceOf(
      SessionExistsError,
    );
    await expect(b.createSession("other-agent", null, { sessionId: id })).rejects.toBeInstanceOf(SessionExistsError);
    await expect(b.openSession("other-agent", id, { cwd: "/theirs" })).rejects.toBeInstanceOf(SessionExistsError);
    const opened = await b.openSession(agent, id, { cwd: "/theirs" });
    expect(opened).toStrictEqual({ session: await b.getSession(id), created: false });
    expect(opened.session.metadata).toStrictEqual({ cwd: "/mine" });
    expect(await snapshot()).toStrictEqual(before);
    expect(await raw.exists(`${prefix}:index:other-agent`, cwdKeyOf(agent, "/theirs"))).toBe(0);
    await b.deleteSession(id);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });

  it("opens, appends to, updates and counts a session written in the reference layout alone", async () => {
    const id = randomUUID();
    const agent = `py-${randomUUID()}`;
    const at = "2024-01-15T14:30:00.123Z";
    const fields = { session_id: id, agent_id: agent, created_at: at, updated_at: at, metadata: '{"cwd":"/py"}' };
    await raw.hset(`${prefix}:session:${id}`, fields);
    await raw.zadd(`${prefix}:index:${agent}`, Date.parse(at), id);
    const record = { ...fields, metadata: { cwd: "/py" } };
    expect(await b.openSession(agent, id)).toStrictEqual({ session: record, created: false });
    expect(await b.countMessages(id)).toBe(0);
    expect(await raw.hgetall(`${prefix}:session:${id}`)).toStrictEqual(fields);
    expect(await b.saveMessages(id, [{ role: "user", content: "hi" }])).toEqual({ length: 1 });
    expect(await b.countMessages(id)).toBe(1);
    const updated = await b.updateSession(id, { metadata: { cwd: "/py2" } });
    expect(await raw.hget(`${prefix}:cwds`, id)).toBe("/py2");
    expect(await scoreOf(cwdKeyOf(agent, "/py2"), id)).toBe(Date.parse(updated.updated_at));
    expect(await scoreOf(`${prefix}:index:${agent}`, id)).toBe(Date.parse(updated.updated_at));
    await b.deleteSession(id);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });

  it("remembers idempotency keys per session in two extra keys, not copied by forks, deleted with the session", async () => {
    const agent = `keys-${randomUUID()}`;
    const id = await b.createSession(agent);
    const keys = `${prefix}:keys:${id}`;
    const order = `${prefix}:keyorder:${id}`;
    const list = `${prefix}:messages:${id}`;
    expect(await raw.exists(keys, order)).toBe(0);
    const batch: NewMessage[] = [
      { role: "user", content: "q" },
      { role: "assistant", content: { a: [1] } },
    ];
    expect(await b.saveMessages(id, batch, { idempotencyKey: "save" })).toEqual({ length: 2 });
    const popped = await b.popMessage(id, { idempotencyKey: "pop:1" });
    expect(popped).toMatchObject({ role: "assistant", content: { a: [1] } });
    expect(await b.replaceMessages(id, 0, [{ role: "user", content: "q2" }], { idempotencyKey: "replace" })).toEqual({
      length: 1,
    });

    // {prefix}:keys:{id}: key -> JSON { fingerprint, length, popped }, popped being the message as it was stored.
    expect(await raw.type(keys)).toBe("hash");
    const remembered = Object.fromEntries(
      Object.entries(await raw.hgetall(keys)).map(([k, v]) => [k, JSON.parse(v) as Record<string, unknown>]),
    );
    expect(Object.keys(remembered).sort()).toEqual(["pop:1", "replace", "save"]);
    expect(remembered.save).toEqual({ fingerprint: expect.any(String), length: 2, popped: null });
    expect(remembered["pop:1"]).toEqual({ fingerprint: expect.any(String), length: 1, popped });
    expect(remembered.replace).toMatchObject({ length: 1, popped: null });
    // {prefix}:keyorder:{id}: the keys, oldest first.
    expect(await raw.type(order)).toBe("list");
    expect(await raw.lrange(order, 0, -1)).toEqual(["save", "pop:1", "replace"]);

    // Retries write nothing and come back with the first call's result; another write under a key conflicts.
    const before = { list: await raw.lrange(list, 0, -1), hash: await raw.hgetall(`${prefix}:session:${id}`) };
    expect(await b.popMessage(id, { idempotencyKey: "pop:1" })).toStrictEqual(popped);
    expect(await b.saveMessages(id, batch, { idempotencyKey: "save" })).toEqual({ length: 2 });
    await expect(b.saveMessages(id, [], { idempotencyKey: "save" })).rejects.toBeInstanceOf(ConflictError);
    expect({ list: await raw.lrange(list, 0, -1), hash: await raw.hgetall(`${prefix}:session:${id}`) }).toEqual(before);
    expect(await raw.lrange(order, 0, -1)).toEqual(["save", "pop:1", "replace"]);

    // A fork starts with no keys: the same key is a new write there.
    const fork = await b.forkSession(id);
    expect(await raw.exists(`${prefix}:keys:${fork}`, `${prefix}:keyorder:${fork}`)).toBe(0);
    expect(await b.popMessage(fork, { idempotencyKey: "pop:1" })).toMatchObject({ content: "q2" });
    expect(await raw.llen(list)).toBe(1);

    expect(await dataKeysOf(raw, prefix)).toEqual(
      expect.arrayContaining([keys, order, `${prefix}:keys:${fork}`, `${prefix}:keyorder:${fork}`]),
    );
    for (const s of [id, fork]) await b.deleteSession(s);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);

    // Keys left under an id without its session (a hash deleted by hand) are not inherited by a new session.
    const reused = randomUUID();
    await raw.hset(`${prefix}:keys:${reused}`, "save", JSON.stringify({ fingerprint: "x", length: 9, popped: null }));
    await raw.rpush(`${prefix}:keyorder:${reused}`, "save");
    await b.createSession(agent, null, { sessionId: reused });
    expect(await raw.exists(`${prefix}:keys:${reused}`, `${prefix}:keyorder:${reused}`)).toBe(0);
    expect(await b.saveMessages(reused, batch, { idempotencyKey: "save" })).toEqual({ length: 2 });
    await b.deleteSession(reused);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });

  it("keeps exactly the 1,000 most recent idempotency keys of a session", async () => {
    const id = await b.createSession(`prune-${randomUUID()}`);
    const message = (i: number): NewMessage[] => [{ role: "user", content: { i } }];
    const total = 1_005;
    for (let i = 0; i < total; i++) await b.saveMessages(id, message(i), { idempotencyKey: `k${i}` });
    const kept = Array.from({ length: 1_000 }, (_, i) => `k${i + total - 1_000}`);
    expect(await raw.lrange(`${prefix}:keyorder:${id}`, 0, -1)).toEqual(kept);
    expect((await raw.hkeys(`${prefix}:keys:${id}`)).sort()).toEqual([...kept].sort());
    // The oldest kept key is still remembered (a retry writes nothing, other arguments conflict) ...
    expect(await b.saveMessages(id, message(5), { idempotencyKey: "k5" })).toEqual({ length: 6 });
    await expect(b.saveMessages(id, message(0), { idempotencyKey: "k5" })).rejects.toBeInstanceOf(ConflictError);
    expect(await b.countMessages(id)).toBe(total);
    // ... the ones before it are forgotten: a retry is a new write, and the oldest kept key goes.
    expect(await b.saveMessages(id, message(4), { idempotencyKey: "k4" })).toEqual({ length: total + 1 });
    expect(await raw.llen(`${prefix}:keyorder:${id}`)).toBe(1_000);
    expect(await raw.hlen(`${prefix}:keys:${id}`)).toBe(1_000);
    expect(await raw.lindex(`${prefix}:keyorder:${id}`, 0)).toBe("k6");
    expect(await raw.lindex(`${prefix}:keyorder:${id}`, -1)).toBe("k4");
    await b.deleteSession(id);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });

  it("writes exactly the first N list items for a fork with length, over whatever was left under its id", async () => {
    const agent = `branch-${randomUUID()}`;
    const id = await b.createSession(agent, { cwd: "/src" });
    const many = Array.from({ length: 2_500 }, (_, i) => ({ role: "user" as const, content: { i } }));
    await b.saveMessages(id, many.slice(0, 10));
    const source = await raw.lrange(`${prefix}:messages:${id}`, 0, -1);
    const forks: string[] = [];
    // 3 of 10 moves the messages through Lua; 7 and 10 of 10 are a COPY (and an LTRIM); 0 writes no list at all.
    for (const length of [3, 7, 10, 0]) {
      const fork = await b.forkSession(id, { length });
      forks.push(fork);
      expect(await raw.lrange(`${prefix}:messages:${fork}`, 0, -1)).toEqual(source.slice(0, length));
      expect(await b.countMessages(fork)).toBe(length);
    }
    expect(await raw.exists(`${prefix}:messages:${forks[3]}`)).toBe(0);

    // A list (and keys) left under the chosen id without its hash do not survive into the fork.
    const stale = randomUUID();
    await raw.rpush(`${prefix}:messages:${stale}`, "stale 1", "stale 2", "stale 3");
    await raw.hset(`${prefix}:keys:${stale}`, "k", "{}");
    expect(await b.forkSession(id, { length: 2, sessionId: stale, metadata: { cwd: "/dst" } })).toBe(stale);
    forks.push(stale);
    expect(await raw.lrange(`${prefix}:messages:${stale}`, 0, -1)).toEqual(source.slice(0, 2));
    expect(await raw.exists(`${prefix}:keys:${stale}`)).toBe(0);
    // The replaced metadata moves the cwd: the cwds hash and the cwd index follow it.
    expect(await raw.hget(`${prefix}:session:${stale}`, "metadata")).toBe(JSON.stringify({ cwd: "/dst" }));
    expect(await raw.hget(`${prefix}:cwds`, stale)).toBe("/dst");
    expect(await raw.zrange(cwdKeyOf(agent, "/dst"), 0, "-1")).toEqual([stale]);
    expect(await raw.zrange(cwdKeyOf(agent, "/src"), 0, "-1")).not.toContain(stale);
    const bare = await b.forkSession(id, { length: 1, metadata: null });
    forks.push(bare);
    expect(await raw.hget(`${prefix}:session:${bare}`, "metadata")).toBe("null");
    expect(await raw.hexists(`${prefix}:cwds`, bare)).toBe(0);

    // Beyond the length, or onto a taken id: nothing written.
    const keysBefore = await dataKeysOf(raw, prefix);
    const unused = randomUUID();
    await expect(b.forkSession(id, { length: 11, sessionId: unused })).rejects.toBeInstanceOf(ValidationError);
    await expect(b.forkSession(id, { length: 1, sessionId: stale })).rejects.toBeInstanceOf(SessionExistsError);
    expect(await dataKeysOf(raw, prefix)).toEqual(keysBefore);
    expect(await raw.lrange(`${prefix}:messages:${stale}`, 0, -1)).toEqual(source.slice(0, 2));

    // Past one RPUSH's worth (chunks of 1,000) on either path.
    await b.saveMessages(id, many.slice(10));
    const all = await raw.lrange(`${prefix}:messages:${id}`, 0, -1);
    for (const length of [1_100, 2_345]) {
      const fork = await b.forkSession(id, { length });
      forks.push(fork);
      expect(await raw.lrange(`${prefix}:messages:${fork}`, 0, -1)).toEqual(all.slice(0, length));
    }
    for (const s of [id, ...forks]) await b.deleteSession(s);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });

  it("reads a page by position with one LRANGE of exactly that range", async () => {
    const client = new Redis(url as string);
    const sent: string[][] = [];
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((command: Parameters<typeof send>[0]) => {
      sent.push([command.name, ...command.args.map(String)]);
      return send(command);
    }) as typeof client.sendCommand;
    const spied = new RedisStorageBackend({ client, prefix });
    const id = await spied.createSession(`page-${randomUUID()}`);
    await spied.saveMessages(
      id,
      Array.from({ length: 10 }, (_, i) => ({ role: "user" as const, content: [i] })),
    );
    const list = `${prefix}:messages:${id}`;
    const page = async (options: Parameters<typeof spied.loadMessages>[1]) => {
      sent.length = 0;
      const contents = (await spied.loadMessages(id, options)).map((m) => (m.content as number[])[0]);
      return { contents, sent: [...sent] };
    };
    expect(await page({ offset: 2, limit: 3 })).toEqual({ contents: [2, 3, 4], sent: [["lrange", list, "2", "4"]] });
    expect(await page({ offset: 8, limit: 5 })).toEqual({ contents: [8, 9], sent: [["lrange", list, "8", "12"]] });
    // Unbounded: a probe of a page and one more; a list that ends within it needs nothing else.
    expect(await page({ offset: 7 })).toEqual({ contents: [7, 8, 9], sent: [["lrange", list, "7", String(7 + 4096)]] });
    expect(await page({ limit: 2 })).toEqual({ contents: [0, 1], sent: [["lrange", list, "0", "1"]] });
    expect(await page({ last: 2 })).toEqual({ contents: [8, 9], sent: [["lrange", list, "-2", "-1"]] });
    // An empty page: then (and only then) a second, atomic look tells an empty page from an unknown session.
    const past = await page({ offset: 10, limit: 1 });
    expect(past.contents).toEqual([]);
    expect(past.sent.map(([name]) => name)).toEqual(["lrange", "multi", "exists", "lrange", "exec"]);
    await spied.deleteSession(id);
    await spied.close();
    await client.quit();
  });

  // ioredis resends the commands in flight when a connection drops: an edit that Redis ran but whose reply was lost
  // arrives twice. Its outcome, kept under its op number, answers the resent one, which is not applied again.
  it("applies a resent edit once (a pop pops one message) and answers it with the first outcome", async () => {
    const proxy = await ReplyLosingProxy.listen(Number(new URL(url as string).port || 6379));
    const lossyUrl = new URL(url as string);
    lossyUrl.host = `127.0.0.1:${proxy.port}`;
    const lossy = new RedisStorageBackend({ url: lossyUrl.href, prefix });
    const list = (id: string) => raw.lrange(`${prefix}:messages:${id}`, 0, -1);
    const lost = async <T>(call: () => Promise<T>, applied: () => Promise<boolean>): Promise<T> => {
      proxy.swallowReplies();
      const pending = call();
      expect(await eventually(applied)).toBe(true);
      proxy.cut();
      return pending;
    };
    try {
      const id = await lossy.createSession(`resent-${randomUUID()}`);
      await lossy.saveMessages(
        id,
        ["one", "two", "three"].map((content) => ({ role: "user" as const, content })),
      );
      const [, , third] = await lossy.loadMessages(id);

      const popped = await lost(
        () => lossy.popMessage(id),
        async () => (await list(id)).length === 2,
      );
      expect(popped).toStrictEqual(third);
      expect((await lossy.loadMessages(id)).map((m) => m.content)).toEqual(["one", "two"]);

      // With expectedLength, applying it twice would be a ConflictError; it answers with the length it wrote.
      const saved = await lost(
        () => lossy.saveMessages(id, [{ role: "assistant", content: "three again" }], { expectedLength: 2 }),
        async () => (await list(id)).length === 3,
      );
      expect(saved).toEqual({ length: 3 });
      const truncated = await lost(
        () => lossy.replaceMessages(id, 1, [], { expectedLength: 3 }),
        async () => (await list(id)).length === 1,
      );
      expect(truncated).toEqual({ length: 1 });
      expect((await lossy.loadMessages(id)).map((m) => m.content)).toEqual(["one"]);

      // The outcomes are kept beside the writer's op bitmap, expiring with it.
      const edits = (await keysOf(raw, prefix)).filter((key) => /:op:.*:edits$/.test(key));
      expect(edits.length).toBeGreaterThanOrEqual(1);
      for (const key of edits) expect(await raw.pttl(key)).toBeGreaterThan(7_000_000);
      // The backend carries on, its next edit a new op.
      expect(await lossy.popMessage(id)).toMatchObject({ content: "one" });
      expect(await raw.exists(`${prefix}:messages:${id}`)).toBe(0);
      await lossy.deleteSession(id);
    } finally {
      await lossy.close();
      await proxy.close();
    }
  });

  it("never lets one agent's cwd index be another's, although both may contain ':'", async () => {
    // Without the length, both would be {prefix}:cwd:x:y:z.
    const pairs = [
      ["x", "y:z"],
      ["x:y", "z"],
      ["x:y:z", ""],
      ["é", "1"], // the length is in UTF-8 bytes, in JS as in Lua
    ] as const;
    const ids: string[] = [];
    for (const [agent, cwd] of pairs) ids.push(await b.createSession(agent, { cwd }));
    const keys = new Set(pairs.map(([agent, cwd]) => `${prefix}:cwd:${Buffer.byteLength(agent)}:${agent}:${cwd}`));
    expect(keys.size).toBe(pairs.length);
    for (const key of keys) expect(await raw.zcard(key)).toBe(1);
    for (const [i, [agent, cwd]] of pairs.entries()) {
      expect((await b.listSessions(agent, { cwd })).map((s) => s.session_id)).toEqual([ids[i]]);
    }
    for (const id of ids) await b.deleteSession(id);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });

  it("keeps ids that look like key patterns out of every key", async () => {
    const id = await b.createSession("victim", { cwd: "/c" });
    for (const hostile of ["*", "a:b:*", `${id}*`, "?", "[a-z]*", `../${id}`]) {
      expect(await b.getSession(hostile)).toBeNull();
      await b.deleteSession(hostile);
    }
    expect(await b.getSession(id)).not.toBeNull();
    await b.deleteSession(id);
    expect(await dataKeysOf(raw, prefix)).toEqual([]);
  });
});
