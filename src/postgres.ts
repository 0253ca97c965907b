/**
 * The Postgres backend: Drizzle over any Postgres driver (postgres.js, node-postgres, PGlite, Neon).
 * @module agentix/postgres
 */
import { createHash } from "node:crypto";
import type { SQLWrapper } from "drizzle-orm";
import type { Sql } from "postgres";
import { type ForkTarget, StorageBackend } from "./core/backend.js";
import { importDriver } from "./core/driver.js";
import { AgentixStorageError, BackendClosedError, toStorageError } from "./core/errors.js";
import { cwdOf } from "./core/records.js";
import type { SyncTwin } from "./core/sync.js";
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
import type { Connection, DriverOptions, Statement } from "./postgres-driver.js";
import type { PostgresImports } from "./postgres-import.js";
import { editOutcome, json, message, roleAndContent, sessionValues, toSession } from "./postgres-rows.js";
import type { AnyPgDatabase, CopyRow, EditRow, InsertRow, MessageRow, SessionRow } from "./postgres-statements.js";
import type { PgTables } from "./schema/pg.js";

// drizzle-orm first, so that without it the message names postgres.js too, the default driver; then the modules
// that import it (the driver's own import is in postgres-driver.ts).
await importDriver<typeof import("drizzle-orm")>("drizzle-orm", "agentix/postgres", ["postgres", "drizzle-orm"]);
const { PgDialect } = await import("drizzle-orm/pg-core");
const { pgTables } = await import("./schema/pg.js");
const q = await import("./postgres-statements.js");
const { PostgresImports: Imports } = await import("./postgres-import.js");
const { migrateSchema } = await import("./postgres-migrate.js");
const { runStatement } = await import("./postgres-retry.js");
const { OPTIONS, connect, isPglite, prepareStatement } = await import("./postgres-driver.js");

/** Options of {@link PostgresStorageBackend}: a `url`, a postgres.js `client` or a Drizzle `db`, plus the schema. */
export type PostgresStorageOptions = PostgresSchemaOptions &
  (
    | {
        /**
         * `postgres://user:pass@host:5432/db`: the backend opens (and closes) its own postgres.js pool. Or
         * `pglite:<dir>` / `pglite:memory:`: an in-process PGlite database (package `@electric-sql/pglite`), in that
         * directory or in memory, opened and closed by the backend.
         */
        url: string;
        /** Pool size, passed to postgres.js (not with `pglite:`). @default 10 */
        max?: number;
        /**
         * Whether postgres.js uses named prepared statements (not with `pglite:`). Set `false` behind a transaction
         * pooler (PgBouncer in transaction mode, RDS Proxy, Supavisor), which cannot route them; with a `client`,
         * make it with `postgres(url, { prepare: false })` instead. Also `?prepare=false` in a URL.
         * @default true
         */
        prepare?: boolean;
      }
    | {
        /** A client made by `postgres()`. The backend never closes it, and its `...Sync` methods are unavailable. */
        client: Sql;
      }
    | {
        /**
         * A Drizzle Postgres database you already have: `drizzle-orm/node-postgres`, `drizzle-orm/postgres-js`,
         * `drizzle-orm/pglite`, `drizzle-orm/neon-serverless` (not a transaction). The backend never closes its
         * client, and its `...Sync` methods are unavailable.
         */
        db: PostgresDatabase;
      }
  );

/**
 * A Drizzle Postgres database, as the `db` option takes it: `drizzle()` of `drizzle-orm/node-postgres`,
 * `drizzle-orm/postgres-js`, `drizzle-orm/pglite`, `drizzle-orm/neon-serverless`, .... Described by what agentix
 * uses of it, so that agentix's declarations need no drizzle-orm types; the constructor checks that it is one.
 */
export interface PostgresDatabase {
  /** Drizzle's internals: the session that agentix prepares and runs its statements on. */
  readonly _: {
    /** Drizzle's session of the driver (`NodePgSession`, `PostgresJsSession`, ...). */
    readonly session: object;
  };
  /** Drizzle's transactions, for the migrations. */
  transaction(...args: never[]): Promise<unknown>;
}

/** Options every PostgresStorageBackend takes, with `url`, `client` or `db`. */
export interface PostgresSchemaOptions {
  /**
   * The Postgres schema that holds everything this backend creates (tables, indexes, the migrations'
   * bookkeeping table): one schema per tenant. Created if missing. Any name (at most 63 bytes, not `pg_...`);
   * it is always quoted, so `"Tenant A"` and `"tenant a"` are two schemas.
   * @default "public"
   */
  schema?: string;
  /** Apply pending migrations on first use (once per backend; one query when they are applied already). @default true */
  migrate?: boolean;
}

type Values = Record<string, unknown>;
const dialect = new PgDialect();

/**
 * Sessions in Postgres, through Drizzle: the tables are src/schema/pg.ts's, built inside the tenant's schema, and
 * every statement names them with it (`"tenant"."sessions"`) instead of relying on the connection's `search_path`,
 * so that tenants can share one pool, including a database passed in. Every operation is one statement (one round
 * trip), prepared once per shape; `forkSession` copies on the server; listings and message loads follow their
 * indexes (messages by `(session_id, position)`). The statements are in postgres-statements.ts. The `...Sync`
 * methods run on a worker thread, on a twin built from the same `url`.
 *
 * @example
 * // The Drizzle database an app already has (node-postgres here):
 * const storage = new PostgresStorageBackend({ db: drizzle(pool), schema: "agents" });
 */
export class PostgresStorageBackend extends StorageBackend {
  readonly #options: DriverOptions;
  readonly #schema: string;
  readonly #migrate: boolean;
  readonly #tables: PgTables;
  readonly #prepared = new Map<string, Statement>();
  /** The connection once open; `#opening` while it opens (PGlite loads on first use). */
  #connection: Connection | undefined;
  #opening: Promise<Connection> | undefined;
  #migrated: Promise<void> | undefined;
  /** Whether `#migrated` has settled successfully: open and migrated. */
  #isReady = false;

  constructor(options: PostgresStorageOptions) {
    super();
    const o = parseOptions(OPTIONS, options, "PostgresStorageBackend");
    this.#options = { url: o.url, client: o.client, db: o.db, max: o.max, prepare: o.prepare };
    this.#schema = o.schema ?? "public";
    this.#migrate = o.migrate ?? true;
    this.#tables = pgTables(this.#schema);
    // postgres.js and a db passed in are ready at once (a missing driver is an error here); PGlite opens on first use.
    if (!isPglite(o.url)) this.#connection = connect(this.#options) as Connection;
  }

  get #db(): AnyPgDatabase {
    return (this.#connection as Connection).db;
  }

  /**
   * Every statement of the operations goes through here: its statement (made once per shape and backend: `build`
   * renders it, `key` names the shape, {@link prepareStatement} readies it for the driver), run with `values`, one
   * round trip; rows as arrays, so that column names never matter (a postgres.js client with
   * `transform: postgres.camel` reads the same). Errors come out as the driver threw them. Serialization failures
   * and deadlocks are run again ({@link runStatement}), a fresh query each time.
   */
  #run<R>(key: string, build: () => SQLWrapper, values: Values): Promise<R[]> {
    // Open and migrated once (see #ready); checked here, so that the statements of a ready backend wait for nothing.
    if (!this.#isReady) return this.#ready().then(() => this.#run<R>(key, build, values));
    let prepared = this.#prepared.get(key);
    if (prepared === undefined) {
      const query = dialect.sqlToQuery(build().getSQL());
      // A name per text: node-postgres and Neon prepare under it per connection (tenants sharing a pool have
      // different texts); postgres.js prepares whenever a name is given; PGlite ignores it. With `prepare: false`,
      // no name: every driver then sends unnamed statements, which a transaction pooler can route.
      const name =
        this.#options.prepare === false
          ? undefined
          : `agentix_${createHash("sha256").update(query.sql).digest("base64url").slice(0, 22)}`;
      prepared = prepareStatement(this.#db, query, name);
      this.#prepared.set(key, prepared);
    }
    const run = prepared;
    return runStatement(() => run(values)) as Promise<R[]>;
  }

  protected async insertSession(record: SessionRecord): Promise<SessionRecord | null> {
    const values = { ...sessionValues(record), id: record.session_id };
    // Run again only when the id was stored by a transaction that committed after the statement began (see insertSession).
    for (;;) {
      const [row] = await this.#run<InsertRow>("insert", () => q.insertSession(this.#db, this.#tables), values);
      const [stored, ...existing] = row as InsertRow;
      if (stored) return null;
      if (existing[0] !== null) return toSession(existing as SessionRow);
    }
  }

  protected async readSession(sessionId: string): Promise<SessionRecord | null> {
    const [row] = await this.#run<SessionRow>("read", () => q.readSession(this.#db, this.#tables), { id: sessionId });
    return row ? toSession(row) : null;
  }

  protected async querySessions(agentId: string, query: SessionQuery): Promise<SessionRecord[]> {
    const { cwd, before, limit } = query;
    const shape = { cwd: cwd !== undefined, before: before !== undefined, limit: limit !== undefined };
    const rows = await this.#run<SessionRow>(
      `list:${shape.cwd}:${shape.before}:${shape.limit}`,
      () => q.listSessions(this.#db, this.#tables, shape),
      { agent: agentId, cwd, updatedAt: before?.updated_at, id: before?.session_id, limit },
    );
    return rows.map(toSession);
  }

  protected async replaceMetadata(
    sessionId: string,
    metadata: JsonObject | null,
    at: string,
  ): Promise<SessionRecord | null> {
    const [row] = await this.#run<SessionRow>("update", () => q.replaceMetadata(this.#db, this.#tables), {
      id: sessionId,
      metadata: json(metadata),
      cwd: cwdOf(metadata),
      at,
    });
    return row ? toSession(row) : null;
  }

  protected async copySession(sessionId: string, target: ForkTarget): Promise<CopyOutcome> {
    const { length, metadata } = target;
    const shape = { length: length !== undefined, metadata: metadata !== undefined };
    const [row] = await this.#run<CopyRow>(
      `copy:${shape.length}:${shape.metadata}`,
      () => q.copySession(this.#tables, shape),
      {
        id: sessionId,
        target: target.session_id,
        createdAt: target.created_at,
        length: length ?? null,
        cwd: metadata === undefined ? null : cwdOf(metadata),
        metadata: metadata === undefined ? null : json(metadata),
      },
    );
    const [count, copied, taken] = row as CopyRow;
    if (count === null) return { status: "not-found" };
    if (copied) return { status: "copied" };
    // Not inserted: the id was taken (ON CONFLICT), or the length is beyond the count (then a taken id comes first).
    return !taken && length !== undefined && length > count
      ? { status: "out-of-range", length: count }
      : { status: "exists" };
  }

  protected async removeSession(sessionId: string): Promise<void> {
    await this.#run("remove", () => q.removeSession(this.#db, this.#tables), { id: sessionId });
  }

  protected async appendMessages(sessionId: string, messages: MessageRecord[]): Promise<number | null> {
    const [first] = messages as [MessageRecord];
    const batch = messages.length > 1;
    const at = first.timestamp;
    const values = batch
      ? { id: sessionId, at, count: messages.length, batch: roleAndContent(messages) }
      : { id: sessionId, at, role: first.role, content: JSON.stringify(first.content) };
    const [row] = await this.#run<[number]>(
      batch ? "append:n" : "append:1",
      () => q.appendMessages(this.#tables, batch),
      values,
    );
    return row ? row[0] : null;
  }

  protected async editMessages(sessionId: string, edit: MessageEdit): Promise<EditOutcome> {
    const shape = q.editShape(edit);
    // Without metadata, the key (and text) of the shapes before the option; with it, its own statements.
    const key = `edit:${shape.pop}:${shape.from}:${shape.key}:${shape.appends}${shape.metadata ? ":metadata" : ""}`;
    const { metadata } = edit;
    const values = {
      id: sessionId,
      from: edit.from ?? null,
      expected: edit.expectedLength ?? null,
      at: edit.at,
      count: edit.messages.length,
      batch: roleAndContent(edit.messages),
      key: edit.idempotency?.key ?? null,
      fingerprint: edit.idempotency?.fingerprint ?? null,
      kept: q.KEYS_KEPT,
      // As replaceMetadata binds them: JSON text (or null) and the cwd it holds (text or null).
      ...(metadata === undefined ? {} : { metadata: json(metadata), cwd: cwdOf(metadata) }),
    };
    // Run again when writers of the session collided (see editMessages in postgres-statements.ts): nothing was
    // written, and the next run has a newer snapshot.
    for (let attempt = 1; ; attempt++) {
      try {
        const [row] = await this.#run<EditRow>(key, () => q.editMessages(this.#tables, shape), values);
        if (row?.[0] !== "stale") return editOutcome(row as EditRow);
      } catch (error) {
        // postgres.js names the constraint `constraint_name`, node-postgres and PGlite `constraint`.
        const { code, constraint_name, constraint } = error as Record<string, unknown>;
        const violated = constraint_name ?? constraint;
        if (code !== "23505" || violated !== "idempotency_keys_pkey" || attempt >= 3) throw error;
      }
    }
  }

  protected async readLength(sessionId: string): Promise<number | null> {
    const [row] = await this.#run<[number]>("length", () => q.readLength(this.#db, this.#tables), { id: sessionId });
    return row ? row[0] : null;
  }

  protected async readMessages(sessionId: string, range: MessageRange): Promise<MessageRecord[] | null> {
    const shape = q.readShape(range);
    const rows = await this.#run<MessageRow>(`messages:${shape}`, () => q.readMessages(this.#tables, shape), {
      id: sessionId,
      last: "last" in range ? range.last : null,
      offset: "offset" in range ? range.offset : null,
      limit: "limit" in range ? (range.limit ?? null) : null,
    });
    if (rows.length === 0) return null;
    const messages: MessageRecord[] = [];
    for (const [role, content, timestamp] of rows) {
      if (role !== null) messages.push(message(role, content as string, timestamp as string));
    }
    return messages;
  }

  protected override async scanPage(
    after: string | null,
    limit: number,
    agentId: string | undefined,
  ): Promise<SessionRecord[]> {
    const shape = { agent: agentId !== undefined, after: after !== null };
    const rows = await this.#run<SessionRow>(
      `scan:${shape.agent}:${shape.after}`,
      () => q.scanSessions(this.#db, this.#tables, shape),
      { agent: agentId, after, limit },
    );
    return rows.map(toSession);
  }

  protected override async insertImported(record: SessionRecord, messages: MessageRecord[]): Promise<boolean> {
    const payload = JSON.stringify(messages.map((m) => [m.role, JSON.stringify(m.content), m.timestamp]));
    const [row] = await this.#run<[boolean]>("import", () => q.importSession(this.#tables), {
      ...sessionValues(record),
      id: record.session_id,
      count: messages.length,
      batch: payload,
    });
    return row?.[0] === true;
  }

  // Streamed imports stage their chunks on the server (src/postgres-import.ts): the client holds one chunk.
  protected override async beginImport(staged: StagedImport): Promise<boolean> {
    return (await this.#imports()).begin(staged);
  }

  protected override async stageMessages(staged: StagedImport, offset: number, m: MessageRecord[]): Promise<boolean> {
    return (await this.#imports()).stage(staged, offset, m);
  }

  protected override async publishImport(staged: StagedImport, length: number): Promise<boolean> {
    return (await this.#imports()).publish(staged, length);
  }

  protected override async discardImport(staged: StagedImport): Promise<void> {
    await (await this.#imports()).discard(staged);
  }

  async #imports(): Promise<PostgresImports> {
    await this.#ready();
    return new Imports(
      <R>(key: string, build: () => SQLWrapper, values: Values) => this.#run<R>(key, build, values),
      this.#tables,
    );
  }

  protected async dispose(): Promise<void> {
    // A PGlite still opening is closed once open; one that never opened has nothing to close.
    const connection = this.#connection ?? (await this.#opening?.catch(() => undefined));
    await connection?.close?.();
  }

  protected override syncTwin(): SyncTwin {
    const { url, max, prepare } = this.#options;
    if (url === undefined || isPglite(url)) {
      throw new AgentixStorageError(
        url === undefined
          ? "PostgresStorageBackend: the ...Sync methods run on a worker thread, which cannot share a client or db " +
              "passed in; build the backend from { url } to use them"
          : "PostgresStorageBackend: the ...Sync methods run on a worker thread, and a PGlite database lives in this " +
              "thread only (one process, one connection); use the async methods",
      );
    }
    const options: PostgresStorageOptions = { url, schema: this.#schema, migrate: this.#migrate };
    if (max !== undefined) options.max = max;
    if (prepare !== undefined) options.prepare = prepare;
    return { module: import.meta.url, exportName: "PostgresStorageBackend", options };
  }

  /**
   * Applies the pending migrations now and returns their tags, such as `["0000_init"]`; `[]` when the schema is
   * up to date. The backend also migrates on first use (`migrate: true`), so this is for deploy steps and tools.
   * @throws {BackendClosedError} after `close()`.
   * @throws {AgentixStorageError} when the server refuses (the driver's error is the `cause`).
   */
  async migrate(): Promise<string[]> {
    if (this.closed) throw new BackendClosedError("PostgresStorageBackend");
    try {
      const applied = await migrateSchema((await this.#open()).db, this.#schema);
      if (this.#migrated === undefined) {
        this.#migrated = Promise.resolve();
        this.#isReady = true;
      }
      return applied;
    } catch (error) {
      throw toStorageError(error, "PostgresStorageBackend.migrate");
    }
  }

  /** The connection, opened on first use. */
  #open(): Promise<Connection> {
    if (this.#connection) return Promise.resolve(this.#connection);
    this.#opening ??= Promise.resolve(connect(this.#options)).then((c) => (this.#connection = c));
    return this.#opening;
  }

  /** Opens the connection and applies pending migrations, once per backend; a failed attempt is retried by the next call. */
  #ready(): Promise<void> {
    if (this.#migrated === undefined) {
      const migrating = this.#open().then((c) => (this.#migrate ? migrateSchema(c.db, this.#schema) : []));
      this.#migrated = migrating.then(
        () => {
          this.#isReady = true;
        },
        (error: unknown) => {
          this.#migrated = undefined;
          // A PGlite that failed to open is opened again by the next call.
          if (this.#connection === undefined) this.#opening = undefined;
          throw error;
        },
      );
    }
    return this.#migrated;
  }
}
