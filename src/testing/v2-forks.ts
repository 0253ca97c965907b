import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { SessionExistsError, SessionNotFoundError } from "../core/errors.js";
import { agentId, expectField, freezeClock, rejection, type SuiteContext } from "./context.js";
import { contents, numbered, say, sessionWith, state, T } from "./v2-paging.js";

export function v2ForkTests(ctx: SuiteContext): void {
  describe("forkSession options: length, sessionId, metadata", () => {
    it("length copies only the first N messages with their timestamps; 0 makes an empty fork", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock(T(1));
      const source = await sessionWith(b, 3, agent);
      freezeClock(T(2));
      await b.saveMessages(source, numbered(2, 3));
      const before = await state(b, source);
      freezeClock(T(3));
      for (const length of [0, 1, 3, 4, 5]) {
        const fork = await b.forkSession(source, { length });
        expect(await b.loadMessages(fork)).toStrictEqual(before.messages.slice(0, length));
        expect(await b.countMessages(fork)).toBe(length);
        expect(await b.getSession(fork)).toStrictEqual({
          session_id: fork,
          agent_id: agent,
          created_at: T(3),
          updated_at: T(3),
          metadata: null,
        });
      }
      expect(await state(b, source)).toStrictEqual(before);
      expect(await b.listSessions(agent)).toHaveLength(6);
      const branch = await b.forkSession(source, { length: 2 });
      await b.saveMessages(branch, [say("another turn")]);
      expect(contents(await b.loadMessages(branch))).toEqual(["m0", "m1", "another turn"]);
      expect(await state(b, source)).toStrictEqual(before);
    });

    it("a length beyond the session's is a ValidationError (options.length), nothing written", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock(T(1));
      const source = await sessionWith(b, 3, agent);
      const empty = await b.createSession(agent);
      const before = await state(b, source);
      freezeClock(T(2));
      expectField(await rejection(b.forkSession(source, { length: 4 })), "options.length");
      expectField(await rejection(b.forkSession(empty, { length: 1 })), "options.length");
      const chosen = randomUUID();
      expectField(await rejection(b.forkSession(source, { length: 4, sessionId: chosen })), "options.length");
      expect(await b.getSession(chosen)).toBeNull();
      expect((await b.listSessions(agent)).map((s) => s.session_id).sort()).toEqual([source, empty].sort());
      expect(await state(b, source)).toStrictEqual(before);
      await expect(b.forkSession(randomUUID(), { length: 0 })).rejects.toBeInstanceOf(SessionNotFoundError);
    });

    it("sessionId names the fork; taken is a SessionExistsError, non-canonical a ValidationError, nothing written", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      freezeClock(T(1));
      const source = await sessionWith(b, 2, agent);
      const chosen = randomUUID();
      freezeClock(T(2));
      expect(await b.forkSession(source, { sessionId: chosen })).toBe(chosen);
      expect(await b.getSession(chosen)).toStrictEqual({
        session_id: chosen,
        agent_id: agent,
        created_at: T(2),
        updated_at: T(2),
        metadata: null,
      });
      expect(await b.loadMessages(chosen)).toStrictEqual(await b.loadMessages(source));
      await b.saveMessages(chosen, [say("only in the fork")]);
      const other = await b.createSession(agentId("other"), { cwd: "/other" });
      const ids = [chosen, source, other];
      const before = await Promise.all(ids.map((id) => state(b, id)));
      freezeClock(T(3));
      for (const taken of ids) {
        const error = await rejection(b.forkSession(source, { sessionId: taken, length: 1 }));
        expect(error).toBeInstanceOf(SessionExistsError);
        expect((error as SessionExistsError).sessionId).toBe(taken);
      }
      const notCanonical = [`${chosen.slice(0, -1)}A`, chosen.replaceAll("-", ""), `{${chosen}}`, `${chosen} `, "", 42];
      for (const bad of notCanonical) {
        expectField(await rejection(b.forkSession(source, { sessionId: bad as string })), "options.sessionId");
      }
      expect(await Promise.all(ids.map((id) => state(b, id)))).toStrictEqual(before);
      expect(await b.listSessions(agent)).toHaveLength(2);
    });

    it("metadata replaces the copied metadata, and the cwd listings follow it", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const source = await b.createSession(agent, { cwd: "/a", keep: 1 });
      await b.saveMessages(source, numbered(2));
      const moved = await b.forkSession(source, { metadata: { cwd: "/b", other: [true] } });
      const cleared = await b.forkSession(source, { metadata: null });
      const copied = await b.forkSession(source, {});
      const metadata = { cwd: "/b" };
      const all = await b.forkSession(source, { length: 1, sessionId: randomUUID(), metadata });
      metadata.cwd = "/mutated by the caller";
      expect((await b.getSession(moved))?.metadata).toStrictEqual({ cwd: "/b", other: [true] });
      expect((await b.getSession(cleared))?.metadata).toBeNull();
      expect((await b.getSession(copied))?.metadata).toStrictEqual({ cwd: "/a", keep: 1 });
      expect((await b.getSession(all))?.metadata).toStrictEqual({ cwd: "/b" });
      expect((await b.getSession(source))?.metadata).toStrictEqual({ cwd: "/a", keep: 1 });
      const listed = async (cwd: string) => (await b.listSessions(agent, { cwd })).map((s) => s.session_id).sort();
      expect(await listed("/a")).toEqual([source, copied].sort());
      expect(await listed("/b")).toEqual([moved, all].sort());
      expect(await listed("/mutated by the caller")).toEqual([]);
      expect(await b.loadMessages(moved)).toStrictEqual(await b.loadMessages(source));
      expect(await b.loadMessages(all)).toStrictEqual(await b.loadMessages(source, { limit: 1 }));
      expectField(await rejection(b.forkSession(source, { metadata: ["x"] as never })), "options.metadata");
      expectField(await rejection(b.forkSession(source, { metadata: { n: Number.NaN } })), "options.metadata.n");
      expectField(await rejection(b.forkSession(source, { metadata: { cwd: "a\u0000" } })), "options.metadata.cwd");
      expect(await b.listSessions(agent)).toHaveLength(5);
    });
  });
}
