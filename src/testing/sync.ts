import { describe, expect, it } from "vitest";
import { SessionNotFoundError, ValidationError } from "../core/errors.js";
import { agentId, type SuiteContext, unknownId } from "./context.js";

export function syncTests(ctx: SuiteContext): void {
  describe("...Sync twins agree with the async methods", () => {
    it("create, save, load, list, fork and delete", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = b.createSessionSync(agent, { cwd: "/sync" });
      expect(b.getSessionSync(id)).toStrictEqual(await b.getSession(id));
      b.saveMessageSync(id, "user", { text: "sync", n: [1, null] });
      await b.saveMessage(id, "assistant", "async");
      b.saveMessageSync(id, "user", "\u0000\ud800");
      const loaded = await b.loadMessages(id);
      expect(b.loadMessagesSync(id)).toStrictEqual(loaded);
      expect(loaded.map((m) => m.content)).toStrictEqual([{ text: "sync", n: [1, null] }, "async", "\u0000\ud800"]);
      expect(b.loadMessagesSync(id, { last: 2 })).toStrictEqual(loaded.slice(1));
      const fork = b.forkSessionSync(id);
      expect(await b.loadMessages(fork)).toStrictEqual(loaded);
      expect(b.listSessionsSync(agent)).toStrictEqual(await b.listSessions(agent));
      expect(b.listSessionsSync(agent, { cwd: "/sync", limit: 1 }).map((s) => s.session_id)).toEqual([fork]);
      b.deleteSessionSync(fork);
      expect(await b.getSession(fork)).toBeNull();
      expect(b.getSessionSync(fork)).toBeNull();
    });

    it("throw the same error classes", async () => {
      const b = await ctx.backend();
      const id = b.createSessionSync(agentId());
      expect(() => b.saveMessageSync(unknownId(), "user", "x")).toThrow(SessionNotFoundError);
      expect(() => b.loadMessagesSync("../x")).toThrow(SessionNotFoundError);
      expect(() => b.forkSessionSync(unknownId())).toThrow(SessionNotFoundError);
      let error: unknown;
      try {
        b.saveMessageSync(id, "user", { bad: Number.NaN });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).field).toBe("content.bad");
      expect(() => b.createSessionSync("")).toThrow(ValidationError);
      expect(await b.loadMessages(id)).toEqual([]);
    });
  });
}
