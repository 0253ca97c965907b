// Reads the raw keys and checks them against the reference layout and the documented extra keys.
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { compareSessions } from "../src/core/records.js";
import type { SessionRecord } from "../src/core/types.js";
import { RedisStorageBackend } from "../src/redis.js";

const url = inject("redisUrl");
const prefix = `agentix-test-${randomUUID().slice(0, 8)}`;

/** The keys that hold data: all but the appends' op bitmaps (`{prefix}:op:{writer}:{block}`, which expire). */
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
