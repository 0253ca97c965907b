// The statements of MySqlStorageBackend (mysql.ts), built with Drizzle from the tables of schema.ts: the query
// builder for each one, Drizzle's `sql` with the tables' columns where an expression needs it. Every value is a
// parameter; every statement runs through `run`, the one place that sends them.
import {
  and,
  asc,
  DrizzleQueryError,
  desc,
  eq,
  gt,
  gte,
  lt,
  lte,
  or,
  type SQL,
  type SQLWrapper,
  sql,
} from "drizzle-orm";
import type { MySql2Database } from "drizzle-orm/mysql2";
import type { Connection, Pool, PoolConnection } from "mysql2/promise";
// In your own project, all of these come from "agentix".
import {
  cwdOf,
  type JsonObject,
  type MessageContent,
  type MessageRecord,
  type Role,
  type SessionRecord,
  sessionRecord,
} from "../../../src/index.js";
import { idempotencyKeys, messages, sessions } from "./schema.js";

/** How many idempotency keys a session remembers (the contract's minimum). */
export const KEYS_KEPT = 1000;

/** A Drizzle database on the pool, or on the connection of a transaction, with its mysql2 client. */
export type Db = Pick<MySql2Database, "select" | "insert" | "update" | "delete" | "execute"> & {
  $client: Pool | PoolConnection | Connection;
};

/** DATETIME(3) as `2024-01-15T14:30:00.123Z`, formatted by the server whatever the pool's date options. */
export const iso = (column: SQLWrapper) =>
  sql<string>`concat(left(date_format(${column}, '%Y-%m-%dT%H:%i:%s.%f'), 23), 'Z')`;
/** `2024-01-15T14:30:00.123Z` as DATETIME(3) input: MySQL refuses the `T` and the `Z`. */
export const datetime = (timestamp: string) => `${timestamp.slice(0, 10)} ${timestamp.slice(11, 23)}`;

/** The driver's error, out of Drizzle's `DrizzleQueryError` (whose message holds the whole statement and its values). */
export function driverError(error: unknown): unknown {
  return error instanceof DrizzleQueryError && error.cause !== undefined ? error.cause : error;
}

/** Runs one statement (a query builder, awaited): the errors come out as mysql2 threw them. */
export async function run<T>(statement: PromiseLike<T>): Promise<T> {
  try {
    return await statement;
  } catch (error) {
    throw driverError(error);
  }
}

/** The driver's error number (1062: a duplicate key), also through Drizzle's wrapper. */
export const errno = (error: unknown) => (driverError(error) as { errno?: number }).errno;

// agent_id is a binary string: mysql2 returns it as a Buffer.
const text = (column: SQLWrapper) => sql<Buffer | string>`${column}`.mapWith((v: Buffer | string) => v.toString());

/** The columns a session record is made of. */
export const sessionFields = {
  id: sessions.id,
  agentId: text(sessions.agentId),
  createdAt: iso(sessions.createdAt),
  updatedAt: iso(sessions.updatedAt),
  metadata: sessions.metadata,
};
export const messageFields = { role: messages.role, content: messages.content, createdAt: iso(messages.createdAt) };

export type SessionRow = { id: string; agentId: string; createdAt: string; updatedAt: string; metadata: string | null };
export type MessageRow = { role: Role; content: string; createdAt: string };

export async function sessionById(db: Db, sessionId: string): Promise<SessionRecord | null> {
  const [row] = await run(db.select(sessionFields).from(sessions).where(eq(sessions.id, sessionId)));
  return row ? toSession(row) : null;
}

/** The sessions of one agent, newest first, with the filters given (each shape served by its index). */
export function listSessions(
  db: Db,
  agentId: string,
  query: {
    cwd?: string | undefined;
    before?: { updatedAt: string; id: string } | undefined;
    limit?: number | undefined;
  },
) {
  const { cwd, before, limit } = query;
  const select = db
    .select(sessionFields)
    .from(sessions)
    .where(
      and(
        eq(sessions.agentId, agentId),
        cwd === undefined ? undefined : and(sql`${sessions.cwdHash} = unhex(sha2(${cwd}, 256))`, eq(sessions.cwd, cwd)),
        // Not `(updated_at, id) < (?, ?)`: MariaDB reads that by walking the index from the newest session down to
        // the cursor, so deep pages would cost more. This form is two index ranges.
        before === undefined
          ? undefined
          : or(
              lt(sessions.updatedAt, before.updatedAt),
              and(eq(sessions.updatedAt, before.updatedAt), lt(sessions.id, before.id)),
            ),
      ),
    )
    .orderBy(desc(sessions.updatedAt), desc(sessions.id));
  return run(limit === undefined ? select : select.limit(limit));
}

/** A page of sessions in id order (of one agent: along `(agent_id, id)`), after `after`. */
export const scanQuery = (db: Db, after: string | null, limit: number, agentId: string | undefined) =>
  db
    .select(sessionFields)
    .from(sessions)
    .where(
      and(
        agentId === undefined ? undefined : eq(sessions.agentId, agentId),
        after === null ? undefined : gt(sessions.id, after),
      ),
    )
    .orderBy(asc(sessions.id))
    .limit(limit);

export const scanSessions = (db: Db, after: string | null, limit: number, agentId: string | undefined) =>
  run(scanQuery(db, after, limit, agentId));

export function insertRow(db: Db, record: SessionRecord, messageCount: number) {
  const { session_id, agent_id, metadata, created_at, updated_at } = record;
  return run(
    db.insert(sessions).values({
      id: session_id,
      agentId: agent_id,
      cwd: cwdOf(metadata),
      metadata: json(metadata),
      createdAt: datetime(created_at),
      updatedAt: datetime(updated_at),
      messageCount,
    }),
  );
}

/** `updated_at = greatest(updated_at, at)`: the clamp of a clock that is behind. */
export const raisedTo = (at: string): SQL => sql`greatest(${sessions.updatedAt}, cast(${datetime(at)} as datetime(3)))`;

/**
 * Inserts the messages at positions `first`, `first + 1`, … (at `at`, else at their own timestamps), in as few
 * INSERTs as max_allowed_packet (16 MiB by default on MariaDB) allows whatever their total size: at most 100 rows
 * and about 1 MiB of content each, a larger message alone.
 */
export async function insertMessages(
  db: Db,
  id: string,
  batch: MessageRecord[],
  first: number,
  at?: string,
): Promise<void> {
  const contents = batch.map((m) => JSON.stringify(m.content));
  for (let start = 0, end = 0; start < batch.length; start = end) {
    let size = 0;
    do size += (contents[end++] as string).length;
    while (end < batch.length && end - start < 100 && size + (contents[end] as string).length <= 1024 * 1024);
    const rows = batch.slice(start, end).map((m, i) => ({
      sessionId: id,
      position: first + start + i,
      role: m.role,
      content: contents[start + i] as string,
      createdAt: at ?? datetime(m.timestamp),
    }));
    // Built by Drizzle, sent as a prepared statement (mysql2's execute): Drizzle's mysql2 session sends text
    // queries, whose values are escaped into one packet, and a packet over max_allowed_packet makes the server drop
    // the connection; a prepared statement's values travel apart, and the server refuses them with an error.
    const insert = db.insert(messages).values(rows).toSQL();
    await db.$client.execute(insert.sql, insert.params as never[]);
  }
}

/** The messages of a range: positions from `offset` (with a limit), or the newest `last`, newest first. */
export function messageRange(
  db: Db,
  sessionId: string,
  range: { last: number } | { offset: number; limit?: number | undefined },
) {
  const query = db.select(messageFields).from(messages);
  if ("last" in range)
    return run(query.where(eq(messages.sessionId, sessionId)).orderBy(desc(messages.position)).limit(range.last));
  const page = query
    .where(and(eq(messages.sessionId, sessionId), gte(messages.position, range.offset)))
    .orderBy(asc(messages.position));
  return run(range.limit === undefined ? page : page.limit(range.limit));
}

/** What a session remembers of the write made under an idempotency key. */
export interface RememberedWrite {
  fingerprint: string;
  length: number;
  popped: MessageRecord | null;
}

/** The write remembered under `key`, or `null`. */
export async function rememberedWrite(db: Db, sessionId: string, key: string): Promise<RememberedWrite | null> {
  const k = idempotencyKeys;
  const [row] = await run(
    db
      .select({ fingerprint: text(k.fingerprint), length: k.length, popped: k.popped })
      .from(k)
      .where(and(eq(k.sessionId, sessionId), eq(k.key, key))),
  );
  if (!row) return null;
  return {
    fingerprint: row.fingerprint,
    length: row.length,
    popped: row.popped === null ? null : toMessage(row.popped),
  };
}

/**
 * Remembers a write under `key` as the session's newest (`seq` one more than the newest so far), and forgets
 * the one that falls out of the {@link KEYS_KEPT} most recent: one indexed range each. Run it with the session
 * row locked, so that writes to one session number their keys one after the other.
 */
export async function remember(db: Db, sessionId: string, key: string, write: RememberedWrite): Promise<void> {
  const k = idempotencyKeys;
  const [newest] = await run(
    db
      .select({ seq: sql<number>`coalesce(max(${k.seq}), 0)`.mapWith(Number) })
      .from(k)
      .where(eq(k.sessionId, sessionId)),
  );
  const seq = (newest?.seq ?? 0) + 1;
  const popped = write.popped === null ? null : JSON.stringify(write.popped);
  await run(db.insert(k).values({ sessionId, seq, key, fingerprint: write.fingerprint, length: write.length, popped }));
  if (seq > KEYS_KEPT) {
    await run(db.delete(k).where(and(eq(k.sessionId, sessionId), lte(k.seq, seq - KEYS_KEPT))));
  }
}

/** Content and metadata are stored as JSON text (see schema.ts); `null` metadata is SQL NULL. */
export function json(value: JsonObject | null): string | null {
  return value === null ? null : JSON.stringify(value);
}

export function toSession({ id, agentId, createdAt, updatedAt, metadata }: SessionRow): SessionRecord {
  return sessionRecord(
    id,
    agentId,
    createdAt,
    updatedAt,
    metadata === null ? null : (JSON.parse(metadata) as JsonObject),
  );
}

export function fromRow({ role, content, createdAt }: MessageRow): MessageRecord {
  return { role, content: JSON.parse(content) as MessageContent, timestamp: createdAt };
}

/** A message remembered as the JSON of its record (a popped one). */
function toMessage(value: string): MessageRecord {
  const { role, content, timestamp } = JSON.parse(value) as MessageRecord;
  return { role, content, timestamp };
}
