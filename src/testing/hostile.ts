import { describe, expect, it } from "vitest";
import { SessionNotFoundError } from "../core/errors.js";
import { agentId, type SuiteContext } from "./context.js";

/** Ids that are paths, key patterns or SQL: data that names nothing. */
export const hostileIds = [
  "../../etc/passwd",
  "/etc/passwd",
  "..",
  ".",
  "a:b:*",
  "*",
  "?",
  "[a-z]*",
  "' OR 1=1 --",
  '"; DROP TABLE sessions; --',
  "%",
  "_",
  "\u0000",
  "",
  " ",
  "session:*",
  "index:*",
];

export function hostileTests(ctx: SuiteContext): void {
  describe("ids from outside are data, never paths, patterns or SQL", () => {
    it("an id that is a path, pattern or SQL is simply not found, and touches nothing", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const real = await b.createSession(agent, { cwd: "/safe" });
      await b.saveMessage(real, "user", "keep me");
      const variants = [
        ...hostileIds,
        real.toUpperCase(),
        ` ${real}`,
        `${real} `,
        `${real}\n`,
        `${real}/..`,
        `${real.slice(0, -1)}*`,
        `${real.slice(0, -1)}_`,
        `${real.slice(0, -1)}%`,
      ];
      for (const id of variants) {
        expect(await b.getSession(id)).toBeNull();
        await expect(b.loadMessages(id)).rejects.toBeInstanceOf(SessionNotFoundError);
        await expect(b.saveMessage(id, "user", "x")).rejects.toBeInstanceOf(SessionNotFoundError);
        await expect(b.forkSession(id)).rejects.toBeInstanceOf(SessionNotFoundError);
        await b.deleteSession(id);
      }
      expect((await b.loadMessages(real)).map((m) => m.content)).toEqual(["keep me"]);
      expect((await b.listSessions(agent)).map((s) => s.session_id)).toEqual([real]);
    });

    it("hostile agent ids and cwds are stored and matched exactly, never as patterns", async () => {
      const b = await ctx.backend();
      const suffix = agentId("");
      const agents = [
        "../../etc",
        "a:b:*",
        "*",
        "' OR 1=1 --",
        "%",
        "_",
        "..",
        "/",
        "a/b",
        "[x]",
        "{x}",
        "\\",
        "index:x",
        "C:\\Windows",
      ].map((a) => `${a}${suffix}`);
      const ids = new Map<string, string>();
      for (const agent of agents) ids.set(agent, await b.createSession(agent, { cwd: agent }));
      const bare = await b.createSession("*");
      for (const agent of agents) {
        const listed = await b.listSessions(agent);
        expect(listed.map((s) => s.session_id)).toEqual([ids.get(agent)]);
        expect(listed[0]?.agent_id).toBe(agent);
        expect((await b.listSessions(agent, { cwd: agent })).map((s) => s.session_id)).toEqual([ids.get(agent)]);
        expect(await b.listSessions(agent, { cwd: "*" })).toEqual([]);
      }
      expect((await b.listSessions("*")).map((s) => s.session_id)).toContain(bare);
      expect((await b.listSessions("*")).every((s) => s.agent_id === "*")).toBe(true);
      await b.deleteSession(bare);
    });
  });
}
