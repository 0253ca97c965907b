// The metadata write option at the key level, in both modes: standalone mode moves the metadata, the cwds hash entry
// and the cwd index entry in the edit's one script; cluster mode writes the session's slot (metadata, sessioncwd,
// messages, updated_at) in the edit's script, and the cwd index follows as for a metadata update, readers and the
// doctor repairing what a crash between the two leaves. The conformance module v2-write-metadata checks the rest.
import { randomUUID } from "node:crypto";
import { Cluster, Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { checkRedisStore } from "../src/cli/doctor/redis.js";
import { RedisStorageBackend } from "../src/redis.js";
import { parseClusterUrl } from "../src/redis-server.js";

const url = inject("redisUrl");
const clusterUrl = inject("redisClusterUrl");
const ahead = "2999-01-01T00:00:00.007Z";

/** Every key of the prefix on every node (SCAN, never KEYS). */
async function keysOf(nodes: Redis[], keyPrefix: string): Promise<string[]> {
  const keys: string[] = [];
  for (const node of nodes) {
    let cursor = "0";
    do {
      const [next, batch] = await node.scan(cursor, "MATCH", `${keyPrefix}:*`, "COUNT", 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== "0");
  }
  return keys.sort();
}

describe.skipIf(!url)("RedisStorageBackend: writes with metadata (standalone keys)", () => {
  const prefix = `agentix-test-${randomUUID().slice(0, 8)}`;
  let raw: Redis;
  let b: RedisStorageBackend;
  beforeAll(() => {
    raw = new Redis(url as string);
    b = new RedisStorageBackend({ url: url as string, prefix });
  });
  afterAll(async () => {
    await b.close();
    const keys = await keysOf([raw], prefix);
    if (keys.length > 0) await raw.unlink(...keys);
    await raw.quit();
  });
  const cwdKeyOf = (agent: string, cwd: string) => `${prefix}:cwd:${Buffer.byteLength(agent)}:${agent}:${cwd}`;
  const scoreOf = async (key: string, id: string) => Number(await raw.zscore(key, id));

  it("moves the metadata, the cwds hash entry and the cwd index entry with the edit, adding no key", async () => {
    const agent = `meta-${randomUUID()}`;
    const id = await b.createSession(agent, { cwd: "/a" });
    const other = await b.createSession(agent, { cwd: "/a" });
    await b.saveMessages(id, [{ role: "user", content: "m0" }], { metadata: { cwd: "/b", n: 1 } });
    const session = await b.getSession(id);
    expect(await raw.hget(`${prefix}:session:${id}`, "metadata")).toBe(JSON.stringify({ cwd: "/b", n: 1 }));
    expect(await raw.hget(`${prefix}:cwds`, id)).toBe("/b");
    expect(await raw.zrange(cwdKeyOf(agent, "/a"), 0, "-1")).toEqual([other]);
    expect(await raw.zrange(cwdKeyOf(agent, "/b"), 0, "-1")).toEqual([id]);
    for (const key of [`${prefix}:index:${agent}`, cwdKeyOf(agent, "/b")])
      expect(await scoreOf(key, id)).toBe(Date.parse(session?.updated_at as string));
    const data = (await keysOf([raw], prefix)).filter((key) => !key.startsWith(`${prefix}:op:`));
    expect(data).toEqual(
      [
        `${prefix}:session:${id}`,
        `${prefix}:session:${other}`,
        `${prefix}:messages:${id}`,
        `${prefix}:index:${agent}`,
        `${prefix}:sessions`,
        `${prefix}:cwds`,
        cwdKeyOf(agent, "/a"),
        cwdKeyOf(agent, "/b"),
      ].sort(),
    );

    // updated_at ahead of the clock stays: the new cwd index takes the score the index holds.
    await raw.hset(`${prefix}:session:${id}`, "updated_at", ahead);
    await raw.zadd(`${prefix}:index:${agent}`, Date.parse(ahead), id);
    await raw.zadd(cwdKeyOf(agent, "/b"), Date.parse(ahead), id);
    expect(await b.popMessage(id, { metadata: { cwd: "/c" } })).toMatchObject({ content: "m0" });
    expect(await raw.hget(`${prefix}:session:${id}`, "updated_at")).toBe(ahead);
    expect(await raw.exists(cwdKeyOf(agent, "/b"))).toBe(0);
    expect(await scoreOf(cwdKeyOf(agent, "/c"), id)).toBe(Date.parse(ahead));
    expect(await raw.hget(`${prefix}:cwds`, id)).toBe("/c");

    // No string cwd: out of every cwd index and of the cwds hash. An edit without metadata leaves it all alone.
    await b.replaceMessages(id, 0, [], { metadata: { cwd: 42 } });
    expect(await raw.hexists(`${prefix}:cwds`, id)).toBe(0);
    expect(await raw.exists(cwdKeyOf(agent, "/c"))).toBe(0);
    await b.saveMessages(id, [{ role: "user", content: "plain" }], { expectedLength: 0 });
    expect(await raw.hget(`${prefix}:session:${id}`, "metadata")).toBe(JSON.stringify({ cwd: 42 }));
    expect(await checkRedisStore(raw, prefix, false)).toEqual([]);
    for (const s of [id, other]) await b.deleteSession(s);
  });
});

describe.skipIf(!clusterUrl)("RedisStorageBackend: writes with metadata (cluster keys)", () => {
  const prefix = `agentix-test-${randomUUID().slice(0, 8)}`;
  let raw: Cluster;
  let b: RedisStorageBackend;
  beforeAll(async () => {
    raw = new Cluster(parseClusterUrl(clusterUrl as string)?.nodes ?? []);
    await raw.ping();
    b = new RedisStorageBackend({ url: clusterUrl as string, prefix });
  });
  afterAll(async () => {
    await b.close();
    for (const key of await keysOf(raw.nodes("master"), prefix)) await raw.unlink(key);
    await raw.quit();
  });
  const cwdKeyOf = (agent: string, cwd: string) => `${prefix}:cwd:{${agent}}:${cwd}`;
  const scoreOf = async (key: string, id: string) => Number(await raw.zscore(key, id));
  const listed = async (agent: string, cwd?: string) =>
    (await b.listSessions(agent, cwd === undefined ? {} : { cwd })).map((s) => s.session_id);

  it("writes metadata and sessioncwd in the edit's slot; the cwd index follows as for a metadata update", async () => {
    const agent = `meta-${randomUUID()}`;
    const id = await b.createSession(agent, { cwd: "/a" });
    await b.saveMessages(id, [{ role: "user", content: "m0" }], { metadata: { cwd: "/b" } });
    const session = await b.getSession(id);
    expect(await raw.hget(`${prefix}:session:{${id}}`, "metadata")).toBe(JSON.stringify({ cwd: "/b" }));
    expect(await raw.get(`${prefix}:sessioncwd:{${id}}`)).toBe("/b");
    expect(await raw.exists(cwdKeyOf(agent, "/a"))).toBe(0);
    for (const key of [`${prefix}:index:{${agent}}`, cwdKeyOf(agent, "/b")])
      expect(await scoreOf(key, id)).toBe(Date.parse(session?.updated_at as string));

    // updated_at ahead stays; the entry still moves to the new cwd's index, at the session's time.
    await raw.hset(`${prefix}:session:{${id}}`, "updated_at", ahead);
    await raw.zadd(`${prefix}:index:{${agent}}`, Date.parse(ahead), id);
    await b.popMessage(id, { metadata: { cwd: "/c" } });
    expect(await raw.hget(`${prefix}:session:{${id}}`, "updated_at")).toBe(ahead);
    expect(await raw.exists(cwdKeyOf(agent, "/b"))).toBe(0);
    expect(await scoreOf(cwdKeyOf(agent, "/c"), id)).toBe(Date.parse(ahead));
    await b.saveMessages(id, [], { metadata: null });
    expect(await raw.exists(`${prefix}:sessioncwd:{${id}}`)).toBe(0);
    expect(await raw.exists(cwdKeyOf(agent, "/c"))).toBe(0);
    expect(await checkRedisStore(raw, prefix, false)).toEqual([]);
    await b.deleteSession(id);
  });

  it("leaves a whole session when it stops between the edit's script and its index step; readers and doctor repair", async () => {
    const agent = `crash-${randomUUID()}`;
    const index = `${prefix}:index:{${agent}}`;
    const id = await b.createSession(agent, { cwd: "/old" });
    const other = await b.createSession(agent, { cwd: "/old" });
    const before = await scoreOf(index, id);
    // A later millisecond than the creates: the listing's order below is by time, not by the tie-break on ids.
    await new Promise((resolve) => setTimeout(resolve, 5));
    await b.saveMessages(id, [{ role: "user", content: "moved" }], { metadata: { cwd: "/new", n: 1 } });
    // The index step undone: the entries as they were before the edit, as if the backend stopped after its script.
    await raw.zadd(cwdKeyOf(agent, "/old"), before, id);
    await raw.zrem(cwdKeyOf(agent, "/new"), id);
    await raw.zadd(index, before, id);

    // The session itself is whole: metadata, cwd, messages and updated_at, written together.
    const session = await b.getSession(id);
    expect(session?.metadata).toEqual({ cwd: "/new", n: 1 });
    expect(await raw.get(`${prefix}:sessioncwd:{${id}}`)).toBe("/new");
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["moved"]);
    // Readers skip (and remove) the stale cwd entry, and order by the session's time (repairing the score).
    expect(await listed(agent, "/old")).toEqual([other]);
    expect(await raw.zscore(cwdKeyOf(agent, "/old"), id)).toBeNull();
    expect(await listed(agent)).toEqual([id, other]);
    expect(await scoreOf(index, id)).toBe(Date.parse(session?.updated_at as string));
    // The missing entry in the new cwd's index is the doctor's to add (as after a metadata update's crash).
    const found = await checkRedisStore(raw, prefix, true);
    expect(found.map((f) => f.problem)).toEqual([`no entry in the cwd index ${cwdKeyOf(agent, "/new")}`]);
    expect(await listed(agent, "/new")).toEqual([id]);
    expect(await checkRedisStore(raw, prefix, false)).toEqual([]);
    for (const s of [id, other]) await b.deleteSession(s);
  });
});
