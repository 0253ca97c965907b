/**
 * The statements of the Postgres backend that write or read messages, one function each: every one is a single
 * statement (data-modifying CTEs), so one round trip, one snapshot and one transaction. Internal to
 * `agentix/postgres`.
 * @module
 */
import type { PendingQuery, Row, Sql, TransactionSql } from "postgres";
import type { ForkTarget } from "./core/backend.js";
import { cwdOf } from "./core/records.js";
import type { JsonObject, MessageEdit, MessageRange, MessageRecord } from "./core/types.js";

/** How many idempotency keys a session remembers (the contract's minimum). */
const KEYS_KEPT = 1000;

/** A tenant's tables as postgres.js fragments (qualified with the schema), and the client (or transaction) that runs them. */
export interface Tables {
  sql: Sql | TransactionSql;
  sessions: PendingQuery<Row[]>;
  messages: PendingQuery<Row[]>;
  keys: PendingQuery<Row[]>;
}

/** A timestamp column as the ISO 8601 text of the records (UTC, milliseconds). */
export const iso = (column: string) => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** Content and metadata are stored as JSON text (see src/schema/pg.ts); `null` metadata is SQL NULL. */
export function json(value: JsonObject | null): string | null {
  return value === null ? null : JSON.stringify(value);
}

/** A batch as one JSON text parameter: `[[role, content as JSON text], ...]`, read back with `->>`. */
function roleAndContent(messages: MessageRecord[]): string {
  return JSON.stringify(messages.map((m) => [m.role, JSON.stringify(m.content)]));
}

/**
 * Appends at the end: one row, the session's new `message_count`, or none when the session does not exist.
 *
 * The UPDATE locks the session row until commit, so concurrent appends and edits of one session run one after
 * the other, and it returns the newest version of the row (also after waiting for another writer): each batch
 * takes the positions after the count it read there, and a timestamp no earlier than the previous one
 * (GREATEST). No row, no insert. One message (saveMessage, the hot path) goes as plain parameters; a batch as
 * one JSON text parameter (no array types needed from the client), numbered in its order.
 */
export function appendStatement(t: Tables, sessionId: string, messages: MessageRecord[]): PendingQuery<Row[]> {
  const { sql } = t;
  const [first] = messages as [MessageRecord];
  const rows =
    messages.length === 1
      ? sql`select id, message_count - 1, ${first.role}, ${JSON.stringify(first.content)}, updated_at from session`
      : sql`
        select session.id, session.message_count - ${messages.length}::int + m.ordinality - 1,
               m.value->>0, m.value->>1, session.updated_at
        from session, json_array_elements(${roleAndContent(messages)}::text::json) with ordinality m`;
  return sql`
    with session as (
      update ${t.sessions} set updated_at = greatest(updated_at, ${first.timestamp}),
        message_count = message_count + ${messages.length}::int
      where id = ${sessionId}
      returning id, updated_at, message_count
    ), appended as (
      insert into ${t.messages} (session_id, position, role, content, created_at)
      ${rows}
    )
    select message_count from session`;
}

/** What {@link editStatement} returns: one row. */
export type EditRow = [
  status: "not-found" | "stale" | "replayed" | "conflict" | "out-of-range" | "written",
  length: number | null,
  fingerprint: string | null,
  poppedRole: string | null,
  poppedContent: string | null,
  poppedAt: string | null,
];

/**
 * An edit of the history (see `StorageBackend.editMessages`), as one statement returning one {@link EditRow}.
 *
 * `locked` takes the session row's lock first (FOR UPDATE), so concurrent edits and appends of one session run
 * one after the other. Under READ COMMITTED a statement that waited for that lock gets the row's newest version
 * (its count, `updated_at`, key counter: what the length check, the new positions and the timestamp come from),
 * but reads everything else in the snapshot it started with, which lacks what the other writer committed
 * meanwhile. Two cases depend on that snapshot:
 * - an edit that drops messages reads and deletes them: the row's version is compared with the snapshot's
 *   (`xmin`; every write of messages goes through the session row), and when they differ nothing is written, the
 *   status is `stale` and the caller runs the statement again, with a new snapshot;
 * - a key looked up in the snapshot may have been remembered meanwhile, by a concurrent call with the same key:
 *   then remembering it again violates the keys' primary key, the whole statement fails (writing nothing), and
 *   the caller runs it again, which finds the key.
 * Both only ever happen when writers of one session collide; no transaction is needed (postgres.js can crash the
 * process when the server goes away under a reserved connection: porsager/postgres#1208).
 *
 * `gate` decides, in the contract's order: not-found, replayed, conflict, out-of-range, written. Then, only when
 * written: `dropped` deletes positions `keep … n-1` along (session_id, position) (bounded on both sides, so that
 * the planner, which cannot know the bounds, prices it as a small range); `appended` inserts after `keep`,
 * and reads `dropped`'s count first, which makes the delete finish before the first insert (the order of
 * data-modifying CTEs is otherwise unspecified, and the unique (session_id, position) index requires this one);
 * the session row gets its new count, `updated_at` moves (never backwards) only when the list changed; the key
 * is remembered with its outcome, and keys that fell out of the newest 1,000 are deleted along (session_id, seq).
 */
export function editStatement(t: Tables, sessionId: string, edit: MessageEdit): PendingQuery<Row[]> {
  const { sql } = t;
  const key = edit.idempotency;
  const count = edit.messages.length;
  // What is kept: positions < keep. Beyond the length, `from` is out of range and never used.
  const keep = edit.pop
    ? sql`greatest(l.message_count - 1, 0)`
    : edit.from === undefined
      ? sql`l.message_count`
      : sql`${edit.from}::bigint`;
  const drops = edit.pop || edit.from !== undefined;
  // Whether the list changes (then updated_at moves), as SQL: known here, but for a drop that may keep everything.
  const changed = count > 0 ? "true" : drops ? "g.keep < g.n" : "false";
  return sql`
    with locked as materialized (
      select message_count, updated_at, key_seq, xmin as version from ${t.sessions} where id = ${sessionId} for update
    ), gate as materialized (
      select l.message_count as n, l.updated_at, l.key_seq, ${keep} as keep,
        case
          ${drops ? sql`when seen.version is distinct from l.version then 'stale'` : sql``}
          ${key === undefined ? sql`` : sql`when k.key is not null then 'replayed'`}
          when ${edit.expectedLength ?? null}::bigint <> l.message_count then 'conflict'
          when ${edit.from ?? null}::bigint > l.message_count then 'out-of-range'
          else 'written'
        end as status,
        ${
          key === undefined
            ? sql`null::text as fingerprint, null::int as remembered_length,`
            : sql`k.fingerprint, k.length as remembered_length,`
        }
        ${
          edit.pop && key !== undefined
            ? sql`case when k.key is null then last.role else k.popped_role end as popped_role,
                  case when k.key is null then last.content else k.popped_content end as popped_content,
                  case when k.key is null then last.created_at else k.popped_at end as popped_at`
            : edit.pop
              ? sql`last.role as popped_role, last.content as popped_content, last.created_at as popped_at`
              : key === undefined
                ? sql`null::text as popped_role, null::text as popped_content, null::timestamptz as popped_at`
                : sql`k.popped_role, k.popped_content, k.popped_at`
        }
      from locked l
      ${drops ? sql`left join (select xmin as version from ${t.sessions} where id = ${sessionId}) seen on true` : sql``}
      ${key === undefined ? sql`` : sql`left join ${t.keys} k on k.session_id = ${sessionId} and k.key = ${key.key}`}
      ${
        edit.pop
          ? sql`left join ${t.messages} last on last.session_id = ${sessionId} and last.position = l.message_count - 1`
          : sql``
      }
    ) ${
      drops
        ? sql`, dropped as (
      delete from ${t.messages}
      where session_id = ${sessionId}
        and position >= (select keep from gate where status = 'written')
        and position < (select n from gate where status = 'written')
      returning 1
    )`
        : sql``
    } ${
      count === 0
        ? sql``
        : sql`, appended as (
      insert into ${t.messages} (session_id, position, role, content, created_at)
      select ${sessionId}::uuid, g.keep + m.ordinality - 1, m.value->>0, m.value->>1, greatest(g.updated_at, ${edit.at})
      from gate g, ${drops ? sql`(select count(*) from dropped) dropped,` : sql``}
        json_array_elements(${roleAndContent(edit.messages)}::text::json) with ordinality m
      where g.status = 'written'
    )`
    } ${
      changed === "false" && key === undefined
        ? sql``
        : sql`, updated as (
      update ${t.sessions} s
      set message_count = g.keep + ${count}::int,
        updated_at = case when ${sql.unsafe(changed)} then greatest(s.updated_at, ${edit.at}) else s.updated_at end
        ${key === undefined ? sql`` : sql`, key_seq = g.key_seq + 1`}
      from gate g
      where s.id = ${sessionId} and g.status = 'written' ${key === undefined ? sql`and ${sql.unsafe(changed)}` : sql``}
    )`
    } ${
      key === undefined
        ? sql``
        : sql`, remembered as (
      insert into ${t.keys} (session_id, key, fingerprint, seq, length, popped_role, popped_content, popped_at)
      select ${sessionId}::uuid, ${key.key}, ${key.fingerprint}, g.key_seq + 1, g.keep + ${count}::int,
             g.popped_role, g.popped_content, g.popped_at
      from gate g where g.status = 'written'
    ), pruned as (
      delete from ${t.keys}
      where session_id = ${sessionId} and seq <= (select key_seq + 1 - ${KEYS_KEPT}::int from gate where status = 'written')
    )`
    }
    select coalesce(g.status, 'not-found'),
      (case g.status when 'written' then g.keep + ${count}::int when 'replayed' then g.remembered_length else g.n end)::int,
      g.fingerprint, g.popped_role, g.popped_content, ${sql.unsafe(iso("g.popped_at"))}
    from (select) one left join gate g on true`;
}

/** What {@link copyStatement} returns: one row; `count` null when the source does not exist. */
export type CopyRow = [count: number | null, copied: boolean, taken: boolean];

/**
 * Copies a session to `target` (see `StorageBackend.copySession`) on the server, as one statement: one snapshot
 * of the source, and all of the fork or nothing. The fork is inserted only when `target.length` is within the
 * source's count, and not when its id is taken (ON CONFLICT DO NOTHING); its messages go from table to table
 * along the (session_id, position) index with their positions, only positions < length, and only once the fork
 * row is in (`exists (select from fork)` is a one-time filter: no fork, no scan). The messages' foreign key sees
 * the new session: it is checked at the statement's end.
 */
export function copyStatement(t: Tables, sessionId: string, target: ForkTarget): PendingQuery<Row[]> {
  const { sql } = t;
  const { length, metadata } = target;
  const replaced = metadata !== undefined;
  return sql`
    with source as (
      select agent_id, cwd, metadata, message_count from ${t.sessions} where id = ${sessionId}
    ), fork as (
      insert into ${t.sessions} (id, agent_id, cwd, metadata, created_at, updated_at, message_count)
      select ${target.session_id}, agent_id,
        ${replaced ? sql`${cwdOf(metadata)}, ${json(metadata)}` : sql`cwd, metadata`},
        ${target.created_at}, ${target.created_at},
        ${length === undefined ? sql`message_count` : sql`${length}::int`}
      from source
      ${length === undefined ? sql`` : sql`where ${length}::bigint <= message_count`}
      on conflict (id) do nothing
      returning id
    ), copied as (
      insert into ${t.messages} (session_id, position, role, content, created_at)
      select ${target.session_id}::uuid, m.position, m.role, m.content, m.created_at
      from ${t.messages} m
      where exists (select from fork)
        and m.session_id = ${sessionId} ${length === undefined ? sql`` : sql`and m.position < ${length}::bigint`}
      order by m.position
    )
    select source.message_count, exists (select from fork),
      exists (select from ${t.sessions} where id = ${target.session_id})
    from (select) one left join source on true`;
}

/** A row of {@link readStatement}: all nulls when the session exists without messages in the range. */
export type MessageRow = [role: string | null, content: string | null, timestamp: string | null];

/**
 * The messages in `range`, oldest first, as one statement that tells "no session" (no row) from "no messages"
 * (one row of nulls). The messages subquery binds the session id itself (a parameter, not `s.id`: so the
 * planner knows the session, even in a generic plan) and a position range, so that it reads exactly the rows
 * returned along the unique (session_id, position) index, however skewed the table. Each range also bounds the
 * positions by the session row's `message_count`, which makes the subquery LATERAL: a nested loop under the one
 * session row, which passes the rows through in the subquery's order.
 */
export function readStatement(t: Tables, sessionId: string, range: MessageRange): PendingQuery<Row[]> {
  const { sql } = t;
  const positions =
    "last" in range
      ? sql`position >= s.message_count - ${range.last}::bigint and position < s.message_count`
      : range.limit === undefined
        ? sql`position >= ${range.offset}::bigint and position < s.message_count`
        : sql`position >= ${range.offset}::bigint
              and position < least(${range.offset}::bigint + ${range.limit}::bigint, s.message_count)`;
  return sql`
    select m.role, m.content, ${sql.unsafe(iso("m.created_at"))}
    from ${t.sessions} s left join lateral (
      select role, content, created_at from ${t.messages}
      where session_id = ${sessionId} and ${positions}
      order by position
    ) m on true
    where s.id = ${sessionId}`;
}

/**
 * Writes an imported session and its messages (positions 0 … n-1, in the given order) unless the id is taken:
 * one row, whether it was written. The messages travel as one JSON text parameter.
 */
export function importStatement(
  t: Tables,
  record: {
    session_id: string;
    agent_id: string;
    created_at: string;
    updated_at: string;
    metadata: JsonObject | null;
  },
  messages: MessageRecord[],
): PendingQuery<Row[]> {
  const { sql } = t;
  const payload = JSON.stringify(messages.map((m) => [m.role, JSON.stringify(m.content), m.timestamp]));
  return sql`
    with session as (
      insert into ${t.sessions} (id, agent_id, cwd, metadata, created_at, updated_at, message_count)
      values (${record.session_id}, ${record.agent_id}, ${cwdOf(record.metadata)}, ${json(record.metadata)},
              ${record.created_at}, ${record.updated_at}, ${messages.length}::int)
      on conflict (id) do nothing
      returning id
    ), imported as (
      insert into ${t.messages} (session_id, position, role, content, created_at)
      select session.id, m.ordinality - 1, m.value->>0, m.value->>1, (m.value->>2)::timestamptz
      from session, json_array_elements(${payload}::text::json) with ordinality m
    )
    select exists (select from session)`;
}
