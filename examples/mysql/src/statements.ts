// The SQL of MySqlStorageBackend (mysql.ts) that more than one primitive runs: reading rows, the times at the
// boundary, and the writes of sessions, messages and idempotency keys. Every value is a parameter.
import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from "mysql2/promise";
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

/** How many idempotency keys a session remembers (the contract's minimum). */
export const KEYS_KEPT = 1000;

/** DATETIME(3) as `2024-01-15T14:30:00.123Z`, formatted by the server whatever the pool's date options. */
export const iso = (column: string) => `concat(left(date_format(${column}, '%Y-%m-%dT%H:%i:%s.%f'), 23), 'Z')`;
/** `2024-01-15T14:30:00.123Z` as DATETIME(3) input: MySQL refuses the `T` and the `Z`. */
export const datetime = (timestamp: string) => `${timestamp.slice(0, 10)} ${timestamp.slice(11, 23)}`;

export const SESSION_COLUMNS = `id, agent_id, ${iso("created_at")}, ${iso("updated_at")}, metadata`;
export const MESSAGE_COLUMNS = `role, content, ${iso("created_at")}`;
// agent_id is a binary string: mysql2 returns it as a Buffer.
export type SessionRow = [id: string, agentId: Buffer, createdAt: string, updatedAt: string, metadata: string | null];
export type MessageRow = [role: Role, content: string, timestamp: string];
export type Db = Pool | PoolConnection;
export type Param = string | number | null;

/** Rows as arrays: column names never matter, so a pool with its own row options reads the same. */
export async function rows<T>(db: Db, sql: string, params: Param[]): Promise<T[]> {
  const [result] = await db.execute<RowDataPacket[]>({ sql, rowsAsArray: true }, params);
  return result as unknown as T[];
}

export async function run(db: Db, sql: string, params: Param[]): Promise<ResultSetHeader> {
  const [result] = await db.execute<ResultSetHeader>(sql, params);
  return result;
}

export async function sessionById(db: Db, sessionId: string): Promise<SessionRecord | null> {
  const [row] = await rows<SessionRow>(db, `select ${SESSION_COLUMNS} from sessions where id = ?`, [sessionId]);
  return row ? toSession(row) : null;
}

export function insertRow(db: Db, record: SessionRecord, messageCount: number): Promise<ResultSetHeader> {
  const { session_id, agent_id, metadata, created_at, updated_at } = record;
  return run(
    db,
    `insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at, message_count)
     values (?, ?, ?, ?, ?, ?, ?)`,
    [session_id, agent_id, cwdOf(metadata), json(metadata), datetime(created_at), datetime(updated_at), messageCount],
  );
}

/**
 * Inserts the messages at positions `first`, `first + 1`, … (at `at`, else at their own timestamps), in as few
 * INSERTs as max_allowed_packet (16 MiB by default on MariaDB) allows whatever their total size: at most 100 rows
 * and about 1 MiB of content each, a larger message alone.
 */
export async function insertMessages(
  db: Db,
  id: string,
  messages: MessageRecord[],
  first: number,
  at?: string,
): Promise<void> {
  const contents = messages.map((m) => JSON.stringify(m.content));
  for (let start = 0, end = 0; start < messages.length; start = end) {
    let size = 0;
    do size += (contents[end++] as string).length;
    while (end < messages.length && end - start < 100 && size + (contents[end] as string).length <= 1024 * 1024);
    const params = messages
      .slice(start, end)
      .flatMap((m, i) => [id, first + start + i, m.role, contents[start + i], at ?? datetime(m.timestamp)]);
    const values = Array.from({ length: end - start }, () => "(?, ?, ?, ?, ?)").join(", ");
    const sql = `insert into messages (session_id, position, role, content, created_at) values ${values}`;
    await run(db, sql, params as Param[]);
  }
}

/** What a session remembers of the write made under an idempotency key. */
export interface RememberedWrite {
  fingerprint: string;
  length: number;
  popped: MessageRecord | null;
}

/** The write remembered under `key`, or `null`. */
export async function rememberedWrite(db: Db, sessionId: string, key: string): Promise<RememberedWrite | null> {
  const [row] = await rows<[fingerprint: Buffer, length: number, popped: string | null]>(
    db,
    "select fingerprint, length, popped from idempotency_keys where session_id = ? and idempotency_key = ?",
    [sessionId, key],
  );
  if (!row) return null;
  const [fingerprint, length, popped] = row;
  return { fingerprint: fingerprint.toString("utf8"), length, popped: popped === null ? null : toMessage(popped) };
}

/**
 * Remembers a write under `key` as the session's newest (`seq` one more than the newest so far), and forgets
 * the one that falls out of the {@link KEYS_KEPT} most recent: one indexed range each. Run it with the session
 * row locked, so that writes to one session number their keys one after the other.
 */
export async function remember(db: Db, sessionId: string, key: string, write: RememberedWrite): Promise<void> {
  const sql = "select coalesce(max(seq), 0) from idempotency_keys where session_id = ?";
  const [[newest] = [0]] = await rows<[number]>(db, sql, [sessionId]);
  const seq = Number(newest) + 1;
  const popped = write.popped === null ? null : JSON.stringify(write.popped);
  await run(
    db,
    `insert into idempotency_keys (session_id, seq, idempotency_key, fingerprint, length, popped)
     values (?, ?, ?, ?, ?, ?)`,
    [sessionId, seq, key, write.fingerprint, write.length, popped],
  );
  if (seq > KEYS_KEPT) {
    await run(db, "delete from idempotency_keys where session_id = ? and seq <= ?", [sessionId, seq - KEYS_KEPT]);
  }
}

/** Content and metadata are stored as JSON text (see schema.ts); `null` metadata is SQL NULL. */
export function json(value: JsonObject | null): string | null {
  return value === null ? null : JSON.stringify(value);
}

export function toSession([id, agentId, createdAt, updatedAt, metadata]: SessionRow): SessionRecord {
  return sessionRecord(
    id,
    agentId.toString("utf8"),
    createdAt,
    updatedAt,
    metadata === null ? null : (JSON.parse(metadata) as JsonObject),
  );
}

export function fromRow([role, content, timestamp]: MessageRow): MessageRecord {
  return { role, content: JSON.parse(content) as MessageContent, timestamp };
}

/** A message remembered as the JSON of its record (a popped one). */
function toMessage(text: string): MessageRecord {
  const { role, content, timestamp } = JSON.parse(text) as MessageRecord;
  return { role, content, timestamp };
}
