/**
 * The SQLite backend (better-sqlite3 12 and drizzle-orm).
 * @module agentix/sqlite
 */
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type BetterSqlite3 from "better-sqlite3";
import { z } from "zod";
import { type ForkTarget, SyncStorageBackend } from "./core/backend.js";
import { importDriver } from "./core/driver.js";
import { AgentixStorageError } from "./core/errors.js";
import { migrationTags } from "./core/migrations.js";
import { cwdOf, sessionRecord } from "./core/records.js";
import type { JsonObject, MessageRecord, Role, SessionQuery, SessionRecord } from "./core/types.js";
import { parseOptions } from "./core/validation.js";

// Drivers first, through importDriver, so that a missing package names what to install;
// the schema imports drizzle-orm itself, so it may only load once drizzle-orm is known to be there.
const PACKAGES = ["better-sqlite3@12", "drizzle-orm"];
const { default: Database } = await importDriver<{ default: typeof BetterSqlite3 }>(
  "better-sqlite3",
  "agentix/sqlite",
  PACKAGES,
);
const { drizzle } = await importDriver<typeof import("drizzle-orm/better-sqlite3")>(
  "drizzle-orm/better-sqlite3",
  "agentix/sqlite",
  PACKAGES,
);
const { and, asc, desc, eq, gt, sql } = await import("drizzle-orm");
const { readMigrationFiles } = await import("drizzle-orm/migrator");
const { messages, sessions } = await import("./schema/sqlite.js");

/** Options of {@link SqliteStorageBackend}: `path` or `database`, and `migrate`. */
export type SqliteStorageOptions = (
  | {
      /** The database file (created, with its directory, when missing), or `":memory:"`. The backend opens and closes it. */
      path: string;
      /**
       * How long a write waits for another connection's write lock before failing with "database is locked", in ms.
       * @default 5000
       */
      busyTimeout?: number;
      /** @hidden */
      database?: never;
    }
  | {
      /**
       * A better-sqlite3 connection of yours, used as it is: `close()` leaves it open, and its pragmas (WAL, busy
       * timeout, foreign keys) are yours to set.
       */
      database: BetterSqlite3.Database;
      /** @hidden */
      path?: never;
      /** @hidden */
      busyTimeout?: never;
    }
) & {
  /**
   * Apply the pending migrations of `migrations/sqlite` on first use (safe when several processes start at once).
   * With `false`, the tables must exist already.
   * @default true
   */
  migrate?: boolean;
};

const isDatabase = (v: unknown): v is BetterSqlite3.Database =>
  typeof v === "object" && v !== null && ["prepare", "transaction", "pragma"].every((m) => m in v);

const optionsSchema = z
  .strictObject({
    path: z.string().min(1, "must not be empty").optional(),
    database: z
      .custom<BetterSqlite3.Database>(isDatabase, { message: "must be a better-sqlite3 Database" })
      .refine((db) => db.open, "must be open")
      .optional(),
    busyTimeout: z.number().int().nonnegative().max(2_147_483_647).optional(),
    migrate: z.boolean().default(true),
  })
  .refine((o) => (o.path === undefined) !== (o.database === undefined), { message: "pass either path or database" })
  .refine((o) => o.database === undefined || o.busyTimeout === undefined, {
    message: "busyTimeout applies only with path",
    path: ["busyTimeout"],
  });

type Options = z.output<typeof optionsSchema>;

// src/sqlite.ts and dist/sqlite.js both sit one level below the package root.
const MIGRATIONS = fileURLToPath(new URL("../migrations/sqlite", import.meta.url));
// drizzle's bookkeeping table, so that drizzle-kit and drizzle's migrate() agree with us on what is applied.
const MIGRATIONS_TABLE = "__drizzle_migrations";

/**
 * Sessions in one SQLite file, through better-sqlite3 and Drizzle: WAL, foreign
 * keys on, a busy timeout, statements prepared once per connection, every write
 * an immediate (`BEGIN IMMEDIATE`) transaction, so that several processes can
 * share the file. Natively synchronous: the `...Sync` methods run on the caller's thread.
 *
 * The connection is opened (and migrated) on first use.
 *
 * @example
 * const storage = new SqliteStorageBackend({ path: "./agent.db" });
 */
export class SqliteStorageBackend extends SyncStorageBackend {
  readonly #options: Options;
  #connection: Connection | undefined;

  constructor(options: SqliteStorageOptions) {
    super();
    this.#options = parseOptions(optionsSchema, options, "SqliteStorageBackend");
  }

  get #db(): Connection {
    this.#connection ??= connect(this.#options);
    return this.#connection;
  }

  /**
   * Applies the pending migrations now (opening the database if need be) and returns their tags, such as
   * `["0000_init"]`; `[]` when the schema is up to date. Backends also migrate on first use (`migrate: true`).
   * @throws {BackendClosedError} after `close()`.
   */
  migrateSync(): string[] {
    return this.guardSync("migrate", () => {
      if (this.#connection) return migrate(this.#connection.client);
      // An explicit call migrates also with `migrate: false` (which only turns off migrating on first use).
      const opened = connect({ ...this.#options, migrate: true });
      this.#connection = opened;
      return opened.migrated;
    });
  }

  /** {@link SqliteStorageBackend.migrateSync}, as a promise. */
  async migrate(): Promise<string[]> {
    return this.migrateSync();
  }

  protected insertSession(record: SessionRecord): void {
    this.#db.insertSession.run(sessionRow(record));
  }

  protected readSession(sessionId: string): SessionRecord | null {
    const row = this.#db.readSession.get({ id: sessionId });
    return row ? toRecord(row) : null;
  }

  protected querySessions(agentId: string, query: SessionQuery): SessionRecord[] {
    const shape = `${query.cwd === undefined ? "agent" : "cwd"}${query.before === undefined ? "" : "Before"}` as const;
    const statement = this.#db.list[shape];
    const rows = statement.all({
      agent: agentId,
      cwd: query.cwd,
      updatedAt: query.before?.updated_at,
      id: query.before?.session_id,
      limit: query.limit ?? -1, // SQLite: a negative LIMIT is no limit
    });
    return rows.map(toRecord);
  }

  protected copySession(sessionId: string, target: ForkTarget): boolean {
    return this.#db.copy.immediate(sessionId, target);
  }

  protected removeSession(sessionId: string): void {
    this.#db.remove.immediate(sessionId);
  }

  protected appendMessage(sessionId: string, message: MessageRecord): boolean {
    return this.#db.append.immediate(sessionId, message);
  }

  protected readMessages(sessionId: string, last: number | undefined): MessageRecord[] | null {
    return this.#db.read.deferred(sessionId, last);
  }

  protected override scanPage(after: string | null, limit: number, agentId: string | undefined): SessionRecord[] {
    // Every id is greater than "", so no "after" is after "".
    const values = { after: after ?? "", limit, agent: agentId };
    const db = this.#db;
    return (agentId === undefined ? db.scanAll.all(values) : db.scanAgent.all(values)).map(toRecord);
  }

  protected override insertImported(record: SessionRecord, messages: MessageRecord[]): boolean {
    return this.#db.import.immediate(record, messages);
  }

  protected dispose(): void {
    if (this.#connection?.owned) this.#connection.client.close();
    this.#connection = undefined;
  }
}

/** Opens (when given a path) and migrates the database, then prepares every statement once. */
function connect(options: Options): Connection & { migrated: string[] } {
  const owned = options.database === undefined;
  const client = options.database ?? openFile(options.path as string, options.busyTimeout ?? 5000);
  try {
    const migrated = options.migrate ? migrate(client) : [];
    if (!options.migrate) assertMigrated(client);
    return { ...prepare(client, owned), migrated };
  } catch (error) {
    if (owned) client.close();
    throw error;
  }
}

function openFile(path: string, busyTimeout: number): BetterSqlite3.Database {
  if (path !== ":memory:") mkdirSync(dirname(resolve(path)), { recursive: true });
  // `timeout` is better-sqlite3's busy timeout.
  const client = new Database(path, { timeout: busyTimeout });
  try {
    // WAL: readers never block the writer; foreign keys: per connection, off by default in SQLite.
    retryBusy(() => client.pragma("journal_mode = WAL"), busyTimeout);
    client.pragma("foreign_keys = ON");
    return client;
  } catch (error) {
    client.close();
    throw error;
  }
}

const pause = new Int32Array(new SharedArrayBuffer(4));

/**
 * Runs `run`, retrying for up to `timeout` ms while it fails with SQLITE_BUSY. For the switch to WAL: SQLite
 * does not call the busy handler there, so processes opening a new file at once would fail at random.
 */
function retryBusy(run: () => unknown, timeout: number): void {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      run();
      return;
    } catch (error) {
      if ((error as { code?: unknown }).code !== "SQLITE_BUSY" || Date.now() >= deadline) throw error;
      Atomics.wait(pause, 0, 0, 10); // a synchronous sleep: the whole backend is synchronous
    }
  }
}

/**
 * Applies the pending migrations, as drizzle's `migrate()` does and in its
 * bookkeeping table, but in one `BEGIN IMMEDIATE` transaction that re-reads
 * what is applied once it holds the write lock: drizzle reads that before
 * taking the lock, so two processes starting on a fresh file would both run
 * `CREATE TABLE` and one would fail.
 */
function migrate(client: BetterSqlite3.Database): string[] {
  const pending = readMigrationFiles({ migrationsFolder: MIGRATIONS });
  const newest = pending.at(-1)?.folderMillis ?? 0;
  if (appliedUpTo(client) >= newest) return []; // the common case, without taking the write lock
  const tags = migrationTags(MIGRATIONS);
  const done: string[] = [];
  client
    .transaction(() => {
      client.exec(
        `CREATE TABLE IF NOT EXISTS "${MIGRATIONS_TABLE}" (id SERIAL PRIMARY KEY, hash text NOT NULL, created_at numeric)`,
      );
      const applied = appliedUpTo(client);
      const record = client.prepare(`INSERT INTO "${MIGRATIONS_TABLE}" ("hash", "created_at") VALUES (?, ?)`);
      for (const migration of pending) {
        if (migration.folderMillis <= applied) continue;
        for (const statement of migration.sql) client.exec(statement);
        record.run(migration.hash, migration.folderMillis);
        done.push(tags.get(migration.folderMillis) ?? String(migration.folderMillis));
      }
    })
    .immediate();
  return done;
}

/** The `when` of the newest applied migration, or -1 when none is. */
function appliedUpTo(client: BetterSqlite3.Database): number {
  if (!hasTable(client, MIGRATIONS_TABLE)) return -1;
  const newest = client.prepare(`SELECT max(created_at) FROM "${MIGRATIONS_TABLE}"`).pluck().get();
  return newest === null || newest === undefined ? -1 : Number(newest);
}

function assertMigrated(client: BetterSqlite3.Database): void {
  const missing = ["sessions", "messages"].filter((table) => !hasTable(client, table));
  if (missing.length > 0) {
    throw new AgentixStorageError(
      `SqliteStorageBackend: the database has no ${missing.join(" and ")} table and migrate is false: ` +
        "pass migrate: true, call migrate() first, or apply the migrations of agentix/migrations/sqlite (drizzle-kit migrate)",
    );
  }
}

function hasTable(client: BetterSqlite3.Database, name: string): boolean {
  return client.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined;
}

/** Every statement and transaction of one connection, prepared once. */
function prepare(client: BetterSqlite3.Database, owned: boolean) {
  const db = drizzle({ client });
  const p = sql.placeholder;
  const { id, agentId, cwd, metadata, createdAt, updatedAt } = sessions;
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
    });
  const importSession = newSession().onConflictDoNothing().prepare();
  const insertMessage = db
    .insert(messages)
    .values({ sessionId: p("sessionId"), role: p("role"), content: p("content"), createdAt: p("createdAt") })
    .prepare();
  const bump = db
    .update(sessions)
    .set({ updatedAt: sql`max(${updatedAt}, ${p("at")})` })
    .where(sessionById)
    .returning({ updatedAt })
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

  const messageRow = (sessionId: string, m: MessageRecord) => ({
    sessionId,
    role: m.role,
    content: JSON.stringify(m.content),
    createdAt: m.timestamp,
  });

  return {
    client,
    owned,
    insertSession: newSession().prepare(),
    readSession,
    list: {
      agent: list(false, false),
      cwd: list(true, false),
      agentBefore: list(false, true),
      cwdBefore: list(true, true),
    },
    scanAll: scan(false),
    scanAgent: scan(true),
    append: client.transaction((sessionId: string, m: MessageRecord): boolean => {
      // Raising updated_at first gives the message its clamped timestamp (a clock behind takes updated_at).
      const bumped = bump.get({ at: m.timestamp, id: sessionId });
      if (!bumped) return false;
      insertMessage.run(messageRow(sessionId, { ...m, timestamp: bumped.updatedAt }));
      return true;
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
      if (importSession.run(sessionRow(record)).changes === 0) return false;
      for (const m of list) insertMessage.run(messageRow(record.session_id, m));
      return true;
    }),
  };
}

type Connection = ReturnType<typeof prepare>;

function sessionRow(record: SessionRecord) {
  return {
    id: record.session_id,
    agentId: record.agent_id,
    cwd: cwdOf(record.metadata),
    metadata: record.metadata === null ? null : JSON.stringify(record.metadata),
    createdAt: record.created_at,
    updatedAt: record.updated_at,
  };
}

function toRecord(row: {
  id: string;
  agentId: string;
  metadata: string | null;
  createdAt: string;
  updatedAt: string;
}): SessionRecord {
  const metadata = row.metadata === null ? null : (JSON.parse(row.metadata) as JsonObject);
  return sessionRecord(row.id, row.agentId, row.createdAt, row.updatedAt, metadata);
}
