import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { AgentixStorageError, ConflictError, ValidationError } from "../core/errors.js";
import type { MessageRecord, SessionRecord } from "../core/types.js";
import { agentId, expectField, rejection, type SuiteContext, thrown } from "./context.js";

/** Chunks of this many messages: small, so that a few dozen messages make several chunks. */
const BATCH = 7;

/** A session to import with `n` messages, timestamps rising every 5 messages; `tag` marks whose messages they are. */
function session(agent: string, n: number, tag = "a"): { record: SessionRecord; messages: MessageRecord[] } {
  const at = (i: number) => new Date(Date.UTC(2024, 0, 15, 14, 30) + Math.floor(i / 5) * 1000).toISOString();
  const roles = ["user", "assistant", "tool", "system"] as const;
  const messages: MessageRecord[] = Array.from({ length: n }, (_, i) => ({
    role: roles[i % 4] as MessageRecord["role"],
    content: i % 3 === 0 ? `${tag} ${i} \u0000 é` : i % 3 === 1 ? { tag, i, nested: [i, null, "x"] } : [tag, i],
    timestamp: at(i),
  }));
  const record: SessionRecord = {
    session_id: randomUUID(),
    agent_id: agent,
    created_at: at(0),
    updated_at: at(n + 5),
    metadata: { cwd: `/streamed/${tag}`, n },
  };
  return { record, messages };
}

/** The messages as an async iterable that yields to the event loop between messages (as a remote source would). */
async function* slowly<T>(items: readonly T[], fail?: { at: number; error: Error }): AsyncGenerator<T> {
  for (const [i, item] of items.entries()) {
    if (fail && i === fail.at) throw fail.error;
    if (i % 3 === 0) await new Promise((resolve) => setImmediate(resolve));
    yield item;
  }
}

/** Whether the session is visible at all: by id, in its agent's listing, in a scan. */
async function visible(ctx: SuiteContext, record: SessionRecord): Promise<boolean> {
  const b = await ctx.backend();
  const byId = await b.getSession(record.session_id);
  const listed = await b.listSessions(record.agent_id);
  const scanned = await b.scanSessions({ agentId: record.agent_id });
  return byId !== null || listed.length > 0 || scanned.length > 0;
}

export function v2ImportTests(ctx: SuiteContext): void {
  describe("v2: streamed import (importSession with an iterable)", () => {
    it("imports from an async iterable in chunks, exactly (ids, times, metadata, order), once", async () => {
      const b = await ctx.backend();
      const { record, messages } = session(agentId(), 5 * BATCH + 3);
      expect(await b.importSession(record, slowly(messages), { batchSize: BATCH })).toBe(true);
      expect(await b.getSession(record.session_id)).toStrictEqual(record);
      expect(await b.loadMessages(record.session_id)).toStrictEqual(messages);
      expect(await b.countMessages(record.session_id)).toBe(messages.length);
      expect(await b.listSessions(record.agent_id, { cwd: "/streamed/a" })).toStrictEqual([record]);
      expect(await b.loadMessages(record.session_id, { offset: BATCH - 1, limit: 3 })).toStrictEqual(
        messages.slice(BATCH - 1, BATCH + 2),
      );
      // The session is an ordinary one afterwards.
      expect((await b.saveMessages(record.session_id, [{ role: "user", content: "next" }])).length).toBe(39);
      expect(await b.popMessage(record.session_id)).toMatchObject({ content: "next" });
      expect(await b.loadMessages(record.session_id)).toStrictEqual(messages);
    });

    it("imports from a plain iterable, an exact multiple of the batch, and an empty one", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const full = session(agent, 3 * BATCH);
      expect(await b.importSession(full.record, new Set(full.messages), { batchSize: BATCH })).toBe(true);
      expect(await b.loadMessages(full.record.session_id)).toStrictEqual(full.messages);
      const empty = session(agent, 0, "e");
      expect(await b.importSession(empty.record, slowly([]))).toBe(true);
      expect(await b.getSession(empty.record.session_id)).toStrictEqual(empty.record);
      expect(await b.loadMessages(empty.record.session_id)).toStrictEqual([]);
    });

    it("copies a session from another backend's iterateMessages", async () => {
      const source = await ctx.backend();
      const target = await ctx.backend();
      const id = await source.createSession(agentId(), { from: "source" });
      for (let i = 0; i < 4; i++) {
        await source.saveMessages(id, [
          { role: "user", content: `q${i}` },
          { role: "assistant", content: { a: i } },
        ]);
      }
      const record = (await source.getSession(id)) as SessionRecord;
      const copy = { ...record, session_id: randomUUID() };
      expect(await target.importSession(copy, source.iterateMessages(id, { batchSize: 3 }), { batchSize: 3 })).toBe(
        true,
      );
      expect(await target.loadMessages(copy.session_id)).toStrictEqual(await source.loadMessages(id));
      expect(await target.getSession(copy.session_id)).toStrictEqual(copy);
    });

    it("returns false for an id that exists, reading none of the messages and changing nothing", async () => {
      const b = await ctx.backend();
      const { record, messages } = session(agentId(), 2 * BATCH);
      expect(await b.importSession(record, messages.slice(0, 2))).toBe(true);
      let read = 0;
      async function* counted(): AsyncGenerator<MessageRecord> {
        for (const message of messages) {
          read++;
          yield message;
        }
      }
      expect(await b.importSession({ ...record, agent_id: "other" }, counted(), { batchSize: BATCH })).toBe(false);
      expect(read).toBe(0);
      expect(await b.getSession(record.session_id)).toStrictEqual(record);
      expect(await b.loadMessages(record.session_id)).toStrictEqual(messages.slice(0, 2));
      // A created session counts as existing too.
      const created = await b.createSession(agentId());
      const other = session(agentId(), 3);
      expect(await b.importSession({ ...other.record, session_id: created }, slowly(other.messages))).toBe(false);
      expect(await b.loadMessages(created)).toStrictEqual([]);
    });

    it("leaves nothing visible when the iterable fails midway; the id can be imported afterwards", async () => {
      const b = await ctx.backend();
      const { record, messages } = session(agentId(), 6 * BATCH);
      const boom = new Error("the source broke");
      const error = await rejection(
        b.importSession(record, slowly(messages, { at: 3 * BATCH + 2, error: boom }), { batchSize: BATCH }),
      );
      expect(error).toBeInstanceOf(AgentixStorageError);
      expect((error as Error).cause).toBe(boom);
      expect(await visible(ctx, record)).toBe(false);
      expect(await b.getSession(record.session_id)).toBeNull();
      // Whatever was staged is not mixed into a later import of the same id.
      const again = messages.slice(0, BATCH + 1);
      expect(await b.importSession(record, slowly(again), { batchSize: BATCH })).toBe(true);
      expect(await b.loadMessages(record.session_id)).toStrictEqual(again);
      expect(await b.countMessages(record.session_id)).toBe(again.length);
    });

    it("writes nothing when a message in the third chunk is invalid (ValidationError naming it)", async () => {
      const b = await ctx.backend();
      const { record, messages } = session(agentId(), 5 * BATCH);
      const bad = 2 * BATCH + 3;
      const broken = messages.map((m, i) => (i === bad ? { ...m, content: Number.NaN as never } : m));
      expectField(
        await rejection(b.importSession(record, slowly(broken), { batchSize: BATCH })),
        `messages[${bad}].content`,
      );
      const extra = messages.map((m, i) => (i === bad ? ({ ...m, id: 1 } as MessageRecord) : m));
      expect(await rejection(b.importSession(record, slowly(extra), { batchSize: BATCH }))).toBeInstanceOf(
        ValidationError,
      );
      expect(await visible(ctx, record)).toBe(false);
      // Out of order across a chunk boundary (the first chunk ends with a later message than the second's first),
      // and an updated_at before the newest message (known only at the end).
      const swapped = [...messages];
      [swapped[BATCH - 1], swapped[BATCH + 5]] = [
        swapped[BATCH + 5] as MessageRecord,
        swapped[BATCH - 1] as MessageRecord,
      ];
      expectField(
        await rejection(b.importSession(record, slowly(swapped), { batchSize: BATCH })),
        `messages[${BATCH}].timestamp`,
      );
      const stale = { ...record, updated_at: (messages[BATCH] as MessageRecord).timestamp };
      expectField(await rejection(b.importSession(stale, slowly(messages), { batchSize: BATCH })), "record.updated_at");
      expect(await visible(ctx, record)).toBe(false);
      expect(await b.importSession(record, slowly(messages), { batchSize: BATCH })).toBe(true);
      expect(await b.loadMessages(record.session_id)).toStrictEqual(messages);
    });

    it("rejects what is neither an array nor an iterable, and bad options, before anything is written", async () => {
      const b = await ctx.backend();
      const { record, messages } = session(agentId(), 3);
      expectField(await rejection(b.importSession(record, 42 as never)), "messages");
      expectField(await rejection(b.importSession(record, "abc" as never)), "messages");
      expectField(await rejection(b.importSession(record, slowly(messages), { batchSize: 0 })), "options.batchSize");
      expectField(
        await rejection(b.importSession({ ...record, session_id: "../x" }, slowly(messages))),
        "record.session_id",
      );
      expect(await visible(ctx, record)).toBe(false);
    });

    it("never makes a mixed session of racing imports and a create of the same id", async () => {
      for (let round = 0; round < 3; round++) {
        const b = await ctx.backend();
        const agent = agentId();
        const a = session(agent, 4 * BATCH, "a");
        const id = a.record.session_id;
        const other = session(agent, 3 * BATCH + 2, "b");
        const imports = [
          b.importSession(a.record, slowly(a.messages), { batchSize: BATCH }),
          b.importSession({ ...other.record, session_id: id }, slowly(other.messages), { batchSize: BATCH }),
        ].map((p) => p.catch((error: unknown) => error));
        const created =
          round === 2
            ? await b.createSession(agent, null, { sessionId: id }).then(
                () => true,
                () => false,
              )
            : false;
        const results = await Promise.all(imports);
        for (const result of results) {
          if (typeof result !== "boolean") expect(result).toBeInstanceOf(ConflictError);
        }
        const won = results.filter((r) => r === true).length;
        expect(won + (created ? 1 : 0)).toBeLessThanOrEqual(1);
        const stored = await b.getSession(id);
        if (created) {
          expect(await b.loadMessages(id)).toStrictEqual([]);
        } else if (results[0] === true) {
          expect(stored).toStrictEqual(a.record);
          expect(await b.loadMessages(id)).toStrictEqual(a.messages);
        } else if (results[1] === true) {
          expect(stored).toStrictEqual({ ...other.record, session_id: id });
          expect(await b.loadMessages(id)).toStrictEqual(other.messages);
        } else {
          // Both lost to each other (a backend may refuse both): nothing visible, and the id is still free.
          expect(stored).toBeNull();
          expect(await b.importSession(a.record, slowly(a.messages), { batchSize: BATCH })).toBe(true);
          expect(await b.loadMessages(id)).toStrictEqual(a.messages);
        }
      }
    });
  });
}

export function v2ImportSyncTests(ctx: SuiteContext): void {
  describe("v2: streamed import, sync (importSessionSync with an iterable)", () => {
    it("imports from a generator in chunks, exactly", async () => {
      const b = await ctx.backend();
      const { record, messages } = session(agentId(), 4 * BATCH + 1);
      function* each(): Generator<MessageRecord> {
        yield* messages;
      }
      expect(b.importSessionSync(record, each(), { batchSize: BATCH })).toBe(true);
      expect(b.getSessionSync(record.session_id)).toStrictEqual(record);
      expect(b.loadMessagesSync(record.session_id)).toStrictEqual(messages);
      expect(b.importSessionSync(record, each(), { batchSize: BATCH })).toBe(false);
    });

    it("leaves nothing visible when the generator throws midway, or a message is invalid", async () => {
      const b = await ctx.backend();
      const { record, messages } = session(agentId(), 4 * BATCH);
      function* failing(): Generator<MessageRecord> {
        yield* messages.slice(0, 2 * BATCH + 1);
        throw new Error("the source broke");
      }
      expect(thrown(() => b.importSessionSync(record, failing(), { batchSize: BATCH }))).toBeInstanceOf(
        AgentixStorageError,
      );
      const broken = messages.map((m, i) => (i === 2 * BATCH ? { ...m, role: "bot" as never } : m));
      expectField(
        thrown(() => b.importSessionSync(record, broken.values(), { batchSize: BATCH })),
        `messages[${2 * BATCH}].role`,
      );
      expect(b.getSessionSync(record.session_id)).toBeNull();
      expect(b.listSessionsSync(record.agent_id)).toEqual([]);
      expect(b.importSessionSync(record, messages.values(), { batchSize: BATCH })).toBe(true);
      expect(b.loadMessagesSync(record.session_id)).toStrictEqual(messages);
    });
  });
}
