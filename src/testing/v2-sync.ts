import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { AgentixStorageError, SessionExistsError, SessionNotFoundError, ValidationError } from "../core/errors.js";
import type { NewMessage } from "../core/types.js";
import { agentId, expectField, rejection, type SuiteContext, thrown, unknownId } from "./context.js";

/** What must agree between a sync error and its async twin's: the class, the field, the id. */
function shape(error: unknown) {
  expect(error).toBeInstanceOf(AgentixStorageError);
  const e = error as Partial<ValidationError & SessionNotFoundError>;
  return { name: e.name, field: e.field, sessionId: e.sessionId };
}

// These tests never freeze the clock: on a worker twin, the time is the worker's.
export function v2SyncTests(ctx: SuiteContext): void {
  describe("...Sync twins of the v2 methods agree with the async methods", () => {
    it("createSessionSync with a sessionId and openSessionSync", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = randomUUID();
      expect(b.createSessionSync(agent, { cwd: "/sync2" }, { sessionId: id })).toBe(id);
      const record = await b.getSession(id);
      expect(record).toMatchObject({ session_id: id, agent_id: agent, metadata: { cwd: "/sync2" } });
      expect(b.getSessionSync(id)).toStrictEqual(record);
      const existing = b.openSessionSync(agent, id, { cwd: "/other" });
      expect(existing).toStrictEqual({ created: false, session: record });
      expect(existing).toStrictEqual(await b.openSession(agent, id, { cwd: "/other" }));
      const fresh = randomUUID();
      const opened = b.openSessionSync(agent, fresh, { n: 1 });
      expect(opened.created).toBe(true);
      expect(opened.session).toMatchObject({ session_id: fresh, agent_id: agent, metadata: { n: 1 } });
      expect(opened.session.created_at).toBe(opened.session.updated_at);
      expect(await b.getSession(fresh)).toStrictEqual(opened.session);
      expect(b.openSessionSync(agent, fresh)).toStrictEqual({ created: false, session: opened.session });
      expect(b.listSessionsSync(agent)).toHaveLength(2);
      expect(b.listSessionsSync(agent, { cwd: "/sync2" }).map((s) => s.session_id)).toEqual([id]);
    });

    it("updateSessionSync, saveMessagesSync and countMessagesSync", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = b.createSessionSync(agent, { cwd: "/before" });
      expect(b.countMessagesSync(id)).toBe(0);
      const batch: NewMessage[] = [
        { role: "user", content: "q" },
        { role: "assistant", content: [{ type: "tool_use", id: "t" }] },
        { role: "tool", content: { out: "\u0000\ud800" } },
      ];
      expect(b.saveMessagesSync(id, batch)).toStrictEqual({ length: 3 });
      expect(b.saveMessagesSync(id, [])).toStrictEqual({ length: 3 });
      b.saveMessageSync(id, "tool", "single");
      expect(await b.saveMessages(id, [{ role: "user", content: "async" }])).toStrictEqual({ length: 5 });
      expect(b.countMessagesSync(id)).toBe(5);
      expect(await b.countMessages(id)).toBe(5);
      const loaded = await b.loadMessages(id);
      expect(b.loadMessagesSync(id)).toStrictEqual(loaded);
      expect(loaded.slice(0, 3).map((m) => ({ role: m.role, content: m.content }))).toStrictEqual(batch);
      expect(new Set(loaded.slice(0, 3).map((m) => m.timestamp)).size).toBe(1);
      const updated = b.updateSessionSync(id, { metadata: { cwd: "/after", v: 2 } });
      expect(updated).toStrictEqual(await b.getSession(id));
      expect(updated.metadata).toStrictEqual({ cwd: "/after", v: 2 });
      expect(b.getSessionSync(id)).toStrictEqual(updated);
      expect(b.listSessionsSync(agent, { cwd: "/before" })).toEqual([]);
      expect(b.listSessionsSync(agent, { cwd: "/after" })).toStrictEqual([updated]);
      expect(b.updateSessionSync(id, { metadata: null }).metadata).toBeNull();
      const fork = b.forkSessionSync(id);
      expect(b.countMessagesSync(fork)).toBe(5);
    });

    it("throw the same error classes, fields and ids as the async methods, writing nothing", async () => {
      const b = await ctx.backend();
      const owner = agentId();
      const intruder = agentId("intruder");
      const id = await b.createSession(owner, { cwd: "/kept" }, { sessionId: randomUUID() });
      await b.saveMessage(id, "user", "kept");
      const record = await b.getSession(id);
      const ghost = unknownId();
      const bad = [
        { role: "user", content: "ok" },
        { role: "user", content: "ok" },
        { role: "Tool", content: "x" },
      ];
      const cases: Array<[string, () => unknown, () => Promise<unknown>, { name: string; field?: string }]> = [
        [
          "createSession: taken",
          () => b.createSessionSync(intruder, null, { sessionId: id }),
          () => b.createSession(intruder, null, { sessionId: id }),
          { name: "SessionExistsError" },
        ],
        [
          "createSession: bad id",
          () => b.createSessionSync(owner, null, { sessionId: id.toUpperCase() }),
          () => b.createSession(owner, null, { sessionId: id.toUpperCase() }),
          { name: "ValidationError", field: "options.sessionId" },
        ],
        [
          "openSession: another agent's",
          () => b.openSessionSync(intruder, id, { cwd: "/x" }),
          () => b.openSession(intruder, id, { cwd: "/x" }),
          { name: "SessionExistsError" },
        ],
        [
          "openSession: bad id",
          () => b.openSessionSync(owner, `{${id}}`),
          () => b.openSession(owner, `{${id}}`),
          { name: "ValidationError", field: "sessionId" },
        ],
        [
          "updateSession: unknown",
          () => b.updateSessionSync(ghost, { metadata: null }),
          () => b.updateSession(ghost, { metadata: null }),
          { name: "SessionNotFoundError" },
        ],
        [
          "updateSession: bad metadata",
          () => b.updateSessionSync(id, { metadata: { n: Number.NaN } }),
          () => b.updateSession(id, { metadata: { n: Number.NaN } }),
          { name: "ValidationError", field: "patch.metadata.n" },
        ],
        [
          "saveMessages: bad message",
          () => b.saveMessagesSync(id, bad as never),
          () => b.saveMessages(id, bad as never),
          { name: "ValidationError", field: "messages[2].role" },
        ],
        [
          "saveMessages: unknown",
          () => b.saveMessagesSync(ghost, [{ role: "tool", content: "x" }]),
          () => b.saveMessages(ghost, [{ role: "tool", content: "x" }]),
          { name: "SessionNotFoundError" },
        ],
        [
          "countMessages: unknown",
          () => b.countMessagesSync(ghost),
          () => b.countMessages(ghost),
          { name: "SessionNotFoundError" },
        ],
        [
          "countMessages: not an id",
          () => b.countMessagesSync("../x"),
          () => b.countMessages("../x"),
          { name: "SessionNotFoundError" },
        ],
      ];
      const classes = { SessionExistsError, SessionNotFoundError, ValidationError };
      for (const [label, sync, async, expected] of cases) {
        const syncError = thrown(sync);
        expect(syncError, label).toBeInstanceOf(classes[expected.name as keyof typeof classes]);
        expect(shape(syncError), label).toStrictEqual(shape(await rejection(async())));
        expect(shape(syncError), label).toMatchObject(expected);
      }
      expect(
        (thrown(() => b.createSessionSync(intruder, null, { sessionId: id })) as SessionExistsError).sessionId,
      ).toBe(id);
      expect((thrown(() => b.countMessagesSync(ghost)) as SessionNotFoundError).sessionId).toBe(ghost);
      expect(await b.getSession(id)).toStrictEqual(record);
      expect(await b.countMessages(id)).toBe(1);
      expect(await b.getSession(ghost)).toBeNull();
      expect(await b.listSessions(intruder)).toEqual([]);
    });

    it("an argument that cannot cross to a worker thread is a ValidationError, not a clone error", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = b.createSessionSync(agent, { v: 1 });
      b.saveMessageSync(id, "user", "kept");
      const record = await b.getSession(id);
      const fresh = randomUUID();
      const fn = () => 1;
      const sym = Symbol("s");
      const cases: Array<[() => unknown, string]> = [
        [() => b.createSessionSync(agent, { f: fn } as never, { sessionId: fresh }), "metadata.f"],
        [() => b.createSessionSync(agent, null, { sessionId: fresh, f: fn } as never), "options"],
        [() => b.openSessionSync(agent, fresh, { s: sym } as never), "metadata.s"],
        [() => b.openSessionSync(agent, fn as never), "sessionId"],
        [() => b.updateSessionSync(id, { metadata: { f: fn } } as never), "patch.metadata.f"],
        [() => b.updateSessionSync(id, { metadata: null, f: fn } as never), "patch"],
        [() => b.saveMessagesSync(id, [{ role: "user", content: { s: sym } }] as never), "messages[0].content.s"],
        [() => b.saveMessagesSync(id, [{ role: "user", content: "x", f: fn }] as never), "messages[0]"],
        [() => b.saveMessagesSync(id, [{ role: sym, content: "x" }] as never), "messages[0].role"],
        [() => b.saveMessageSync(id, "tool", [fn] as never), "content[0]"],
        [() => b.countMessagesSync(sym as never), "sessionId"],
      ];
      for (const [call, field] of cases) expectField(thrown(call), field);
      expect(await b.getSession(fresh)).toBeNull();
      expect(await b.getSession(id)).toStrictEqual(record);
      expect(await b.countMessages(id)).toBe(1);
      expect(await b.listSessions(agent)).toHaveLength(1);
    });
  });
}
