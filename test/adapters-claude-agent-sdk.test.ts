// agentix/claude-agent-sdk on the five backends: AgentixSessionStore against the SDK's own InMemorySessionStore
// (random operation sequences, results compared), the SessionStore contract case by case, de-duplication by uuid,
// the SDK's session helpers (listSessions, getSessionMessages, renameSession, forkSession, deleteSession,
// importSessionToStore, listSubagents) on it, the SDK's real query() — the Claude Code binary against a fake
// Anthropic API on 127.0.0.1 — for two turns, the second resumed from a new backend instance; a delete racing
// appends; and the round trips of append, load and the listings on Postgres and Redis.
import { randomUUID } from "node:crypto";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  deleteSession,
  foldSessionSummary,
  forkSession,
  getSessionInfo,
  getSessionMessages,
  getSubagentMessages,
  InMemorySessionStore,
  importSessionToStore,
  listSessions,
  listSubagents,
  query,
  renameSession,
  type SessionKey,
  type SessionStoreEntry,
} from "@anthropic-ai/claude-agent-sdk";
import fc from "fast-check";
import { Redis } from "ioredis";
import postgres from "postgres";
import { afterAll, afterEach, describe, expect, inject, it, vi } from "vitest";
import { AgentixSessionStore } from "../src/adapters/claude-agent-sdk.js";
import type { StorageBackend } from "../src/core/backend.js";
import { ValidationError } from "../src/core/errors.js";
import { MemoryStorageBackend } from "../src/memory.js";
import { PostgresStorageBackend } from "../src/postgres.js";
import { RedisStorageBackend } from "../src/redis.js";
import { adapterBackends, dropPrefix } from "./support/backends.js";
import { startFakeAnthropic } from "./support/fake-anthropic.js";

const { backends, closeOpened, cleanUp } = await adapterBackends("claude");
const scratch = mkdtempSync(join(tmpdir(), "agentix-claude-"));
afterEach(closeOpened);
afterAll(async () => {
  await cleanUp();
  rmSync(scratch, { recursive: true, force: true });
});

let counter = 0;
/** A project key of its own for each test (the stores are shared by the tests of a file). */
const freshProject = () => `proj-${++counter}-${randomUUID().slice(0, 8)}`;
const entry = (fields: Record<string, unknown> = {}): SessionStoreEntry => ({ type: "x", ...fields });
const withUuid = (n: number): SessionStoreEntry => entry({ uuid: randomUUID(), n });
/** The SDK's project key of a directory (its path with every character but letters and digits as `-`). */
const projectKeyOf = (dir: string) => dir.replace(/[^a-zA-Z0-9]/g, "-");

describe.each(backends)("AgentixSessionStore on $name", (backend) => {
  describe.skipIf(!backend.available)("", () => {
    const store = (storage: StorageBackend = backend.open(), agentId?: string) =>
      new AgentixSessionStore({ storage, ...(agentId === undefined ? {} : { agentId }) });

    it("behaves as the SDK's InMemorySessionStore over random sequences of appends, loads, listings and deletes", async () => {
      const projects = ["A", "B"];
      const sessionIds = ["s1", "s2"];
      const subpaths = [undefined, "subagents/agent-1", "subagents/agent-2"];
      const keyArb = fc
        .tuple(fc.constantFrom(...projects), fc.constantFrom(...sessionIds), fc.constantFrom(...subpaths))
        .map(
          ([projectKey, sessionId, subpath]): SessionKey => ({
            projectKey,
            sessionId,
            ...(subpath ? { subpath } : {}),
          }),
        );
      const op = fc.oneof(
        fc.record({
          kind: fc.constant("append" as const),
          key: keyArb,
          size: fc.integer({ min: 1, max: 3 }),
          uuids: fc.boolean(),
        }),
        fc.record({ kind: fc.constant("load" as const), key: keyArb }),
        fc.record({ kind: fc.constant("list" as const), project: fc.constantFrom(...projects) }),
        fc.record({ kind: fc.constant("summaries" as const), project: fc.constantFrom(...projects) }),
        fc.record({ kind: fc.constant("subkeys" as const), key: keyArb }),
        fc.record({ kind: fc.constant("delete" as const), key: keyArb }),
      );
      const storage = backend.open();
      await fc.assert(
        fc.asyncProperty(fc.array(op, { minLength: 5, maxLength: 25 }), async (ops) => {
          const ours = store(storage, `fc-${randomUUID()}`); // an agent of its own: a store of its own
          const reference = new InMemorySessionStore();
          let n = 0;
          for (const o of ops) {
            if (o.kind === "append") {
              // Titles and tags: what a summary folds (set-once and last-wins fields), so that their order shows.
              const batch = Array.from({ length: o.size }, () =>
                o.uuids ? { ...withUuid(++n), customTitle: `t${n}` } : entry({ type: "tag", tag: `g${++n}` }),
              );
              await ours.append(o.key, batch);
              await reference.append(o.key, batch);
            } else if (o.kind === "load") {
              expect(await ours.load(o.key)).toEqual(await reference.load(o.key));
            } else if (o.kind === "list") {
              const ids = async (s: typeof ours | InMemorySessionStore) =>
                (await s.listSessions(o.project)).map((x) => x.sessionId).sort();
              expect(await ids(ours)).toEqual(await ids(reference));
            } else if (o.kind === "summaries") {
              const data = async (s: typeof ours | InMemorySessionStore) =>
                (await s.listSessionSummaries(o.project))
                  .map((x) => [x.sessionId, x.data] as const)
                  .sort(([x], [y]) => x.localeCompare(y));
              expect(await data(ours)).toEqual(await data(reference));
            } else if (o.kind === "subkeys") {
              expect((await ours.listSubkeys(o.key)).sort()).toEqual((await reference.listSubkeys(o.key)).sort());
            } else {
              await ours.delete(o.key);
              await reference.delete(o.key);
            }
          }
        }),
        { numRuns: backend.name === "memory" ? 60 : 12 },
      );
    });

    it("keeps the SessionStore contract, case by case", async () => {
      const s = store();
      const p = freshProject();
      const main: SessionKey = { projectKey: p, sessionId: "sess" };
      const sub1: SessionKey = { ...main, subpath: "subagents/agent-1" };
      const sub2: SessionKey = { ...main, subpath: "subagents/agent-2" };
      // Unknown keys: null; an empty batch writes nothing.
      expect(await s.load(main)).toBeNull();
      await s.append(main, []);
      expect(await s.load(main)).toBeNull();
      expect(await s.listSessions(p)).toEqual([]);
      expect(await s.listSubkeys(main)).toEqual([]);
      // Order of entries and of batches; deep-equal entries, whatever JSON they hold.
      const odd = entry({
        uuid: "u-odd",
        text: '{"a":1}',
        emoji: "🦀",
        nul: "\u0000",
        nested: { deep: [[{ x: null }]] },
      });
      await s.append(main, [entry({ uuid: "b", n: 1 }), entry({ uuid: "a", n: 2 })]);
      await s.append(main, [odd]);
      await s.append(main, [entry({ type: "custom-title", customTitle: "t" })]);
      expect(await s.load(main)).toEqual([
        entry({ uuid: "b", n: 1 }),
        entry({ uuid: "a", n: 2 }),
        odd,
        entry({ type: "custom-title", customTitle: "t" }),
      ]);
      // Subagent transcripts: apart from the main one, listed as subkeys, never as sessions.
      expect(await s.load(sub1)).toBeNull();
      await s.append(sub1, [entry({ uuid: "s1" })]);
      await s.append(sub2, [entry({ uuid: "s2" })]);
      await s.append({ projectKey: p, sessionId: "other", subpath: "subagents/agent-x" }, [entry()]);
      expect(await s.load(sub1)).toEqual([entry({ uuid: "s1" })]);
      expect((await s.listSubkeys(main)).sort()).toEqual(["subagents/agent-1", "subagents/agent-2"]);
      const listed = await s.listSessions(p);
      expect(listed.map((x) => x.sessionId)).toEqual(["sess"]);
      expect(Number.isInteger(listed[0]?.mtime)).toBe(true);
      expect(listed[0]?.mtime).toBeGreaterThan(1e12);
      expect(listed[0]?.mtime).toBeLessThanOrEqual(Date.now());
      // The same session id in another project is another transcript.
      const elsewhere = { projectKey: `${p}-b`, sessionId: "sess" };
      await s.append(elsewhere, [entry({ from: "B" })]);
      expect(await s.load(elsewhere)).toEqual([entry({ from: "B" })]);
      // Deleting a subagent's transcript deletes only it; deleting the main one takes its subagents along.
      await s.delete(sub1);
      expect(await s.load(sub1)).toBeNull();
      expect(await s.listSubkeys(main)).toEqual(["subagents/agent-2"]);
      expect(await s.load(main)).toHaveLength(4);
      await s.delete(main);
      expect(await s.load(main)).toBeNull();
      expect(await s.load(sub2)).toBeNull();
      expect(await s.listSubkeys(main)).toEqual([]);
      expect(await s.listSessions(p)).toEqual([]);
      expect(await s.load(elsewhere)).toHaveLength(1);
      expect(await s.load({ projectKey: p, sessionId: "other", subpath: "subagents/agent-x" })).toHaveLength(1);
      await s.delete({ projectKey: p, sessionId: "never-written" });
    });

    it("stores each transcript as an agentix session of its agent: entries as messages, the key in its metadata", async () => {
      const storage = backend.open();
      const s = store(storage, "claude-agent-sdk");
      const key = { projectKey: freshProject(), sessionId: randomUUID() };
      const entries = [
        entry({ type: "user", uuid: "u1", message: { role: "user", content: "hi" } }),
        entry({
          type: "assistant",
          uuid: "a1",
          message: { role: "assistant", content: [{ type: "text", text: "hello" }] },
        }),
        entry({ type: "last-prompt", lastPrompt: "hi" }),
      ];
      await s.append(key, entries);
      const id = s.sessionIdOf(key);
      const messages = await storage.loadMessages(id);
      expect(messages.map((m) => m.role)).toEqual(["user", "assistant", "system"]);
      expect(messages.map((m) => m.content)).toEqual(entries);
      expect(new Set(messages.map((m) => m.timestamp)).size).toBe(1);
      expect(await storage.getSession(id)).toMatchObject({
        agent_id: "claude-agent-sdk",
        metadata: { cwd: key.projectKey, claude_project_key: key.projectKey, claude_session_id: key.sessionId },
      });
      await s.append({ ...key, subpath: "subagents/agent-7" }, [entry()]);
      expect(await storage.getSession(s.sessionIdOf({ ...key, subpath: "subagents/agent-7" }))).toMatchObject({
        metadata: { cwd: id, claude_subpath: "subagents/agent-7" },
      });
      // Another agent id is another namespace: the same key is another session there.
      expect(store(storage, "other-agent").sessionIdOf(key)).not.toBe(id);
      expect(await store(storage, "other-agent").load(key)).toBeNull();
    });

    it("writes a retried batch once, also when the retries race; never merges entries without a uuid", async () => {
      const storage = backend.open();
      const s = store(storage);
      const key = { projectKey: freshProject(), sessionId: "dedupe" };
      const batch = [withUuid(1), withUuid(2), entry({ type: "tag", tag: "x" })];
      await s.append(key, batch);
      await s.append(key, batch); // the SDK's retry after a lost reply: the same batch again
      await Promise.all([s.append(key, [withUuid(3)]).then(() => {}), ...[1, 2, 3].map(() => s.append(key, batch))]);
      const id = s.sessionIdOf(key);
      expect(await storage.countMessages(id)).toBe(4);
      // Entries without a uuid are appended every time, even when equal.
      await s.append(key, [entry({ type: "tag", tag: "x" })]);
      await s.append(key, [entry({ type: "tag", tag: "x" })]);
      expect((await s.load(key))?.filter((e) => e.type === "tag")).toHaveLength(3);
      expect(await storage.countMessages(id)).toBe(6);
    });

    it("stores each uuid once whichever batches bring it: overlapping batches, re-sends in other batches", async () => {
      const storage = backend.open();
      const s = store(storage);
      const key = { projectKey: freshProject(), sessionId: "overlap" };
      const e = Array.from({ length: 8 }, (_, i) => withUuid(i));
      const at = (...i: number[]) => i.map((j) => e[j] as SessionStoreEntry);
      await s.append(key, at(0, 1, 2));
      await s.append(key, at(2, 3)); // overlaps the previous batch
      await s.append(key, at(1)); // an entry re-sent alone
      await s.append(key, [...at(0, 4), entry({ type: "tag", tag: "t" }), ...at(3, 5, 5)]); // old and new, mixed
      await s.append(key, at(0, 1, 2, 3, 4, 5)); // an import over the mirrored transcript
      const id = s.sessionIdOf(key);
      // Stored once, in the order first written; the new entries of a mixed batch keep their order.
      const stored = (await storage.loadMessages(id)).map((m) => (m.content as SessionStoreEntry).n ?? "tag");
      expect(stored).toEqual([0, 1, 2, 3, 4, "tag", 5]);
      // Another store (another process) that never saw the transcript learns its uuids before it writes.
      const other = store(backend.open());
      await other.append(key, at(4, 5, 6));
      // The first store's knowledge is behind now: its compare-and-swap fails, it reads what is new, and retries.
      await s.append(key, at(6, 7));
      await other.append(key, at(7));
      expect((await storage.loadMessages(id)).map((m) => (m.content as SessionStoreEntry).n ?? "tag")).toEqual([
        0,
        1,
        2,
        3,
        4,
        "tag",
        5,
        6,
        7,
      ]);
      expect((await s.load(key))?.map((x) => x.n ?? "tag")).toEqual([0, 1, 2, 3, 4, "tag", 5, 6, 7]);
    });

    it("loses nothing and stores nothing twice when two stores append overlapping batches at once", async () => {
      const storage = backend.open();
      const key = { projectKey: freshProject(), sessionId: "racing" };
      const a = store(storage);
      const b = store(backend.open());
      const N = 60;
      const e = Array.from({ length: N }, (_, i) => withUuid(i));
      // Each store sends windows of 3 entries (overlapping its own previous window and the other's), each followed by
      // a batch of one entry without a uuid, all at once.
      const windows = (from: number) =>
        Array.from({ length: Math.ceil((N - from) / 2) }, (_, k) => e.slice(from + 2 * k, from + 2 * k + 3));
      const sends = (s: AgentixSessionStore, by: string, from: number) =>
        windows(from).flatMap((w, k) => [s.append(key, w), s.append(key, [entry({ type: "tag", by, k })])]);
      await Promise.all([...sends(a, "a", 0), ...sends(b, "b", 1)]);
      const stored = (await storage.loadMessages(a.sessionIdOf(key))).map((m) => m.content as SessionStoreEntry);
      const uuids = stored.filter((x) => x.uuid !== undefined).map((x) => x.n);
      expect([...uuids].sort((x, y) => Number(x) - Number(y))).toEqual(e.map((x) => x.n));
      // Entries without a uuid are never taken for another's: every one is there, each store's in its call order.
      for (const [by, from] of [["a", 0] as const, ["b", 1] as const]) {
        const mine = stored.filter((x) => x.by === by).map((x) => x.k);
        expect(mine).toEqual(windows(from).map((_, k) => k));
      }
    });

    it("keeps a main transcript's summary with its entries: two stores racing, mtime as listSessions', a first release's transcript", async () => {
      const storage = backend.open();
      const project = freshProject();
      const key = { projectKey: project, sessionId: "summed" };
      const a = store(storage);
      const b = store(backend.open());
      // Interleaved appends of two stores: last-wins fields (titles, tags) and set-once ones (the first prompt).
      const turn = (by: string, k: number) => [
        {
          type: "user",
          uuid: randomUUID(),
          timestamp: new Date(Date.UTC(2026, 0, 1, 0, 0, k)).toISOString(),
          cwd: `/w/${by}`,
          message: { role: "user", content: `prompt ${by} ${k}` },
        },
        { type: "custom-title", customTitle: `${by}-${k}` },
        { type: "tag", tag: k % 3 === 0 ? "" : `tag-${by}-${k}` },
      ];
      const sends = (s: AgentixSessionStore, by: string) =>
        Array.from({ length: 12 }, (_, k) => s.append(key, turn(by, k)));
      const subagent = { ...key, subpath: "subagents/agent-1" };
      await Promise.all([...sends(a, "a"), ...sends(b, "b"), a.append(subagent, [entry({ customTitle: "sub" })])]);
      const stored = (await storage.loadMessages(a.sessionIdOf(key))).map((m) => m.content as SessionStoreEntry);
      expect(stored).toHaveLength(72);
      const expected = foldSessionSummary(undefined, key, stored).data;
      const [listed] = await store(backend.open()).listSessions(project);
      for (const s of [a, b, store(backend.open())]) {
        expect(await s.listSessionSummaries(project)).toEqual([
          { sessionId: "summed", mtime: listed?.mtime, data: expected },
        ]);
      }
      // A transcript of the first release (entries, no summary): left out, until an append folds all it holds.
      const old = { projectKey: project, sessionId: "old" };
      const id = a.sessionIdOf(old);
      await storage.openSession("claude-agent-sdk", id, {
        cwd: project,
        claude_project_key: project,
        claude_session_id: "old",
      });
      await storage.saveMessages(id, [{ role: "system", content: { type: "custom-title", customTitle: "before" } }]);
      const fresh = store(backend.open());
      expect((await fresh.listSessionSummaries(project)).map((x) => x.sessionId)).toEqual(["summed"]);
      await fresh.append(old, [entry({ type: "tag", tag: "after" })]);
      const summaries = await fresh.listSessionSummaries(project);
      const oldSummary = summaries.find((x) => x.sessionId === "old");
      expect(oldSummary?.data).toEqual(foldSessionSummary(undefined, old, (await fresh.load(old)) ?? []).data);
      expect(oldSummary?.data).toMatchObject({ customTitle: "before", tag: "after" });
    });

    it("writes the entries of a transcript another process deleted and wrote anew, though this store knew them", async () => {
      const storage = backend.open();
      const key = { projectKey: freshProject(), sessionId: "anew" };
      const s = store(storage);
      const other = store(backend.open());
      const e = Array.from({ length: 6 }, (_, i) => withUuid(i));
      const at = (...i: number[]) => i.map((j) => e[j] as SessionStoreEntry);
      await s.append(key, at(0, 1));
      // Another process deletes the transcript and writes a longer one in its place, without entries 0 and 1.
      await other.delete(key);
      await other.append(key, at(2, 3, 4));
      // This store still believes 0 and 1 stored: its compare-and-swap fails, and the transcript does not begin as
      // it knew it, so it reads it whole.
      await s.append(key, at(0, 1, 5));
      expect((await storage.loadMessages(s.sessionIdOf(key))).map((m) => (m.content as SessionStoreEntry).n)).toEqual([
        2, 3, 4, 0, 1, 5,
      ]);
      // Deleted again, by another process: the next append finds no transcript and writes the batch whole.
      await other.delete(key);
      await s.append(key, at(0, 1));
      expect((await s.load(key))?.map((x) => x.n)).toEqual([0, 1]);
    });

    it("creates a transcript once when its first appends race, each batch stored once", async () => {
      const storage = backend.open();
      const s = store(storage);
      const racer = store(backend.open());
      const key = { projectKey: freshProject(), sessionId: "first-race" };
      const batches = [0, 1, 2, 3].map((i) => [withUuid(i), withUuid(i + 10)]);
      await Promise.all(
        [...batches, batches[0] as SessionStoreEntry[]].map((b, i) => (i % 2 ? racer : s).append(key, b)),
      );
      expect(await storage.countMessages(s.sessionIdOf(key))).toBe(8);
      expect((await s.load(key))?.map((e) => e.n).sort((a, b) => Number(a) - Number(b))).toEqual([
        0, 1, 2, 3, 10, 11, 12, 13,
      ]);
      expect((await s.listSessions(key.projectKey)).map((x) => x.sessionId)).toEqual(["first-race"]);
    });

    it("refuses keys agentix cannot store, writing nothing", async () => {
      const storage = backend.open();
      const s = store(storage);
      await expect(s.append({ projectKey: "nul\u0000key", sessionId: "s" }, [entry()])).rejects.toThrow(
        ValidationError,
      );
      await expect(s.append({ projectKey: "lone\ud800", sessionId: "s" }, [entry()])).rejects.toThrow(ValidationError);
      for (const projectKey of ["nul\u0000key", "lone\ud800"]) {
        expect(await storage.getSession(s.sessionIdOf({ projectKey, sessionId: "s" }))).toBeNull();
      }
      // A session id is only data (JSON escapes a lone surrogate): it is stored and listed as it is.
      const odd = { projectKey: freshProject(), sessionId: "../\ud800:*" };
      await s.append(odd, [entry({ n: 0 })]);
      expect(await s.listSessions(odd.projectKey)).toEqual([{ sessionId: odd.sessionId, mtime: expect.any(Number) }]);
      let deep: unknown = 0;
      for (let i = 0; i < 600; i++) deep = [deep];
      const key = { projectKey: freshProject(), sessionId: "deep" };
      await s.append(key, [entry({ n: 1 })]);
      await expect(s.append(key, [entry({ n: 2 }), entry({ deep })])).rejects.toThrow(ValidationError);
      expect(await s.load(key)).toEqual([entry({ n: 1 })]);
    });

    it("serves the SDK's own session helpers: list, info, messages, rename, subagents, fork, import, delete", async () => {
      const storage = backend.open();
      const s = store(storage);
      const dir = mkdtempSync(join(scratch, "project-"));
      const projectKey = projectKeyOf(dir);
      const sessionId = randomUUID();
      const at = (i: number) => new Date(Date.UTC(2026, 0, 1, 12, 0, i)).toISOString();
      const turn = (i: number, parentUuid: string | null, type: "user" | "assistant", content: unknown) => ({
        type,
        uuid: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`,
        parentUuid,
        isSidechain: false,
        sessionId,
        cwd: dir,
        timestamp: at(i),
        message: { role: type, content },
      });
      const t1 = turn(1, null, "user", "Weather in Lisbon?");
      const t2 = turn(2, t1.uuid, "assistant", [{ type: "text", text: "Sunny." }]);
      const t3 = turn(3, t2.uuid, "user", "And tomorrow?");
      const t4 = turn(4, t3.uuid, "assistant", [{ type: "text", text: "Rain." }]);
      await s.append({ projectKey, sessionId }, [t1, t2]);
      await s.append({ projectKey, sessionId }, [t3, t4]);
      const subTurn = { ...turn(9, null, "user", "subtask"), isSidechain: true, agentId: "a1" };
      await s.append({ projectKey, sessionId, subpath: "subagents/agent-a1" }, [subTurn]);

      const second = store(backend.open()); // what another process sees
      const listed = await listSessions({ dir, sessionStore: second });
      expect(listed.map((x) => [x.sessionId, x.firstPrompt])).toEqual([[sessionId, "Weather in Lisbon?"]]);
      expect((await getSessionInfo(sessionId, { dir, sessionStore: second }))?.sessionId).toBe(sessionId);
      const messages = await getSessionMessages(sessionId, { dir, sessionStore: second });
      expect(messages.map((m) => [m.type, m.uuid])).toEqual([
        ["user", t1.uuid],
        ["assistant", t2.uuid],
        ["user", t3.uuid],
        ["assistant", t4.uuid],
      ]);
      expect(await listSubagents(sessionId, { dir, sessionStore: second })).toEqual(["a1"]);
      expect((await getSubagentMessages(sessionId, "a1", { dir, sessionStore: second })).map((m) => m.uuid)).toEqual([
        subTurn.uuid,
      ]);

      await renameSession(sessionId, "Lisbon weather", { dir, sessionStore: second });
      expect((await listSessions({ dir, sessionStore: s }))[0]?.customTitle).toBe("Lisbon weather");

      const { sessionId: forkId } = await forkSession(sessionId, { dir, sessionStore: second, upToMessageId: t2.uuid });
      const forked = await getSessionMessages(forkId, { dir, sessionStore: s });
      expect(forked.map((m) => m.message)).toEqual([t1.message, t2.message]);
      expect((await listSessions({ dir, sessionStore: s })).map((x) => x.sessionId).sort()).toEqual(
        [sessionId, forkId].sort(),
      );

      // importSessionToStore: a local transcript (as Claude Code writes it) copied into the store, twice.
      const config = mkdtempSync(join(scratch, "config-"));
      const local = randomUUID();
      const lines = [t1, t2, t3].map((t) => ({ ...t, sessionId: local }));
      mkdirSync(join(config, "projects", projectKey), { recursive: true });
      writeFileSync(
        join(config, "projects", projectKey, `${local}.jsonl`),
        `${lines.map((l) => JSON.stringify(l)).join("\n")}\n`,
      );
      vi.stubEnv("CLAUDE_CONFIG_DIR", config);
      try {
        await importSessionToStore(local, second, { dir, batchSize: 2 });
        await importSessionToStore(local, second, { dir, batchSize: 2 }); // a replay: the same batches
      } finally {
        vi.unstubAllEnvs();
      }
      expect(await s.load({ projectKey, sessionId: local })).toEqual(lines);
      expect(await storage.countMessages(s.sessionIdOf({ projectKey, sessionId: local }))).toBe(3);

      await deleteSession(sessionId, { dir, sessionStore: second });
      expect(await s.load({ projectKey, sessionId })).toBeNull();
      expect(await s.load({ projectKey, sessionId, subpath: "subagents/agent-a1" })).toBeNull();
      expect((await listSessions({ dir, sessionStore: s })).map((x) => x.sessionId).sort()).toEqual(
        [forkId, local].sort(),
      );
    });

    it("runs the SDK's query() for two turns against a fake model, the second resumed from a new backend instance", async () => {
      // The fake model answers from what it is sent: whether turn 1's answer is in the conversation.
      const api = await startFakeAnthropic((request) =>
        JSON.stringify(request.body?.messages ?? []).includes("Sunny in Lisbon.")
          ? "You asked about Lisbon before."
          : "Sunny in Lisbon.",
      );
      const cwd = mkdtempSync(join(scratch, "cwd-"));
      const env = (config: string) => ({
        PATH: process.env.PATH ?? "",
        HOME: mkdtempSync(join(scratch, "home-")),
        ANTHROPIC_BASE_URL: api.url,
        ANTHROPIC_API_KEY: "sk-fake",
        CLAUDE_CONFIG_DIR: config,
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1",
        TMPDIR: mkdtempSync(join(scratch, "tmp-")), // Claude Code's own temp files, removed with the scratch dir
      });
      const turn = async (prompt: string, storage: StorageBackend, resume?: string) => {
        let sessionId = "";
        let result = "";
        // A fresh CLAUDE_CONFIG_DIR each turn: the local transcript is gone, as on another machine.
        const options = {
          cwd,
          env: env(mkdtempSync(join(scratch, "config-"))),
          sessionStore: store(storage),
          maxTurns: 1,
          tools: [],
          settingSources: [],
          ...(resume ? { resume } : {}),
        };
        for await (const message of query({ prompt, options })) {
          sessionId = message.session_id ?? sessionId;
          if (message.type === "result" && message.subtype === "success") result = message.result;
        }
        return { sessionId, result };
      };
      try {
        const first = backend.open();
        const one = await turn("Weather in Lisbon?", first);
        expect(one.result).toBe("Sunny in Lisbon.");
        if (backend.shared) await first.close();
        const second = backend.open();
        const two = await turn("And tomorrow?", second, one.sessionId);
        // The model was sent turn 1, question and answer, from the store: nothing was left on disk.
        expect(two.result).toBe("You asked about Lisbon before.");
        const last = JSON.stringify(api.requests.at(-1)?.body?.messages);
        expect(last).toContain("Weather in Lisbon?");
        expect(last).toContain("And tomorrow?");
        expect(two.sessionId).toBe(one.sessionId);
        const s = store(second);
        const key = { projectKey: projectKeyOf(cwd), sessionId: one.sessionId };
        const transcript = (await s.load(key)) ?? [];
        const prompts = transcript.filter((e) => e.type === "user").map((e) => JSON.stringify(e.message));
        expect(prompts.some((p) => p.includes("Weather in Lisbon?"))).toBe(true);
        expect(prompts.some((p) => p.includes("And tomorrow?"))).toBe(true);
        // Nothing was stored twice.
        expect(await second.countMessages(s.sessionIdOf(key))).toBe(transcript.length);
        expect((await s.listSessions(key.projectKey)).map((x) => x.sessionId)).toEqual([one.sessionId]);
      } finally {
        await api.close();
      }
    }, 60_000);

    it("loses no acknowledged batch to a delete racing the appends: what remains is whole batches, the ones after it", async () => {
      const s = store();
      const racer = store(backend.open());
      const key = { projectKey: freshProject(), sessionId: "race" };
      const BATCHES = 30;
      let deleted = false;
      let firstAfter = -1;
      let deleting: Promise<void> | undefined;
      for (let i = 0; i < BATCHES; i++) {
        if (i === 10)
          deleting = racer.delete(key).then(() => {
            deleted = true;
          });
        if (deleted && firstAfter === -1) firstAfter = i;
        await s.append(
          key,
          [0, 1, 2].map((j) => entry({ uuid: `${i}.${j}` })),
        );
      }
      await deleting;
      const uuids = ((await s.load(key)) ?? []).map((e) => e.uuid as string);
      const first = uuids.length === 0 ? BATCHES : Number(uuids[0]?.split(".")[0]);
      expect(uuids).toEqual(
        Array.from({ length: BATCHES - first }, (_, k) => [0, 1, 2].map((j) => `${first + k}.${j}`)).flat(),
      );
      expect(first).toBeGreaterThanOrEqual(10);
      if (firstAfter !== -1) expect(first).toBeLessThanOrEqual(firstAfter);
    });
  });
});

describe("AgentixSessionStore options", () => {
  it("rejects a missing storage, a bad agent id and unknown options", () => {
    const storage = new MemoryStorageBackend();
    const rejected = (options: unknown) => () => new AgentixSessionStore(options as never);
    expect(rejected({})).toThrow(ValidationError);
    expect(rejected({ storage: {} })).toThrow(/must be an agentix StorageBackend/);
    expect(rejected({ storage, agentId: "" })).toThrow(ValidationError);
    expect(rejected({ storage, agentId: "x".repeat(257) })).toThrow(ValidationError);
    expect(rejected({ storage, prefix: "p" })).toThrow(ValidationError);
    expect(new AgentixSessionStore({ storage }).agentId).toBe("claude-agent-sdk");
  });
});

// Round trips, counted on a client passed in (postgres.js's debug hook; ioredis's sendCommand): once the store has
// seen the transcript, append of 10 is one statement / one script, load one read, each listing one.
const pgUrl = inject("postgresUrl");
const redisUrl = inject("redisUrl");

async function roundTrips(storage: StorageBackend, sent: unknown[]): Promise<Record<string, number>> {
  const s = new AgentixSessionStore({ storage });
  /** A store that has not seen the transcripts: another process's. */
  const other = () => new AgentixSessionStore({ storage });
  const key = { projectKey: "round-trips", sessionId: randomUUID() };
  // Migrations, scripts, prepared statements, the session; every path once: a new transcript, an unseen one, a
  // lost compare-and-swap, a load.
  await s.append(key, [withUuid(0)]);
  await other().append(key, [withUuid(0)]);
  await s.append(key, [withUuid(0)]);
  await other().load(key);
  await s.append({ ...key, subpath: "subagents/agent-1" }, [withUuid(0)]);
  const count = async (run: () => Promise<unknown>) => {
    sent.length = 0;
    await run();
    return sent.length;
  };
  const ten = () => Array.from({ length: 10 }, (_, i) => withUuid(i));
  const batch = ten();
  const resumed = other();
  return {
    append10: await count(() => s.append(key, batch)),
    retriedAppend10: await count(() => s.append(key, batch)),
    load: await count(() => s.load(key)),
    listSessions: await count(() => s.listSessions(key.projectKey)),
    listSubkeys: await count(() => s.listSubkeys(key)),
    firstAppend10: await count(() => s.append({ ...key, sessionId: randomUUID() }, ten())),
    unseenAppend10: await count(() => other().append(key, ten())),
    appendAfterAnotherWriter10: await count(() => s.append(key, ten())),
    loadThenAppend10: await count(async () => {
      await resumed.load(key);
      await resumed.append(key, ten());
    }),
  };
}
/**
 * One round trip for an append of 10 to a transcript the store has seen (by writing or loading it), and for a
 * re-send (a look at the length); a new transcript is created first (2); a store that has not seen the transcript reads it once (3); a
 * lost compare-and-swap reads what is new and writes again (3).
 */
const EXPECTED = {
  append10: 1,
  retriedAppend10: 1,
  load: 1,
  listSessions: 1,
  listSubkeys: 1,
  firstAppend10: 2,
  unseenAppend10: 3,
  appendAfterAnotherWriter10: 3,
  loadThenAppend10: 2,
};

describe.skipIf(!pgUrl)("AgentixSessionStore round trips on Postgres", () => {
  it("append of 10: one statement; load, listSessions, listSubkeys: one each", async () => {
    const sent: string[] = [];
    const client = postgres(pgUrl as string, { onnotice: () => {}, debug: (_c, q) => sent.push(q) });
    const schema = `agentix_test_ccrt_${randomUUID().slice(0, 8)}`;
    const storage = new PostgresStorageBackend({ client, schema });
    try {
      expect(await roundTrips(storage, sent)).toEqual(EXPECTED);
    } finally {
      await storage.close();
      await client.unsafe(`drop schema if exists "${schema}" cascade`);
      await client.end();
    }
  });
});

describe.skipIf(!redisUrl)("AgentixSessionStore round trips on Redis", () => {
  it("append of 10: one script call; load, listSessions, listSubkeys: one each", async () => {
    const client = new Redis(redisUrl as string);
    const sent: string[] = [];
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((command: Parameters<typeof send>[0]) => {
      sent.push(command.name);
      return send(command);
    }) as typeof client.sendCommand;
    const prefix = `agentix-test-ccrt-${randomUUID().slice(0, 8)}`;
    const storage = new RedisStorageBackend({ client, prefix });
    try {
      expect(await roundTrips(storage, sent)).toEqual(EXPECTED);
    } finally {
      await storage.close();
      await client.quit();
      await dropPrefix(redisUrl as string, prefix);
    }
  });
});
