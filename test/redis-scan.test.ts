// Scans by agent on standalone Redis: served by the agent's id set {prefix}:ids:{agent}, built by the first scan of
// the agent (a thousand ids per script) and kept by every writer after, so that each page is one ZRANGEBYLEX.
import { randomUUID } from "node:crypto";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { RedisStorageBackend } from "../src/redis.js";

const url = inject("redisUrl");
const prefix = `agentix-test-${randomUUID().slice(0, 8)}`;

describe.skipIf(!url)("RedisStorageBackend scans by agent", () => {
  let raw: Redis;
  let b: RedisStorageBackend;
  beforeAll(() => {
    raw = new Redis(url as string);
    b = new RedisStorageBackend({ url: url as string, prefix });
  });
  afterAll(async () => {
    await b.close();
    const keys: string[] = [];
    for await (const batch of raw.scanStream({ match: `${prefix}:*`, count: 1000 })) keys.push(...(batch as string[]));
    if (keys.length > 0) await raw.unlink(...keys);
    await raw.quit();
  });

  const scanAll = async (agentId: string, limit: number) => {
    const ids: string[] = [];
    for (;;) {
      const page = await b.scanSessions({ agentId, limit, ...(ids.length ? { after: ids.at(-1) as string } : {}) });
      ids.push(...page.map((r) => r.session_id));
      if (page.length < limit) return ids;
    }
  };

  it("builds the agent's id set on the first scan, with the sessions created meanwhile, and keeps it after", async () => {
    const agent = `scan:${randomUUID()}`;
    const ids = `${prefix}:ids:${agent}`;
    const created: string[] = [];
    for (let i = 0; i < 2_500; i += 500) {
      created.push(...(await Promise.all(Array.from({ length: 500 }, () => b.createSession(agent)))));
    }
    const other = await b.createSession(`${agent}-other`);
    expect(await raw.exists(ids)).toBe(0);

    // The first scan builds the set (three scripts of 1,000 ids) while 200 sessions are created and 100 deleted.
    const writers = (async () => {
      for (let i = 0; i < 100; i++) {
        created.push(await b.createSession(agent));
        await b.deleteSession(created.splice(i * 7, 1)[0] as string);
        created.push(await b.createSession(agent));
      }
    })();
    const first = b.scanSessions({ agentId: agent, limit: 10 });
    await writers;
    expect((await first).length).toBe(10);
    expect(await raw.exists(`${prefix}:idsbuild:${agent}`)).toBe(0);
    expect((await raw.zrange(ids, 0, "-1")).sort()).toEqual([...created].sort());
    expect(await scanAll(agent, 100)).toEqual([...created].sort());

    // Kept by creates, forks and deletes; other agents' sessions never in it.
    const fork = await b.forkSession(created[0] as string);
    const imported = randomUUID();
    await b.createSession(agent, null, { sessionId: imported });
    await b.deleteSession(created[1] as string);
    const expected = [...created.filter((id) => id !== created[1]), fork, imported].sort();
    expect((await raw.zrange(ids, 0, "-1")).sort()).toEqual(expected);
    expect(await scanAll(agent, 333)).toEqual(expected);
    expect(await raw.zscore(ids, other)).toBeNull();

    // Deleting every session removes the set; the next scan finds the index empty and builds nothing.
    for (const id of expected) await b.deleteSession(id);
    expect(await raw.exists(ids, `${prefix}:index:${agent}`)).toBe(0);
    expect(await b.scanSessions({ agentId: agent })).toEqual([]);
    expect(await raw.exists(ids)).toBe(0);
  });

  it("finishes a build that a crashed scan left half done", async () => {
    const agent = `crashed-${randomUUID()}`;
    const ids = Array.from({ length: 5 }, () => randomUUID());
    for (const id of ids.slice(0, 3)) await b.createSession(agent, null, { sessionId: id });
    // A build that stopped after adding one id: the set being built, with its marker member.
    await raw.zadd(`${prefix}:idsbuild:${agent}`, 0, "", 0, ids[0] as string);
    for (const id of ids.slice(3)) await b.createSession(agent, null, { sessionId: id });
    expect(await raw.zcard(`${prefix}:idsbuild:${agent}`)).toBe(4);
    expect((await b.scanSessions({ agentId: agent })).map((r) => r.session_id)).toEqual([...ids].sort());
    expect(await raw.exists(`${prefix}:idsbuild:${agent}`)).toBe(0);
    expect((await raw.zrange(`${prefix}:ids:${agent}`, 0, "-1")).sort()).toEqual([...ids].sort());
    for (const id of ids) await b.deleteSession(id);
  });
});
