/**
 * Forks and deletes of big SQLite sessions in short transactions (issue 17): one transaction copying or deleting a
 * million messages held the database's write lock for seconds, long enough for every other writer, in any process,
 * to hit its `busyTimeout`. Internal to `agentix/sqlite`.
 *
 * Both keep "all or nothing" as readers see it, because every read starts at the session row (no row, no session,
 * whatever messages carry its id):
 * - a fork copies the messages in chunks of {@link CHUNK_ROWS}, each its own transaction, under the new id while
 *   that id has no session row yet, then publishes the fork in one short transaction that creates the row, after
 *   checking that the source's copied positions still hold the very rows copied (their count, and the greatest
 *   rowid: AUTOINCREMENT never reuses one, so a replaced message has a greater one). If the source changed, the
 *   copy is dropped and made again.
 * - a delete removes the session row and its keys in one short transaction (the session is gone), then its
 *   messages in chunks, only rows up to the greatest rowid at that moment (never a later session's under that id).
 * A crash in between leaves message rows without a session: invisible, and deleted when a session of that id is
 * created ({@link SqliteStatements}'s `insertIfAbsent`, `import`, `copy`; and before a chunked fork starts).
 * @module
 */
import type BetterSqlite3 from "better-sqlite3";
import type { ForkTarget } from "./core/backend.js";
import { cwdOf } from "./core/records.js";
import type { CopyOutcome } from "./core/types.js";

/** Sessions with more messages than this are forked and deleted in chunks; smaller ones in one transaction. */
export const CHUNK_ROWS = 10_000;
/**
 * How long one chunk holds the write lock, and how long the pause after it lasts (the chunk's size adapts to it).
 * A writer waiting for the lock does not queue: SQLite's busy handler sleeps (1, 2, 5, … up to 100 ms) and tries
 * again, so it gets in only when a try falls in a pause. With pauses as long as the chunks, half of its tries do.
 */
const HOLD_MS = 10;
const pauseCell = new Int32Array(new SharedArrayBuffer(4));

export interface ChunkedWrites {
  /** A fork in chunks; `undefined` when the one-transaction path should decide (small, missing, taken, out of range). */
  fork(sessionId: string, target: ForkTarget): CopyOutcome | undefined;
  /** A delete in chunks; `false` (nothing done) when the session is small enough for one transaction, or missing. */
  remove(sessionId: string): boolean;
}

export function chunkedWrites(client: BetterSqlite3.Database, chunk = CHUNK_ROWS): ChunkedWrites {
  const count = client.prepare<[string], number>("select message_count from sessions where id = ?").pluck();
  const stamp = client
    .prepare<[string, number], [number, number | null]>(
      "select count(*), max(id) from messages where session_id = ? and position < ?",
    )
    .raw();
  const topRowid = client.prepare<[], number | null>("select max(id) from messages").pluck();
  const copyChunk = client.prepare<[string, string, number, number]>(
    `insert into messages (session_id, position, role, content, created_at)
     select ?, position, role, content, created_at from messages
     where session_id = ? and position >= ? and position < ? order by position`,
  );
  const deleteChunk = client.prepare<[string, number, number]>(
    "delete from messages where id in (select id from messages where session_id = ? and id <= ? limit ?)",
  );
  const publish = client.prepare(
    `insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at, message_count, key_seq)
     select @target, agent_id, case when @replace then @cwd else cwd end, case when @replace then @metadata else metadata end,
            @at, @at, @length, 0
     from sessions where id = @id`,
  );
  const deleteKeys = client.prepare<[string]>("delete from idempotency_keys where session_id = ?");
  const deleteRow = client.prepare<[string]>("delete from sessions where id = ?");

  /** Runs `run` in an immediate transaction with foreign keys off: rows of a session that has no row (yet, or any more). */
  const unlinked = <T>(run: () => T): T => {
    const on = client.pragma("foreign_keys", { simple: true }) === 1;
    if (on) client.pragma("foreign_keys = OFF");
    try {
      return client.transaction(run).immediate();
    } finally {
      if (on) client.pragma("foreign_keys = ON");
    }
  };
  const pause = () => Atomics.wait(pauseCell, 0, 0, HOLD_MS);
  const exists = (id: string) => count.get(id) !== undefined;
  /** Runs `step(rows)` in chunks sized to hold the lock about HOLD_MS each, pausing after each, until it says stop. */
  const inChunks = (step: (rows: number) => boolean) => {
    for (let rows = 1_000; ; ) {
      const started = performance.now();
      const more = step(rows);
      const took = performance.now() - started;
      pause();
      if (!more) return;
      rows = Math.max(100, Math.min(chunk, Math.round((rows * HOLD_MS) / Math.max(took, 1))));
    }
  };
  /** Deletes, in chunks, the messages of `sessionId` up to rowid `upTo`, stopping if a session of that id appears. */
  const dropRows = (sessionId: string, upTo: number) =>
    inChunks((rows) =>
      client
        .transaction(() => !exists(sessionId) && deleteChunk.run(sessionId, upTo, rows).changes === rows)
        .immediate(),
    );

  return {
    fork(sessionId, target) {
      const total = count.get(sessionId);
      if (total === undefined || exists(target.session_id)) return undefined;
      const n = target.length ?? total;
      if (n <= chunk || n > total) return undefined;
      const data = target.metadata ?? null;
      for (let attempt = 0; attempt < 3; attempt++) {
        // What a crash left under the new id, and what a stale attempt copied.
        dropRows(target.session_id, topRowid.get() ?? 0);
        const [rows, top] = stamp.get(sessionId, n) as [number, number | null];
        if (rows !== n) return undefined;
        let taken = false;
        let from = 0;
        inChunks((rows) =>
          unlinked(() => {
            // Created meanwhile (a caller-chosen id): its creation deleted what was copied so far; copy no more.
            taken = exists(target.session_id);
            if (taken) return false;
            copyChunk.run(target.session_id, sessionId, from, Math.min(n, from + rows));
            from += rows;
            return from < n;
          }),
        );
        if (taken) return { status: "exists" };
        const outcome = client
          .transaction((): "copied" | "exists" | "stale" => {
            if (exists(target.session_id)) return "exists";
            const [now, newest] = stamp.get(sessionId, n) as [number, number | null];
            if (now !== n || newest !== top) return "stale";
            publish.run({
              id: sessionId,
              target: target.session_id,
              at: target.created_at,
              length: n,
              replace: target.metadata === undefined ? 0 : 1,
              cwd: cwdOf(data),
              metadata: data === null ? null : JSON.stringify(data),
            });
            return "copied";
          })
          .immediate();
        if (outcome !== "stale") return { status: outcome };
      }
      dropRows(target.session_id, topRowid.get() ?? 0);
      return undefined; // a source edited throughout: one transaction settles it
    },

    remove(sessionId) {
      const total = count.get(sessionId);
      if (total === undefined || total <= chunk) return false;
      const upTo = unlinked(() => {
        deleteKeys.run(sessionId);
        deleteRow.run(sessionId);
        return topRowid.get() ?? 0;
      });
      dropRows(sessionId, upTo);
      return true;
    },
  };
}
