import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import { ValidationError } from "../core/errors.js";
import type { MessageRecord, SessionRecord } from "../core/types.js";
import { agentId, type SuiteContext } from "./context.js";

function exported(agent: string, n: number): { record: SessionRecord; messages: MessageRecord[] } {
  return {
    record: {
      session_id: randomUUID(),
      agent_id: agent,
      created_at: "2024-01-15T14:30:00.123Z",
      updated_at: "2024-01-15T14:31:00.000Z",
      metadata: { cwd: "/imported", n },
    },
    messages: [
      { role: "system", content: "be kind", timestamp: "2024-01-15T14:30:10.000Z" },
      { role: "user", content: { q: "\u0000" }, timestamp: "2024-01-15T14:30:10.000Z" },
      { role: "assistant", content: ["a"], timestamp: "2024-01-15T14:31:00.000Z" },
    ],
  };
}

export function portableTests(ctx: SuiteContext): void {
  describe("export and import (scanSessions, importSession)", () => {
    it("imports a session exactly (ids, times, metadata, message order) and only once", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const { record, messages } = exported(agent, 1);
      expect(await b.importSession(record, messages)).toBe(true);
      expect(await b.getSession(record.session_id)).toStrictEqual(record);
      expect(await b.loadMessages(record.session_id)).toStrictEqual(messages);
      expect(await b.listSessions(agent, { cwd: "/imported" })).toStrictEqual([record]);
      expect(await b.importSession({ ...record, agent_id: "other" }, messages.slice(0, 1))).toBe(false);
      expect(await b.getSession(record.session_id)).toStrictEqual(record);
      expect(await b.loadMessages(record.session_id)).toStrictEqual(messages);
      await b.saveMessage(record.session_id, "user", "after import");
      expect(await b.loadMessages(record.session_id)).toHaveLength(4);
    });

    it("rejects an import that agentix could not have written, writing nothing", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const { record, messages } = exported(agent, 2);
      const bad: Array<[SessionRecord, MessageRecord[], string]> = [
        [{ ...record, session_id: "../x" }, messages, "record.session_id"],
        [{ ...record, created_at: "yesterday" }, messages, "record.created_at"],
        [{ ...record, updated_at: "2024-01-15T14:30:59.999Z" }, messages, "record.updated_at"],
        [record, [...messages].reverse(), "messages[1].timestamp"],
        [record, [{ ...(messages[0] as MessageRecord), role: "function" as never }], "messages[0].role"],
        [record, [{ ...(messages[0] as MessageRecord), content: Number.NaN as never }], "messages[0].content"],
        [{ ...record, extra: 1 } as never, messages, "record"],
      ];
      for (const [r, m, field] of bad) {
        const error = await b.importSession(r, m).catch((e: unknown) => e);
        expect(error, field).toBeInstanceOf(ValidationError);
        expect(
          (error as ValidationError).field.startsWith(field),
          `${field} vs ${(error as ValidationError).field}`,
        ).toBe(true);
      }
      expect(await b.getSession(record.session_id)).toBeNull();
      expect(await b.listSessions(agent)).toEqual([]);
    });

    it("scans every session of an agent in id order, page by page", async () => {
      const b = await ctx.backend();
      const agent = agentId();
      const created: string[] = [];
      for (let i = 0; i < 5; i++) created.push(await b.createSession(agent, { i }));
      const imported = exported(agent, 3);
      await b.importSession(imported.record, imported.messages);
      created.push(imported.record.session_id);
      await b.createSession(agentId("other"));
      const seen: SessionRecord[] = [];
      let page = await b.scanSessions({ agentId: agent, limit: 2 });
      while (page.length > 0) {
        seen.push(...page);
        page = await b.scanSessions({ agentId: agent, limit: 2, after: page.at(-1)?.session_id as string });
      }
      expect(seen.map((s) => s.session_id)).toEqual([...created].sort());
      for (const s of seen) expect(s).toStrictEqual(await b.getSession(s.session_id));
      const all = await b.scanSessions({ limit: 100_000 });
      expect(all.map((s) => s.session_id)).toEqual(all.map((s) => s.session_id).sort());
      expect(all.map((s) => s.session_id)).toEqual(expect.arrayContaining(created));
    });
  });
}
