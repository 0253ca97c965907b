import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import { afterAll, describe, expect, it } from "vitest";
import { AgentixStorageError, type JsonObject, type MessageRecord, type SessionRecord } from "../src/index.js";
import { SqliteStorageBackend } from "../src/sqlite.js";
import { migrationsUpTo, openV1Database, sqliteJournal } from "./support/sqlite-v1.js";

// A database written by the first release (schema 0000_init: no `tool` role, no message_count) is upgraded in
// place the first time the current backend opens it, with nothing lost, reordered or renumbered.

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

/** Everything the backend returns about the v1 data, to compare before and after. */
async function contents(b: SqliteStorageBackend) {
  return {
    sessions: await b.listSessions(AGENT),
    byCwd: await b.listSessions(AGENT, { cwd: "/proj" }),
    a: await b.loadMessages(A),
    aLast: await b.loadMessages(A, { last: 2 }),
    b: await b.loadMessages(B),
    d: await b.loadMessages(D),
    c: await b.getSession(C),
  };
}

/** Tables, columns, indexes and foreign keys as SQLite reports them (the CHECK is compared as SQL text). */
function schemaOf(db: Database.Database) {
  const tables = ["sessions", "messages"];
  const sql = db.prepare("SELECT sql FROM sqlite_master WHERE name = 'messages'").pluck().get() as string;
  return {
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

const expectedA = [
  { role: "user", content: "hello", timestamp: "2026-01-02T00:00:00.000Z" },
  { role: "assistant", content: '{"a":1}', timestamp: "2026-01-02T00:00:01.000Z" },
  { role: "system", content: [{ type: "text", text: "hi" }], timestamp: "2026-01-02T00:00:02.000Z" },
  { role: "user", content: { k: null }, timestamp: "2026-01-02T00:00:03.000Z" },
  { role: "assistant", content: "same time 1", timestamp: "2026-01-03T00:00:00.000Z" },
  { role: "assistant", content: "same time 2", timestamp: "2026-01-03T00:00:00.000Z" },
];

describe("SqliteStorageBackend on a database of the previous schema (0000_init)", () => {
  it("migrates it in place on first use: data intact and in order, counts right, ids never reused", async () => {
    const file = freshFile();
    const lastV1Id = writeV1(file);
    // 6 of A and 3 of D kept, 4 of C deleted, 1 orphan (dropped): the greatest id left is 9.
    expect(lastV1Id).toBe(14);

    await using b = new SqliteStorageBackend({ path: file });
    const after = await contents(b);
    expect(after.a).toEqual(expectedA);
    expect(after.aLast).toEqual(expectedA.slice(-2));
    expect(after.b).toEqual([]);
    expect(after.d).toEqual(
      ["d0", "d1", "d2"].map((content, i) => ({ role: "user", content, timestamp: `2026-01-02T00:00:0${i}.000Z` })),
    );
    expect(after.c).toBeNull();
    // Records as v1 left them: the upgrade moves no updated_at.
    expect(after.sessions).toEqual([
      { ...session(A, { cwd: "/proj", n: 1 }, "2026-01-01T00:00:00.000Z"), updated_at: "2026-01-03T00:00:00.000Z" },
      { ...session(D, { cwd: "/other" }, "2026-01-01T00:00:02.000Z"), updated_at: "2026-01-02T00:00:02.000Z" },
      session(B, null, "2026-01-01T00:00:01.000Z"),
    ]);
    expect(after.byCwd.map((s) => s.session_id)).toEqual([A]);
    expect([await b.countMessages(A), await b.countMessages(B), await b.countMessages(D)]).toEqual([6, 0, 3]);

    // Both migrations recorded, as drizzle records them.
    const db = new Database(file);
    try {
      db.pragma("foreign_keys = ON");
      expect(db.prepare("SELECT created_at FROM __drizzle_migrations ORDER BY id").pluck().all()).toEqual(
        sqliteJournal().entries.map((e) => e.when),
      );
      expect(db.pragma("foreign_key_check")).toEqual([]);
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      expect(db.prepare("SELECT count(*) FROM messages WHERE session_id = ?").pluck().get(ORPHAN)).toBe(0);

      // The tool role, in a batch; new rows continue after every id v1 gave, those of deleted messages included.
      expect(
        await b.saveMessages(A, [
          { role: "tool", content: { type: "tool_result", output: "42" } },
          { role: "assistant", content: "done" },
        ]),
      ).toEqual({ length: 8 });
      expect(db.prepare("SELECT id, role FROM messages WHERE session_id = ? ORDER BY id DESC LIMIT 2").all(A)).toEqual([
        { id: lastV1Id + 2, role: "assistant" },
        { id: lastV1Id + 1, role: "tool" },
      ]);
      expect((await b.loadMessages(A)).slice(0, 6)).toEqual(expectedA);
      expect(await b.countMessages(A)).toBe(8);
      expect(() =>
        db.prepare("INSERT INTO messages (session_id, role, content, created_at) VALUES (?, 'robot', '1', 'x')").run(A),
      ).toThrow(/CHECK constraint failed: messages_role_check/);

      // A session created under the orphans' id does not inherit them.
      await b.createSession("newcomer", null, { sessionId: ORPHAN });
      expect(await b.loadMessages(ORPHAN)).toEqual([]);
      expect(await b.countMessages(ORPHAN)).toBe(0);

      // ON DELETE CASCADE still holds on the rebuilt table.
      db.prepare("DELETE FROM sessions WHERE id = ?").run(A);
      expect(db.prepare("SELECT count(*) FROM messages WHERE session_id = ?").pluck().get(A)).toBe(0);
      expect(db.prepare("SELECT count(*) FROM messages WHERE session_id = ?").pluck().get(D)).toBe(3);
    } finally {
      db.close();
    }
  });

  it("ends with the schema of a new database: the same columns, indexes, foreign keys and CHECK", async () => {
    const upgraded = freshFile();
    writeV1(upgraded);
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
  });

  it("is one transaction: an upgrade failing at its last statement leaves the v1 database as it was", async () => {
    const file = freshFile();
    writeV1(file);
    const v1 = new Database(file);
    // The backfill (the last statement, after messages is rebuilt) fails.
    v1.exec("CREATE TRIGGER no_updates BEFORE UPDATE ON sessions BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    const schemaBefore = v1.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name").all();
    const rowsBefore = v1.prepare("SELECT * FROM messages ORDER BY id").all();
    v1.close();

    const b = new SqliteStorageBackend({ path: file });
    const error = await b.loadMessages(A).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect((error as Error).message).toMatch(/injected failure/);
    await b.close();

    const db = new Database(file);
    try {
      expect(db.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name").all()).toEqual(schemaBefore);
      expect(db.prepare("SELECT * FROM messages ORDER BY id").all()).toEqual(rowsBefore);
      expect(db.prepare("SELECT count(*) FROM __drizzle_migrations").pluck().get()).toBe(1);
      db.exec("DROP TRIGGER no_updates");
    } finally {
      db.close();
    }
    await using again = new SqliteStorageBackend({ path: file });
    expect(await again.loadMessages(A)).toEqual(expectedA);
    expect(await again.countMessages(A)).toBe(6);
  });

  it("upgrades a database given with foreign keys off, leaving them off and the data whole", async () => {
    const file = freshFile();
    writeV1(file);
    const db = new Database(file);
    db.pragma("foreign_keys = OFF");
    try {
      await using b = new SqliteStorageBackend({ database: db });
      expect(await b.loadMessages(A)).toEqual(expectedA);
      expect(await b.countMessages(D)).toBe(3);
      expect(db.pragma("foreign_keys", { simple: true })).toBe(0);
      expect(db.prepare("SELECT count(*) FROM messages WHERE session_id = ?").pluck().get(ORPHAN)).toBe(0);
    } finally {
      db.close();
    }
  });

  it("upgrades the same way through drizzle's own migrator (drizzle-kit migrate), foreign keys on", async () => {
    const file = freshFile();
    const lastV1Id = writeV1(file);
    const folder = migrationsUpTo(sqliteJournal().entries.at(-1)?.tag as string);
    const db = new Database(file);
    try {
      db.pragma("foreign_keys = ON");
      migrate(drizzle({ client: db }), { migrationsFolder: folder });
      expect(db.prepare("SELECT count(*) FROM __drizzle_migrations").pluck().get()).toBe(
        sqliteJournal().entries.length,
      );
      expect(db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'messages'").pluck().get()).toBe(lastV1Id);
      // The backend finds nothing left to do.
      await using b = new SqliteStorageBackend({ database: db });
      expect(await b.migrate()).toEqual([]);
      expect(await b.loadMessages(A)).toEqual(expectedA);
      expect(await b.countMessages(A)).toBe(6);
    } finally {
      db.close();
      rmSync(folder, { recursive: true, force: true });
    }
  });
});
