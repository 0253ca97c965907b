/**
 * The statements of the Postgres backend, built with Drizzle from the tenant's tables (src/schema/pg.ts's
 * `pgTables(schema)`): the query builder where it says the statement, Drizzle's `sql` with the tables' columns where
 * it does not (data-modifying CTEs, LATERAL). Every one is a single statement, so one round trip, one snapshot and
 * one transaction. Values are placeholders (`sql.placeholder`), so that each shape of a statement is rendered and
 * prepared once per backend and only its values travel per call. Internal to `agentix/postgres`.
 * @module
 */
import { and, eq, getTableColumns, gt, type SQL, type SQLWrapper, sql } from "drizzle-orm";
import type { PgColumn, PgDatabase, PgQueryResultHKT, PgTable } from "drizzle-orm/pg-core";
import type { MessageEdit, MessageRange } from "./core/types.js";
import type { PgTables } from "./schema/pg.js";

/** How many idempotency keys a session remembers (the contract's minimum). */
export const KEYS_KEPT = 1000;

/** Any Drizzle Postgres database: `drizzle-orm/node-postgres`, `postgres-js`, `pglite`, `neon-serverless`, .... */
// biome-ignore lint/suspicious/noExplicitAny: the relational schema of a db passed in is the caller's, and never used here.
export type AnyPgDatabase = PgDatabase<PgQueryResultHKT, any, any>;

const p = sql.placeholder;

/** A table's columns as bare names (`"message_count"`), for column lists, SET and references through an alias. */
function names<T extends PgTable>(table: T): { [K in keyof T["_"]["columns"]]: SQL } {
  const columns = getTableColumns(table) as Record<string, PgColumn>;
  return Object.fromEntries(Object.entries(columns).map(([key, c]) => [key, sql.identifier(c.name)])) as never;
}

/** A timestamp as the ISO 8601 text of the records (UTC, milliseconds), whatever the session's TimeZone and DateStyle. */
const iso = (column: SQLWrapper) => sql`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

/** The columns a session record is made of, in the order of a `SessionRow`. */
export function sessionFields(t: PgTables) {
  const s = t.sessions;
  return {
    id: s.id,
    agentId: s.agentId,
    createdAt: iso(s.createdAt),
    updatedAt: iso(s.updatedAt),
    metadata: s.metadata,
  };
}

/** A session row: id, agent id, created and updated (ISO text), metadata (JSON text). */
export type SessionRow = [id: string, agentId: string, createdAt: string, updatedAt: string, metadata: string | null];

// ---- sessions: the query builder ----

/** Placeholders: `id`. */
export const readSession = (db: AnyPgDatabase, t: PgTables) =>
  db
    .select(sessionFields(t))
    .from(t.sessions)
    .where(eq(t.sessions.id, p("id")));

/** Placeholders: `id`. One row, the session's `message_count`, or none. */
export const readLength = (db: AnyPgDatabase, t: PgTables) =>
  db
    .select({ n: t.sessions.messageCount })
    .from(t.sessions)
    .where(eq(t.sessions.id, p("id")));

/**
 * An agent's sessions, newest first. One statement per combination of filters (never `$2 is null or cwd = $2`),
 * so that each plan can use its index. NULLS LAST as in the indexes: the columns are NOT NULL, but the planner
 * matches an index by its declared order. Placeholders: `agent`, `cwd`, `updatedAt` and `id` (the cursor), `limit`.
 */
export function listSessions(db: AnyPgDatabase, t: PgTables, shape: { cwd: boolean; before: boolean; limit: boolean }) {
  const s = t.sessions;
  const query = db
    .select(sessionFields(t))
    .from(s)
    .where(
      and(
        eq(s.agentId, p("agent")),
        shape.cwd ? sql`md5(${s.cwd}) = md5(${p("cwd")}) and ${s.cwd} = ${p("cwd")}` : undefined,
        // The keyset condition of a page: after (updatedAt, id) in the listing order.
        shape.before ? sql`(${s.updatedAt}, ${s.id}) < (${p("updatedAt")}, ${p("id")})` : undefined,
      ),
    )
    .orderBy(sql`${s.updatedAt} desc nulls last`, sql`${s.id} desc nulls last`);
  return shape.limit ? query.limit(p("limit")) : query;
}

/**
 * A page of sessions in id order, after the id `after`, of the agent `agent` or of all. Served by the primary key,
 * or by `(agent_id, id)` for an agent, so that each page reads only its rows. Placeholders: `agent`, `after`, `limit`.
 */
export const scanSessions = (db: AnyPgDatabase, t: PgTables, shape: { agent: boolean; after: boolean }) =>
  db
    .select(sessionFields(t))
    .from(t.sessions)
    .where(
      and(
        shape.agent ? eq(t.sessions.agentId, p("agent")) : undefined,
        shape.after ? gt(t.sessions.id, p("after")) : undefined,
      ),
    )
    .orderBy(t.sessions.id)
    .limit(p("limit"));

/** Placeholders: `id`, `metadata`, `cwd`, `at`. `updated_at` never moves backwards. */
export const replaceMetadata = (db: AnyPgDatabase, t: PgTables) =>
  db
    .update(t.sessions)
    .set({
      metadata: sql`${p("metadata")}`,
      cwd: sql`${p("cwd")}`,
      updatedAt: sql`greatest(${t.sessions.updatedAt}, ${p("at")})`,
    })
    .where(eq(t.sessions.id, p("id")))
    .returning(sessionFields(t));

/** Placeholders: `id`. The messages and idempotency keys go with it (ON DELETE CASCADE, served by their indexes). */
export const removeSession = (db: AnyPgDatabase, t: PgTables) =>
  db.delete(t.sessions).where(eq(t.sessions.id, p("id")));

// ---- CTEs: Drizzle's sql with the tables ----

/** What {@link insertSession} returns: `[true]` and nulls when stored; `[false, ...the existing row]` when taken. */
export type InsertRow = [stored: boolean, ...existing: SessionRow | [null, null, null, null, null]];

/**
 * Stores a session unless its id is taken. One row: whether it was stored and, when not, the existing row. But
 * the select reads the statement's snapshot: when a concurrent transaction stored the id and committed after it
 * was taken, ON CONFLICT sees that row and the select does not (`[false, null, ...]`); the caller then runs the
 * statement again, with a new snapshot. Placeholders: `id`, `agent`, `cwd`, `metadata`, `createdAt`, `updatedAt`.
 */
export function insertSession(db: AnyPgDatabase, t: PgTables): SQL {
  const s = t.sessions;
  const inserted = db
    .insert(s)
    .values({
      id: sql`${p("id")}`,
      agentId: sql`${p("agent")}`,
      cwd: sql`${p("cwd")}`,
      metadata: sql`${p("metadata")}`,
      createdAt: sql`${p("createdAt")}`,
      updatedAt: sql`${p("updatedAt")}`,
    })
    .onConflictDoNothing({ target: s.id })
    .returning({ id: s.id });
  const { id, agentId, createdAt, updatedAt, metadata } = sessionFields(t);
  return sql`
    with inserted as ${inserted}
    select exists (select from inserted), ${id}, ${agentId}, ${createdAt}, ${updatedAt}, ${metadata}
    from (select) one left join ${s} on ${s.id} = ${p("id")} and not exists (select from inserted)`;
}

/**
 * Appends at the end: one row, the session's new `message_count`, or none when the session does not exist.
 *
 * The UPDATE locks the session row until commit, so concurrent appends and edits of one session run one after
 * the other, and it returns the newest version of the row (also after waiting for another writer): each batch
 * takes the positions after the count it read there, and a timestamp no earlier than the previous one
 * (GREATEST). No row, no insert. One message (saveMessage, the hot path) goes as plain parameters; a batch as
 * one JSON text parameter (no array types needed from the client), numbered in its order.
 * Placeholders: `id`, `at`, and `role` and `content` (one message) or `count` and `batch` (`[[role, content], ...]`).
 */
export function appendMessages(t: PgTables, batch: boolean): SQL {
  const S = names(t.sessions);
  const M = names(t.messages);
  const rows = batch
    ? sql`select session.${S.id}, session.${S.messageCount} - ${p("count")}::int + m.ordinality - 1,
               m.value->>0, m.value->>1, session.${S.updatedAt}
        from session, json_array_elements(${p("batch")}::text::json) with ordinality m`
    : sql`select ${S.id}, ${S.messageCount} - 1, ${p("role")}, ${p("content")}, ${S.updatedAt} from session`;
  return sql`
    with session as (
      update ${t.sessions} set ${S.updatedAt} = greatest(${S.updatedAt}, ${p("at")}),
        ${S.messageCount} = ${S.messageCount} + ${batch ? sql`${p("count")}::int` : sql`1`}
      where ${S.id} = ${p("id")}
      returning ${S.id}, ${S.updatedAt}, ${S.messageCount}
    ), appended as (
      insert into ${t.messages} (${M.sessionId}, ${M.position}, ${M.role}, ${M.content}, ${M.createdAt})
      ${rows}
    )
    select ${S.messageCount} from session`;
}

/** What {@link editMessages} returns: one row. */
export type EditRow = [
  status: "not-found" | "stale" | "replayed" | "conflict" | "out-of-range" | "written",
  length: number | null,
  fingerprint: string | null,
  poppedRole: string | null,
  poppedContent: string | null,
  poppedAt: string | null,
];

/** What decides the text of an edit statement; its values are placeholders. */
export interface EditShape {
  pop: boolean;
  from: boolean;
  key: boolean;
  /** Whether it appends messages. */
  appends: boolean;
  /** Whether it replaces the metadata (and cwd) too. */
  metadata: boolean;
}

/** The shape of `edit`'s statement. */
export const editShape = (edit: MessageEdit): EditShape => ({
  pop: edit.pop,
  from: edit.from !== undefined,
  key: edit.idempotency !== undefined,
  appends: edit.messages.length > 0,
  metadata: edit.metadata !== undefined,
});

/**
 * An edit of the history (see `StorageBackend.editMessages`), as one statement returning one {@link EditRow}.
 * Placeholders: `id`, `from`, `expected`, `at`, `count`, `batch`, `key`, `fingerprint`, `kept`, and `metadata`
 * and `cwd` (as {@link replaceMetadata} takes them) when the shape replaces the metadata.
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
 * the session row gets its new count, `updated_at` moves (never backwards) only when the list changed, or
 * whenever it is written with metadata, which then replaces the metadata and cwd in the same UPDATE; the key
 * is remembered with its outcome, and keys that fell out of the newest 1,000 are deleted along (session_id, seq).
 */
export function editMessages(t: PgTables, shape: EditShape): SQL {
  const S = names(t.sessions);
  const M = names(t.messages);
  const K = names(t.idempotencyKeys);
  const { pop, key, appends, metadata } = shape;
  const id = p("id");
  // What is kept: positions < keep. Beyond the length, `from` is out of range and never used.
  const keep = pop
    ? sql`greatest(l.${S.messageCount} - 1, 0)`
    : shape.from
      ? sql`${p("from")}::bigint`
      : sql`l.${S.messageCount}`;
  const drops = pop || shape.from;
  // Whether the list changes (then updated_at moves), as SQL: known here, but for a drop that may keep everything.
  const changed = sql.raw(appends ? "true" : drops ? "g.keep < g.n" : "false");
  const popped = (column: SQL, remembered: SQL) =>
    pop && key
      ? sql`case when k.${K.key} is null then last.${column} else k.${remembered} end`
      : pop
        ? sql`last.${column}`
        : key
          ? sql`k.${remembered}`
          : sql`null`;
  return sql`
    with locked as materialized (
      select ${S.messageCount}, ${S.updatedAt}, ${S.keySeq}, xmin as version
      from ${t.sessions} where ${S.id} = ${id} for update
    ), gate as materialized (
      select l.${S.messageCount} as n, l.${S.updatedAt}, l.${S.keySeq}, ${keep} as keep,
        case
          ${drops ? sql`when seen.version is distinct from l.version then 'stale'` : sql``}
          ${key ? sql`when k.${K.key} is not null then 'replayed'` : sql``}
          when ${p("expected")}::bigint <> l.${S.messageCount} then 'conflict'
          when ${p("from")}::bigint > l.${S.messageCount} then 'out-of-range'
          else 'written'
        end as status,
        ${key ? sql`k.${K.fingerprint}` : sql`null::text`} as fingerprint,
        ${key ? sql`k.${K.length}` : sql`null::int`} as remembered_length,
        ${popped(M.role, K.poppedRole)}::text as popped_role,
        ${popped(M.content, K.poppedContent)}::text as popped_content,
        ${popped(M.createdAt, K.poppedAt)}::timestamptz as popped_at
      from locked l
      ${drops ? sql`left join (select xmin as version from ${t.sessions} where ${S.id} = ${id}) seen on true` : sql``}
      ${key ? sql`left join ${t.idempotencyKeys} k on k.${K.sessionId} = ${id} and k.${K.key} = ${p("key")}` : sql``}
      ${
        pop
          ? sql`left join ${t.messages} last
              on last.${M.sessionId} = ${id} and last.${M.position} = l.${S.messageCount} - 1`
          : sql``
      }
    ) ${
      drops
        ? sql`, dropped as (
      delete from ${t.messages}
      where ${M.sessionId} = ${id}
        and ${M.position} >= (select keep from gate where status = 'written')
        and ${M.position} < (select n from gate where status = 'written')
      returning 1
    )`
        : sql``
    } ${
      appends
        ? sql`, appended as (
      insert into ${t.messages} (${M.sessionId}, ${M.position}, ${M.role}, ${M.content}, ${M.createdAt})
      select ${id}::uuid, g.keep + m.ordinality - 1, m.value->>0, m.value->>1, greatest(g.${S.updatedAt}, ${p("at")})
      from gate g, ${drops ? sql`(select count(*) from dropped) dropped,` : sql``}
        json_array_elements(${p("batch")}::text::json) with ordinality m
      where g.status = 'written'
    )`
        : sql``
    } ${
      !appends && !drops && !key && !metadata
        ? sql``
        : sql`, updated as (
      update ${t.sessions} s
      set ${S.messageCount} = g.keep + ${p("count")}::int,
        ${S.updatedAt} = ${
          // With metadata, every written edit moves updated_at, whether the list changed or not.
          metadata
            ? sql`greatest(s.${S.updatedAt}, ${p("at")})`
            : sql`case when ${changed} then greatest(s.${S.updatedAt}, ${p("at")}) else s.${S.updatedAt} end`
        }
        ${key ? sql`, ${S.keySeq} = g.${S.keySeq} + 1` : sql``}${
          // On the line before: the text of the shapes without metadata stays as it was (prepared statements' keys).
          metadata ? sql`, ${S.metadata} = ${p("metadata")}, ${S.cwd} = ${p("cwd")}` : sql``
        }
      from gate g
      where s.${S.id} = ${id} and g.status = 'written' ${key || metadata ? sql`` : sql`and ${changed}`}
    )`
    } ${
      key
        ? sql`, remembered as (
      insert into ${t.idempotencyKeys} (${K.sessionId}, ${K.key}, ${K.fingerprint}, ${K.seq}, ${K.length},
                                        ${K.poppedRole}, ${K.poppedContent}, ${K.poppedAt})
      select ${id}::uuid, ${p("key")}, ${p("fingerprint")}, g.${S.keySeq} + 1, g.keep + ${p("count")}::int,
             g.popped_role, g.popped_content, g.popped_at
      from gate g where g.status = 'written'
    ), pruned as (
      delete from ${t.idempotencyKeys}
      where ${K.sessionId} = ${id}
        and ${K.seq} <= (select ${S.keySeq} + 1 - ${p("kept")}::int from gate where status = 'written')
    )`
        : sql``
    }
    select coalesce(g.status, 'not-found'),
      (case g.status when 'written' then g.keep + ${p("count")}::int when 'replayed' then g.remembered_length
       else g.n end)::int,
      g.fingerprint, g.popped_role, g.popped_content, ${iso(sql`g.popped_at`)}
    from (select) one left join gate g on true`;
}

/** What {@link copySession} returns: one row; `count` null when the source does not exist. */
export type CopyRow = [count: number | null, copied: boolean, taken: boolean];

/** What decides the text of a copy statement. */
export interface CopyShape {
  /** Copies only the first `length` messages. */
  length: boolean;
  /** Replaces the metadata (and so the cwd). */
  metadata: boolean;
}

/**
 * Copies a session (see `StorageBackend.copySession`) on the server, as one statement: one snapshot of the
 * source, and all of the fork or nothing. The fork is inserted only when `length` is within the source's count,
 * and not when its id is taken (ON CONFLICT DO NOTHING); its messages go from table to table along the
 * (session_id, position) index with their positions, only positions < length, and only once the fork row is in
 * (`exists (select from fork)` is a one-time filter: no fork, no scan). The messages' foreign key sees the new
 * session: it is checked at the statement's end.
 * Placeholders: `id` (the source), `target`, `createdAt`, `length`, `cwd`, `metadata`.
 */
export function copySession(t: PgTables, shape: CopyShape): SQL {
  const S = names(t.sessions);
  const M = names(t.messages);
  return sql`
    with source as (
      select ${S.agentId}, ${S.cwd}, ${S.metadata}, ${S.messageCount} from ${t.sessions} where ${S.id} = ${p("id")}
    ), fork as (
      insert into ${t.sessions} (${S.id}, ${S.agentId}, ${S.cwd}, ${S.metadata}, ${S.createdAt}, ${S.updatedAt},
                                 ${S.messageCount})
      select ${p("target")}, ${S.agentId},
        ${shape.metadata ? sql`${p("cwd")}, ${p("metadata")}` : sql`${S.cwd}, ${S.metadata}`},
        ${p("createdAt")}, ${p("createdAt")},
        ${shape.length ? sql`${p("length")}::int` : S.messageCount}
      from source
      ${shape.length ? sql`where ${p("length")}::bigint <= ${S.messageCount}` : sql``}
      on conflict (${S.id}) do nothing
      returning ${S.id}
    ), copied as (
      insert into ${t.messages} (${M.sessionId}, ${M.position}, ${M.role}, ${M.content}, ${M.createdAt})
      select ${p("target")}::uuid, m.${M.position}, m.${M.role}, m.${M.content}, m.${M.createdAt}
      from ${t.messages} m
      where exists (select from fork)
        and m.${M.sessionId} = ${p("id")} ${shape.length ? sql`and m.${M.position} < ${p("length")}::bigint` : sql``}
      order by m.${M.position}
    )
    select source.${S.messageCount}, exists (select from fork),
      exists (select from ${t.sessions} where ${S.id} = ${p("target")})
    from (select) one left join source on true`;
}

/** A row of {@link readMessages}: all nulls when the session exists without messages in the range. */
export type MessageRow = [role: string | null, content: string | null, timestamp: string | null];

/** The shape of a read: the newest messages, from an offset to the end, or from an offset with a limit. */
export type ReadShape = "last" | "offset" | "page";

/** The shape of `range`'s statement. */
export const readShape = (range: MessageRange): ReadShape =>
  "last" in range ? "last" : range.limit === undefined ? "offset" : "page";

/**
 * The messages in a range, oldest first, as one statement that tells "no session" (no row) from "no messages"
 * (one row of nulls). The messages subquery binds the session id itself (a parameter, not `s.id`: so the
 * planner knows the session, even in a generic plan) and a position range, so that it reads exactly the rows
 * returned along the unique (session_id, position) index, however skewed the table. Each range also bounds the
 * positions by the session row's `message_count`, which makes the subquery LATERAL: a nested loop under the one
 * session row, which passes the rows through in the subquery's order. Placeholders: `id`, `last`, `offset`, `limit`.
 */
export function readMessages(t: PgTables, shape: ReadShape): SQL {
  const S = names(t.sessions);
  const M = names(t.messages);
  const count = sql`s.${S.messageCount}`;
  const positions =
    shape === "last"
      ? sql`${M.position} >= ${count} - ${p("last")}::bigint and ${M.position} < ${count}`
      : shape === "offset"
        ? sql`${M.position} >= ${p("offset")}::bigint and ${M.position} < ${count}`
        : sql`${M.position} >= ${p("offset")}::bigint
              and ${M.position} < least(${p("offset")}::bigint + ${p("limit")}::bigint, ${count})`;
  return sql`
    select m.${M.role}, m.${M.content}, ${iso(sql`m.${M.createdAt}`)}
    from ${t.sessions} s left join lateral (
      select ${M.role}, ${M.content}, ${M.createdAt} from ${t.messages}
      where ${M.sessionId} = ${p("id")} and ${positions}
      order by ${M.position}
    ) m on true
    where s.${S.id} = ${p("id")}`;
}

/**
 * Writes an imported session and its messages (positions 0 … n-1, in the given order) unless the id is taken:
 * one row, whether it was written. The messages travel as one JSON text parameter, `[[role, content, timestamp]]`.
 * Placeholders: `id`, `agent`, `cwd`, `metadata`, `createdAt`, `updatedAt`, `count`, `batch`.
 */
export function importSession(t: PgTables): SQL {
  const S = names(t.sessions);
  const M = names(t.messages);
  return sql`
    with session as (
      insert into ${t.sessions} (${S.id}, ${S.agentId}, ${S.cwd}, ${S.metadata}, ${S.createdAt}, ${S.updatedAt},
                                 ${S.messageCount})
      values (${p("id")}, ${p("agent")}, ${p("cwd")}, ${p("metadata")}, ${p("createdAt")}, ${p("updatedAt")},
              ${p("count")}::int)
      on conflict (${S.id}) do nothing
      returning ${S.id}
    ), imported as (
      insert into ${t.messages} (${M.sessionId}, ${M.position}, ${M.role}, ${M.content}, ${M.createdAt})
      select session.${S.id}, m.ordinality - 1, m.value->>0, m.value->>1, (m.value->>2)::timestamptz
      from session, json_array_elements(${p("batch")}::text::json) with ordinality m
    )
    select exists (select from session)`;
}
