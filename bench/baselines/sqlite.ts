// The SQLite baseline: the workloads written by hand against better-sqlite3 (prepared statements, rows as arrays,
// writes in BEGIN IMMEDIATE transactions) on the tables of the backend's migration, with the backend's pragmas.
// Positions as the schema defines them: a batch takes the positions after the session's message_count, which the
// same transaction raises; reads go along (session_id, position).
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { uuidv7 } from "uuidv7";
import { cwdOf } from "../../src/core/records.js";
import type {
  MessageContent,
  MessageRecord,
  NewMessage,
  Role,
  SessionCursor,
  SessionRecord,
} from "../../src/core/types.js";
import { SqliteStorageBackend } from "../../src/sqlite.js";
import { packageVersion } from "../machine.js";
import { agentixSubject, type BenchTarget, type Namespace, type Side, type Subject } from "../workloads.js";

type Row = Array<string | null>;

/** A connection set up as the backend sets up its own: WAL, foreign keys, a busy timeout. */
function open(path: string): Database.Database {
  const db = new Database(path, { timeout: 5000 });
  db.pragma("journal_mode = WAL");
  db.pragma("foreign_keys = ON");
  return db;
}

export class RawSqlite implements Subject {
  readonly db: Database.Database;
  readonly #append: (sessionId: string, batch: NewMessage[], at: string, expected: number | null) => number | null;
  readonly #fork: (sessionId: string, id: string, at: string) => boolean;
  readonly #load: Database.Statement<[string], Row>;
  readonly #loadLast: Database.Statement<[string, number], Row>;
  readonly #loadPage: Database.Statement<[string, number, number], Row>;
  readonly #count: Database.Statement<[string], number>;
  readonly #exists: Database.Statement<[string], number>;
  readonly #list: Database.Statement<[string, number], Row>;
  readonly #listBefore: Database.Statement<[string, string, string, number], Row>;

  constructor(path: string) {
    const db = open(path);
    this.db = db;
    // The clamp (a clock behind takes updated_at) and the new count in one statement on the session row; with an
    // expected length, only when the count is that (compare-and-swap). The batch takes count - n … count - 1.
    const bump = db
      .prepare<[string, number, string, number | null, number | null], [string, number]>(
        "UPDATE sessions SET updated_at = max(updated_at, ?), message_count = message_count + ? " +
          "WHERE id = ? AND (? IS NULL OR message_count = ?) RETURNING updated_at, message_count",
      )
      .raw();
    const insert = db.prepare(
      "INSERT INTO messages (session_id, position, role, content, created_at) VALUES (?, ?, ?, ?, ?)",
    );
    this.#append = db.transaction((sessionId: string, batch: NewMessage[], at: string, expected: number | null) => {
      const row = bump.get(at, batch.length, sessionId, expected, expected);
      if (row === undefined) return null;
      const [updatedAt, count] = row;
      let position = count - batch.length;
      for (const m of batch) insert.run(sessionId, position++, m.role, JSON.stringify(m.content), updatedAt);
      return count;
    }).immediate;
    const copySession = db.prepare(
      "INSERT INTO sessions (id, agent_id, cwd, metadata, created_at, updated_at, message_count) " +
        "SELECT ?, agent_id, cwd, metadata, ?, ?, message_count FROM sessions WHERE id = ?",
    );
    const copyMessages = db.prepare(
      "INSERT INTO messages (session_id, position, role, content, created_at) " +
        "SELECT ?, position, role, content, created_at FROM messages WHERE session_id = ? ORDER BY position",
    );
    this.#fork = db.transaction((sessionId: string, id: string, at: string) => {
      if (copySession.run(id, at, at, sessionId).changes === 0) return false;
      copyMessages.run(id, sessionId);
      return true;
    }).immediate;
    const messages = "SELECT role, content, created_at FROM messages WHERE session_id = ?";
    this.#load = db.prepare<[string], Row>(`${messages} ORDER BY position`).raw();
    this.#loadLast = db.prepare<[string, number], Row>(`${messages} ORDER BY position DESC LIMIT ?`).raw();
    this.#loadPage = db
      .prepare<[string, number, number], Row>(`${messages} AND position >= ? AND position < ? ORDER BY position`)
      .raw();
    this.#count = db.prepare<[string], number>("SELECT message_count FROM sessions WHERE id = ?").pluck();
    this.#exists = db.prepare<[string], number>("SELECT 1 FROM sessions WHERE id = ?").pluck();
    const sessions = "SELECT id, agent_id, created_at, updated_at, metadata FROM sessions WHERE agent_id = ?";
    const order = "ORDER BY updated_at DESC, id DESC LIMIT ?";
    this.#list = db.prepare<[string, number], Row>(`${sessions} ${order}`).raw();
    this.#listBefore = db
      .prepare<[string, string, string, number], Row>(`${sessions} AND (updated_at, id) < (?, ?) ${order}`)
      .raw();
  }

  saveMessage(sessionId: string, role: Role, content: MessageContent): void {
    if (this.#append(sessionId, [{ role, content }], new Date().toISOString(), null) === null) {
      throw new Error(`session not found: ${sessionId}`);
    }
  }

  saveMessages(sessionId: string, messages: NewMessage[], expectedLength?: number): number | null {
    const length = this.#append(sessionId, messages, new Date().toISOString(), expectedLength ?? null);
    // No row: a conflict, or no session (only then the second look).
    if (length === null && this.#exists.get(sessionId) === undefined)
      throw new Error(`session not found: ${sessionId}`);
    return length;
  }

  countMessages(sessionId: string): number {
    return this.#count.get(sessionId) ?? notFound(sessionId);
  }

  loadPage(sessionId: string, offset: number, limit: number): MessageRecord[] {
    const rows = this.#loadPage.all(sessionId, offset, offset + limit);
    if (rows.length === 0 && this.#exists.get(sessionId) === undefined) notFound(sessionId);
    return rows.map(message);
  }

  /** One statement stepped row by row (better-sqlite3's iterator): one snapshot, no page boundaries. */
  *iterateMessages(sessionId: string): Iterable<MessageRecord> {
    if (this.#exists.get(sessionId) === undefined) notFound(sessionId);
    for (const row of this.#load.iterate(sessionId)) yield message(row);
  }

  loadMessages(sessionId: string, last?: number): MessageRecord[] {
    // One statement (one snapshot); only an empty result needs a second look, to tell "no session" from "no messages".
    const rows = last === undefined ? this.#load.all(sessionId) : this.#loadLast.all(sessionId, last).reverse();
    if (rows.length === 0 && this.#exists.get(sessionId) === undefined)
      throw new Error(`session not found: ${sessionId}`);
    return rows.map(message);
  }

  listSessions(agentId: string, limit: number, before?: SessionCursor): SessionRecord[] {
    const rows = before
      ? this.#listBefore.all(agentId, before.updated_at, before.session_id, limit)
      : this.#list.all(agentId, limit);
    return rows.map(([session_id, agent_id, created_at, updated_at, metadata]) => ({
      session_id: session_id as string,
      agent_id: agent_id as string,
      created_at: created_at as string,
      updated_at: updated_at as string,
      metadata: metadata === null ? null : JSON.parse(metadata as string),
    }));
  }

  forkSession(sessionId: string): string {
    const id = uuidv7();
    if (!this.#fork(sessionId, id, new Date().toISOString())) throw new Error(`session not found: ${sessionId}`);
    return id;
  }
}

function message([role, content, timestamp]: Row): MessageRecord {
  return { role: role as Role, content: JSON.parse(content as string), timestamp: timestamp as string };
}

function notFound(sessionId: string): never {
  throw new Error(`session not found: ${sessionId}`);
}

export function sqliteTarget(): BenchTarget {
  return {
    name: "sqlite",
    floor: false,
    probe: async () => null,
    async versions() {
      const db = new Database(":memory:");
      const version = db.prepare("SELECT sqlite_version()").pluck().get() as string;
      db.close();
      return { SQLite: version, "better-sqlite3": packageVersion("better-sqlite3") };
    },
    async open(side: Side, _count?: boolean, parent = tmpdir()): Promise<Namespace> {
      const dir = mkdtempSync(join(parent, "agentix-bench-"));
      const path = join(dir, "bench.db");
      // The backend's migration, run once, makes the tables of both sides.
      const admin = new SqliteStorageBackend({ path });
      await admin.listSessions("migrate");
      const backend = side === "agentix" ? new SqliteStorageBackend({ path }) : undefined;
      const raw = backend ? undefined : new RawSqlite(path);
      return {
        subject: backend ? agentixSubject(backend) : (raw as RawSqlite),
        ...(backend ? { backend } : {}),
        admin,
        store: { sqlite: path },
        async seedSessions(records: SessionRecord[]) {
          const db = open(path);
          const insert = db.prepare(
            "INSERT INTO sessions (id, agent_id, cwd, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)",
          );
          db.transaction(() => {
            for (const r of records) {
              const metadata = r.metadata === null ? null : JSON.stringify(r.metadata);
              insert.run(r.session_id, r.agent_id, cwdOf(r.metadata), metadata, r.created_at, r.updated_at);
            }
          }).immediate();
          db.close();
        },
        async drop() {
          await backend?.close();
          raw?.db.close();
          await admin.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
    close: async () => {},
  };
}
