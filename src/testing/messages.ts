import { describe, expect, it } from "vitest";
import { SessionNotFoundError } from "../core/errors.js";
import type { MessageRecord } from "../core/types.js";
import { agentId, freezeClock, ISO_MS, type SuiteContext, unknownId } from "./context.js";

export function messageTests(ctx: SuiteContext): void {
  describe("messages", () => {
    it("appends and loads messages as three-key records, and moves updated_at to the newest", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const created = await b.getSession(id);
      await b.saveMessage(id, "system", "be brief");
      await b.saveMessage(id, "user", "hello");
      await b.saveMessage(id, "assistant", [{ type: "text", text: "hi" }]);
      const messages = await b.loadMessages(id);
      expect(messages.map((m) => [m.role, m.content])).toStrictEqual([
        ["system", "be brief"],
        ["user", "hello"],
        ["assistant", [{ type: "text", text: "hi" }]],
      ]);
      for (const m of messages) {
        expect(Object.getPrototypeOf(m)).toBe(Object.prototype);
        expect(Object.keys(m).sort()).toEqual(["content", "role", "timestamp"]);
        expect(m.timestamp).toMatch(ISO_MS);
      }
      const session = await b.getSession(id);
      expect(session?.updated_at).toBe(messages[2]?.timestamp);
      expect(session?.created_at).toBe(created?.created_at);
      expect((session?.updated_at as string) >= (created?.updated_at as string)).toBe(true);
    });

    it("keeps append order when timestamps are equal", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      freezeClock("2033-03-03T03:03:03.003Z");
      for (let i = 0; i < 30; i++) await b.saveMessage(id, "user", `m${i}`);
      const messages = await b.loadMessages(id);
      expect(messages.map((m) => m.content)).toEqual(Array.from({ length: 30 }, (_, i) => `m${i}`));
      expect(new Set(messages.map((m) => m.timestamp))).toEqual(new Set(["2033-03-03T03:03:03.003Z"]));
    });

    it("keeps every message and each writer's order when many writers append at once", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const writers = 8;
      const each = 25;
      await Promise.all(
        Array.from({ length: writers }, async (_, w) => {
          for (let i = 0; i < each; i++) await b.saveMessage(id, "user", { w, i });
        }),
      );
      const messages = await b.loadMessages(id);
      expect(messages).toHaveLength(writers * each);
      const seen = new Set(messages.map((m) => JSON.stringify(m.content)));
      expect(seen.size).toBe(writers * each);
      for (let w = 0; w < writers; w++) {
        const mine = messages.map((m) => m.content as { w: number; i: number }).filter((c) => c.w === w);
        expect(mine.map((c) => c.i)).toEqual(Array.from({ length: each }, (_, i) => i));
      }
      for (let i = 1; i < messages.length; i++) {
        expect((messages[i] as MessageRecord).timestamp >= (messages[i - 1] as MessageRecord).timestamp).toBe(true);
      }
      expect((await b.getSession(id))?.updated_at).toBe(messages.at(-1)?.timestamp);
    });

    it("loads only the newest N with last, oldest first", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      for (let i = 0; i < 10; i++) await b.saveMessage(id, "user", `m${i}`);
      expect((await b.loadMessages(id, { last: 3 })).map((m) => m.content)).toEqual(["m7", "m8", "m9"]);
      expect((await b.loadMessages(id, { last: 1 })).map((m) => m.content)).toEqual(["m9"]);
      expect(await b.loadMessages(id, { last: 100 })).toStrictEqual(await b.loadMessages(id));
      const empty = await b.createSession(agentId());
      expect(await b.loadMessages(empty)).toEqual([]);
      expect(await b.loadMessages(empty, { last: 5 })).toEqual([]);
    });

    it("raises a clock that is behind to the session's updated_at", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      freezeClock("2040-01-01T00:00:10.000Z");
      await b.saveMessage(id, "user", "from a clock ahead");
      freezeClock("2040-01-01T00:00:05.000Z");
      await b.saveMessage(id, "assistant", "from a clock behind");
      expect((await b.getSession(id))?.updated_at).toBe("2040-01-01T00:00:10.000Z");
      freezeClock("2040-01-01T00:00:11.000Z");
      await b.saveMessage(id, "user", "later");
      const messages = await b.loadMessages(id);
      expect(messages.map((m) => m.timestamp)).toEqual([
        "2040-01-01T00:00:10.000Z",
        "2040-01-01T00:00:10.000Z",
        "2040-01-01T00:00:11.000Z",
      ]);
      expect(messages.map((m) => m.content)).toEqual(["from a clock ahead", "from a clock behind", "later"]);
      expect((await b.getSession(id))?.updated_at).toBe("2040-01-01T00:00:11.000Z");
    });

    it("fails with SessionNotFoundError for an unknown session, writing nothing", async () => {
      const b = await ctx.backend();
      const ghost = unknownId();
      await expect(b.saveMessage(ghost, "user", "x")).rejects.toBeInstanceOf(SessionNotFoundError);
      await expect(b.loadMessages(ghost)).rejects.toBeInstanceOf(SessionNotFoundError);
      await expect(b.loadMessages(ghost, { last: 2 })).rejects.toBeInstanceOf(SessionNotFoundError);
      expect(await b.getSession(ghost)).toBeNull();
      const deleted = await b.createSession(agentId());
      await b.deleteSession(deleted);
      await expect(b.saveMessage(deleted, "user", "x")).rejects.toMatchObject({
        name: "SessionNotFoundError",
        sessionId: deleted,
      });
      expect(await b.getSession(deleted)).toBeNull();
    });

    it("stores a copy of the content: later mutations by the caller change nothing", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const content = { parts: [{ text: "original" }] };
      await b.saveMessage(id, "user", content);
      content.parts[0] = { text: "mutated" };
      const [loaded] = (await b.loadMessages(id)) as [MessageRecord];
      expect(loaded.content).toStrictEqual({ parts: [{ text: "original" }] });
      (loaded.content as { parts: unknown[] }).parts.push("x");
      expect((await b.loadMessages(id))[0]?.content).toStrictEqual({ parts: [{ text: "original" }] });
    });
  });
}
