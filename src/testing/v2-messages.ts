import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import type { StorageBackend } from "../core/backend.js";
import { SessionNotFoundError } from "../core/errors.js";
import type { MessageRecord, NewMessage, SessionRecord } from "../core/types.js";
import { agentId, expectField, freezeClock, rejection, type SuiteContext, unknownId } from "./context.js";
import { hostileIds } from "./hostile.js";

const say = (content: NewMessage["content"], role: NewMessage["role"] = "user"): NewMessage => ({ role, content });

/** The session's record, count and messages: what a call that writes nothing must leave as it was. */
async function state(b: StorageBackend, id: string) {
  return { record: await b.getSession(id), count: await b.countMessages(id), messages: await b.loadMessages(id) };
}

/** Good messages with one bad one at index 3, and the field the error must name. */
const badBatches: Array<[string, unknown, string]> = [
  ["content undefined inside an array", { role: "user", content: ["a", undefined] }, "messages[3].content[1]"],
  ["content undefined", { role: "user", content: undefined }, "messages[3].content"],
  ["content missing", { role: "user" }, "messages[3].content"],
  ["content NaN inside", { role: "user", content: { n: Number.NaN } }, "messages[3].content.n"],
  ["content a number", { role: "user", content: 42 }, "messages[3].content"],
  ["role function", { role: "function", content: "x" }, "messages[3].role"],
  ["role Tool", { role: "Tool", content: "x" }, "messages[3].role"],
  ["role missing", { content: "x" }, "messages[3].role"],
  ["an extra timestamp key", { role: "user", content: "x", timestamp: "2024-01-01T00:00:00.000Z" }, "messages[3]"],
  ["a string, not a message", "hello", "messages[3]"],
  ["null", null, "messages[3]"],
];

export function v2MessageTests(ctx: SuiteContext): void {
  describe("the tool role", () => {
    it("round-trips alone and in batches, as three-key records", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      await b.saveMessage(id, "tool", { tool_call_id: "call_1", output: "42" });
      await b.saveMessages(id, [
        say([{ type: "tool_use", id: "call_2", name: "ls" }], "assistant"),
        say("file-a\nfile-b", "tool"),
        say({ type: "tool_result", is_error: true }, "tool"),
      ]);
      const messages = await b.loadMessages(id);
      expect(messages.map((m) => [m.role, m.content])).toStrictEqual([
        ["tool", { tool_call_id: "call_1", output: "42" }],
        ["assistant", [{ type: "tool_use", id: "call_2", name: "ls" }]],
        ["tool", "file-a\nfile-b"],
        ["tool", { type: "tool_result", is_error: true }],
      ]);
      for (const m of messages) expect(Object.keys(m).sort()).toEqual(["content", "role", "timestamp"]);
      expect((await b.loadMessages(id, { last: 1 }))[0]?.role).toBe("tool");
      const fork = await b.forkSession(id);
      expect(await b.loadMessages(fork)).toStrictEqual(messages);
    });

    it.runIf(ctx.options.portable !== false)("is exported and imported with the rest", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const record: SessionRecord = {
        session_id: randomUUID(),
        agent_id: agent,
        created_at: "2024-02-01T00:00:00.000Z",
        updated_at: "2024-02-01T00:00:02.000Z",
        metadata: { cwd: "/tools" },
      };
      const messages: MessageRecord[] = [
        { role: "assistant", content: [{ type: "tool_use", id: "t1" }], timestamp: "2024-02-01T00:00:01.000Z" },
        { role: "tool", content: { tool_use_id: "t1", result: "\u0000ok" }, timestamp: "2024-02-01T00:00:02.000Z" },
      ];
      expect(await b.importSession(record, messages)).toBe(true);
      expect(await b.loadMessages(record.session_id)).toStrictEqual(messages);
      const [scanned] = await b.scanSessions({ agentId: agent });
      expect(scanned).toStrictEqual(record);
      // Export and re-import under another id, as a copy between stores does.
      const copy = { ...(scanned as SessionRecord), session_id: randomUUID() };
      expect(await b.importSession(copy, await b.loadMessages(record.session_id))).toBe(true);
      expect(await b.loadMessages(copy.session_id)).toStrictEqual(messages);
      expect(await b.countMessages(copy.session_id)).toBe(2);
    });

    it("an unknown role is still a ValidationError, nothing written", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      await b.saveMessage(id, "tool", "kept");
      const before = await state(b, id);
      for (const role of ["function", "Tool", "TOOL", "tools", "tool_result", "developer"]) {
        expectField(await rejection(b.saveMessage(id, role as "tool", "x")), "role");
        expectField(
          await rejection(b.saveMessages(id, [say("ok"), { role, content: "x" } as never])),
          "messages[1].role",
        );
      }
      expect(await state(b, id)).toStrictEqual(before);
    });
  });

  describe("saveMessages", () => {
    it("appends in order, with one timestamp, and returns { length } equal to countMessages", async () => {
      const b = await ctx.backend();
      freezeClock("2037-01-01T00:00:00.000Z");
      const id = await b.createSession(agentId());
      await b.saveMessage(id, "system", "first, alone");
      freezeClock("2037-01-01T00:00:01.000Z");
      const batch = [say("q"), say(["a"], "assistant"), say({ out: 1 }, "tool"), say("q2")];
      const result = await b.saveMessages(id, batch);
      expect(result).toStrictEqual({ length: 5 });
      expect(await b.countMessages(id)).toBe(5);
      expect((await b.getSession(id))?.updated_at).toBe("2037-01-01T00:00:01.000Z");
      freezeClock("2037-01-01T00:00:02.000Z");
      await b.saveMessage(id, "assistant", "after, alone");
      expect(await b.saveMessages(id, [say("last")])).toStrictEqual({ length: 7 });
      const messages = await b.loadMessages(id);
      expect(messages.map((m) => m.content)).toStrictEqual([
        "first, alone",
        "q",
        ["a"],
        { out: 1 },
        "q2",
        "after, alone",
        "last",
      ]);
      expect(messages.map((m) => m.role)).toEqual(["system", "user", "assistant", "tool", "user", "assistant", "user"]);
      expect(messages.map((m) => m.timestamp)).toEqual([
        "2037-01-01T00:00:00.000Z",
        ...Array(4).fill("2037-01-01T00:00:01.000Z"),
        "2037-01-01T00:00:02.000Z",
        "2037-01-01T00:00:02.000Z",
      ]);
    });

    it("stores a batch with the session's updated_at when the clock is behind", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      freezeClock("2037-02-01T00:00:10.000Z");
      await b.saveMessage(id, "user", "ahead");
      freezeClock("2037-02-01T00:00:05.000Z");
      await b.saveMessages(id, [say("behind 1"), say("behind 2", "assistant"), say("behind 3", "tool")]);
      expect((await b.loadMessages(id)).map((m) => m.timestamp)).toEqual(Array(4).fill("2037-02-01T00:00:10.000Z"));
      expect((await b.getSession(id))?.updated_at).toBe("2037-02-01T00:00:10.000Z");
    });

    it("an empty batch writes nothing and returns the length", async () => {
      const b = await ctx.backend();
      freezeClock("2037-03-01T00:00:00.000Z");
      const id = await b.createSession(agentId());
      expect(await b.saveMessages(id, [])).toStrictEqual({ length: 0 });
      freezeClock("2037-03-01T00:00:01.000Z");
      await b.saveMessages(id, [say("a"), say("b")]);
      const before = await state(b, id);
      freezeClock("2037-03-01T00:00:09.000Z");
      expect(await b.saveMessages(id, [])).toStrictEqual({ length: 2 });
      expect(await state(b, id)).toStrictEqual(before);
      expect(before.record?.updated_at).toBe("2037-03-01T00:00:01.000Z");
      await expect(b.saveMessages(unknownId(), [])).rejects.toBeInstanceOf(SessionNotFoundError);
    });

    it.each(badBatches)(
      "one bad message (%s) is a ValidationError naming it, nothing written",
      async (_l, bad, field) => {
        const b = await ctx.backend();
        freezeClock("2037-04-01T00:00:00.000Z");
        const id = await b.createSession(agentId());
        await b.saveMessage(id, "user", "kept");
        const before = await state(b, id);
        freezeClock("2037-04-01T00:00:09.000Z");
        const batch = [say("0"), say("1", "assistant"), say("2", "tool"), bad, say("4")];
        expectField(await rejection(b.saveMessages(id, batch as NewMessage[])), field);
        expect(await state(b, id)).toStrictEqual(before);
      },
    );

    it("a batch that is not an array is a ValidationError; an unknown session a SessionNotFoundError", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const before = await state(b, id);
      for (const notArray of [
        say("one message, not in an array"),
        "hello",
        null,
        undefined,
        { 0: say("x"), length: 1 },
      ]) {
        expectField(await rejection(b.saveMessages(id, notArray as never)), "messages");
      }
      expect(await state(b, id)).toStrictEqual(before);
      const ghost = unknownId();
      const error = await rejection(b.saveMessages(ghost, [say("x")]));
      expect(error).toBeInstanceOf(SessionNotFoundError);
      expect((error as SessionNotFoundError).sessionId).toBe(ghost);
      expect(await b.getSession(ghost)).toBeNull();
      const deleted = await b.createSession(agentId());
      await b.deleteSession(deleted);
      await expect(b.saveMessages(deleted, [say("x")])).rejects.toBeInstanceOf(SessionNotFoundError);
      await expect(b.saveMessages("../x", [say("x")])).rejects.toBeInstanceOf(SessionNotFoundError);
      expect(await b.getSession(deleted)).toBeNull();
    });

    it("keeps each of many concurrent batches contiguous and in order, losing none", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const writers = 8;
      const batches = 4;
      const size = 5;
      const lengths = new Map<string, number>();
      await Promise.all(
        Array.from({ length: writers }, async (_, w) => {
          for (let k = 0; k < batches; k++) {
            const batch = Array.from({ length: size }, (_, i) => say({ w, k, i }));
            lengths.set(`${w}/${k}`, (await b.saveMessages(id, batch)).length);
          }
        }),
      );
      const messages = await b.loadMessages(id);
      expect(messages).toHaveLength(writers * batches * size);
      expect(await b.countMessages(id)).toBe(writers * batches * size);
      const contents = messages.map((m) => m.content as { w: number; k: number; i: number });
      for (let w = 0; w < writers; w++) {
        let previousEnd = -1;
        for (let k = 0; k < batches; k++) {
          const start = contents.findIndex((c) => c.w === w && c.k === k);
          const run = contents.slice(start, start + size);
          expect(run, `batch ${w}/${k}`).toStrictEqual(Array.from({ length: size }, (_, i) => ({ w, k, i })));
          expect(new Set(messages.slice(start, start + size).map((m) => m.timestamp)).size).toBe(1);
          expect(lengths.get(`${w}/${k}`), `length returned to ${w}/${k}`).toBe(start + size);
          expect(start > previousEnd, `writer ${w}'s batches in order`).toBe(true);
          previousEnd = start;
        }
      }
      expect((await b.getSession(id))?.updated_at).toBe(messages.at(-1)?.timestamp);
    });

    it("never shows part of a batch to a concurrent reader", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const size = 200;
      const seen: number[] = [];
      for (let round = 0; round < 3; round++) {
        let done = false;
        const saving = b
          .saveMessages(
            id,
            Array.from({ length: size }, (_, i) => say(`r${round}m${i}`)),
          )
          .finally(() => {
            done = true;
          });
        while (!done) {
          seen.push((await b.loadMessages(id)).length, await b.countMessages(id));
          // A backend that answers without I/O would otherwise starve the writer's timers and I/O.
          await new Promise((resolve) => setImmediate(resolve));
        }
        expect(await saving).toStrictEqual({ length: size * (round + 1) });
      }
      expect(seen.filter((n) => n % size !== 0)).toEqual([]);
      expect(await b.countMessages(id)).toBe(3 * size);
    });

    it("saves a batch of 1,000 small messages in order", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const roles = ["user", "assistant", "tool", "system"] as const;
      const batch = Array.from({ length: 1000 }, (_, i) => say(i % 7 ? `m${i}` : { i }, roles[i % 4]));
      expect(await b.saveMessages(id, batch)).toStrictEqual({ length: 1000 });
      const messages = await b.loadMessages(id);
      expect(messages.map((m) => ({ role: m.role, content: m.content }))).toStrictEqual(batch);
      expect(new Set(messages.map((m) => m.timestamp)).size).toBe(1);
      expect((await b.loadMessages(id, { last: 2 })).map((m) => m.content)).toEqual(["m998", "m999"]);
      expect(await b.countMessages(id)).toBe(1000);
    }, 60_000);

    it("saves a batch holding a couple of MiB", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      const quarter = (Math.min(2, ctx.options.largeMessageMiB ?? 16) * 1024 * 1024) / 4;
      const batch = [
        say(`${"a".repeat(quarter - 2)}é`),
        say({ text: "b".repeat(quarter - 16) }, "assistant"),
        say(
          Array.from({ length: 64 }, (_, i) => `${i}`.padEnd(quarter / 64 - 8, "c")),
          "tool",
        ),
        say(`${"\u0000".repeat(16)}${"d".repeat(quarter - 32)}`),
      ];
      expect(await b.saveMessages(id, batch)).toStrictEqual({ length: 4 });
      const messages = await b.loadMessages(id);
      expect(messages).toHaveLength(4);
      messages.forEach((m, i) => {
        const expected = batch[i] as NewMessage;
        expect(m.role).toBe(expected.role);
        expect(JSON.stringify(m.content) === JSON.stringify(expected.content), `message ${i}`).toBe(true);
      });
    }, 120_000);
  });

  describe("countMessages", () => {
    it("is 0 for a new session, follows appends and batches, and a fork's equals its source's", async () => {
      const b = await ctx.backend();
      const id = await b.createSession(agentId());
      expect(await b.countMessages(id)).toBe(0);
      await b.saveMessage(id, "user", "one");
      expect(await b.countMessages(id)).toBe(1);
      await b.saveMessages(id, [say("two"), say("three", "tool")]);
      expect(await b.countMessages(id)).toBe(3);
      await b.saveMessages(id, []);
      expect(await b.countMessages(id)).toBe(3);
      const fork = await b.forkSession(id);
      expect(await b.countMessages(fork)).toBe(3);
      await b.saveMessage(fork, "user", "only in the fork");
      expect(await b.countMessages(fork)).toBe(4);
      expect(await b.countMessages(id)).toBe(3);
      expect(await b.countMessages(await b.forkSession(await b.createSession(agentId())))).toBe(0);
    });

    it("an unknown, deleted or non-UUID id is a SessionNotFoundError; a non-string a ValidationError", async () => {
      const b = await ctx.backend();
      const real = await b.createSession(agentId());
      await b.saveMessage(real, "user", "x");
      const ghost = unknownId();
      const error = await rejection(b.countMessages(ghost));
      expect(error).toBeInstanceOf(SessionNotFoundError);
      expect((error as SessionNotFoundError).sessionId).toBe(ghost);
      const deleted = await b.createSession(agentId());
      await b.saveMessage(deleted, "user", "gone");
      await b.deleteSession(deleted);
      await expect(b.countMessages(deleted)).rejects.toBeInstanceOf(SessionNotFoundError);
      for (const bad of [...hostileIds, real.toUpperCase(), `${real}\n`]) {
        await expect(b.countMessages(bad), JSON.stringify(bad)).rejects.toBeInstanceOf(SessionNotFoundError);
      }
      expectField(await rejection(b.countMessages(42 as never)), "sessionId");
      expectField(await rejection(b.countMessages(undefined as never)), "sessionId");
      expect(await b.countMessages(real)).toBe(1);
    });
  });

  describe("ids from outside stay data for the v2 methods", () => {
    it("updateSession and saveMessages do not find them; openSession and the sessionId option refuse them", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const real = await b.createSession(agent, { cwd: "/safe" });
      await b.saveMessage(real, "user", "keep me");
      const before = await state(b, real);
      for (const id of [...hostileIds, real.toUpperCase(), `${real}/..`, `${real.slice(0, -1)}*`]) {
        const label = JSON.stringify(id);
        await expect(b.updateSession(id, { metadata: null }), label).rejects.toBeInstanceOf(SessionNotFoundError);
        await expect(b.saveMessages(id, [say("x")]), label).rejects.toBeInstanceOf(SessionNotFoundError);
        await expect(b.saveMessages(id, []), label).rejects.toBeInstanceOf(SessionNotFoundError);
        expectField(await rejection(b.openSession(agent, id)), "sessionId");
        expectField(await rejection(b.createSession(agent, null, { sessionId: id })), "options.sessionId");
      }
      expect(await state(b, real)).toStrictEqual(before);
      expect(await b.listSessions(agent)).toStrictEqual([before.record]);
    });
  });
}
