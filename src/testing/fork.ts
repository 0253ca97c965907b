import { describe, expect, it } from "vitest";
import { SessionNotFoundError } from "../core/errors.js";
import { agentId, freezeClock, type SuiteContext, UUID_V7, unknownId } from "./context.js";

export function forkTests(ctx: SuiteContext): void {
  describe("forkSession", () => {
    it("copies agent, metadata and every message with its timestamp; the fork is new", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock("2034-01-01T00:00:00.000Z");
      const source = await b.createSession(agent, { cwd: "/p", deep: { list: [1, { x: "y" }] } });
      freezeClock("2034-01-01T00:00:01.000Z");
      await b.saveMessage(source, "user", "one");
      await b.saveMessage(source, "assistant", { two: [2] });
      freezeClock("2034-01-01T00:00:02.000Z");
      await b.saveMessage(source, "user", ["three"]);
      freezeClock("2034-01-01T00:01:00.000Z");
      const fork = await b.forkSession(source);
      expect(fork).toMatch(UUID_V7);
      expect(fork).not.toBe(source);
      const record = await b.getSession(fork);
      expect(record).toStrictEqual({
        session_id: fork,
        agent_id: agent,
        created_at: "2034-01-01T00:01:00.000Z",
        updated_at: "2034-01-01T00:01:00.000Z",
        metadata: { cwd: "/p", deep: { list: [1, { x: "y" }] } },
      });
      expect(await b.loadMessages(fork)).toStrictEqual(await b.loadMessages(source));
      expect((await b.loadMessages(fork)).map((m) => m.timestamp)).toEqual([
        "2034-01-01T00:00:01.000Z",
        "2034-01-01T00:00:01.000Z",
        "2034-01-01T00:00:02.000Z",
      ]);
      expect((await b.listSessions(agent)).map((s) => s.session_id)).toEqual([fork, source]);
      expect((await b.listSessions(agent, { cwd: "/p" })).map((s) => s.session_id)).toEqual([fork, source]);
    });

    it("keeps source and fork independent", async () => {
      const b = await ctx.backend();
      const source = await b.createSession(agentId(), { n: 1 });
      await b.saveMessage(source, "user", "shared");
      const fork = await b.forkSession(source);
      await b.saveMessage(fork, "assistant", "only in fork");
      await b.saveMessage(source, "assistant", "only in source");
      expect((await b.loadMessages(fork)).map((m) => m.content)).toEqual(["shared", "only in fork"]);
      expect((await b.loadMessages(source)).map((m) => m.content)).toEqual(["shared", "only in source"]);
      await b.deleteSession(source);
      expect((await b.loadMessages(fork)).map((m) => m.content)).toEqual(["shared", "only in fork"]);
      expect((await b.getSession(fork))?.metadata).toStrictEqual({ n: 1 });
    });

    it("forks an empty session, and forks a fork", async () => {
      const b = await ctx.backend();
      const source = await b.createSession(agentId());
      const fork = await b.forkSession(source);
      expect(await b.loadMessages(fork)).toEqual([]);
      expect((await b.getSession(fork))?.metadata).toBeNull();
      await b.saveMessage(fork, "user", "x");
      const grandchild = await b.forkSession(fork);
      expect((await b.loadMessages(grandchild)).map((m) => m.content)).toEqual(["x"]);
    });

    it("fails with SessionNotFoundError for an unknown session", async () => {
      const b = await ctx.backend();
      await expect(b.forkSession(unknownId())).rejects.toBeInstanceOf(SessionNotFoundError);
      const gone = await b.createSession(agentId());
      await b.deleteSession(gone);
      await expect(b.forkSession(gone)).rejects.toBeInstanceOf(SessionNotFoundError);
    });

    it("forks one session many times at once, each fork whole", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const source = await b.createSession(agent);
      for (let i = 0; i < 20; i++) await b.saveMessage(source, "user", `m${i}`);
      const forks = await Promise.all(Array.from({ length: 10 }, () => b.forkSession(source)));
      expect(new Set(forks).size).toBe(10);
      const expected = await b.loadMessages(source);
      for (const fork of forks) expect(await b.loadMessages(fork)).toStrictEqual(expected);
      expect(await b.listSessions(agent)).toHaveLength(11);
    });

    it("a fork racing the deletion of its source copies everything or fails with SessionNotFoundError", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      for (let round = 0; round < 10; round++) {
        const source = await b.createSession(agent);
        for (let i = 0; i < 10; i++) await b.saveMessage(source, "user", `m${i}`);
        const [fork] = await Promise.allSettled([b.forkSession(source), b.deleteSession(source)]);
        if (fork.status === "fulfilled") {
          expect((await b.loadMessages(fork.value)).map((m) => m.content)).toEqual(
            Array.from({ length: 10 }, (_, i) => `m${i}`),
          );
        } else {
          expect(fork.reason).toBeInstanceOf(SessionNotFoundError);
        }
      }
      for (const s of await b.listSessions(agent)) expect(await b.loadMessages(s.session_id)).toHaveLength(10);
    });

    it("never shows a half-copied fork to a concurrent reader", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const source = await b.createSession(agent);
      const count = 300;
      for (let i = 0; i < count; i += 50) {
        await Promise.all(Array.from({ length: 50 }, (_, j) => b.saveMessage(source, "user", `m${i + j}`)));
      }
      const forking = b.forkSession(source);
      const sizes: number[] = [];
      let done = false;
      forking.finally(() => {
        done = true;
      });
      while (!done) {
        for (const s of await b.listSessions(agent)) {
          if (s.session_id !== source) sizes.push((await b.loadMessages(s.session_id)).length);
        }
      }
      const fork = await forking;
      expect(sizes.every((n) => n === count)).toBe(true);
      expect(await b.loadMessages(fork)).toHaveLength(count);
    });
  });
}
