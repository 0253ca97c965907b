import { describe, expect, it } from "vitest";
import type { StorageBackend } from "../core/backend.js";
import { ValidationError } from "../core/errors.js";
import { agentId, rejection, type SuiteContext } from "./context.js";

class Custom {
  x = 1;
}
const cycle = (): unknown => {
  const a: Record<string, unknown> = { a: 1 };
  a.self = a;
  return a;
};
const arrayCycle = (): unknown => {
  const a: unknown[] = [1];
  a.push([a]);
  return a;
};

/** Content that JSON cannot carry unchanged, with the field the error must name. */
const badContents: Array<[string, () => unknown, string]> = [
  ["undefined", () => undefined, "content"],
  ["a number", () => 42, "content"],
  ["a boolean", () => true, "content"],
  ["null", () => null, "content"],
  ["NaN", () => Number.NaN, "content"],
  ["undefined in an array", () => ["a", undefined], "content[1]"],
  // biome-ignore lint/suspicious/noSparseArray: a hole is what this case is about
  ["a hole in an array", () => [1, , 3], "content[1]"],
  ["NaN inside", () => ({ a: Number.NaN }), "content.a"],
  ["Infinity inside", () => ({ a: [Number.POSITIVE_INFINITY] }), "content.a[0]"],
  ["-Infinity inside", () => ({ a: Number.NEGATIVE_INFINITY }), "content.a"],
  ["negative zero", () => [-0], "content[0]"],
  ["a BigInt", () => ({ n: 10n }), "content.n"],
  ["a function", () => ({ f: () => 1 }), "content.f"],
  ["a symbol value", () => ({ s: Symbol("s") }), "content.s"],
  ["a symbol key", () => ({ [Symbol("k")]: 1 }), "content"],
  ["a Date", () => ({ d: new Date(0) }), "content.d"],
  ["a Map", () => ({ m: new Map() }), "content.m"],
  ["a Set", () => [new Set([1])], "content[0]"],
  ["a class instance", () => ({ c: new Custom() }), "content.c"],
  ["a top-level class instance", () => new Custom(), "content"],
  ["a typed array", () => ({ t: new Uint8Array(2) }), "content.t"],
  ["a boxed string", () => [Object("s")], "content[0]"],
  ["a cycle", cycle, "content.self"],
  ["an array cycle", arrayCycle, "content[1][0]"],
  ["nesting deeper than 512", () => JSON.parse(`${"[".repeat(600)}${"]".repeat(600)}`), `content${"[0]".repeat(513)}`],
];

async function expectNothingWritten(b: StorageBackend, id: string, messages: number, updatedAt: string): Promise<void> {
  expect(await b.loadMessages(id)).toHaveLength(messages);
  expect((await b.getSession(id))?.updated_at).toBe(updatedAt);
}

function expectValidation(error: unknown, field: string): void {
  expect(error).toBeInstanceOf(ValidationError);
  expect((error as ValidationError).field.startsWith(field)).toBe(true);
  expect((error as Error).message).toContain(field);
}

export function validationTests(ctx: SuiteContext): void {
  describe("bad input is a ValidationError naming the field, with nothing written", () => {
    it.each(badContents)("content: %s", async (_label, make, field) => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      await b.saveMessage(id, "user", "ok");
      const before = (await b.getSession(id))?.updated_at as string;
      const error = await rejection(b.saveMessage(id, "user", make() as string));
      expectValidation(error, "content");
      expect((error as ValidationError).field).toBe(field);
      await expectNothingWritten(b, id, 1, before);
    });

    it.each([["function"], ["Tool"], [""], ["USER"], [null], [1]])("role: %j", async (role) => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const before = (await b.getSession(id))?.updated_at as string;
      expectValidation(await rejection(b.saveMessage(id, role as "user", "x")), "role");
      await expectNothingWritten(b, id, 0, before);
    });

    it.each([
      ["empty", ""],
      ["257 characters", "a".repeat(257)],
      ["a number", 7],
      ["null", null],
      ["undefined", undefined],
      ["NUL inside", "a\u0000b"],
      ["a lone surrogate", "a\ud800"],
    ])("agentId: %s", async (_label, bad) => {
      const b = await ctx.backend();
      expectValidation(await rejection(b.createSession(bad as string)), "agentId");
      expectValidation(await rejection(b.listSessions(bad as string)), "agentId");
    });

    it("accepts an agent id of exactly 256 characters", async () => {
      const b = await ctx.backend();
      const agent = `${agentId()}-${"x".repeat(256)}`.slice(0, 256);
      const id = await b.createSession(agent);
      expect((await b.listSessions(agent)).map((s) => s.session_id)).toEqual([id]);
    });

    it.each([
      ["an array", () => ["cwd"]],
      ["a string", () => "meta"],
      ["a number", () => 3],
      ["a Date", () => new Date()],
      ["a Map", () => new Map([["a", 1]])],
      ["a class instance", () => new Custom()],
      ["NaN inside", () => ({ n: Number.NaN })],
      ["a cycle", cycle],
      ["undefined inside an array", () => ({ list: [undefined] })],
      ["a cwd with NUL", () => ({ cwd: "/a\u0000b" })],
    ])("metadata: %s", async (_label, make) => {
      const b = await ctx.backend();
      const agent = agentId();
      expectValidation(await rejection(b.createSession(agent, make() as never)), "metadata");
      expect(await b.listSessions(agent)).toEqual([]);
    });

    it.each([[0], [-1], [1.5], ["3"], [Number.NaN], [null], [Number.POSITIVE_INFINITY]])(
      "limit and last: %j",
      async (bad) => {
        const b = await ctx.backend();
        const agent = agentId();
        const id = await b.createSession(agent);
        expectValidation(await rejection(b.listSessions(agent, { limit: bad as number })), "options.limit");
        expectValidation(await rejection(b.loadMessages(id, { last: bad as number })), "options.last");
      },
    );

    it.each([
      ["a string", "2024-01-01T00:00:00.000Z"],
      ["an empty object", {}],
      ["a bad timestamp", { updated_at: "yesterday", session_id: "x" }],
      ["a timestamp without ms", { updated_at: "2024-01-01T00:00:00Z", session_id: "x" }],
      ["a session_id that is not an id", { updated_at: "2024-01-01T00:00:00.000Z", session_id: "../x" }],
      ["an impossible date", { updated_at: "2024-13-45T99:99:99.999Z", session_id: "x" }],
      ["a missing session_id", { updated_at: "2024-01-01T00:00:00.000Z" }],
      ["null", null],
    ])("before: %s", async (_label, bad) => {
      const b = await ctx.backend();
      expectValidation(await rejection(b.listSessions(agentId(), { before: bad as never })), "options.before");
    });

    it("unknown options and non-string cwd", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const id = await b.createSession(agent);
      expectValidation(await rejection(b.listSessions(agent, { lmit: 2 } as never)), "options");
      expectValidation(await rejection(b.listSessions(agent, { cwd: 5 } as never)), "options.cwd");
      expectValidation(await rejection(b.listSessions(agent, { cwd: "\ud800" })), "options.cwd");
      expectValidation(await rejection(b.listSessions(agent, { cwd: "a\u0000" })), "options.cwd");
      expectValidation(await rejection(b.loadMessages(id, { lats: 2 } as never)), "options");
      expectValidation(await rejection(b.listSessions(agent, "x" as never)), "options");
    });

    it.each([[123], [null], [undefined], [{}], [["id"]]])("sessionId: %j", async (bad) => {
      const b = await ctx.backend();
      const id = bad as unknown as string;
      expectValidation(await rejection(b.getSession(id)), "sessionId");
      expectValidation(await rejection(b.saveMessage(id, "user", "x")), "sessionId");
      expectValidation(await rejection(b.loadMessages(id)), "sessionId");
      expectValidation(await rejection(b.forkSession(id)), "sessionId");
      expectValidation(await rejection(b.deleteSession(id)), "sessionId");
    });
  });
}
