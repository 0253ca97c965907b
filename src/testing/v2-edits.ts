import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { StorageBackend } from "../core/backend.js";
import { ConflictError, SessionExistsError, SessionNotFoundError } from "../core/errors.js";
import type { MessageRecord, SessionRecord } from "../core/types.js";
import { agentId, expectField, freezeClock, rejection, type SuiteContext, thrown, unknownId } from "./context.js";
import { hostileIds } from "./hostile.js";
import { badCounts, contents, expectConflict, numbered, say, sessionWith, state, T } from "./v2-paging.js";

/**
 * Another backend on the same store, as another process would be, when `create` shares one (a server, a
 * database file); `b` itself when each backend is a store of its own (Memory, a fresh directory).
 */
export async function otherWriter(ctx: SuiteContext, b: StorageBackend, id: string): Promise<StorageBackend> {
  const other = await ctx.backend();
  return (await other.getSession(id)) ? other : b;
}

export function v2EditTests(ctx: SuiteContext): void {
  describe("replaceMessages and popMessage", () => {
    it("replaces a suffix: kept messages keep their timestamps, new ones share one, updated_at moves to now", async () => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await sessionWith(b, 3);
      freezeClock(T(2));
      await b.saveMessages(id, [say("m3")]);
      freezeClock(T(3));
      expect(await b.replaceMessages(id, 2, [say("x", "assistant"), say({ y: [1] }, "tool")])).toEqual({ length: 4 });
      expect(await b.loadMessages(id)).toStrictEqual([
        { role: "user", content: "m0", timestamp: T(1) },
        { role: "user", content: "m1", timestamp: T(1) },
        { role: "assistant", content: "x", timestamp: T(3) },
        { role: "tool", content: { y: [1] }, timestamp: T(3) },
      ]);
      expect(await b.countMessages(id)).toBe(4);
      expect(await b.getSession(id)).toMatchObject({ created_at: T(1), updated_at: T(3) });
      freezeClock(T(4));
      expect(await b.replaceMessages(id, 4, [say("z")])).toEqual({ length: 5 });
      expect(contents(await b.loadMessages(id, { last: 2 }))).toEqual([{ y: [1] }, "z"]);
      expect((await b.getSession(id))?.updated_at).toBe(T(4));
    });

    it("truncates with an empty list and replaces the whole history from 0; a no-op edit writes nothing", async () => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await sessionWith(b, 5);
      const all = await b.loadMessages(id);
      freezeClock(T(2));
      expect(await b.replaceMessages(id, 3, [])).toEqual({ length: 3 });
      expect(await b.loadMessages(id)).toStrictEqual(all.slice(0, 3));
      expect((await b.getSession(id))?.updated_at).toBe(T(2));
      freezeClock(T(3));
      expect(await b.replaceMessages(id, 0, [say("p", "system"), say("q")])).toEqual({ length: 2 });
      expect(await b.loadMessages(id)).toStrictEqual([
        { role: "system", content: "p", timestamp: T(3) },
        { role: "user", content: "q", timestamp: T(3) },
      ]);
      freezeClock(T(4));
      expect(await b.replaceMessages(id, 0, [])).toEqual({ length: 0 });
      const emptied = await state(b, id);
      expect(emptied).toMatchObject({ count: 0, messages: [], record: { created_at: T(1), updated_at: T(4) } });
      freezeClock(T(5));
      expect(await b.replaceMessages(id, 0, [])).toEqual({ length: 0 });
      expect(await state(b, id)).toStrictEqual(emptied);
    });

    it("never moves updated_at back, and raises appended messages to it when the clock is behind", async () => {
      const b = await ctx.backend();
      freezeClock(T(10));
      const id = await sessionWith(b, 3);
      freezeClock(T(5));
      expect(await b.replaceMessages(id, 1, [say("x")])).toEqual({ length: 2 });
      expect((await b.loadMessages(id)).map((m) => [m.content, m.timestamp])).toEqual([
        ["m0", T(10)],
        ["x", T(10)],
      ]);
      expect((await b.getSession(id))?.updated_at).toBe(T(10));
      await b.replaceMessages(id, 1, []);
      expect((await b.getSession(id))?.updated_at).toBe(T(10));
      expect(await b.popMessage(id)).toStrictEqual({ role: "user", content: "m0", timestamp: T(10) });
      expect((await b.getSession(id))?.updated_at).toBe(T(10));
    });

    it("fails with ValidationError (field from) when from is beyond the length, writing nothing", async () => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await sessionWith(b, 3);
      const before = await state(b, id);
      freezeClock(T(2));
      expectField(await rejection(b.replaceMessages(id, 4, [say("x")])), "from");
      expectField(await rejection(b.replaceMessages(id, 4, [])), "from");
      expectField(await rejection(b.replaceMessages(id, 1000, [say("x")], { expectedLength: 3 })), "from");
      expect(await state(b, id)).toStrictEqual(before);
      const empty = await b.createSession(agentId());
      expectField(await rejection(b.replaceMessages(empty, 1, [])), "from");
      expect(await b.countMessages(empty)).toBe(0);
    });

    it("popMessage removes and returns the last message as a three-key record; null when empty, writing nothing", async () => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await b.createSession(agentId());
      await b.saveMessages(id, [say("a")]);
      freezeClock(T(2));
      await b.saveMessages(id, [say({ b: true }, "assistant")]);
      freezeClock(T(3));
      const popped = await b.popMessage(id);
      expect(popped).toStrictEqual({ role: "assistant", content: { b: true }, timestamp: T(2) });
      expect(Object.getPrototypeOf(popped)).toBe(Object.prototype);
      expect(await b.countMessages(id)).toBe(1);
      expect((await b.getSession(id))?.updated_at).toBe(T(3));
      expect(await b.popMessage(id)).toStrictEqual({ role: "user", content: "a", timestamp: T(1) });
      const emptied = await state(b, id);
      freezeClock(T(4));
      expect(await b.popMessage(id)).toBeNull();
      expect(await state(b, id)).toStrictEqual(emptied);
      await b.saveMessages(id, [say("c")]);
      expect(await b.loadMessages(id)).toStrictEqual([{ role: "user", content: "c", timestamp: T(4) }]);
    });

    it("fails with SessionNotFoundError for unknown, deleted and hostile ids", async () => {
      const b = await ctx.backend();
      const gone = await sessionWith(b, 1);
      await b.deleteSession(gone);
      for (const id of [unknownId(), gone, ...hostileIds]) {
        await expect(b.replaceMessages(id, 0, [say("x")])).rejects.toBeInstanceOf(SessionNotFoundError);
        await expect(b.popMessage(id)).rejects.toBeInstanceOf(SessionNotFoundError);
        await expect(b.popMessage(id, { idempotencyKey: "k" })).rejects.toBeInstanceOf(SessionNotFoundError);
        await expect(b.saveMessages(id, [say("x")], { expectedLength: 0 })).rejects.toBeInstanceOf(
          SessionNotFoundError,
        );
        await expect(b.saveMessages(id, [], { idempotencyKey: "k" })).rejects.toBeInstanceOf(SessionNotFoundError);
      }
      expect(await b.getSession(gone)).toBeNull();
    });

    it("moves the session in its agent's listings when an edit moves updated_at", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock(T(1));
      const a = await sessionWith(b, 2, agent);
      await b.updateSession(a, { metadata: { cwd: "/w" } });
      freezeClock(T(2));
      const c = await b.createSession(agent, { cwd: "/w" });
      await b.saveMessages(c, numbered(2));
      const order = async (cwd?: string) =>
        (await b.listSessions(agent, cwd === undefined ? {} : { cwd })).map((s) => s.session_id);
      expect(await order()).toEqual([c, a]);
      freezeClock(T(3));
      await b.replaceMessages(a, 1, []);
      expect(await order()).toEqual([a, c]);
      expect(await order("/w")).toEqual([a, c]);
      freezeClock(T(4));
      await b.popMessage(c);
      expect(await order()).toEqual([c, a]);
      expect(await order("/w")).toEqual([c, a]);
      freezeClock(T(5));
      await b.replaceMessages(a, 0, [say("new")]);
      const [first] = (await b.listSessions(agent, { limit: 1 })) as [SessionRecord];
      expect(first).toMatchObject({ session_id: a, updated_at: T(5) });
      expect((await b.listSessions(agent, { before: first })).map((s) => s.session_id)).toEqual([c]);
    });
  });

  describe("compare-and-swap: expectedLength", () => {
    it("writes only at the expected length; otherwise ConflictError with both lengths, nothing written", async () => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await b.createSession(agentId());
      expect(await b.saveMessages(id, numbered(2), { expectedLength: 0 })).toEqual({ length: 2 });
      expect(await b.saveMessages(id, [say("m2")], { expectedLength: 2 })).toEqual({ length: 3 });
      expect(await b.saveMessages(id, [], { expectedLength: 3 })).toEqual({ length: 3 });
      const before = await state(b, id);
      freezeClock(T(2));
      expectConflict(await rejection(b.saveMessages(id, [say("late")], { expectedLength: 2 })), 2, 3);
      expectConflict(await rejection(b.saveMessages(id, [], { expectedLength: 4 })), 4, 3);
      expectConflict(await rejection(b.replaceMessages(id, 0, [say("x")], { expectedLength: 0 })), 0, 3);
      expectConflict(await rejection(b.replaceMessages(id, 3, [], { expectedLength: 2 })), 2, 3);
      expectConflict(await rejection(b.popMessage(id, { expectedLength: 4 })), 4, 3);
      expect(await state(b, id)).toStrictEqual(before);
      expect(await b.replaceMessages(id, 1, [say("r")], { expectedLength: 3 })).toEqual({ length: 2 });
      expect(await b.popMessage(id, { expectedLength: 2 })).toMatchObject({ content: "r" });
      expect(contents(await b.loadMessages(id))).toEqual(["m0"]);
      const empty = await b.createSession(agentId());
      expect(await b.popMessage(empty, { expectedLength: 0 })).toBeNull();
      expectConflict(await rejection(b.popMessage(empty, { expectedLength: 1 })), 1, 0);
    });

    it("two writers running compare-and-swap loops on one session lose nothing", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const writers = [b, await otherWriter(ctx, b, id)];
      const batches = 25;
      await Promise.all(
        writers.map(async (w, writer) => {
          for (let i = 0; i < batches; i++) {
            const batch = [say({ writer, i, part: 0 }), say({ writer, i, part: 1 }, "assistant")];
            for (let attempt = 0; ; attempt++) {
              expect(attempt).toBeLessThan(1000);
              const length = await w.countMessages(id);
              try {
                expect(await w.saveMessages(id, batch, { expectedLength: length })).toEqual({ length: length + 2 });
                break;
              } catch (error) {
                if (!(error instanceof ConflictError)) throw error;
                expect(error.expectedLength).toBe(length);
                expect(error.actualLength).toBeGreaterThan(length);
              }
            }
          }
        }),
      );
      const messages = await b.loadMessages(id);
      expect(messages).toHaveLength(writers.length * batches * 2);
      expect(await b.countMessages(id)).toBe(messages.length);
      const parts = messages.map((m) => m.content as { writer: number; i: number; part: number });
      for (let p = 0; p < parts.length; p += 2) {
        expect(parts[p]?.part).toBe(0);
        expect(parts[p + 1]).toEqual({ ...parts[p], part: 1 });
      }
      for (const writer of [0, 1]) {
        const mine = parts.filter((c) => c.writer === writer && c.part === 0).map((c) => c.i);
        expect(mine).toEqual(Array.from({ length: batches }, (_, i) => i));
      }
    });

    it("a pop racing appends loses nothing but the popped messages", async () => {
      const b = await ctx.backend();
      const id = await sessionWith(b, 10);
      const other = await otherWriter(ctx, b, id);
      const popped: Array<MessageRecord | null> = [];
      await Promise.all([
        (async () => {
          for (let i = 0; i < 20; i++) await b.saveMessages(id, [say(`a${i}`)]);
        })(),
        (async () => {
          for (let i = 0; i < 10; i++) popped.push(await other.popMessage(id));
        })(),
      ]);
      const appended = [...numbered(10), ...Array.from({ length: 20 }, (_, i) => say(`a${i}`))].map((m) => m.content);
      expect(popped.every((m) => m !== null && Object.keys(m).sort().join() === "content,role,timestamp")).toBe(true);
      const left = contents(await b.loadMessages(id));
      expect(left).toHaveLength(20);
      expect(await b.countMessages(id)).toBe(20);
      const everything = [...left, ...popped.map((m) => m?.content)];
      expect(new Set(everything).size).toBe(30);
      expect(everything.sort()).toEqual([...appended].sort());
      expect(left).toEqual(appended.filter((c) => left.includes(c)));
    });
  });

  describe("bad edit input is a ValidationError naming the field, with nothing written", () => {
    it.each(badCounts)("from, expectedLength and a fork's length: %s", async (_label, bad) => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock(T(1));
      const id = await sessionWith(b, 2, agent);
      const before = await state(b, id);
      freezeClock(T(2));
      const n = bad as number;
      expectField(await rejection(b.replaceMessages(id, n, [say("x")])), "from");
      expectField(await rejection(b.replaceMessages(unknownId(), n, [])), "from");
      const writes = [
        () => b.saveMessages(id, [say("x")], { expectedLength: n }),
        () => b.saveMessages(id, [], { expectedLength: n, idempotencyKey: "k" }),
        () => b.replaceMessages(id, 0, [say("x")], { expectedLength: n }),
        () => b.popMessage(id, { expectedLength: n }),
      ];
      for (const write of writes) expectField(await rejection(write()), "options.expectedLength");
      expectField(await rejection(b.forkSession(id, { length: n })), "options.length");
      expect(await state(b, id)).toStrictEqual(before);
      expect(await b.listSessions(agent)).toHaveLength(1);
    });

    it("unknown option keys, options that are not objects, a missing from and bad messages in a replacement", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock(T(1));
      const id = await sessionWith(b, 3, agent);
      const before = await state(b, id);
      freezeClock(T(2));
      const calls: Array<[() => Promise<unknown>, string]> = [
        [() => b.saveMessages(id, [say("x")], { expectedlength: 3 } as never), "options"],
        [() => b.replaceMessages(id, 0, [], { key: "k" } as never), "options"],
        [() => b.popMessage(id, { idempotency_key: "k" } as never), "options"],
        [() => b.popMessage(id, "k" as never), "options"],
        [() => b.saveMessages(id, [], 3 as never), "options"],
        [() => b.forkSession(id, { len: 1 } as never), "options"],
        [() => b.forkSession(id, [] as never), "options"],
        [() => b.replaceMessages(id, undefined as never, []), "from"],
        [
          () => b.replaceMessages(id, 0, [say("good"), { role: "user", content: undefined } as never]),
          "messages[1].content",
        ],
        [() => b.replaceMessages(id, 1, [{ role: "bot", content: "x" } as never]), "messages[0].role"],
        [() => b.replaceMessages(id, 1, "x" as never), "messages"],
      ];
      for (const [call, field] of calls) expectField(await rejection(call()), field);
      expect(await state(b, id)).toStrictEqual(before);
      expect(await b.listSessions(agent)).toHaveLength(1);
    });
  });
}

export function v2EditSyncTests(ctx: SuiteContext): void {
  // No frozen clock here: a backend whose sync twin runs on a worker thread stamps times with that thread's clock.
  describe("...Sync twins of the edits", () => {
    it("saveMessagesSync with options, replaceMessagesSync, popMessageSync and forkSessionSync with options", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = b.createSessionSync(agent, { cwd: "/s" });
      const options = { expectedLength: 0, idempotencyKey: "s" };
      expect(b.saveMessagesSync(id, numbered(3), options)).toEqual({ length: 3 });
      expect(await b.saveMessages(id, numbered(3), options)).toEqual({ length: 3 });
      expect(b.saveMessagesSync(id, numbered(3), options)).toEqual({ length: 3 });
      const saved = await b.loadMessages(id);
      expect(b.replaceMessagesSync(id, 1, [say("r", "tool")], { expectedLength: 3 })).toEqual({ length: 2 });
      const replaced = await b.loadMessages(id);
      expect(replaced[0]).toStrictEqual(saved[0]);
      expect(replaced[1]).toMatchObject({ role: "tool", content: "r" });
      expect(b.loadMessagesSync(id)).toStrictEqual(replaced);
      const popped = b.popMessageSync(id, { idempotencyKey: "p" });
      expect(popped).toStrictEqual(replaced[1]);
      expect(await b.popMessage(id, { idempotencyKey: "p" })).toStrictEqual(popped);
      expect(b.popMessageSync(id, { idempotencyKey: "p" })).toStrictEqual(popped);
      expect(b.countMessagesSync(id)).toBe(1);
      const chosen = randomUUID();
      expect(b.forkSessionSync(id, { length: 1, sessionId: chosen, metadata: { cwd: "/f" } })).toBe(chosen);
      expect(await b.getSession(chosen)).toMatchObject({
        session_id: chosen,
        agent_id: agent,
        metadata: { cwd: "/f" },
      });
      expect(b.loadMessagesSync(chosen)).toStrictEqual(await b.loadMessages(id));
      expect(b.forkSessionSync(id, { length: 0 })).not.toBe(chosen);
      expect(b.replaceMessagesSync(chosen, 0, [])).toEqual({ length: 0 });
      expect(b.popMessageSync(chosen)).toBeNull();
      expect((await b.listSessions(agent, { cwd: "/f" })).map((s) => s.session_id)).toEqual([chosen]);
      expect(await b.listSessions(agent)).toHaveLength(3);
    });

    it("throw the same error classes: ConflictError with both lengths, ValidationError with the field", async () => {
      const b = await ctx.backend();
      const id = await sessionWith(b, 2);
      await b.saveMessages(id, [say("k")], { idempotencyKey: "k" });
      const before = await state(b, id);
      expectConflict(
        thrown(() => b.saveMessagesSync(id, [say("x")], { expectedLength: 1 })),
        1,
        3,
      );
      expectConflict(
        thrown(() => b.replaceMessagesSync(id, 0, [], { expectedLength: 7 })),
        7,
        3,
      );
      expectConflict(
        thrown(() => b.popMessageSync(id, { expectedLength: 0 })),
        0,
        3,
      );
      expectConflict(thrown(() => b.popMessageSync(id, { idempotencyKey: "k" })));
      expectField(
        thrown(() => b.replaceMessagesSync(id, 4, [])),
        "from",
      );
      expectField(
        thrown(() => b.replaceMessagesSync(id, -1, [])),
        "from",
      );
      expectField(
        thrown(() => b.saveMessagesSync(id, [], { expectedLength: 1.5 })),
        "options.expectedLength",
      );
      expectField(
        thrown(() => b.popMessageSync(id, { idempotencyKey: "" })),
        "options.idempotencyKey",
      );
      expectField(
        thrown(() => b.forkSessionSync(id, { length: 4 })),
        "options.length",
      );
      expectField(
        thrown(() => b.forkSessionSync(id, { sessionId: `${id.slice(0, -1)}A` })),
        "options.sessionId",
      );
      const taken = thrown(() => b.forkSessionSync(id, { sessionId: id }));
      expect(taken).toBeInstanceOf(SessionExistsError);
      expect((taken as SessionExistsError).sessionId).toBe(id);
      expect(() => b.popMessageSync(unknownId())).toThrow(SessionNotFoundError);
      expect(() => b.replaceMessagesSync(unknownId(), 0, [])).toThrow(SessionNotFoundError);
      expect(() => b.saveMessagesSync(unknownId(), [], { expectedLength: 0 })).toThrow(SessionNotFoundError);
      expect(await state(b, id)).toStrictEqual(before);
    });
  });
}
