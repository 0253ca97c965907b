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
import type {
  CopyOutcome,
  EditOutcome,
  JsonObject,
  MessageEdit,
  MessageRange,
  MessageRecord,
  SessionQuery,
  SessionRecord,
  StagedImport,
} from "./core/types.js";
import { parseOptions } from "./core/validation.js";
import { sqliteImports } from "./sqlite-import.js";
import type { Connection } from "./sqlite-statements.js";

// Drivers first, through importDriver, so that a missing package names what to install;
// the statements (and the schema) import drizzle-orm themselves, so they may only load once it is known to be there.
const PACKAGES = ["better-sqlite3@12", "drizzle-orm"];
const { default: Database } = await importDriver<{ default: typeof BetterSqlite3 }>(
  "better-sqlite3",
  "agentix/sqlite",
  PACKAGES,
);
await importDriver<typeof import("drizzle-orm/better-sqlite3")>(
  "drizzle-orm/better-sqlite3",
  "agentix/sqlite",
  PACKAGES,
);
const { readMigrationFiles } = await import("drizzle-orm/migrator");
const { prepare, toRecord } = await import("./sqlite-statements.js");

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
    const run = () => {
      if (this.#connection) return migrate(this.#connection.client);
      // An explicit call migrates also with `migrate: false` (which only turns off migrating on first use).
      const opened = connect({ ...this.#options, migrate: true });
      this.#connection = opened;
      return opened.migrated;
    };
    return this.guardSync("migrate", { prepare: () => undefined, run }, []);
  }

  /** {@link SqliteStorageBackend.migrateSync}, as a promise. */
  async migrate(): Promise<string[]> {
    return this.migrateSync();
  }

  protected insertSession(record: SessionRecord): SessionRecord | null {
    return this.#db.insertIfAbsent.immediate(record);
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

  protected replaceMetadata(sessionId: string, metadata: JsonObject | null, at: string): SessionRecord | null {
    return this.#db.replaceMetadata.immediate(sessionId, metadata, at);
  }

  protected copySession(sessionId: string, target: ForkTarget): CopyOutcome {
    const db = this.#db;
    return db.chunked.fork(sessionId, target) ?? db.copy.immediate(sessionId, target);
  }

  protected removeSession(sessionId: string): void {
    const db = this.#db;
    if (!db.chunked.remove(sessionId)) db.remove.immediate(sessionId);
  }

  protected appendMessages(sessionId: string, messages: MessageRecord[]): number | null {
    return this.#db.append.immediate(sessionId, messages);
  }

  protected editMessages(sessionId: string, edit: MessageEdit): EditOutcome {
    return this.#db.edit.immediate(sessionId, edit);
  }

  protected readLength(sessionId: string): number | null {
    return this.#db.readLength.get(sessionId) ?? null;
  }

  protected readMessages(sessionId: string, range: MessageRange): MessageRecord[] | null {
    return this.#db.read.deferred(sessionId, range);
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

  // A streamed import: chunks in short transactions, published in one (see src/sqlite-import.ts).
  protected override beginImport(staged: StagedImport): boolean {
    return sqliteImports(this.#db.client).begin(staged);
  }
  protected override stageMessages(staged: StagedImport, offset: number, messages: MessageRecord[]): boolean {
    return sqliteImports(this.#db.client).stage(staged, offset, messages);
  }
  protected override publishImport(staged: StagedImport, length: number): boolean {
    return sqliteImports(this.#db.client).publish(staged, length);
  }
  protected override discardImport(staged: StagedImport): void {
    sqliteImports(this.#db.client).discard(staged);
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
