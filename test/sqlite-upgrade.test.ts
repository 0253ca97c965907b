import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import { afterAll, describe, expect, it } from "vitest";
import { AgentixStorageError, type JsonObject, type MessageRecord, type SessionRecord } from "../src/index.js";
import { SqliteStorageBackend } from "../src/sqlite.js";
import { migrationsUpTo, openDatabaseAt, openV1Database, sqliteJournal } from "./support/sqlite-v1.js";

// Databases written by earlier releases are upgraded in place the first time the current backend opens them, with
// nothing lost, reordered or renumbered: one of the first release (schema 0000_init: no `tool` role, no
// message_count, no positions) and one of contract v2 part 1 (0001: message_count and the tool role, no positions).

const dir = mkdtempSync(join(tmpdir(), "agentix-sqlite-upgrade-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const freshFile = () => join(dir, `db-${++files}.sqlite`);

const AGENT = "upgraded-agent";
const A = "01900000-0000-7000-8000-00000000000a";
const B = "01900000-0000-7000-8000-00000000000b";
const C = "01900000-0000-7000-8000-00000000000c";
const D = "01900000-0000-7000-8000-00000000000d";
/** Messages left behind by a delete with foreign keys off: their session row is gone. */
const ORPHAN = "01900000-0000-7000-8000-0000000000ff";
const PART1 = "0001_v2_tool_role_message_count";

/** The rows v1 wrote for a session. */
function insertV1Session(db: Database.Database, record: SessionRecord): void {
  const cwd = typeof record.metadata?.cwd === "string" ? record.metadata.cwd : null;
  const metadata = record.metadata === null ? null : JSON.stringify(record.metadata);
  db.prepare("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?)").run(
    record.session_id,
    record.agent_id,
    cwd,
    metadata,
    record.created_at,
    record.updated_at,
  );
}

/** v1's append: raise updated_at, then insert the message with that time. */
function appendV1(db: Database.Database, sessionId: string, m: Omit<MessageRecord, "timestamp">, at: string) {
  const updatedAt = db
    .prepare("UPDATE sessions SET updated_at = max(updated_at, ?) WHERE id = ? RETURNING updated_at")
    .pluck()
    .get(at, sessionId);
  if (updatedAt === undefined) throw new Error(`no session ${sessionId}`);
  db.prepare("INSERT INTO messages (session_id, role, content, created_at) VALUES (?, ?, ?, ?)").run(
    sessionId,
    m.role,
    JSON.stringify(m.content),
    updatedAt,
  );
}

const session = (id: string, metadata: JsonObject | null, at: string): SessionRecord => ({
  session_id: id,
  agent_id: AGENT,
  created_at: at,
  updated_at: at,
  metadata,
});

/**
 * A v1 file: A (cwd, 6 messages interleaved with D's, two with one timestamp), B (no messages), D (3
 * messages), C (the newest messages, then deleted: the greatest ids are gone) and orphaned messages.
 * Returns the greatest message id v1 ever gave.
 */
function writeV1(file: string): number {
  const db = openV1Database(file);
  try {
    insertV1Session(db, session(A, { cwd: "/proj", n: 1 }, "2026-01-01T00:00:00.000Z"));
    insertV1Session(db, session(B, null, "2026-01-01T00:00:01.000Z"));
    insertV1Session(db, session(D, { cwd: "/other" }, "2026-01-01T00:00:02.000Z"));
    const contents: MessageRecord["content"][] = ["hello", '{"a":1}', [{ type: "text", text: "hi" }], { k: null }];
    const roles = ["user", "assistant", "system", "user"] as const;
    for (const [i, content] of contents.entries()) {
      const at = `2026-01-02T00:00:0${i}.000Z`;
      appendV1(db, A, { role: roles[i] ?? "user", content }, at);
      if (i < 3) appendV1(db, D, { role: "user", content: `d${i}` }, at);
    }
    appendV1(db, A, { role: "assistant", content: "same time 1" }, "2026-01-03T00:00:00.000Z");
    appendV1(db, A, { role: "assistant", content: "same time 2" }, "2026-01-03T00:00:00.000Z");
    insertV1Session(db, session(C, null, "2026-01-04T00:00:00.000Z"));
    for (let i = 0; i < 4; i++) appendV1(db, C, { role: "user", content: `c${i}` }, "2026-01-04T00:00:00.000Z");
    db.prepare("DELETE FROM sessions WHERE id = ?").run(C); // ON DELETE CASCADE takes its messages
    db.pragma("foreign_keys = OFF");
    db.prepare("INSERT INTO messages (session_id, role, content, created_at) VALUES (?, 'user', '\"lost\"', ?)").run(
      ORPHAN,
      "2026-01-05T00:00:00.000Z",
    );
    db.pragma("foreign_keys = ON");
    return db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").pluck().get() as number;
  } finally {
    db.close();
  }
}

/** Part 1's append: raise updated_at and message_count in one statement, then insert the batch with that time. */
function appendPart1(db: Database.Database, sessionId: string, batch: Omit<MessageRecord, "timestamp">[], at: string) {
  const updatedAt = db
    .prepare(
      "UPDATE sessions SET updated_at = max(updated_at, ?), message_count = message_count + ? WHERE id = ? RETURNING updated_at",
    )
    .pluck()
    .get(at, batch.length, sessionId);
  if (updatedAt === undefined) throw new Error(`no session ${sessionId}`);
  const insert = db.prepare("INSERT INTO messages (session_id, role, content, created_at) VALUES (?, ?, ?, ?)");
  for (const m of batch) insert.run(sessionId, m.role, JSON.stringify(m.content), updatedAt);
}

const toolResult = { type: "tool_result", output: [1, "two"] };
/** The batch part 1 appended to D. */
const part1D: MessageRecord[] = [
  { role: "tool", content: toolResult, timestamp: "2026-01-06T00:00:00.000Z" },
  { role: "assistant", content: "d3", timestamp: "2026-01-06T00:00:00.000Z" },
];

/**
 * A part-1 file: the v1 file of {@link writeV1} upgraded to 0001 as part 1 did, then a batch with the tool role
 * appended to D, and two writes from outside agentix that the next upgrade must neither carry over nor trust:
 * messages orphaned by a delete with foreign keys off, and B's message_count disagreeing with its rows. Returns
 * the greatest message id ever given.
 */
function writePart1(file: string): number {
  writeV1(file);
  const db = openDatabaseAt(file, PART1);
  try {
    appendPart1(db, D, part1D, "2026-01-06T00:00:00.000Z");
    db.pragma("foreign_keys = OFF");
    db.prepare("INSERT INTO messages (session_id, role, content, created_at) VALUES (?, 'user', '\"lost\"', ?)").run(
      ORPHAN,
      "2026-01-07T00:00:00.000Z",
    );
    db.pragma("foreign_keys = ON");
    db.prepare("UPDATE sessions SET message_count = 99 WHERE id = ?").run(B);
    return db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").pluck().get() as number;
  } finally {
    db.close();
  }
}

/** Everything the backend returns about the old data, to compare before and after. */
async function contents(b: SqliteStorageBackend) {
  return {
    sessions: await b.listSessions(AGENT),
    byCwd: await b.listSessions(AGENT, { cwd: "/proj" }),
    a: await b.loadMessages(A),
    aLast: await b.loadMessages(A, { last: 2 }),
    aPage: await b.loadMessages(A, { offset: 2, limit: 3 }),
    b: await b.loadMessages(B),
    d: await b.loadMessages(D),
    c: await b.getSession(C),
    counts: [await b.countMessages(A), await b.countMessages(B), await b.countMessages(D)],
  };
}

/** Tables, columns, indexes and foreign keys as SQLite reports them (the CHECK is compared as SQL text). */
function schemaOf(db: Database.Database) {
  const tables = ["sessions", "messages", "idempotency_keys"];
  const sql = db.prepare("SELECT sql FROM sqlite_master WHERE name = 'messages'").pluck().get() as string;
  return {
    tables: db.prepare("SELECT type, name FROM sqlite_master ORDER BY name").all(),
    columns: tables.map((t) => db.pragma(`table_xinfo(${t})`)),
    indexes: tables.map((t) =>
      (db.pragma(`index_list(${t})`) as Array<{ name: string }>).map((i) => ({
        ...i,
        columns: db.pragma(`index_xinfo(${i.name})`),
      })),
    ),
    foreignKeys: tables.map((t) => db.pragma(`foreign_key_list(${t})`)),
    // SQLite quotes a renamed table's name with "" where drizzle-kit wrote ``.
    messagesSql: sql.replaceAll(/[`"]/g, ""),
  };
}

/** Each session's positions in the order its rows were written (id order): 0, 1, 2 … when numbered right. */
function positionsById(db: Database.Database): Record<string, number[]> {
  const rows = db.prepare("SELECT session_id, position FROM messages ORDER BY id").raw().all() as [string, number][];
  const out: Record<string, number[]> = {};
  for (const [session, position] of rows) out[session] = [...(out[session] ?? []), position];
  return out;
}

const upTo = (n: number) => Array.from({ length: n }, (_, i) => i);

const expectedA = [
  { role: "user", content: "hello", timestamp: "2026-01-02T00:00:00.000Z" },
  { role: "assistant", content: '{"a":1}', timestamp: "2026-01-02T00:00:01.000Z" },
  { role: "system", content: [{ type: "text", text: "hi" }], timestamp: "2026-01-02T00:00:02.000Z" },
  { role: "user", content: { k: null }, timestamp: "2026-01-02T00:00:03.000Z" },
  { role: "assistant", content: "same time 1", timestamp: "2026-01-03T00:00:00.000Z" },
  { role: "assistant", content: "same time 2", timestamp: "2026-01-03T00:00:00.000Z" },
];
const v1D: MessageRecord[] = ["d0", "d1", "d2"].map((content, i) => ({
  role: "user",
  content,
  timestamp: `2026-01-02T00:00:0${i}.000Z`,
}));
const recordA = {
  ...session(A, { cwd: "/proj", n: 1 }, "2026-01-01T00:00:00.000Z"),
  updated_at: "2026-01-03T00:00:00.000Z",
};
const recordB = session(B, null, "2026-01-01T00:00:01.000Z");
const recordD = (updated_at: string) => ({ ...session(D, { cwd: "/other" }, "2026-01-01T00:00:02.000Z"), updated_at });

const starts = [
  {
    release: "the first release (0000_init)",
    write: writeV1,
    applied: 1,
    d: v1D,
    // Records as v1 left them: the upgrade moves no updated_at.
    sessions: [recordA, recordD("2026-01-02T00:00:02.000Z"), recordB],
  },
  {
    release: `contract v2 part 1 (${PART1})`,
    write: writePart1,
    applied: 2,
    d: [...v1D, ...part1D],
    sessions: [recordD("2026-01-06T00:00:00.000Z"), recordA, recordB],
  },
];

describe.each(starts)("SqliteStorageBackend on a database of $release", (start) => {
  it("migrates it in place on first use: data intact and in order, positions numbered, counts right, ids never reused", async () => {
    const file = freshFile();
    const lastOldId = start.write(file);

    await using b = new SqliteStorageBackend({ path: file });
    expect(await contents(b)).toEqual({
      sessions: start.sessions,
      byCwd: [recordA],
      a: expectedA,
      aLast: expectedA.slice(-2),
      aPage: expectedA.slice(2, 5),
      b: [],
      d: start.d,
      c: null,
      counts: [6, 0, start.d.length],
    });

    const db = new Database(file);
    try {
      db.pragma("foreign_keys = ON");
      // Each session's messages numbered from 0 in the order they were appended; nothing else carried over.
      expect(positionsById(db)).toEqual({ [A]: upTo(6), [D]: upTo(start.d.length) });
      expect(db.prepare("SELECT id, message_count FROM sessions ORDER BY id").raw().all()).toEqual([
        [A, 6],
        [B, 0],
        [D, start.d.length],
      ]);
      // Every migration recorded, as drizzle records them.
      expect(db.prepare("SELECT created_at FROM __drizzle_migrations ORDER BY id").pluck().all()).toEqual(
        sqliteJournal().entries.map((e) => e.when),
      );
      expect(db.pragma("foreign_key_check")).toEqual([]);
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");

      // The tool role, in a batch; new rows continue the positions, and the ids after every id ever given,
      // those of deleted messages included.
      expect(
        await b.saveMessages(A, [
          { role: "tool", content: { type: "tool_result", output: "42" } },
          { role: "assistant", content: "done" },
        ]),
      ).toEqual({ length: 8 });
      expect(
        db.prepare("SELECT id, position, role FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT 2").all(A),
      ).toEqual([
        { id: lastOldId + 2, position: 7, role: "assistant" },
        { id: lastOldId + 1, position: 6, role: "tool" },
      ]);
      expect((await b.loadMessages(A)).slice(0, 6)).toEqual(expectedA);
      expect(await b.countMessages(A)).toBe(8);
      expect(() =>
        db
          .prepare(
            "INSERT INTO messages (session_id, position, role, content, created_at) VALUES (?, 8, 'robot', '1', 'x')",
          )
          .run(A),
      ).toThrow(/CHECK constraint failed: messages_role_check/);
      expect(() =>
        db.prepare("INSERT INTO messages (session_id, role, content, created_at) VALUES (?, 'user', '1', 'x')").run(A),
      ).toThrow(/NOT NULL constraint failed: messages.position/);

      // A session created under the orphans' id does not inherit them.
      await b.createSession("newcomer", null, { sessionId: ORPHAN });
      expect(await b.loadMessages(ORPHAN)).toEqual([]);
      expect(await b.countMessages(ORPHAN)).toBe(0);

      // ON DELETE CASCADE still holds on the rebuilt table, and holds on the keys.
      await b.saveMessages(A, [{ role: "user", content: "keyed" }], { idempotencyKey: "k" });
      db.prepare("DELETE FROM sessions WHERE id = ?").run(A);
      expect(db.prepare("SELECT count(*) FROM messages WHERE session_id = ?").pluck().get(A)).toBe(0);
      expect(db.prepare("SELECT count(*) FROM idempotency_keys WHERE session_id = ?").pluck().get(A)).toBe(0);
      expect(db.prepare("SELECT count(*) FROM messages WHERE session_id = ?").pluck().get(D)).toBe(start.d.length);
    } finally {
      db.close();
    }
  });

  it("edits, pages, forks and remembers keys on the upgraded history as on a new one", async () => {
    const file = freshFile();
    start.write(file);
    await using b = new SqliteStorageBackend({ path: file });
    const d = start.d;

    // Kept messages keep their timestamps; the replacement continues at position 4.
    expect(await b.replaceMessages(A, 4, [{ role: "tool", content: "x" }], { expectedLength: 6 })).toEqual({
      length: 5,
    });
    const a = await b.loadMessages(A);
    expect(a.slice(0, 4)).toEqual(expectedA.slice(0, 4));
    expect(a[4]).toMatchObject({ role: "tool", content: "x" });
    expect(await b.loadMessages(A, { last: 2 })).toEqual([expectedA[3], a[4]]);
    expect(await b.loadMessages(A, { offset: 1, limit: 2 })).toEqual(expectedA.slice(1, 3));

    expect(await b.popMessage(D, { idempotencyKey: "pop" })).toEqual(d.at(-1));
    expect(await b.popMessage(D, { idempotencyKey: "pop" })).toEqual(d.at(-1));
    expect(await b.loadMessages(D)).toEqual(d.slice(0, -1));
    await expect(b.saveMessages(D, [{ role: "user", content: "late" }], { expectedLength: d.length })).rejects.toThrow(
      /not the expected/,
    );

    const fork = await b.forkSession(A, { length: 3 });
    expect(await b.loadMessages(fork)).toEqual(expectedA.slice(0, 3));
    expect(await b.saveMessages(fork, [{ role: "user", content: "branch" }], { expectedLength: 3 })).toEqual({
      length: 4,
    });
    expect(await b.loadMessages(A)).toEqual(a);

    const db = new Database(file, { readonly: true });
    try {
      expect(positionsById(db)).toEqual({ [A]: upTo(5), [D]: upTo(d.length - 1), [fork]: upTo(4) });
      expect(db.prepare("SELECT key, length, popped_role FROM idempotency_keys").all()).toEqual([
        { key: "pop", length: d.length - 1, popped_role: d.at(-1)?.role },
      ]);
    } finally {
      db.close();
    }
  });

  it("ends with the schema of a new database: the same tables, columns, indexes, foreign keys and CHECK", async () => {
    const upgraded = freshFile();
    start.write(upgraded);
    const fresh = freshFile();
    for (const file of [upgraded, fresh]) {
      await using b = new SqliteStorageBackend({ path: file });
      await b.listSessions(AGENT);
    }
    const [before, after] = [upgraded, fresh].map((file) => {
      const db = new Database(file, { readonly: true });
      try {
        return schemaOf(db);
      } finally {
        db.close();
      }
    });
    expect(before).toEqual(after);
    expect(after?.messagesSql).toContain("role in ('user', 'assistant', 'system', 'tool')");
    expect(JSON.stringify(after?.indexes)).toContain('"name":"sessions_agent_id_idx"');
    expect(after?.indexes[1]).toEqual([
      expect.objectContaining({ name: "messages_session_idx", unique: 0, partial: 0 }),
    ]);
  });

  it("is one transaction: an upgrade failing at a late statement leaves the database as it was", async () => {
    const file = freshFile();
    start.write(file);
    const old = new Database(file);
    // A backfill of sessions (0001's count, or 0002's recount of B), after messages is rebuilt, fails.
    old.exec("CREATE TRIGGER no_updates BEFORE UPDATE ON sessions BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    const schemaBefore = old.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name").all();
    const rowsBefore = old.prepare("SELECT * FROM messages ORDER BY id").all();
    const sessionsBefore = old.prepare("SELECT * FROM sessions ORDER BY id").all();
    old.close();

    const b = new SqliteStorageBackend({ path: file });
    const error = await b.loadMessages(A).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect((error as Error).message).toMatch(/injected failure/);
    await b.close();

    const db = new Database(file);
    try {
      expect(db.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name").all()).toEqual(schemaBefore);
      expect(db.prepare("SELECT * FROM messages ORDER BY id").all()).toEqual(rowsBefore);
      expect(db.prepare("SELECT * FROM sessions ORDER BY id").all()).toEqual(sessionsBefore);
      expect(db.prepare("SELECT count(*) FROM __drizzle_migrations").pluck().get()).toBe(start.applied);
      db.exec("DROP TRIGGER no_updates");
    } finally {
      db.close();
    }
    await using again = new SqliteStorageBackend({ path: file });
    expect(await again.loadMessages(A)).toEqual(expectedA);
    expect(await again.countMessages(A)).toBe(6);
    expect(await again.loadMessages(D)).toEqual(start.d);
  });

  it("upgrades a database given with foreign keys off, leaving them off and the data whole", async () => {
    const file = freshFile();
    start.write(file);
    const db = new Database(file);
    db.pragma("foreign_keys = OFF");
    try {
      await using b = new SqliteStorageBackend({ database: db });
      expect(await b.loadMessages(A)).toEqual(expectedA);
      expect(await b.loadMessages(D, { last: 2 })).toEqual(start.d.slice(-2));
      expect(await b.countMessages(D)).toBe(start.d.length);
      expect(db.pragma("foreign_keys", { simple: true })).toBe(0);
      expect(db.prepare("SELECT count(*) FROM messages WHERE session_id = ?").pluck().get(ORPHAN)).toBe(0);
    } finally {
      db.close();
    }
  });

  it("upgrades the same way through drizzle's own migrator (drizzle-kit migrate), foreign keys on", async () => {
    const file = freshFile();
    const lastOldId = start.write(file);
    const folder = migrationsUpTo(sqliteJournal().entries.at(-1)?.tag as string);
    const db = new Database(file);
    try {
      db.pragma("foreign_keys = ON");
      migrate(drizzle({ client: db }), { migrationsFolder: folder });
      expect(db.prepare("SELECT count(*) FROM __drizzle_migrations").pluck().get()).toBe(
        sqliteJournal().entries.length,
      );
      expect(db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").pluck().get()).toBe(lastOldId);
      expect(positionsById(db)).toEqual({ [A]: upTo(6), [D]: upTo(start.d.length) });
      // The backend finds nothing left to do.
      await using b = new SqliteStorageBackend({ database: db });
      expect(await b.migrate()).toEqual([]);
      expect(await b.loadMessages(A)).toEqual(expectedA);
      expect(await b.countMessages(A)).toBe(6);
      expect(await b.countMessages(B)).toBe(0);
    } finally {
      db.close();
      rmSync(folder, { recursive: true, force: true });
    }
  });
});

describe("writeV1 and writePart1", () => {
  it("write what the releases wrote: v1 gave 14 ids (9 kept), part 1 three more", () => {
    expect(writeV1(freshFile())).toBe(14);
    expect(writePart1(freshFile())).toBe(17);
  });
});
