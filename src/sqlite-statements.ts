// The SQLite backend's statements: built with Drizzle from src/schema/sqlite.ts, prepared once per connection.
// Loaded by src/sqlite.ts once it knows drizzle-orm is installed.
import type BetterSqlite3 from "better-sqlite3";
import { and, asc, desc, eq, gt, gte, is, lt, Param, Placeholder, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/better-sqlite3";
import type { ForkTarget } from "./core/backend.js";
import { latest } from "./core/clock.js";
import { cwdOf, sessionRecord } from "./core/records.js";
import type {
  CopyOutcome,
  EditOutcome,
  JsonObject,
  MessageEdit,
  MessageRange,
  MessageRecord,
  Role,
  SessionRecord,
} from "./core/types.js";
import { idempotencyKeys, messages, sessions } from "./schema/sqlite.js";
import { type ChunkedWrites, chunkedWrites } from "./sqlite-chunked.js";

/** How many idempotency keys a session remembers (the contract's minimum): older ones are pruned as keys are added. */
const KEYS_KEPT = 1000;

/** The session columns a record is made of. */
export interface SessionRow {
  id: string;
  agentId: string;
  metadata: string | null;
  createdAt: string;
  updatedAt: string;
}

type ListValues = {
  agent: string;
  cwd: string | undefined;
  updatedAt: string | undefined;
  id: string | undefined;
  limit: number;
};
type ScanValues = { after: string; limit: number; agent: string | undefined };
type Tx<F extends (...args: never[]) => unknown> = BetterSqlite3.Transaction<F>;
/** A message row as the reads return it: role, content (JSON text), timestamp. */
type MessageRow = [role: Role, content: string, timestamp: string];

/** One connection's statements and transactions (run with `.immediate` to write, `.deferred` to read). */
export interface Connection {
  client: BetterSqlite3.Database;
  /** Whether the backend opened the connection (and so closes it). */
  owned: boolean;
  readSession: { get(values: { id: string }): SessionRow | undefined };
  /** The session's message_count, or `undefined` when it does not exist. */
  readLength: { get(id: string): number | undefined };
  replaceMetadata: Tx<(sessionId: string, metadata: JsonObject | null, at: string) => SessionRecord | null>;
  list: Record<"agent" | "cwd" | "agentBefore" | "cwdBefore", { all(values: ListValues): SessionRow[] }>;
  scanAll: { all(values: ScanValues): SessionRow[] };
  scanAgent: { all(values: ScanValues): SessionRow[] };
  insertIfAbsent: Tx<(record: SessionRecord) => SessionRecord | null>;
  append: Tx<(sessionId: string, batch: MessageRecord[]) => number | null>;
  edit: Tx<(sessionId: string, edit: MessageEdit) => EditOutcome>;
  read: Tx<(sessionId: string, range: MessageRange) => MessageRecord[] | null>;
  copy: Tx<(sessionId: string, target: ForkTarget) => CopyOutcome>;
  remove: Tx<(sessionId: string) => void>;
  import: Tx<(record: SessionRecord, messages: MessageRecord[]) => boolean>;
  /** Forks and deletes of big sessions in short transactions (see src/sqlite-chunked.ts). */
  chunked: ChunkedWrites;
}

/** Every statement and transaction of one connection, prepared once. */
export function prepare(client: BetterSqlite3.Database, owned: boolean): Connection {
  const db = drizzle({ client });
  const p = sql.placeholder;
  const { id, agentId, cwd, metadata, createdAt, updatedAt, messageCount, keySeq } = sessions;
  const sessionById = eq(id, p("id"));
  const ofSession = eq(messages.sessionId, p("id"));
  const keyOf = and(eq(idempotencyKeys.sessionId, p("id")), eq(idempotencyKeys.key, p("key")));
  const selectSessions = () => db.select({ id, agentId, metadata, createdAt, updatedAt }).from(sessions);

  // One statement per shape of the query, each served by an index walked backwards (no sort).
  const list = (byCwd: boolean, before: boolean) =>
    selectSessions()
      .where(
        and(
          eq(agentId, p("agent")),
          byCwd ? eq(cwd, p("cwd")) : undefined,
          // A row value: one index range, not an OR of two conditions.
          before ? sql`(${updatedAt}, ${id}) < (${p("updatedAt")}, ${p("id")})` : undefined,
        ),
      )
      .orderBy(desc(updatedAt), desc(id))
      .limit(p("limit"))
      .prepare();
  const scan = (byAgent: boolean) =>
    selectSessions()
      .where(and(byAgent ? eq(agentId, p("agent")) : undefined, gt(id, p("after"))))
      .orderBy(asc(id))
      .limit(p("limit"))
      .prepare();

  const readSession = selectSessions().where(sessionById).prepare();
  const readLength = direct<[id: string], number>(
    client,
    db.select({ messageCount }).from(sessions).where(sessionById),
    ["id"],
  ).pluck();
  // Positions start … end - 1, along the (session_id, position) index: a page costs the same however deep it is.
  const readRange = direct<[id: string, start: number, end: number], MessageRow>(
    client,
    db
      .select({ role: messages.role, content: messages.content, createdAt: messages.createdAt })
      .from(messages)
      .where(and(ofSession, gte(messages.position, p("start")), lt(messages.position, p("end"))))
      .orderBy(asc(messages.position)),
    ["id", "start", "end"],
  ).raw();
  const newSession = () =>
    db.insert(sessions).values({
      id: p("id"),
      agentId: p("agentId"),
      cwd: p("cwd"),
      metadata: p("metadata"),
      createdAt: p("createdAt"),
      updatedAt: p("updatedAt"),
      messageCount: p("messageCount"),
    });
  // Insert-if-absent: the id is the only unique key, so a conflict means the id is taken.
  const insertIfAbsent = newSession().onConflictDoNothing().prepare();
  // The append's two statements run on better-sqlite3 directly (see `direct`).
  const insertMessage = direct<
    [sessionId: string, position: number, role: Role, content: string, createdAt: string],
    never
  >(
    client,
    db.insert(messages).values({
      sessionId: p("sessionId"),
      position: p("position"),
      role: p("role"),
      content: p("content"),
      createdAt: p("createdAt"),
    }),
    ["sessionId", "position", "role", "content", "createdAt"],
  );
  // The batch's one statement on the session row: the clamped time for its messages, and the new count.
  const bump = direct<[at: string, added: number, id: string], [updatedAt: string, count: number]>(
    client,
    db
      .update(sessions)
      .set({ updatedAt: sql`max(${updatedAt}, ${p("at")})`, messageCount: sql`${messageCount} + ${p("added")}` })
      .where(sessionById)
      .returning({ updatedAt, messageCount }),
    ["at", "added", "id"],
  ).raw();
  const setMetadata = db
    .update(sessions)
    .set({ cwd: sql`${p("cwd")}`, metadata: sql`${p("metadata")}`, updatedAt: sql`max(${updatedAt}, ${p("at")})` })
    .where(sessionById)
    .returning({ id, agentId, metadata, createdAt, updatedAt })
    .prepare();

  // An edit's statements: the session row first (its length, time and key sequence), the remembered key, the drop,
  // then the row again with what the edit computed under the write lock.
  const editHead = direct<[id: string], [count: number, updatedAt: string, keySeq: number]>(
    client,
    db.select({ messageCount, updatedAt, keySeq }).from(sessions).where(sessionById),
    ["id"],
  ).raw();
  const { fingerprint, length, poppedRole, poppedContent, poppedAt } = idempotencyKeys;
  const readKey = direct<
    [id: string, key: string],
    [fingerprint: string, length: number, role: Role | null, content: string | null, at: string | null]
  >(
    client,
    db.select({ fingerprint, length, poppedRole, poppedContent, poppedAt }).from(idempotencyKeys).where(keyOf),
    ["id", "key"],
  ).raw();
  const dropFrom = direct<[id: string, from: number], never>(
    client,
    db.delete(messages).where(and(ofSession, gte(messages.position, p("from")))),
    ["id", "from"],
  );
  const popAt = direct<[id: string, position: number], MessageRow>(
    client,
    db
      .delete(messages)
      .where(and(ofSession, eq(messages.position, p("position"))))
      .returning({ role: messages.role, content: messages.content, createdAt: messages.createdAt }),
    ["id", "position"],
  ).raw();
  const setHead = direct<[at: string, count: number, keySeq: number, id: string], never>(
    client,
    db
      .update(sessions)
      .set({ updatedAt: sql`${p("at")}`, messageCount: sql`${p("count")}`, keySeq: sql`${p("keySeq")}` })
      .where(sessionById),
    ["at", "count", "keySeq", "id"],
  );
  // The same with the metadata option: the row's metadata and cwd replaced with the rest of the head.
  const setHeadMetadata = direct<
    [cwd: string | null, metadata: string | null, at: string, count: number, keySeq: number, id: string],
    never
  >(
    client,
    db
      .update(sessions)
      .set({
        cwd: sql`${p("cwd")}`,
        metadata: sql`${p("metadata")}`,
        updatedAt: sql`${p("at")}`,
        messageCount: sql`${p("count")}`,
        keySeq: sql`${p("keySeq")}`,
      })
      .where(sessionById),
    ["cwd", "metadata", "at", "count", "keySeq", "id"],
  );
  const rememberKey = db
    .insert(idempotencyKeys)
    .values({
      sessionId: p("id"),
      key: p("key"),
      fingerprint: p("fingerprint"),
      seq: p("seq"),
      length: p("length"),
      poppedRole: p("role"),
      poppedContent: p("content"),
      poppedAt: p("at"),
    })
    .prepare();
  // One range of the (session_id, seq) index, holding at most the one key that fell out of the newest 1,000.
  const pruneKeys = db
    .delete(idempotencyKeys)
    .where(and(eq(idempotencyKeys.sessionId, p("id")), sql`${idempotencyKeys.seq} <= ${p("upTo")}`))
    .prepare();

  // Forks are copied inside the database: rows never travel through JS.
  const at = sql<string>`${p("at")}`;
  const replaced = <T>(column: unknown, value: string) =>
    sql<T>`CASE WHEN ${p("replace")} THEN ${p(value)} ELSE ${column} END`.as(value);
  const copySessionRow = db
    .insert(sessions)
    .select(
      db
        .select({
          id: sql<string>`${p("target")}`.as("id"),
          agentId,
          cwd: replaced<string | null>(cwd, "cwd"),
          metadata: replaced<string | null>(metadata, "metadata"),
          createdAt: at.as("created_at"),
          updatedAt: at.as("updated_at"),
          messageCount: sql<number>`${p("length")}`.as("message_count"),
          keySeq: sql<number>`0`.as("key_seq"),
        })
        .from(sessions)
        .where(sessionById),
    )
    .prepare();
  const copyMessageRows = db
    .insert(messages)
    .select(
      db
        .select({
          // NULL: SQLite assigns the next AUTOINCREMENT id.
          id: sql<number>`NULL`.as("id"),
          sessionId: sql<string>`${p("target")}`.as("session_id"),
          position: messages.position,
          role: messages.role,
          content: messages.content,
          createdAt: messages.createdAt,
        })
        .from(messages)
        .where(and(ofSession, lt(messages.position, p("length"))))
        .orderBy(asc(messages.position)),
    )
    .prepare();
  const deleteKeys = db
    .delete(idempotencyKeys)
    .where(eq(idempotencyKeys.sessionId, p("id")))
    .prepare();
  const deleteMessages = db.delete(messages).where(ofSession).prepare();
  const deleteSession = db.delete(sessions).where(sessionById).prepare();

  return {
    client,
    owned,
    insertIfAbsent: client.transaction((record: SessionRecord): SessionRecord | null => {
      if (insertIfAbsent.run(sessionRow(record, 0)).changes > 0) {
        // Rows a crash left under this id, in the middle of a chunked fork or delete (see sqlite-chunked.ts).
        deleteMessages.run({ id: record.session_id });
        return null;
      }
      // The same write transaction: the session that holds the id cannot go away before it is read.
      return toRecord(readSession.get({ id: record.session_id }) as SessionRow);
    }),
    readSession,
    readLength,
    replaceMetadata: client.transaction((sessionId: string, data: JsonObject | null, at: string) => {
      const json = data === null ? null : JSON.stringify(data);
      const row = setMetadata.get({ id: sessionId, cwd: cwdOf(data), metadata: json, at });
      return row ? toRecord(row) : null;
    }),
    list: {
      agent: list(false, false),
      cwd: list(true, false),
      agentBefore: list(false, true),
      cwdBefore: list(true, true),
    },
    scanAll: scan(false),
    scanAgent: scan(true),
    append: client.transaction((sessionId: string, batch: MessageRecord[]): number | null => {
      // Raising updated_at first gives the messages their clamped timestamp (a clock behind takes updated_at),
      // and the new count their positions: the batch takes the count - batch.length … count - 1.
      const timestamp = (batch[0] as MessageRecord).timestamp;
      const bumped = bump.get(timestamp, batch.length, sessionId);
      if (!bumped) return null;
      const [at, count] = bumped;
      let position = count - batch.length;
      for (const m of batch) insertMessage.run(sessionId, position++, m.role, JSON.stringify(m.content), at);
      return count;
    }),
    edit: client.transaction((sessionId: string, edit: MessageEdit): EditOutcome => {
      const head = editHead.get(sessionId);
      if (!head) return { status: "not-found" };
      const [length, updated, seq] = head;
      const key = edit.idempotency;
      const remembered = key && readKey.get(sessionId, key.key);
      if (remembered) {
        const [fingerprint, written, role, content, at] = remembered;
        const popped = role === null ? null : message([role, content as string, at as string]);
        return { status: "replayed", fingerprint, length: written, popped };
      }
      if (edit.expectedLength !== undefined && edit.expectedLength !== length) return { status: "conflict", length };
      if (edit.from !== undefined && edit.from > length) return { status: "out-of-range", length };
      let keep = length;
      let popped: MessageRow | undefined;
      if (edit.pop && length > 0) {
        keep = length - 1;
        popped = popAt.get(sessionId, keep);
      } else if (edit.from !== undefined && edit.from < length) {
        keep = edit.from;
        dropFrom.run(sessionId, keep);
      }
      const { metadata } = edit;
      // With metadata, updated_at moves whether the list changed or not.
      const changed = keep < length || edit.messages.length > 0 || metadata !== undefined;
      const at = changed ? latest(edit.at, updated) : updated;
      let position = keep;
      for (const m of edit.messages) insertMessage.run(sessionId, position++, m.role, JSON.stringify(m.content), at);
      const nextSeq = key ? seq + 1 : seq;
      if (metadata !== undefined) {
        const json = metadata === null ? null : JSON.stringify(metadata);
        setHeadMetadata.run(cwdOf(metadata), json, at, position, nextSeq, sessionId);
      } else if (changed || key) setHead.run(at, position, nextSeq, sessionId);
      if (key) {
        const [role, content, poppedAt] = popped ?? [null, null, null];
        const { key: name, fingerprint } = key;
        rememberKey.run({
          id: sessionId,
          key: name,
          fingerprint,
          seq: nextSeq,
          length: position,
          role,
          content,
          at: poppedAt,
        });
        if (nextSeq > KEYS_KEPT) pruneKeys.run({ id: sessionId, upTo: nextSeq - KEYS_KEPT });
      }
      return { status: "written", length: position, popped: popped ? message(popped) : null };
    }),
    read: client.transaction((sessionId: string, range: MessageRange): MessageRecord[] | null => {
      // The count and the rows from one snapshot (a read transaction), so the tail is where the count says.
      const count = readLength.get(sessionId);
      if (count === undefined) return null;
      const start = "last" in range ? Math.max(0, count - range.last) : range.offset;
      const end = "last" in range || range.limit === undefined ? count : Math.min(count, range.offset + range.limit);
      if (start >= end) return [];
      // Rows as arrays: no per-row object mapping.
      return readRange.all(sessionId, start, end).map(message);
    }),
    copy: client.transaction((sessionId: string, target: ForkTarget): CopyOutcome => {
      const count = readLength.get(sessionId);
      if (count === undefined) return { status: "not-found" };
      if (readLength.get(target.session_id) !== undefined) return { status: "exists" };
      const length = target.length ?? count;
      if (length > count) return { status: "out-of-range", length: count };
      const data = target.metadata ?? null;
      copySessionRow.run({
        id: sessionId,
        target: target.session_id,
        at: target.created_at,
        length,
        replace: target.metadata === undefined ? 0 : 1,
        cwd: cwdOf(data),
        metadata: data === null ? null : JSON.stringify(data),
      });
      deleteMessages.run({ id: target.session_id }); // rows a crash left under this id (see sqlite-chunked.ts)
      if (length > 0) copyMessageRows.run({ id: sessionId, target: target.session_id, length });
      return { status: "copied" };
    }),
    // Messages and keys explicitly, not only by ON DELETE CASCADE: a `database` of the caller may have foreign keys off.
    remove: client.transaction((sessionId: string): void => {
      deleteKeys.run({ id: sessionId });
      deleteMessages.run({ id: sessionId });
      deleteSession.run({ id: sessionId });
    }),
    chunked: chunkedWrites(client),
    import: client.transaction((record: SessionRecord, list: MessageRecord[]): boolean => {
      if (insertIfAbsent.run(sessionRow(record, list.length)).changes === 0) return false;
      deleteMessages.run({ id: record.session_id }); // rows a crash left under this id (see sqlite-chunked.ts)
      for (const [i, m] of list.entries()) {
        insertMessage.run(record.session_id, i, m.role, JSON.stringify(m.content), m.timestamp);
      }
      return true;
    }),
  };
}

/**
 * A statement built by Drizzle but prepared and run by better-sqlite3 itself, taking the placeholders
 * `names` as positional arguments (checked against the query, so a change of the query cannot shift them):
 * on the append path, Drizzle's per-call placeholder filling and row mapping cost about a tenth of the
 * throughput of a single append.
 */
function direct<P extends unknown[], R>(
  client: BetterSqlite3.Database,
  query: { toSQL(): { sql: string; params: unknown[] } },
  names: string[],
): BetterSqlite3.Statement<P, R> {
  const { sql: text, params } = query.toSQL();
  const found = params.map((param) => {
    const value = is(param, Param) ? param.value : param;
    return is(value, Placeholder) ? value.name : "(a value)";
  });
  if (found.join() !== names.join()) throw new Error(`placeholders ${found.join()}, expected ${names.join()}`);
  return client.prepare<P, R>(text);
}

function message([role, content, timestamp]: MessageRow): MessageRecord {
  return { role, content: JSON.parse(content), timestamp };
}

function sessionRow(record: SessionRecord, messageCount: number) {
  return {
    id: record.session_id,
    agentId: record.agent_id,
    cwd: cwdOf(record.metadata),
    metadata: record.metadata === null ? null : JSON.stringify(record.metadata),
    createdAt: record.created_at,
    updatedAt: record.updated_at,
    messageCount,
  };
}

export function toRecord(row: SessionRow): SessionRecord {
  const metadata = row.metadata === null ? null : (JSON.parse(row.metadata) as JsonObject);
  return sessionRecord(row.id, row.agentId, row.createdAt, row.updatedAt, metadata);
}
