import { describe, expect, it } from "vitest";
import type { SessionRecord } from "../core/types.js";
import { agentId, freezeClock, ISO_MS, type SuiteContext, sleep, UUID_V7, unknownId } from "./context.js";

const byListingOrder = (a: SessionRecord, b: SessionRecord) =>
  a.updated_at !== b.updated_at ? (a.updated_at > b.updated_at ? -1 : 1) : a.session_id > b.session_id ? -1 : 1;

export function sessionTests(ctx: SuiteContext): void {
  describe("sessions", () => {
    it("creates a session with a lowercase UUIDv7 id and a five-key record", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const before = new Date().toISOString();
      const id = await b.createSession(agent);
      const after = new Date().toISOString();
      expect(id).toMatch(UUID_V7);
      const record = await b.getSession(id);
      expect(record).not.toBeNull();
      expect(Object.getPrototypeOf(record)).toBe(Object.prototype);
      expect(Object.keys(record as object).sort()).toEqual([
        "agent_id",
        "created_at",
        "metadata",
        "session_id",
        "updated_at",
      ]);
      expect(record).toStrictEqual({
        session_id: id,
        agent_id: agent,
        created_at: record?.created_at,
        updated_at: record?.created_at,
        metadata: null,
      });
      expect(record?.created_at).toMatch(ISO_MS);
      const createdAt = record?.created_at as string;
      expect(createdAt >= before && createdAt <= after).toBe(true);
    });

    it("gives strictly increasing ids, also within one millisecond", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock("2030-01-01T00:00:00.000Z");
      const ids: string[] = [];
      for (let i = 0; i < 50; i++) ids.push(await b.createSession(agent));
      expect(new Set(ids).size).toBe(50);
      expect([...ids].sort()).toEqual(ids);
    });

    it("stores metadata (null when absent or null) and returns copies", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const metadata = { cwd: "/work", tags: ["a", "b"], nested: { n: 1, ok: true, none: null } };
      const withMeta = await b.createSession(agent, metadata);
      const withNull = await b.createSession(agent, null);
      const without = await b.createSession(agent);
      metadata.tags.push("mutated by caller");
      expect((await b.getSession(withMeta))?.metadata).toStrictEqual({
        cwd: "/work",
        tags: ["a", "b"],
        nested: { n: 1, ok: true, none: null },
      });
      expect((await b.getSession(withNull))?.metadata).toBeNull();
      expect((await b.getSession(without))?.metadata).toBeNull();
      const returned = (await b.getSession(withMeta)) as SessionRecord;
      (returned.metadata as { tags: string[] }).tags.push("mutated by reader");
      returned.agent_id = "someone-else";
      const again = await b.getSession(withMeta);
      expect(again?.metadata?.tags).toEqual(["a", "b"]);
      expect(again?.agent_id).toBe(agent);
    });

    it("returns null for an unknown session", async () => {
      const b = await ctx.backend();
      expect(await b.getSession(unknownId())).toBeNull();
    });

    it("lists an agent's sessions newest updated_at first, and only that agent's", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const other = await b.createSession(agentId("other"));
      const first = await b.createSession(agent);
      await sleep(3);
      const second = await b.createSession(agent);
      await sleep(3);
      const third = await b.createSession(agent);
      await sleep(3);
      await b.saveMessage(first, "user", "bump");
      const listed = await b.listSessions(agent);
      expect(listed.map((s) => s.session_id)).toEqual([first, third, second]);
      expect(listed.map((s) => s.session_id)).not.toContain(other);
      expect(listed[0]).toStrictEqual(await b.getSession(first));
      for (const record of listed)
        expect(Object.keys(record).sort()).toEqual(["agent_id", "created_at", "metadata", "session_id", "updated_at"]);
    });

    it("breaks updated_at ties by the greater session_id first", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock("2031-05-05T05:05:05.005Z");
      const ids: string[] = [];
      for (let i = 0; i < 6; i++) ids.push(await b.createSession(agent));
      const listed = await b.listSessions(agent);
      expect(listed.map((s) => s.session_id)).toEqual([...ids].sort().reverse());
      expect(new Set(listed.map((s) => s.updated_at)).size).toBe(1);
    });

    it("returns the first N with limit", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      for (let i = 0; i < 5; i++) await b.createSession(agent);
      const all = await b.listSessions(agent);
      expect(all).toHaveLength(5);
      expect(await b.listSessions(agent, { limit: 2 })).toStrictEqual(all.slice(0, 2));
      expect(await b.listSessions(agent, { limit: 50 })).toStrictEqual(all);
    });

    it("pages with before (keyset) without repeating or skipping, ties included", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock("2032-01-01T00:00:00.000Z");
      for (let i = 0; i < 4; i++) await b.createSession(agent);
      freezeClock("2032-01-01T00:00:01.000Z");
      for (let i = 0; i < 3; i++) await b.createSession(agent);
      const all = await b.listSessions(agent);
      expect(all).toHaveLength(7);
      expect([...all].sort(byListingOrder)).toStrictEqual(all);
      const paged: SessionRecord[] = [];
      let page = await b.listSessions(agent, { limit: 2 });
      while (page.length > 0) {
        paged.push(...page);
        page = await b.listSessions(agent, { limit: 2, before: page[page.length - 1] as SessionRecord });
      }
      expect(paged).toStrictEqual(all);
      // A cursor in the middle of a tie group continues right after it.
      const cursor = all[4] as SessionRecord;
      expect(await b.listSessions(agent, { before: cursor })).toStrictEqual(all.slice(5));
      expect(
        await b.listSessions(agent, { before: { updated_at: cursor.updated_at, session_id: cursor.session_id } }),
      ).toStrictEqual(all.slice(5));
    });

    it("filters by cwd exactly (metadata.cwd when it is a string)", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const a1 = await b.createSession(agent, { cwd: "/a" });
      await sleep(2);
      const a2 = await b.createSession(agent, { cwd: "/a", other: 1 });
      await b.createSession(agent, { cwd: "/a/" });
      await b.createSession(agent, { cwd: "/A" });
      await b.createSession(agent, { cwd: 42 });
      await b.createSession(agent, { cwd: ["/a"] });
      await b.createSession(agent, { dir: "/a" });
      await b.createSession(agent);
      const empty = await b.createSession(agent, { cwd: "" });
      await b.createSession(agentId("other"), { cwd: "/a" });
      expect((await b.listSessions(agent, { cwd: "/a" })).map((s) => s.session_id)).toEqual([a2, a1]);
      expect((await b.listSessions(agent, { cwd: "" })).map((s) => s.session_id)).toEqual([empty]);
      expect(await b.listSessions(agent, { cwd: "/nowhere" })).toEqual([]);
      expect((await b.listSessions(agent, { cwd: "/a", limit: 1 })).map((s) => s.session_id)).toEqual([a2]);
      const [latest] = await b.listSessions(agent, { cwd: "/a", limit: 1 });
      expect(
        (await b.listSessions(agent, { cwd: "/a", before: latest as SessionRecord })).map((s) => s.session_id),
      ).toEqual([a1]);
      expect(await b.listSessions(agent)).toHaveLength(9);
    });

    it("returns [] for an unknown agent", async () => {
      const b = await ctx.backend();
      expect(await b.listSessions(agentId("nobody"))).toEqual([]);
    });

    it("deletes a session, its messages and its index entry; unknown ids are not an error", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const keep = await b.createSession(agent, { cwd: "/d" });
      const gone = await b.createSession(agent, { cwd: "/d" });
      await b.saveMessage(gone, "user", "bye");
      await b.saveMessage(keep, "user", "stay");
      await b.deleteSession(gone);
      expect(await b.getSession(gone)).toBeNull();
      await expect(b.loadMessages(gone)).rejects.toMatchObject({ name: "SessionNotFoundError" });
      expect((await b.listSessions(agent)).map((s) => s.session_id)).toEqual([keep]);
      expect((await b.listSessions(agent, { cwd: "/d" })).map((s) => s.session_id)).toEqual([keep]);
      await b.deleteSession(gone);
      await b.deleteSession(unknownId());
      expect(await b.loadMessages(keep)).toHaveLength(1);
      await b.deleteSession(keep);
      expect(await b.listSessions(agent)).toEqual([]);
    });
  });
}
