import { describe, expect, it } from "vitest";
import type { StorageBackend } from "../core/backend.js";
import { ConflictError, SessionNotFoundError, ValidationError } from "../core/errors.js";
import type { JsonObject } from "../core/types.js";
import { agentId, expectField, freezeClock, rejection, type SuiteContext, unknownId } from "./context.js";
import { otherWriter } from "./v2-edits.js";
import { contents, expectConflict, numbered, say, sessionWith, state, T } from "./v2-paging.js";

/** The session ids of the agent's listing (of one cwd, when given). */
async function listed(b: StorageBackend, agent: string, cwd?: string): Promise<string[]> {
  return (await b.listSessions(agent, cwd === undefined ? {} : { cwd })).map((s) => s.session_id);
}

/** `metadata` on the edits: state kept beside a history, written in the history's atomic step. */
export function v2WriteMetadataTests(ctx: SuiteContext): void {
  describe("metadata written with the messages (the metadata write option)", () => {
    it("saveMessages, replaceMessages and popMessage replace the metadata with the write; the cwd listing follows", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock(T(1));
      const id = await b.createSession(agent, { cwd: "/a", n: 0 });
      freezeClock(T(2));
      expect(await b.saveMessages(id, numbered(2), { metadata: { cwd: "/b", n: 2 } })).toEqual({ length: 2 });
      expect(await b.getSession(id)).toMatchObject({
        created_at: T(1),
        updated_at: T(2),
        metadata: { cwd: "/b", n: 2 },
      });
      expect(await b.loadMessages(id)).toStrictEqual([
        { role: "user", content: "m0", timestamp: T(2) },
        { role: "user", content: "m1", timestamp: T(2) },
      ]);
      expect(await listed(b, agent, "/a")).toEqual([]);
      expect(await listed(b, agent, "/b")).toEqual([id]);
      freezeClock(T(3));
      expect(await b.replaceMessages(id, 1, [say("r", "tool")], { metadata: { n: 3 } })).toEqual({ length: 2 });
      expect(await b.getSession(id)).toMatchObject({ updated_at: T(3), metadata: { n: 3 } });
      expect(await listed(b, agent, "/b")).toEqual([]);
      expect(await listed(b, agent)).toEqual([id]);
      freezeClock(T(4));
      expect(await b.popMessage(id, { metadata: { cwd: "/c", nested: { deep: [1, "x", null] } } })).toMatchObject({
        content: "r",
      });
      expect(await b.getSession(id)).toMatchObject({
        updated_at: T(4),
        metadata: { cwd: "/c", nested: { deep: [1, "x", null] } },
      });
      expect(await listed(b, agent, "/c")).toEqual([id]);
      freezeClock(T(5));
      expect(await b.saveMessages(id, [say("z")], { metadata: null })).toEqual({ length: 2 });
      expect((await b.getSession(id))?.metadata).toBeNull();
      expect(await listed(b, agent, "/c")).toEqual([]);
      expect(contents(await b.loadMessages(id))).toEqual(["m0", "z"]);
    });

    it("a write that leaves the list as it was still replaces the metadata and moves updated_at", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock(T(1));
      const id = await sessionWith(b, 2, agent);
      const other = await b.createSession(agent);
      freezeClock(T(2));
      expect(await b.saveMessages(id, [], { metadata: { step: 1 } })).toEqual({ length: 2 });
      expect(await b.getSession(id)).toMatchObject({ updated_at: T(2), metadata: { step: 1 } });
      expect(await listed(b, agent)).toEqual([id, other]);
      freezeClock(T(3));
      expect(await b.replaceMessages(id, 2, [], { metadata: { step: 2 } })).toEqual({ length: 2 });
      expect(await b.getSession(id)).toMatchObject({ updated_at: T(3), metadata: { step: 2 } });
      const empty = await b.createSession(agent);
      freezeClock(T(4));
      expect(await b.popMessage(empty, { metadata: { step: 3 } })).toBeNull();
      expect(await b.getSession(empty)).toMatchObject({ updated_at: T(4), metadata: { step: 3 } });
      expect(await listed(b, agent)).toEqual([empty, id, other]);
      // Never backwards: a clock behind leaves updated_at, and stamps the messages with it.
      freezeClock(T(1));
      expect(await b.saveMessages(id, [say("late")], { metadata: { step: 4 } })).toEqual({ length: 3 });
      expect(await b.getSession(id)).toMatchObject({ updated_at: T(3), metadata: { step: 4 } });
      expect((await b.loadMessages(id, { last: 1 }))[0]?.timestamp).toBe(T(3));
      expect(contents(await b.loadMessages(id))).toEqual(["m0", "m1", "late"]);
    });

    it("nothing is written on a ConflictError, an out-of-range from or an unknown session", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock(T(1));
      const id = await b.createSession(agent, { cwd: "/keep" });
      await b.saveMessages(id, numbered(3));
      const before = await state(b, id);
      freezeClock(T(2));
      const metadata = { cwd: "/moved" };
      expectConflict(await rejection(b.saveMessages(id, [say("x")], { expectedLength: 2, metadata })), 2, 3);
      expectConflict(await rejection(b.saveMessages(id, [], { expectedLength: 4, metadata })), 4, 3);
      expectConflict(await rejection(b.replaceMessages(id, 0, [], { expectedLength: 0, metadata })), 0, 3);
      expectConflict(await rejection(b.popMessage(id, { expectedLength: 1, metadata })), 1, 3);
      expectField(await rejection(b.replaceMessages(id, 4, [say("x")], { metadata })), "from");
      expect(await state(b, id)).toStrictEqual(before);
      expect(await listed(b, agent, "/moved")).toEqual([]);
      expect(await listed(b, agent, "/keep")).toEqual([id]);
      await b.deleteSession(id);
      for (const target of [id, unknownId()]) {
        expect(await rejection(b.saveMessages(target, [say("x")], { metadata }))).toBeInstanceOf(SessionNotFoundError);
        expect(await rejection(b.popMessage(target, { metadata }))).toBeInstanceOf(SessionNotFoundError);
      }
      expect(await b.getSession(id)).toBeNull();
      expect(await listed(b, agent)).toEqual([]);
    });

    it("bad metadata is a ValidationError naming options.metadata, with nothing written", async () => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await b.createSession(agentId(), { cwd: "/w" });
      await b.saveMessages(id, numbered(2));
      const before = await state(b, id);
      freezeClock(T(2));
      let deep: unknown = 1;
      for (let i = 0; i < 600; i++) deep = [deep];
      const bad: Array<[unknown, string]> = [
        [[], "options.metadata"],
        ["text", "options.metadata"],
        [new Date(0), "options.metadata"],
        [{ cwd: "a\u0000b" }, "options.metadata.cwd"],
        [{ n: Number.NaN }, "options.metadata.n"],
        [{ big: 1n }, "options.metadata.big"],
        [{ deep }, "options.metadata.deep"],
      ];
      for (const [metadata, field] of bad) {
        const options = { metadata } as unknown as { metadata: JsonObject };
        for (const write of [
          () => b.saveMessages(id, [say("x")], options),
          () => b.replaceMessages(id, 0, [], options),
          () => b.popMessage(id, options),
        ]) {
          const error = await rejection(write());
          expect(error).toBeInstanceOf(ValidationError);
          expect((error as ValidationError).field.startsWith(field)).toBe(true);
        }
      }
      expect(await state(b, id)).toStrictEqual(before);
    });

    it("an idempotency key remembers the metadata: a replay writes nothing, other metadata is a ConflictError", async () => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await b.createSession(agentId(), { v: 0 });
      const write = { idempotencyKey: "with-meta", metadata: { v: 1 } };
      expect(await b.saveMessages(id, [say("a")], write)).toEqual({ length: 1 });
      freezeClock(T(2));
      await b.updateSession(id, { metadata: { v: 2 } });
      const after = await state(b, id);
      freezeClock(T(3));
      // The replay returns the first result and does not put back the metadata it carried.
      expect(await b.saveMessages(id, [say("a")], write)).toEqual({ length: 1 });
      expect(await state(b, id)).toStrictEqual(after);
      for (const options of [{ metadata: { v: 3 } }, { metadata: null }, {}]) {
        const error = await rejection(b.saveMessages(id, [say("a")], { idempotencyKey: "with-meta", ...options }));
        expect(error).toBeInstanceOf(ConflictError);
      }
      // A key remembered without metadata is still matched by its retry without it.
      expect(await b.saveMessages(id, [say("b")], { idempotencyKey: "plain" })).toEqual({ length: 2 });
      expect(await b.saveMessages(id, [say("b")], { idempotencyKey: "plain" })).toEqual({ length: 2 });
      const error = await rejection(b.saveMessages(id, [say("b")], { idempotencyKey: "plain", metadata: { v: 2 } }));
      expect(error).toBeInstanceOf(ConflictError);
      expect(await b.countMessages(id)).toBe(2);
      expect((await b.getSession(id))?.metadata).toEqual({ v: 2 });
    });

    it("writers folding a summary into the metadata with compare-and-swap never lose a fold", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId(), { folded: 0, writers: [] });
      const writers = [b, await otherWriter(ctx, b, id)];
      const batches = 20;
      await Promise.all(
        writers.map(async (w, writer) => {
          for (let i = 0; i < batches; i++) {
            for (let attempt = 0; ; attempt++) {
              expect(attempt).toBeLessThan(1000);
              // Read the summary, then the length: a summary newer than the length fails the swap below.
              const summary = (await w.getSession(id))?.metadata as { folded: number; writers: number[] };
              const length = await w.countMessages(id);
              if (summary.folded !== length) continue;
              const metadata = { folded: length + 2, writers: [...summary.writers, writer] };
              try {
                await w.saveMessages(id, [say({ writer, i }), say({ writer, i }, "assistant")], {
                  expectedLength: length,
                  metadata,
                });
                break;
              } catch (error) {
                if (!(error instanceof ConflictError)) throw error;
              }
            }
          }
        }),
      );
      const messages = await b.loadMessages(id);
      expect(messages).toHaveLength(writers.length * batches * 2);
      const summary = (await b.getSession(id))?.metadata as { folded: number; writers: number[] };
      expect(summary.folded).toBe(messages.length);
      const authors = messages.filter((_, p) => p % 2 === 0).map((m) => (m.content as { writer: number }).writer);
      expect(summary.writers).toEqual(authors);
    });
  });
}

/** The same on the `...Sync` twins. */
export function v2WriteMetadataSyncTests(ctx: SuiteContext): void {
  describe("...Sync twins of the writes with metadata", () => {
    it("saveMessagesSync, replaceMessagesSync and popMessageSync write the metadata, and refuse bad metadata", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = b.createSessionSync(agent, { cwd: "/s" });
      expect(b.saveMessagesSync(id, numbered(2), { metadata: { cwd: "/t", n: 2 } })).toEqual({ length: 2 });
      expect(await b.getSession(id)).toMatchObject({ metadata: { cwd: "/t", n: 2 } });
      expect(b.replaceMessagesSync(id, 1, [], { expectedLength: 2, metadata: { n: 1 } })).toEqual({ length: 1 });
      expect(b.popMessageSync(id, { metadata: { cwd: "/u" } })).toMatchObject({ content: "m0" });
      expect(b.getSessionSync(id)?.metadata).toEqual({ cwd: "/u" });
      expect(await listed(b, agent, "/u")).toEqual([id]);
      const before = await state(b, id);
      expect(() => b.saveMessagesSync(id, [say("x")], { expectedLength: 5, metadata: { n: 9 } })).toThrow(
        ConflictError,
      );
      try {
        b.saveMessagesSync(id, [say("x")], { metadata: [] as unknown as JsonObject });
        expect.unreachable();
      } catch (error) {
        expectField(error, "options.metadata");
      }
      expect(await state(b, id)).toStrictEqual(before);
    });
  });
}
