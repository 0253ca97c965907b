import { describe, expect, it } from "vitest";
import type { StorageBackend } from "../core/backend.js";
import { AgentixStorageError, ConflictError, SessionNotFoundError, ValidationError } from "../core/errors.js";
import type { MessageRecord, NewMessage } from "../core/types.js";
import { agentId, expectField, freezeClock, rejection, type SuiteContext, thrown, unknownId } from "./context.js";
import { hostileIds } from "./hostile.js";

// Helpers of the v2 area files (v2-edits, v2-keys, v2-forks import them from here).

export const say = (content: NewMessage["content"], role: NewMessage["role"] = "user"): NewMessage => ({
  role,
  content,
});

/** The messages `m{from}` … `m{from + n - 1}`. */
export const numbered = (n: number, from = 0): NewMessage[] => Array.from({ length: n }, (_, i) => say(`m${from + i}`));

export const contents = (messages: MessageRecord[]) => messages.map((m) => m.content);

/** A session holding `m0` … `m{n-1}`, saved in batches: a server pays for round trips, not for messages. */
export async function sessionWith(b: StorageBackend, n: number, agent = agentId()): Promise<string> {
  const id = await b.createSession(agent);
  for (let i = 0; i < n; i += 500) await b.saveMessages(id, numbered(Math.min(500, n - i), i));
  return id;
}

/** The session's record, length and messages: what a call that writes nothing leaves as it was. */
export async function state(b: StorageBackend, id: string) {
  return { record: await b.getSession(id), count: await b.countMessages(id), messages: await b.loadMessages(id) };
}

/** Second `s` of a fixed minute, as a timestamp. */
export const T = (s: number) => `2036-01-01T00:00:${String(s).padStart(2, "0")}.000Z`;

/** Asserts a `ConflictError`, with both lengths when given (a compare-and-swap that failed). */
export function expectConflict(error: unknown, expectedLength?: number, actualLength?: number): void {
  expect(error).toBeInstanceOf(ConflictError);
  expect(error).toBeInstanceOf(AgentixStorageError);
  if (expectedLength !== undefined) expect(error).toMatchObject({ expectedLength, actualLength });
}

/** Values that are not a non-negative safe integer (a position, a length, a page size), by label. */
export const badCounts: Array<[string, unknown]> = [
  ["-1", -1],
  ["1.5", 1.5],
  ['"1"', "1"],
  ["NaN", Number.NaN],
  ["null", null],
  ["Infinity", Number.POSITIVE_INFINITY],
  ["2 ** 53", 2 ** 53],
];

const tooMany = (max: number) => new Error(`the iteration yields more than the session's ${max} messages`);

/** What an iteration yields; past `max` (more than the session holds) a failure, not a run out of memory. */
async function collect(messages: AsyncIterable<MessageRecord>, max: number): Promise<MessageRecord[]> {
  const out: MessageRecord[] = [];
  for await (const m of messages) if (out.push(m) > max) throw tooMany(max);
  return out;
}

function collectSync(messages: Iterable<MessageRecord>, max: number): MessageRecord[] {
  const out: MessageRecord[] = [];
  for (const m of messages) if (out.push(m) > max) throw tooMany(max);
  return out;
}

/** The first step of an iteration, where its errors surface. */
const firstStep = (messages: AsyncIterable<MessageRecord>) => messages[Symbol.asyncIterator]().next();

export function v2PagingTests(ctx: SuiteContext): void {
  describe("positions and paging: loadMessages({ offset, limit }), countMessages", () => {
    it("returns positions offset … offset+limit-1, fewer at the end, [] beyond it", async () => {
      const b = await ctx.backend();
      const times = ["2035-01-01T00:00:01.000Z", "2035-01-01T00:00:02.000Z"];
      freezeClock(times[0] as string);
      const id = await sessionWith(b, 4);
      freezeClock(times[1] as string);
      await b.saveMessages(id, numbered(6, 4));
      const all = await b.loadMessages(id);
      expect(contents(all)).toEqual(numbered(10).map((m) => m.content));
      expect(all.map((m) => m.timestamp)).toEqual([...Array(4).fill(times[0]), ...Array(6).fill(times[1])]);
      expect(await b.loadMessages(id, { offset: 0, limit: 3 })).toStrictEqual(all.slice(0, 3));
      expect(await b.loadMessages(id, { offset: 3, limit: 4 })).toStrictEqual(all.slice(3, 7));
      expect(await b.loadMessages(id, { offset: 8, limit: 5 })).toStrictEqual(all.slice(8));
      expect(await b.loadMessages(id, { offset: 9, limit: 1 })).toStrictEqual(all.slice(9));
      expect(await b.loadMessages(id, { offset: 6 })).toStrictEqual(all.slice(6));
      expect(await b.loadMessages(id, { limit: 2 })).toStrictEqual(all.slice(0, 2));
      expect(await b.loadMessages(id, { offset: 0 })).toStrictEqual(all);
      expect(await b.loadMessages(id, { offset: 1, limit: Number.MAX_SAFE_INTEGER })).toStrictEqual(all.slice(1));
      expect(await b.loadMessages(id, { offset: 10, limit: 1 })).toEqual([]);
      expect(await b.loadMessages(id, { offset: 11 })).toEqual([]);
      const far = { offset: Number.MAX_SAFE_INTEGER, limit: Number.MAX_SAFE_INTEGER };
      expect(await b.loadMessages(id, far)).toEqual([]);
      const pages: MessageRecord[] = [];
      for (let offset = 0; offset < 12; offset += 3) pages.push(...(await b.loadMessages(id, { offset, limit: 3 })));
      expect(pages).toStrictEqual(all);
      const empty = await b.createSession(agentId());
      expect(await b.loadMessages(empty, { offset: 0, limit: 5 })).toEqual([]);
    });

    it("rejects last together with offset or limit, and a limit of 0", async () => {
      const b = await ctx.backend();
      const id = await sessionWith(b, 3);
      for (const options of [
        { last: 2, offset: 0 },
        { last: 2, limit: 2 },
        { last: 1, offset: 1, limit: 1 },
      ]) {
        const error = await rejection(b.loadMessages(id, options));
        expect(error).toBeInstanceOf(ValidationError);
        expect((error as ValidationError).field.startsWith("options")).toBe(true);
      }
      expectField(await rejection(b.loadMessages(id, { offset: 0, limit: 0 })), "options.limit");
      expectField(await rejection(b.loadMessages(id, { ofset: 1 } as never)), "options");
      expectField(await rejection(b.loadMessages(unknownId(), { offset: -1 })), "options.offset");
    });

    it.each(badCounts)(
      "offset, limit and batchSize: %s is a ValidationError naming the option",
      async (_label, bad) => {
        const b = await ctx.backend();
        const id = await sessionWith(b, 2);
        const n = bad as number;
        expectField(await rejection(b.loadMessages(id, { offset: n })), "options.offset");
        expectField(await rejection(b.loadMessages(id, { offset: 0, limit: n })), "options.limit");
        expectField(await rejection(firstStep(b.iterateMessages(id, { batchSize: n }))), "options.batchSize");
      },
    );

    it("countMessages is the length after every kind of write; unknown, deleted and hostile ids are not found", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      expect(await b.countMessages(id)).toBe(0);
      expect(await b.saveMessages(id, numbered(3))).toEqual({ length: 3 });
      expect(await b.countMessages(id)).toBe(3);
      await b.saveMessage(id, "tool", "x");
      expect(await b.countMessages(id)).toBe(4);
      expect(await b.saveMessages(id, [])).toEqual({ length: 4 });
      await b.replaceMessages(id, 1, [say("r")]);
      expect(await b.countMessages(id)).toBe(2);
      await b.popMessage(id);
      expect(await b.countMessages(id)).toBe(1);
      const fork = await b.forkSession(id);
      expect(await b.countMessages(fork)).toBe(1);
      await b.deleteSession(id);
      for (const ghost of [id, unknownId(), ...hostileIds]) {
        await expect(b.countMessages(ghost)).rejects.toBeInstanceOf(SessionNotFoundError);
        await expect(b.loadMessages(ghost, { offset: 0, limit: 1 })).rejects.toBeInstanceOf(SessionNotFoundError);
      }
      expect(await b.countMessages(fork)).toBe(1);
    });
  });

  describe("iterateMessages", () => {
    it("yields ~5,000 messages in order, each exactly once, in batches of 100 and 101 and by default", async () => {
      const b = await ctx.backend();
      const n = 5050; // 50 full pages of 101; 50 full pages of 100 and one of 50
      const id = await sessionWith(b, n);
      expect(await b.countMessages(id)).toBe(n);
      const all = await b.loadMessages(id);
      expect(contents(all)).toEqual(numbered(n).map((m) => m.content));
      for (const batchSize of [100, 101]) {
        expect(await collect(b.iterateMessages(id, { batchSize }), n)).toStrictEqual(all);
      }
      expect(await collect(b.iterateMessages(id), n)).toStrictEqual(all);
      expect(await b.loadMessages(id, { offset: 5000, limit: 100 })).toStrictEqual(all.slice(5000));
      expect(await b.loadMessages(id, { offset: n - 1, limit: 100 })).toStrictEqual(all.slice(-1));
      expect(await b.loadMessages(id, { offset: n, limit: 100 })).toEqual([]);
      expect(await b.loadMessages(id, { offset: n + 1000 })).toEqual([]);
      expect(await b.loadMessages(id, { offset: 2500, limit: 3 })).toStrictEqual(all.slice(2500, 2503));
    });

    it("yields nothing for an empty session, and everything with batches smaller, equal to or larger than it", async () => {
      const b = await ctx.backend();
      const empty = await b.createSession(agentId());
      expect(await collect(b.iterateMessages(empty), 0)).toEqual([]);
      expect(await collect(b.iterateMessages(empty, { batchSize: 1 }), 0)).toEqual([]);
      const id = await sessionWith(b, 3);
      const all = await b.loadMessages(id);
      for (const batchSize of [1, 2, 3, 4, Number.MAX_SAFE_INTEGER]) {
        expect(await collect(b.iterateMessages(id, { batchSize }), 3)).toStrictEqual(all);
      }
    });

    it("sees messages appended while iterating, and fails when the session is deleted midway", async () => {
      const b = await ctx.backend();
      const id = await sessionWith(b, 4);
      const seen: unknown[] = [];
      for await (const m of b.iterateMessages(id, { batchSize: 2 })) {
        if (seen.push(m.content) > 6) throw tooMany(6);
        if (seen.length === 2) await b.saveMessages(id, numbered(2, 4));
      }
      expect(seen).toEqual(["m0", "m1", "m2", "m3", "m4", "m5"]);
      const gone = await sessionWith(b, 4);
      const iterator = b.iterateMessages(gone, { batchSize: 2 })[Symbol.asyncIterator]();
      expect((await iterator.next()).value).toMatchObject({ content: "m0" });
      expect((await iterator.next()).value).toMatchObject({ content: "m1" });
      await b.deleteSession(gone);
      await expect(iterator.next()).rejects.toBeInstanceOf(SessionNotFoundError);
    });

    it("reports bad options and unknown sessions on the first step of the iteration, not at the call", async () => {
      const b = await ctx.backend();
      const id = await sessionWith(b, 2);
      const unknown = b.iterateMessages(unknownId(), { batchSize: 1 });
      await expect(firstStep(unknown)).rejects.toBeInstanceOf(SessionNotFoundError);
      for (const bad of hostileIds) {
        await expect(firstStep(b.iterateMessages(bad))).rejects.toBeInstanceOf(SessionNotFoundError);
      }
      const zero = b.iterateMessages(id, { batchSize: 0 });
      expectField(await rejection(firstStep(zero)), "options.batchSize");
      expectField(await rejection(firstStep(b.iterateMessages(unknownId(), { batchSize: 0 }))), "options.batchSize");
      expectField(await rejection(firstStep(b.iterateMessages(id, { batch: 10 } as never))), "options");
      expectField(await rejection(firstStep(b.iterateMessages(id, 5 as never))), "options");
    });
  });
}

export function v2PagingSyncTests(ctx: SuiteContext): void {
  describe("...Sync twins of the paging methods", () => {
    it("countMessagesSync, loadMessagesSync with offset/limit and iterateMessagesSync agree with the async methods", async () => {
      const b = await ctx.backend();
      const id = await sessionWith(b, 7);
      const all = await b.loadMessages(id);
      expect(b.countMessagesSync(id)).toBe(7);
      expect(b.loadMessagesSync(id, { offset: 2, limit: 3 })).toStrictEqual(all.slice(2, 5));
      expect(b.loadMessagesSync(id, { offset: 5 })).toStrictEqual(all.slice(5));
      expect(b.loadMessagesSync(id, { offset: 7, limit: 1 })).toEqual([]);
      const iterable = b.iterateMessagesSync(id, { batchSize: 3 });
      expect(typeof iterable[Symbol.iterator]).toBe("function");
      expect(collectSync(iterable, 7)).toStrictEqual(all);
      expect(collectSync(b.iterateMessagesSync(id, { batchSize: 7 }), 7)).toStrictEqual(all);
      expect(collectSync(b.iterateMessagesSync(id), 7)).toStrictEqual(all);
      expect(collectSync(b.iterateMessagesSync(await b.createSession(agentId())), 0)).toEqual([]);
      b.saveMessagesSync(id, numbered(2, 7));
      expect(b.countMessagesSync(id)).toBe(9);
      expect(collectSync(b.iterateMessagesSync(id, { batchSize: 4 }), 9)).toStrictEqual(await b.loadMessages(id));
    });

    it("throw the same error classes, on the first step for iterateMessagesSync", async () => {
      const b = await ctx.backend();
      const id = await sessionWith(b, 2);
      const ghost = unknownId();
      expect(() => b.countMessagesSync(ghost)).toThrow(SessionNotFoundError);
      expect(() => b.loadMessagesSync(ghost, { offset: 1 })).toThrow(SessionNotFoundError);
      const iterator = b.iterateMessagesSync(ghost)[Symbol.iterator]();
      expect(() => iterator.next()).toThrow(SessionNotFoundError);
      expectField(
        thrown(() => b.loadMessagesSync(id, { offset: -1 })),
        "options.offset",
      );
      expectField(
        thrown(() => b.loadMessagesSync(id, { limit: 0 })),
        "options.limit",
      );
      expect(thrown(() => b.loadMessagesSync(id, { last: 1, offset: 0 }))).toBeInstanceOf(ValidationError);
      const fractional = b.iterateMessagesSync(id, { batchSize: 1.5 })[Symbol.iterator]();
      expectField(
        thrown(() => fractional.next()),
        "options.batchSize",
      );
      expect(b.countMessagesSync(id)).toBe(2);
    });
  });
}
