/**
 * Streamed imports into SQLite (`importSession` given an iterable): a session larger than memory is written one
 * chunk per short transaction, and appears in one short transaction at the end. Internal to `agentix/sqlite`.
 *
 * As for chunked forks (src/sqlite-chunked.ts), the chunks are message rows under the session's id while it has no
 * session row: invisible, since every read starts at the session row. Publishing inserts the row, after checking
 * that the rows under the id are exactly this import's: as many as it wrote, the oldest its first. That check holds
 * because rows under an id without a session row are only ever deleted all together (up to the newest rowid at that
 * moment): by a creation of that id (which makes the import return `false`), a delete of it, or a failed import's
 * clean-up.
 * So a first row still there means none of this import's rows went, and then a count equal to its own means no
 * other rows are there: a racing import of the same id, or what a crashed one left, makes the count differ, and then
 * every row under the id is dropped and the import fails with a `ConflictError` (a retry finds the id clean).
 * @module
 */
import type BetterSqlite3 from "better-sqlite3";
import { ConflictError } from "./core/errors.js";
import { cwdOf } from "./core/records.js";
import type { MessageRecord, StagedImport } from "./core/types.js";

/** The four import primitives of one connection. */
export interface SqliteImports {
  begin(staged: StagedImport): boolean;
  stage(staged: StagedImport, offset: number, messages: MessageRecord[]): boolean;
  publish(staged: StagedImport, length: number): boolean;
  discard(staged: StagedImport): void;
}

/** Rows deleted per transaction when staging is dropped. */
const DROP_ROWS = 5_000;

const prepared = new WeakMap<BetterSqlite3.Database, SqliteImports>();

/** The connection's import primitives, prepared once per connection. */
export function sqliteImports(client: BetterSqlite3.Database): SqliteImports {
  let imports = prepared.get(client);
  if (!imports) {
    imports = prepare(client);
    prepared.set(client, imports);
  }
  return imports;
}

function prepare(client: BetterSqlite3.Database): SqliteImports {
  const exists = client.prepare<[string], number>("select 1 from sessions where id = ?").pluck();
  const insert = client.prepare<[string, number, string, string, string]>(
    "insert into messages (session_id, position, role, content, created_at) values (?, ?, ?, ?, ?)",
  );
  const stamp = client
    .prepare<[string], [number, number | null]>("select count(*), min(id) from messages where session_id = ?")
    .raw();
  const insertRow = client.prepare(
    `insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at, message_count, key_seq)
     values (@id, @agent, @cwd, @metadata, @created, @updated, @length, 0) on conflict do nothing`,
  );
  const topRowid = client.prepare<[], number | null>("select max(id) from messages").pluck();
  const dropChunk = client.prepare<[string, number, number]>(
    "delete from messages where id in (select id from messages where session_id = ? and id <= ? limit ?)",
  );
  /** The rowid of each import's first staged row (`null` before its first chunk), by stage. */
  const first = new Map<string, number | null>();

  /** `run` in an immediate transaction with foreign keys off: message rows of a session that has no row yet. */
  const unlinked = <T>(run: () => T): T => {
    const on = client.pragma("foreign_keys", { simple: true }) === 1;
    if (on) client.pragma("foreign_keys = OFF");
    try {
      return client.transaction(run).immediate();
    } finally {
      if (on) client.pragma("foreign_keys = ON");
    }
  };
  /** Drops every row under the id up to the newest rowid now, in short transactions, unless its session appears. */
  const dropAll = (id: string) => {
    const upTo = topRowid.get() ?? 0;
    const drop = client.transaction(() => exists.get(id) === undefined && dropChunk.run(id, upTo, DROP_ROWS).changes);
    while (drop.immediate() === DROP_ROWS) {
      // on to the next chunk
    }
  };

  return {
    begin({ stage, record }) {
      if (exists.get(record.session_id) !== undefined) return false;
      first.set(stage, null);
      return true;
    },

    stage({ stage, record }, offset, messages) {
      const id = record.session_id;
      return unlinked(() => {
        // Created meanwhile: its creation deleted the rows staged so far; stage no more.
        if (exists.get(id) !== undefined) return false;
        let rowid = 0;
        for (const [i, m] of messages.entries()) {
          rowid = Number(insert.run(id, offset + i, m.role, JSON.stringify(m.content), m.timestamp).lastInsertRowid);
        }
        // One transaction's rows have consecutive rowids (AUTOINCREMENT, one writer at a time).
        if (first.get(stage) === null && messages.length > 0) first.set(stage, rowid - messages.length + 1);
        return true;
      });
    },

    publish({ stage, record }, length) {
      const id = record.session_id;
      const oldest = first.get(stage) ?? null;
      const outcome = client
        .transaction((): "published" | "exists" | "mixed" => {
          if (exists.get(id) !== undefined) return "exists";
          const [count, min] = stamp.get(id) as [number, number | null];
          if (count !== length || (length > 0 && min !== oldest)) return "mixed";
          insertRow.run({
            id,
            agent: record.agent_id,
            cwd: cwdOf(record.metadata),
            metadata: record.metadata === null ? null : JSON.stringify(record.metadata),
            created: record.created_at,
            updated: record.updated_at,
            length,
          });
          return "published";
        })
        .immediate();
      if (outcome === "published") first.delete(stage);
      if (outcome !== "mixed") return outcome === "published";
      throw new ConflictError(
        `session ${id} has message rows of another import (one under way, or one interrupted): they were removed, import again`,
      );
    },

    discard({ stage, record }) {
      // Every row under the id: this import's, and what an interrupted one left (a racing one then fails its check).
      if (first.delete(stage)) dropAll(record.session_id);
    },
  };
}
