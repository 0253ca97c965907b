import { describe, expect, it } from "vitest";
import { ConflictError } from "../core/errors.js";
import { agentId, expectField, freezeClock, rejection, type SuiteContext } from "./context.js";
import { contents, expectConflict, say, sessionWith, state, T } from "./v2-paging.js";

export function v2KeyTests(ctx: SuiteContext): void {
  describe("idempotency keys", () => {
    it("a retry with the same key and arguments returns the first result and writes nothing, even after changes", async () => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await b.createSession(agentId());
      const first = [say("a"), say({ b: [1, "x"] }, "assistant")];
      expect(await b.saveMessages(id, first, { idempotencyKey: "save-1" })).toEqual({ length: 2 });
      const saved = await state(b, id);
      freezeClock(T(2));
      expect(await b.saveMessages(id, first, { idempotencyKey: "save-1" })).toEqual({ length: 2 });
      expect(await state(b, id)).toStrictEqual(saved);
      await b.saveMessages(id, [say("c")]);
      expect(await b.saveMessages(id, first, { idempotencyKey: "save-1" })).toEqual({ length: 2 });
      freezeClock(T(3));
      const cas = { expectedLength: 3, idempotencyKey: "cas-1" };
      expect(await b.saveMessages(id, [say("d")], cas)).toEqual({ length: 4 });
      expect(await b.saveMessages(id, [say("d")], cas)).toEqual({ length: 4 });
      expect(await b.replaceMessages(id, 1, [say("r")], { idempotencyKey: "replace-1" })).toEqual({ length: 2 });
      const replaced = await state(b, id);
      freezeClock(T(4));
      expect(await b.replaceMessages(id, 1, [say("r")], { idempotencyKey: "replace-1" })).toEqual({ length: 2 });
      expect(await state(b, id)).toStrictEqual(replaced);
      const popped = await b.popMessage(id, { idempotencyKey: "pop-1" });
      expect(popped).toStrictEqual({ role: "user", content: "r", timestamp: T(3) });
      const afterPop = await state(b, id);
      freezeClock(T(5));
      expect(await b.popMessage(id, { idempotencyKey: "pop-1" })).toStrictEqual(popped);
      expect(await state(b, id)).toStrictEqual(afterPop);
      expect(contents(afterPop.messages)).toEqual(["a"]);
      const empty = await b.createSession(agentId());
      const untouched = await state(b, empty);
      freezeClock(T(6));
      expect(await b.popMessage(empty, { idempotencyKey: "pop-empty" })).toBeNull();
      expect(await state(b, empty)).toStrictEqual(untouched);
      await b.saveMessages(empty, [say("later")]);
      expect(await b.popMessage(empty, { idempotencyKey: "pop-empty" })).toBeNull();
      expect(await b.countMessages(empty)).toBe(1);
    });

    it("the same key with other arguments or another operation is a ConflictError, nothing written", async () => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await b.createSession(agentId());
      await b.saveMessages(id, [say("a")], { idempotencyKey: "k" });
      await b.replaceMessages(id, 1, [say("b")], { idempotencyKey: "r" });
      const before = await state(b, id);
      freezeClock(T(2));
      // Each of these would succeed without the key.
      const reuses: Array<[string, () => Promise<unknown>]> = [
        ["other content", () => b.saveMessages(id, [say("A")], { idempotencyKey: "k" })],
        ["other role", () => b.saveMessages(id, [say("a", "assistant")], { idempotencyKey: "k" })],
        ["more messages", () => b.saveMessages(id, [say("a"), say("a")], { idempotencyKey: "k" })],
        ["no messages", () => b.saveMessages(id, [], { idempotencyKey: "k" })],
        ["an expectedLength", () => b.saveMessages(id, [say("a")], { idempotencyKey: "k", expectedLength: 2 })],
        ["replaceMessages", () => b.replaceMessages(id, 2, [say("a")], { idempotencyKey: "k" })],
        ["popMessage", () => b.popMessage(id, { idempotencyKey: "k" })],
        ["another from", () => b.replaceMessages(id, 0, [say("b")], { idempotencyKey: "r" })],
        ["other messages", () => b.replaceMessages(id, 1, [say("c")], { idempotencyKey: "r" })],
        ["an expectedLength", () => b.replaceMessages(id, 1, [say("b")], { idempotencyKey: "r", expectedLength: 2 })],
        ["saveMessages", () => b.saveMessages(id, [say("b")], { idempotencyKey: "r" })],
      ];
      for (const [label, reuse] of reuses) expect(await rejection(reuse()), label).toBeInstanceOf(ConflictError);
      expect(await state(b, id)).toStrictEqual(before);
      expect(await b.saveMessages(id, [say("a")], { idempotencyKey: "k" })).toEqual({ length: 1 });
      expect(await b.replaceMessages(id, 1, [say("b")], { idempotencyKey: "r" })).toEqual({ length: 2 });
    });

    it("a write that fails remembers nothing, not even its key", async () => {
      const b = await ctx.backend();
      const id = await sessionWith(b, 2);
      expectConflict(await rejection(b.saveMessages(id, [say("x")], { expectedLength: 5, idempotencyKey: "k" })), 5, 2);
      expect(await b.saveMessages(id, [say("y")], { idempotencyKey: "k" })).toEqual({ length: 3 });
      expectField(await rejection(b.replaceMessages(id, 9, [], { idempotencyKey: "r" })), "from");
      expect(await b.replaceMessages(id, 0, [say("z")], { idempotencyKey: "r" })).toEqual({ length: 1 });
      const nan = [say({ n: Number.NaN })];
      expectField(await rejection(b.saveMessages(id, nan, { idempotencyKey: "v" })), "messages[0].content.n");
      expect(await b.saveMessages(id, [say("w")], { idempotencyKey: "v" })).toEqual({ length: 2 });
      expect(contents(await b.loadMessages(id))).toEqual(["z", "w"]);
    });

    it("keys are per session: independent on two sessions, forgotten with a deleted session, not inherited by a fork", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const a = await b.createSession(agent);
      const c = await b.createSession(agent);
      const write = (id: string) => b.saveMessages(id, [say("once")], { idempotencyKey: "shared-key" });
      expect(await write(a)).toEqual({ length: 1 });
      expect(await write(c)).toEqual({ length: 1 });
      expect(await write(a)).toEqual({ length: 1 });
      expect([await b.countMessages(a), await b.countMessages(c)]).toEqual([1, 1]);
      const fork = await b.forkSession(a);
      expect(await write(fork)).toEqual({ length: 2 });
      expect(await b.countMessages(a)).toBe(1);
      await b.deleteSession(a);
      await b.createSession(agent, null, { sessionId: a });
      expect(await write(a)).toEqual({ length: 1 });
      expect(await write(a)).toEqual({ length: 1 });
      expect(contents(await b.loadMessages(a))).toEqual(["once"]);
    });

    it("remembers at least the 1,000 most recent keys of a session", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const write = (i: number) => b.saveMessages(id, [say(`k${i}`)], { idempotencyKey: `key-${i}` });
      await write(0);
      // Chunks of concurrent writes: a server pays for round trips, not for keys.
      const chunks = Array.from({ length: 20 }, (_, c) => Array.from({ length: 50 }, (_, j) => 1 + c * 50 + j));
      const lengths = new Map<number, number>();
      for (const chunk of chunks) {
        const results = await Promise.all(chunk.map(write));
        for (const [j, k] of chunk.entries()) lengths.set(k, results[j]?.length as number);
      }
      expect(new Set(lengths.values()).size).toBe(1000);
      const written = await state(b, id);
      expect(written.count).toBe(1001);
      freezeClock("2999-01-01T00:00:00.000Z");
      for (const chunk of chunks) {
        expect(await Promise.all(chunk.map(write))).toEqual(chunk.map((k) => ({ length: lengths.get(k) })));
      }
      expect(await state(b, id)).toStrictEqual(written);
    });

    it.each([
      ["empty", ""],
      ["257 characters", "k".repeat(257)],
      ["NUL inside", "a\u0000b"],
      ["a lone surrogate", "k\ud800"],
      ["a number", 42],
      ["null", null],
    ])("idempotencyKey: %s is a ValidationError, nothing written", async (_label, bad) => {
      const b = await ctx.backend();
      freezeClock(T(1));
      const id = await sessionWith(b, 1);
      const before = await state(b, id);
      freezeClock(T(2));
      const options = { idempotencyKey: bad as string };
      expectField(await rejection(b.saveMessages(id, [say("x")], options)), "options.idempotencyKey");
      expectField(await rejection(b.replaceMessages(id, 0, [say("x")], options)), "options.idempotencyKey");
      expectField(await rejection(b.popMessage(id, options)), "options.idempotencyKey");
      expect(await state(b, id)).toStrictEqual(before);
    });

    it("accepts keys of 1 to 256 characters of any well-formed text", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const keys = ["k", "K", "k".repeat(256), "ключ 🔑\n\t", " ", "'; DROP TABLE x; --", "a:b:*"];
      for (const [i, key] of keys.entries()) {
        expect(await b.saveMessages(id, [say(key)], { idempotencyKey: key })).toEqual({ length: i + 1 });
      }
      for (const [i, key] of keys.entries()) {
        expect(await b.saveMessages(id, [say(key)], { idempotencyKey: key })).toEqual({ length: i + 1 });
      }
      expect(contents(await b.loadMessages(id))).toEqual(keys);
    });
  });
}
