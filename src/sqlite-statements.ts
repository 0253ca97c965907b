// The SQLite backend's statements: built with Drizzle from src/schema/sqlite.ts, prepared once per connection.
// Loaded by src/sqlite.ts once it knows drizzle-orm is installed.
import type BetterSqlite3 from "better-sqlite3";
import { and, asc, desc, eq, gt, is, Param, Placeholder, sql } from "drizzle-orm";
import { drizzle } from "drizzle-orm/better-sqlite3";
import type { ForkTarget } from "./core/backend.js";
import { cwdOf, sessionRecord } from "./core/records.js";
import type { JsonObject, MessageRecord, Role, SessionRecord } from "./core/types.js";
import { messages, sessions } from "./schema/sqlite.js";

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

/** One connection's statements and transactions (run with `.immediate` to write, `.deferred` to read). */
export interface Connection {
  client: BetterSqlite3.Database;
  /** Whether the backend opened the connection (and so closes it). */
  owned: boolean;
  readSession: { get(values: { id: string }): SessionRow | undefined };
  readLength: { get(values: { id: string }): { messageCount: number } | undefined };
  replaceMetadata: Tx<(sessionId: string, metadata: JsonObject | null, at: string) => SessionRecord | null>;
  list: Record<"agent" | "cwd" | "agentBefore" | "cwdBefore", { all(values: ListValues): SessionRow[] }>;
  scanAll: { all(values: ScanValues): SessionRow[] };
  scanAgent: { all(values: ScanValues): SessionRow[] };
  insertIfAbsent: Tx<(record: SessionRecord) => SessionRecord | null>;
  append: Tx<(sessionId: string, batch: MessageRecord[]) => number | null>;
  read: Tx<(sessionId: string, last: number | undefined) => MessageRecord[] | null>;
  copy: Tx<(sessionId: string, target: ForkTarget) => boolean>;
  remove: Tx<(sessionId: string) => void>;
  import: Tx<(record: SessionRecord, messages: MessageRecord[]) => boolean>;
}

/** Every statement and transaction of one connection, prepared once. */
export function prepare(client: BetterSqlite3.Database, owned: boolean): Connection {
  const db = drizzle({ client });
  const p = sql.placeholder;
  const { id, agentId, cwd, metadata, createdAt, updatedAt, messageCount } = sessions;
  const sessionById = eq(id, p("id"));
  const ofSession = eq(messages.sessionId, p("id"));
  const selectSessions = () => db.select({ id, agentId, metadata, createdAt, updatedAt }).from(sessions);
  const selectMessages = () =>
    db.select({ role: messages.role, content: messages.content, createdAt: messages.createdAt }).from(messages);

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
  const readLength = db.select({ messageCount }).from(sessions).where(sessionById).prepare();
  const readAll = selectMessages().where(ofSession).orderBy(asc(messages.id)).prepare();
  const readLast = selectMessages().where(ofSession).orderBy(desc(messages.id)).limit(p("last")).prepare();
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
  const insertMessage = direct<[sessionId: string, role: Role, content: string, createdAt: string], never>(
    client,
    db
      .insert(messages)
      .values({ sessionId: p("sessionId"), role: p("role"), content: p("content"), createdAt: p("createdAt") }),
    ["sessionId", "role", "content", "createdAt"],
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
  // Forks are copied inside the database: rows never travel through JS.
  const at = sql<string>`${p("at")}`;
  const copySessionRow = db
    .insert(sessions)
    .select(
      db
        .select({
          id: sql<string>`${p("target")}`.as("id"),
          agentId,
          cwd,
          metadata,
          createdAt: at.as("created_at"),
          updatedAt: at.as("updated_at"),
          // Read in the copy's transaction, so it is the number of messages copied below.
          messageCount,
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
          // NULL: SQLite assigns the next AUTOINCREMENT id, row by row in the SELECT's order.
          id: sql<number>`NULL`.as("id"),
          sessionId: sql<string>`${p("target")}`.as("session_id"),
          role: messages.role,
          content: messages.content,
          createdAt: messages.createdAt,
        })
        .from(messages)
        .where(ofSession)
        .orderBy(asc(messages.id)),
    )
    .prepare();
  const deleteMessages = db.delete(messages).where(ofSession).prepare();
  const deleteSession = db.delete(sessions).where(sessionById).prepare();

  return {
    client,
    owned,
    insertIfAbsent: client.transaction((record: SessionRecord): SessionRecord | null => {
      if (insertIfAbsent.run(sessionRow(record, 0)).changes > 0) return null;
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
      // Raising updated_at first gives the messages their clamped timestamp (a clock behind takes updated_at).
      const timestamp = (batch[0] as MessageRecord).timestamp;
      const bumped = bump.get(timestamp, batch.length, sessionId);
      if (!bumped) return null;
      const [at, count] = bumped;
      for (const m of batch) insertMessage.run(sessionId, m.role, JSON.stringify(m.content), at);
      return count;
    }),
    read: client.transaction((sessionId: string, last: number | undefined): MessageRecord[] | null => {
      // Rows as arrays (no per-row object mapping); the session is looked up only when there are none.
      const rows = (
        last === undefined ? readAll.values({ id: sessionId }) : readLast.values({ id: sessionId, last }).reverse()
      ) as Array<[role: Role, content: string, timestamp: string]>;
      if (rows.length === 0 && !readSession.get({ id: sessionId })) return null;
      return rows.map(([role, content, timestamp]) => ({ role, content: JSON.parse(content), timestamp }));
    }),
    copy: client.transaction((sessionId: string, target: ForkTarget): boolean => {
      const values = { id: sessionId, target: target.session_id, at: target.created_at };
      if (copySessionRow.run(values).changes === 0) return false;
      copyMessageRows.run(values);
      return true;
    }),
    // Messages explicitly, not only by ON DELETE CASCADE: a `database` of the caller may have foreign keys off.
    remove: client.transaction((sessionId: string): void => {
      deleteMessages.run({ id: sessionId });
      deleteSession.run({ id: sessionId });
    }),
    import: client.transaction((record: SessionRecord, list: MessageRecord[]): boolean => {
      if (insertIfAbsent.run(sessionRow(record, list.length)).changes === 0) return false;
      for (const m of list) insertMessage.run(record.session_id, m.role, JSON.stringify(m.content), m.timestamp);
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
