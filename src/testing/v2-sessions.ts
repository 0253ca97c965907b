import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { StorageBackend } from "../core/backend.js";
import { newSessionId } from "../core/clock.js";
import { SessionExistsError, SessionNotFoundError, ValidationError } from "../core/errors.js";
import type { OpenedSession, SessionRecord } from "../core/types.js";
import { sessionIdFor } from "../core/validation.js";
import { agentId, expectField, freezeClock, rejection, type SuiteContext, unknownId } from "./context.js";

const RECORD_KEYS = ["agent_id", "created_at", "metadata", "session_id", "updated_at"];
const NIL = "00000000-0000-0000-0000-000000000000";
const MAX = "ffffffff-ffff-ffff-ffff-ffffffffffff";

/** Caller-chosen ids of every kind the contract accepts: any version, as long as it is canonical lowercase. */
const acceptedIds: Array<[string, () => string]> = [
  ["a UUIDv4", () => randomUUID()],
  ["a UUIDv5 from sessionIdFor", () => sessionIdFor(randomUUID())],
  ["a UUIDv7", () => newSessionId()],
  ["a UUIDv1-shaped id", () => randomUUID().replace(/^(.{14})4/, "$11")],
  ["the nil UUID", () => NIL],
  ["the max UUID", () => MAX],
];

/** Ids that are not canonical lowercase UUIDs, built around a good one: each must be refined, never normalized. */
function nonCanonical(good: string): Array<[string, unknown]> {
  return [
    ["uppercase", good.toUpperCase()],
    ["braces", `{${good}}`],
    ["no hyphens", good.replaceAll("-", "")],
    ["a trailing space", `${good} `],
    ["a leading space", ` ${good}`],
    ["a trailing newline", `${good}\n`],
    ["a urn", `urn:uuid:${good}`],
    ["one digit short", good.slice(0, -1)],
    ["a path", "../x"],
    ["empty", ""],
    ["a number", 123],
    ["null", null],
    ["an object", { id: good }],
    ["an array", [good]],
  ];
}

/** What a test can compare before and after a call that must write nothing. */
async function snapshot(b: StorageBackend, id: string, agents: string[]) {
  return {
    record: await b.getSession(id),
    messages: await b.loadMessages(id),
    listings: await Promise.all(agents.map((a) => b.listSessions(a))),
  };
}

export function v2SessionTests(ctx: SuiteContext): void {
  describe("createSession with a caller-chosen sessionId", () => {
    it.each(acceptedIds)("stores the session under %s", async (_label, make) => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = make();
      await b.deleteSession(id); // the fixed ids (nil, max) may be left over from an earlier run on this store
      try {
        freezeClock("2035-01-01T00:00:00.000Z");
        expect(await b.createSession(agent, { cwd: "/chosen" }, { sessionId: id })).toBe(id);
        const record = await b.getSession(id);
        expect(record).toStrictEqual({
          session_id: id,
          agent_id: agent,
          created_at: "2035-01-01T00:00:00.000Z",
          updated_at: "2035-01-01T00:00:00.000Z",
          metadata: { cwd: "/chosen" },
        });
        expect(await b.listSessions(agent)).toStrictEqual([record]);
        expect(await b.listSessions(agent, { cwd: "/chosen" })).toStrictEqual([record]);
        await b.saveMessage(id, "user", "hi");
        expect(await b.countMessages(id)).toBe(1);
      } finally {
        await b.deleteSession(id);
      }
    });

    it.each([
      ["the same agent", false],
      ["another agent", true],
    ])("a taken id (by %s) is a SessionExistsError, and nothing is written", async (_label, other) => {
      const b = await ctx.backend();
      const owner = agentId();
      const caller = other ? agentId("other") : owner;
      freezeClock("2035-02-01T00:00:00.000Z");
      const id = await b.createSession(owner, { cwd: "/taken", v: 1 }, { sessionId: randomUUID() });
      await b.saveMessage(id, "user", "keep me");
      const before = await snapshot(b, id, [owner, caller]);
      freezeClock("2035-02-01T00:00:09.000Z");
      const error = await rejection(b.createSession(caller, { cwd: "/thief", v: 2 }, { sessionId: id }));
      expect(error).toBeInstanceOf(SessionExistsError);
      expect((error as SessionExistsError).sessionId).toBe(id);
      expect(await snapshot(b, id, [owner, caller])).toStrictEqual(before);
      expect(await b.listSessions(caller, { cwd: "/thief" })).toEqual([]);
      // A v7 id made by agentix is taken just the same.
      const made = await b.createSession(owner);
      await expect(b.createSession(caller, null, { sessionId: made })).rejects.toBeInstanceOf(SessionExistsError);
    });

    it("of concurrent creates with one id, exactly one succeeds", async () => {
      const b = await ctx.backend();
      const agents = Array.from({ length: 8 }, (_, i) => agentId(`racer${i}`));
      const id = randomUUID();
      const results = await Promise.allSettled(agents.map((a, i) => b.createSession(a, { i }, { sessionId: id })));
      const won = results.filter((r) => r.status === "fulfilled");
      expect(won).toHaveLength(1);
      for (const r of results) if (r.status === "rejected") expect(r.reason).toBeInstanceOf(SessionExistsError);
      const record = (await b.getSession(id)) as SessionRecord;
      const winner = agents.indexOf(record.agent_id);
      expect(record.metadata).toStrictEqual({ i: winner });
      expect(results[winner]?.status).toBe("fulfilled");
      const listed = await Promise.all(agents.map((a) => b.listSessions(a)));
      expect(listed.flat()).toStrictEqual([record]);
    });

    const good = randomUUID();
    it.each(nonCanonical(good))("a sessionId with %s is a ValidationError, nothing written", async (_label, bad) => {
      const b = await ctx.backend();
      const agent = agentId();
      expectField(await rejection(b.createSession(agent, null, { sessionId: bad as string })), "options.sessionId");
      expectField(await rejection(b.openSession(agent, bad as string)), "sessionId");
      expect(await b.listSessions(agent)).toEqual([]);
      // Refused, not normalized to the id it resembles.
      expect(await b.getSession(good)).toBeNull();
    });

    it("unknown options and options that are not an object are a ValidationError", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = randomUUID();
      expectField(await rejection(b.createSession(agent, null, { sessionID: id } as never)), "options");
      expectField(await rejection(b.createSession(agent, null, { sessionId: id, cwd: "/x" } as never)), "options");
      expectField(await rejection(b.createSession(agent, null, id as never)), "options");
      expect(await b.getSession(id)).toBeNull();
      expect(await b.listSessions(agent)).toEqual([]);
    });
  });

  describe("openSession", () => {
    it("creates an absent session: created true, a five-key record, stored as returned", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = randomUUID();
      freezeClock("2035-03-01T00:00:00.000Z");
      // `gone` is undefined: not stored, so not in the returned record either.
      const opened = await b.openSession(agent, id, { cwd: "/o", n: [1, { x: null }], gone: undefined } as never);
      expect(Object.keys(opened).sort()).toEqual(["created", "session"]);
      expect(Object.keys(opened.session).sort()).toEqual(RECORD_KEYS);
      expect(opened).toStrictEqual({
        created: true,
        session: {
          session_id: id,
          agent_id: agent,
          created_at: "2035-03-01T00:00:00.000Z",
          updated_at: "2035-03-01T00:00:00.000Z",
          metadata: { cwd: "/o", n: [1, { x: null }] },
        },
      });
      expect(await b.getSession(id)).toStrictEqual(opened.session);
      expect(await b.listSessions(agent, { cwd: "/o" })).toStrictEqual([opened.session]);
      expect(await b.countMessages(id)).toBe(0);
      const bare = randomUUID();
      expect((await b.openSession(agent, bare)).session.metadata).toBeNull();
      expect((await b.getSession(bare))?.metadata).toBeNull();
      expect((await b.openSession(agent, randomUUID(), null)).session.metadata).toBeNull();
      expect(await b.listSessions(agent)).toHaveLength(3);
    });

    it("returns an existing session of the same agent unchanged: created false, metadata kept", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock("2035-04-01T00:00:00.000Z");
      const id = await b.createSession(agent, { cwd: "/p", v: 1 }, { sessionId: randomUUID() });
      freezeClock("2035-04-01T00:00:01.000Z");
      await b.saveMessages(id, [
        { role: "user", content: "q" },
        { role: "assistant", content: "a" },
      ]);
      const before = await snapshot(b, id, [agent]);
      freezeClock("2035-04-01T00:00:09.000Z");
      const opened = await b.openSession(agent, id, { cwd: "/q", v: 2 });
      expect(opened).toStrictEqual({ created: false, session: before.record });
      expect(opened.session.metadata).toStrictEqual({ cwd: "/p", v: 1 });
      expect(opened.session.updated_at).toBe("2035-04-01T00:00:01.000Z");
      expect(await b.openSession(agent, id)).toStrictEqual(opened);
      expect(await b.openSession(agent, id, null)).toStrictEqual(opened);
      expect(await snapshot(b, id, [agent])).toStrictEqual(before);
      expect(await b.listSessions(agent, { cwd: "/q" })).toEqual([]);
      // A session made with an id from agentix opens the same way.
      const made = await b.createSession(agent);
      expect(await b.openSession(agent, made)).toStrictEqual({ created: false, session: await b.getSession(made) });
    });

    it("an existing session of another agent is a SessionExistsError, and stays unchanged", async () => {
      const b = await ctx.backend();
      const owner = agentId();
      const intruder = agentId("intruder");
      const id = randomUUID();
      await b.openSession(owner, id, { cwd: "/mine" });
      await b.saveMessage(id, "user", "mine");
      const before = await snapshot(b, id, [owner, intruder]);
      const error = await rejection(b.openSession(intruder, id, { cwd: "/theirs" }));
      expect(error).toBeInstanceOf(SessionExistsError);
      expect((error as SessionExistsError).sessionId).toBe(id);
      await expect(b.openSession(intruder, id)).rejects.toBeInstanceOf(SessionExistsError);
      expect(await snapshot(b, id, [owner, intruder])).toStrictEqual(before);
      expect(await b.listSessions(intruder)).toEqual([]);
    });

    it("of 16 concurrent calls for one id, exactly one creates it", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = sessionIdFor(randomUUID());
      const opened = await Promise.all(Array.from({ length: 16 }, (_, i) => b.openSession(agent, id, { i })));
      expect(opened.filter((o) => o.created)).toHaveLength(1);
      const record = await b.getSession(id);
      for (const o of opened) expect(o.session).toStrictEqual(record);
      expect((await b.listSessions(agent)).map((s) => s.session_id)).toEqual([id]);
      const creator = opened.find((o) => o.created) as OpenedSession;
      expect(record?.metadata).toStrictEqual(creator.session.metadata);
    });

    it("bad agent id, metadata or session id is a ValidationError, with nothing written", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = randomUUID();
      expectField(await rejection(b.openSession("", id)), "agentId");
      expectField(await rejection(b.openSession(7 as never, id)), "agentId");
      expectField(await rejection(b.openSession(agent, id, new Date() as never)), "metadata");
      expectField(await rejection(b.openSession(agent, id, { n: Number.NaN })), "metadata.n");
      expectField(await rejection(b.openSession(agent, id, { cwd: "/a\u0000" })), "metadata.cwd");
      expectField(await rejection(b.openSession(agent, undefined as never)), "sessionId");
      expectField(await rejection(b.openSession(agent, id.toUpperCase())), "sessionId");
      expect(await b.getSession(id)).toBeNull();
      expect(await b.listSessions(agent)).toEqual([]);
      // Bad metadata is rejected also when the session exists (it would not be used, but the call is wrong).
      await b.openSession(agent, id, { v: 1 });
      expectField(await rejection(b.openSession(agent, id, { f: (() => 1) as never })), "metadata.f");
      expect((await b.getSession(id))?.metadata).toStrictEqual({ v: 1 });
    });
  });

  describe("updateSession", () => {
    it("replaces the metadata (no merge; null clears) and returns the updated record", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock("2036-01-01T00:00:00.000Z");
      const id = await b.createSession(agent, { cwd: "/u", keep: 1, nested: { a: 1 } });
      freezeClock("2036-01-01T00:00:01.000Z");
      await b.saveMessage(id, "user", "untouched");
      const messages = await b.loadMessages(id);
      freezeClock("2036-01-01T00:00:02.000Z");
      const updated = await b.updateSession(id, { metadata: { nested: { b: 2 } } });
      expect(Object.keys(updated).sort()).toEqual(RECORD_KEYS);
      expect(updated).toStrictEqual({
        session_id: id,
        agent_id: agent,
        created_at: "2036-01-01T00:00:00.000Z",
        updated_at: "2036-01-01T00:00:02.000Z",
        metadata: { nested: { b: 2 } },
      });
      expect(await b.getSession(id)).toStrictEqual(updated);
      expect(await b.listSessions(agent)).toStrictEqual([updated]);
      freezeClock("2036-01-01T00:00:03.000Z");
      const cleared = await b.updateSession(id, { metadata: null });
      expect(cleared).toStrictEqual({ ...updated, updated_at: "2036-01-01T00:00:03.000Z", metadata: null });
      expect(await b.getSession(id)).toStrictEqual(cleared);
      expect(await b.loadMessages(id)).toStrictEqual(messages);
      expect(await b.countMessages(id)).toBe(1);
    });

    it("moves updated_at to now, never backwards; a later append from a clock behind is raised to it", async () => {
      const b = await ctx.backend();
      freezeClock("2036-02-01T00:00:10.000Z");
      const id = await b.createSession(agentId());
      freezeClock("2036-02-01T00:00:20.000Z");
      expect((await b.updateSession(id, { metadata: { v: 1 } })).updated_at).toBe("2036-02-01T00:00:20.000Z");
      freezeClock("2036-02-01T00:00:15.000Z");
      const behind = await b.updateSession(id, { metadata: { v: 2 } });
      expect(behind.updated_at).toBe("2036-02-01T00:00:20.000Z");
      expect(behind.metadata).toStrictEqual({ v: 2 });
      expect(await b.getSession(id)).toStrictEqual(behind);
      await b.saveMessage(id, "user", "from a clock behind");
      await b.saveMessages(id, [{ role: "assistant", content: "also behind" }]);
      expect((await b.loadMessages(id)).map((m) => m.timestamp)).toEqual([
        "2036-02-01T00:00:20.000Z",
        "2036-02-01T00:00:20.000Z",
      ]);
      expect((await b.getSession(id))?.updated_at).toBe("2036-02-01T00:00:20.000Z");
      freezeClock("2036-02-01T00:00:25.000Z");
      expect((await b.updateSession(id, { metadata: null })).updated_at).toBe("2036-02-01T00:00:25.000Z");
    });

    it("the cwd listing follows the new metadata", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const other = await b.createSession(agent, { cwd: "/old" });
      const id = await b.createSession(agent, { cwd: "/old" });
      const cwdList = async (cwd: string) => (await b.listSessions(agent, { cwd })).map((s) => s.session_id);
      await b.updateSession(id, { metadata: { cwd: "/new", n: 1 } });
      expect(await cwdList("/old")).toEqual([other]);
      expect(await cwdList("/new")).toEqual([id]);
      await b.updateSession(id, { metadata: { dir: "/new" } });
      expect(await cwdList("/new")).toEqual([]);
      await b.updateSession(id, { metadata: { cwd: "/new" } });
      expect(await cwdList("/new")).toEqual([id]);
      await b.updateSession(id, { metadata: { cwd: 7 } });
      expect(await cwdList("/new")).toEqual([]);
      await b.updateSession(id, { metadata: { cwd: "/old" } });
      expect(await cwdList("/old")).toEqual([id, other]);
      await b.updateSession(id, { metadata: null });
      expect(await cwdList("/old")).toEqual([other]);
      expect((await b.listSessions(agent)).map((s) => s.session_id).sort()).toEqual([id, other].sort());
    });

    it("the listing order (and its cursor) follows the new updated_at", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        freezeClock(`2036-03-01T00:00:0${i}.000Z`);
        ids.push(await b.createSession(agent, { cwd: "/order" }));
      }
      const [a, c, d] = ids as [string, string, string];
      const order = async (cwd?: string) =>
        (await b.listSessions(agent, cwd === undefined ? {} : { cwd })).map((s) => s.session_id);
      expect(await order()).toEqual([d, c, a]);
      freezeClock("2036-03-01T00:00:05.000Z");
      const updated = await b.updateSession(a, { metadata: { cwd: "/order", touched: true } });
      expect(await order()).toEqual([a, d, c]);
      expect(await order("/order")).toEqual([a, d, c]);
      expect((await b.listSessions(agent, { before: updated })).map((s) => s.session_id)).toEqual([d, c]);
      expect((await b.listSessions(agent, { limit: 1 }))[0]).toStrictEqual(updated);
    });

    it("an unknown, deleted or non-UUID id is a SessionNotFoundError, and creates nothing", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const real = await b.createSession(agent, { v: 1 });
      const ghost = unknownId();
      const error = await rejection(b.updateSession(ghost, { metadata: { v: 2 } }));
      expect(error).toBeInstanceOf(SessionNotFoundError);
      expect((error as SessionNotFoundError).sessionId).toBe(ghost);
      expect(await b.getSession(ghost)).toBeNull();
      const deleted = await b.createSession(agent);
      await b.deleteSession(deleted);
      await expect(b.updateSession(deleted, { metadata: null })).rejects.toBeInstanceOf(SessionNotFoundError);
      expect(await b.getSession(deleted)).toBeNull();
      for (const bad of [real.toUpperCase(), `${real} `, "../x", ""]) {
        await expect(b.updateSession(bad, { metadata: { v: 3 } }), bad).rejects.toBeInstanceOf(SessionNotFoundError);
      }
      expectField(await rejection(b.updateSession(42 as never, { metadata: null })), "sessionId");
      expect(await b.listSessions(agent)).toStrictEqual([await b.getSession(real)]);
      expect((await b.getSession(real))?.metadata).toStrictEqual({ v: 1 });
    });

    it.each([
      ["a Date", () => new Date(), "patch.metadata"],
      ["an array", () => ["cwd"], "patch.metadata"],
      ["a string", () => "meta", "patch.metadata"],
      ["a cwd with NUL", () => ({ cwd: "/a\u0000b" }), "patch.metadata.cwd"],
      ["NaN inside", () => ({ deep: [{ n: Number.NaN }] }), "patch.metadata.deep[0].n"],
      ["a function inside", () => ({ f: () => 1 }), "patch.metadata.f"],
    ])("bad metadata (%s) is a ValidationError, nothing written", async (_label, make, field) => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock("2036-04-01T00:00:00.000Z");
      const id = await b.createSession(agent, { cwd: "/kept", v: 1 });
      const before = await snapshot(b, id, [agent]);
      freezeClock("2036-04-01T00:00:09.000Z");
      expectField(await rejection(b.updateSession(id, { metadata: make() as never })), field);
      expect(await snapshot(b, id, [agent])).toStrictEqual(before);
    });

    it("a patch without metadata, with other keys or not an object is a ValidationError", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock("2036-05-01T00:00:00.000Z");
      const id = await b.createSession(agent, { cwd: "/kept" });
      const before = await snapshot(b, id, [agent]);
      freezeClock("2036-05-01T00:00:09.000Z");
      const patches: Array<[unknown, string]> = [
        [{}, "patch.metadata"],
        [{ metadata: undefined }, "patch.metadata"],
        [{ metadata: null, cwd: "/x" }, "patch"],
        [{ metadata: { cwd: "/x" }, agent_id: "someone" }, "patch"],
        [null, "patch"],
        [undefined, "patch"],
        ["metadata", "patch"],
        [[{ metadata: null }], "patch"],
      ];
      for (const [patch, field] of patches) {
        const error = await rejection(b.updateSession(id, patch as never));
        expect(error, JSON.stringify(patch)).toBeInstanceOf(ValidationError);
        expect((error as ValidationError).field, JSON.stringify(patch)).toBe(field);
      }
      expect(await snapshot(b, id, [agent])).toStrictEqual(before);
    });
  });
}
