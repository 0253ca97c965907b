import { describe, expect, it } from "vitest";
import type { JsonObject, MessageContent, MessageRecord } from "../core/types.js";
import { agentId, jsonDiff, type SuiteContext } from "./context.js";

function nested(depth: number): MessageContent {
  let value: MessageContent = ["bottom"];
  for (let i = 0; i < depth; i++) value = i % 2 ? [value] : { level: value };
  return value;
}

/** Values that JSON-based stores are known to get wrong. Each must come back deep-equal, same types. */
export function trickyContents(): Array<[string, MessageContent]> {
  return [
    ["JSON-looking object string", '{"a":1}'],
    ["the string null", "null"],
    ["a numeric string", "42"],
    ["the string true", "true"],
    ["a quoted string", '"quoted"'],
    ["empty string", ""],
    ["empty array", []],
    ["empty object", {}],
    ["emoji and ZWJ sequences", "👩‍💻 🚀 🇺🇦 é e\u0301"],
    ["NUL", "\u0000"],
    ["NUL inside", "a\u0000b\u0000"],
    ["lone high surrogate", "\ud800"],
    ["lone low surrogate", "x\udfffy"],
    ["reversed surrogate pair", "\udc00\ud800"],
    ["control characters and newlines", "\r\n\t\b\f\u001f\u007f\u2028\u2029"],
    ["backslashes and quotes", '\\"\\\\\\u0000'],
    ["SQL and Redis syntax", "'; DROP TABLE sessions; -- * ? [a-z] {x} :"],
    ["array of every JSON type", ["s", 0, -1.5, 1e308, 5e-324, Number.MAX_SAFE_INTEGER, true, false, null, [], {}]],
    [
      "object with tricky keys",
      JSON.parse(
        '{"__proto__":{"polluted":true},"constructor":{"prototype":1},"":0,"a.b":1,"💥":2,"\\u0000":3,"toString":4}',
      ),
    ],
    ["object with array-like keys", { "0": "zero", "1": "one", length: 2 }],
    ["key order", { z: 1, a: 2, m: { y: 1, b: 2 } }],
    ["deep nesting", nested(200)],
    ["unicode keys and values", { 日本語: "テキスト", ключ: "значение", "\ud800": "\udbff" }],
  ];
}

export function contentTests(ctx: SuiteContext): void {
  describe("content and metadata round-trip exactly", () => {
    it.each(trickyContents())("content: %s", async (_label, content) => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      await b.saveMessage(id, "user", content);
      const [message] = await b.loadMessages(id);
      expect(jsonDiff(message?.content, content)).toBeNull();
      const [last] = await b.loadMessages(id, { last: 1 });
      expect(jsonDiff(last?.content, content)).toBeNull();
      const fork = await b.forkSession(id);
      expect(jsonDiff((await b.loadMessages(fork))[0]?.content, content)).toBeNull();
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    });

    it.each(trickyContents())("metadata: %s", async (_label, value) => {
      const b = await ctx.backend();
      const agent = agentId();
      const metadata: JsonObject = { value, cwd: "/tricky" };
      const id = await b.createSession(agent, metadata);
      expect(jsonDiff((await b.getSession(id))?.metadata, metadata)).toBeNull();
      expect(jsonDiff((await b.listSessions(agent))[0]?.metadata, metadata)).toBeNull();
      expect(jsonDiff((await b.getSession(await b.forkSession(id)))?.metadata, metadata)).toBeNull();
      expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    });

    it("metadata with __proto__ as a key stays data", async () => {
      const b = await ctx.backend();
      const metadata = JSON.parse('{"__proto__":{"isAdmin":true}}') as JsonObject;
      const id = await b.createSession(agentId(), metadata);
      const stored = (await b.getSession(id))?.metadata as Record<string, unknown>;
      expect(Object.keys(stored)).toEqual(["__proto__"]);
      expect(stored.isAdmin).toBeUndefined();
      expect(Object.getPrototypeOf(stored)).toBe(Object.prototype);
    });

    it("round-trips a large message", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const mib = ctx.options.largeMessageMiB ?? 16;
      const big = `${"x".repeat(mib * 1024 * 1024 - 3)}\u0000é`;
      await b.saveMessage(id, "assistant", big);
      await b.saveMessage(id, "user", {
        blocks: Array.from({ length: 2000 }, (_, i) => ({ i, text: "y".repeat(500) })),
      });
      const [first, second] = (await b.loadMessages(id)) as [MessageRecord, MessageRecord];
      expect(first.content === big).toBe(true);
      expect((second.content as { blocks: unknown[] }).blocks).toHaveLength(2000);
    }, 120_000);
  });
}
