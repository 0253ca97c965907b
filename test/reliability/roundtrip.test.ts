// Property-based round trip on every backend: arbitrary JSON content and metadata (any code point, lone
// surrogates, NUL, deep nesting, large strings, keys such as __proto__ and constructor) come back deep-equal,
// with the same types, through save/load, load { last }, fork, list and the ...Sync methods; and nothing leaks
// into the prototypes. The conformance suite checks a fixed list of such values; this generates them.
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import type { JsonObject, JsonValue, MessageContent, Role } from "../../src/core/types.js";
import { jsonDiff } from "../../src/testing/context.js";
import { FULL, figure, prototypeSnapshot, scaled, subjects } from "./support.js";

const RUNS = scaled(30, 400);
const LARGE = scaled(50_000, 2_000_000);

/** JSON has no -0: the contract refuses it (ValidationError), so generated values use 0. */
function withoutNegativeZero(value: JsonValue): JsonValue {
  if (typeof value === "number") return Object.is(value, -0) ? 0 : value;
  if (Array.isArray(value)) return value.map(withoutNegativeZero);
  if (value !== null && typeof value === "object") {
    const copy: JsonObject = {};
    for (const [k, v] of Object.entries(value))
      Object.defineProperty(copy, k, {
        value: withoutNegativeZero(v),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    return copy;
  }
  return value;
}

/** Keys that prototype-based code mishandles, besides any string. */
const key = fc.oneof(
  fc.constantFrom(
    "__proto__",
    "constructor",
    "prototype",
    "toString",
    "hasOwnProperty",
    "length",
    "0",
    "",
    "\u0000",
    "\ud800",
  ),
  fc.string({ unit: "binary", maxLength: 12 }),
);
/** Any code point (lone surrogates included), NUL, and now and then a large string. */
const text = fc.oneof(
  { weight: 8, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
  { weight: 1, arbitrary: fc.constantFrom("\u0000", "\ud800", "x\udfffy", "\udc00\ud800", '{"a":1}', "null", "42") },
  {
    weight: 1,
    arbitrary: fc
      .tuple(fc.string({ unit: "binary", minLength: 1, maxLength: 4 }), fc.integer({ min: 1, max: LARGE }))
      .map(([unit, n]) => unit.repeat(Math.ceil(n / unit.length))),
  },
);
const { json } = fc.letrec<{ json: JsonValue }>((tie) => ({
  json: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    text,
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("json"), { maxLength: 5 }),
    fc.dictionary(key, tie("json"), { maxKeys: 5 }),
  ),
}));
/** Deep nesting, up to near the 512 levels the contract accepts. */
const deep = fc.tuple(fc.integer({ min: 20, max: 500 }), json, fc.boolean()).map(([depth, leaf, arrays]) => {
  let value: JsonValue = leaf;
  for (let i = 0; i < depth; i++) value = arrays || i % 2 ? [value] : { d: value };
  return value;
});
const value = fc.oneof({ weight: 6, arbitrary: json }, { weight: 1, arbitrary: deep }).map(withoutNegativeZero);
/** Content is a string, an array or an object at the top. */
const content: fc.Arbitrary<MessageContent> = value.map((v) =>
  (typeof v === "object" && v !== null) || typeof v === "string" ? v : [v],
);
/** Index keys (agent ids, cwd) are well-formed Unicode without NUL: the contract refuses the rest. */
const indexText = (maxLength: number) =>
  fc.string({ unit: "binary", minLength: 1, maxLength }).filter((s) => s.isWellFormed() && !s.includes("\u0000"));
const metadata: fc.Arbitrary<JsonObject | null> = fc.option(
  fc
    .tuple(fc.dictionary(key, value, { maxKeys: 6 }), fc.option(indexText(60)))
    // A spread copies an own "__proto__" key as data (and never mutates what fast-check may reuse).
    .map(([m, cwd]) => (cwd === null ? m : { ...m, cwd })),
  { nil: null, freq: 8 },
);
const role = fc.constantFrom<Role>("user", "assistant", "system");
const session = fc.record({
  agent: indexText(100),
  metadata,
  messages: fc.array(fc.tuple(role, content), { minLength: 1, maxLength: 4 }),
});

const { all, cleanup } = subjects("roundtrip");
afterAll(cleanup);

/** The largest string and the deepest nesting in a value: what a run actually exercised. */
function measure(value: unknown, depth = 0): { chars: number; depth: number } {
  if (typeof value === "string") return { chars: value.length, depth };
  if (typeof value !== "object" || value === null) return { chars: 0, depth };
  let found = { chars: 0, depth };
  for (const item of Object.values(value)) {
    const inner = measure(item, depth + 1);
    found = { chars: Math.max(found.chars, inner.chars), depth: Math.max(found.depth, inner.depth) };
  }
  return found;
}

describe.each(all)("$name: arbitrary JSON round-trips exactly", ({ name, available, open }) => {
  it.skipIf(!available)(
    `${RUNS} generated sessions come back deep-equal, same types, prototypes untouched`,
    { timeout: FULL ? 1_800_000 : 60_000 },
    async () => {
      const b = await open();
      const prototypes = prototypeSnapshot();
      let run = 0;
      const seen = { messages: 0, largestString: 0, deepest: 0, loneSurrogates: 0, protoKeys: 0 };
      try {
        await fc.assert(
          fc.asyncProperty(session, async ({ agent, metadata, messages }) => {
            // Unique per run, so that listings see only this run's session; still at most 256 characters.
            const agentId = `${agent}\u2063${++run}`;
            const json = JSON.stringify([metadata, messages]);
            const size = measure([metadata, messages]);
            seen.messages += messages.length;
            seen.largestString = Math.max(seen.largestString, size.chars);
            seen.deepest = Math.max(seen.deepest, size.depth);
            if (/\\ud[89a-f]/i.test(json)) seen.loneSurrogates++;
            if (json.includes('"__proto__"')) seen.protoKeys++;
            const id = await b.createSession(agentId, metadata);
            for (const [r, c] of messages) await b.saveMessage(id, r, c);

            const record = await b.getSession(id);
            expect(record?.agent_id).toBe(agentId);
            expect(jsonDiff(record?.metadata, metadata)).toBeNull();
            const loaded = await b.loadMessages(id);
            expect(loaded.map((m) => m.role)).toEqual(messages.map(([r]) => r));
            for (const [i, [, c]] of messages.entries()) expect(jsonDiff(loaded[i]?.content, c)).toBeNull();
            const [newest] = await b.loadMessages(id, { last: 1 });
            expect(jsonDiff(newest?.content, messages.at(-1)?.[1])).toBeNull();
            const cwd = typeof metadata?.cwd === "string" ? metadata.cwd : undefined;
            const listed = await b.listSessions(agentId, cwd === undefined ? {} : { cwd });
            expect(listed.map((s) => s.session_id)).toEqual([id]);
            expect(jsonDiff(listed[0]?.metadata, metadata)).toBeNull();

            const fork = await b.forkSession(id);
            expect(jsonDiff((await b.getSession(fork))?.metadata, metadata)).toBeNull();
            const copied = await b.loadMessages(fork);
            for (const [i, [, c]] of messages.entries()) expect(jsonDiff(copied[i]?.content, c)).toBeNull();
            // The sync path: natively synchronous, or through structuredClone to a worker thread and back.
            const [first] = b.loadMessagesSync(fork);
            expect(jsonDiff(first?.content, messages[0]?.[1])).toBeNull();
            expect(jsonDiff(b.getSessionSync(fork)?.metadata, metadata)).toBeNull();

            expect(prototypeSnapshot()).toBe(prototypes);
            expect(({} as Record<string, unknown>).polluted).toBeUndefined();
            await b.deleteSession(id);
            await b.deleteSession(fork);
          }),
          { numRuns: RUNS },
        );
      } finally {
        await b.close();
      }
      expect(run).toBeGreaterThanOrEqual(RUNS);
      figure(`roundtrip ${name}`, { runs: run, ...seen });
    },
  );
});
