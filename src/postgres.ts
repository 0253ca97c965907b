/**
 * The Postgres backend (postgres.js and drizzle-orm).
 * @module agentix/postgres
 */
import { fileURLToPath } from "node:url";
import type { MigrationMeta } from "drizzle-orm/migrator";
import type { PendingQuery, Row, Sql } from "postgres";
import { z } from "zod";
import { type ForkTarget, StorageBackend } from "./core/backend.js";
import { importDriver } from "./core/driver.js";
import { AgentixStorageError, BackendClosedError, toStorageError } from "./core/errors.js";
import { migrationTags } from "./core/migrations.js";
import { cwdOf, sessionRecord } from "./core/records.js";
import type { SyncTwin } from "./core/sync.js";
import type {
  CopyOutcome,
  EditOutcome,
  JsonObject,
  MessageContent,
  MessageEdit,
  MessageRange,
  MessageRecord,
  Role,
  SessionQuery,
  SessionRecord,
} from "./core/types.js";
import { parseOptions } from "./core/validation.js";
import { migrationScript } from "./postgres-migrate.js";
import { runStatement } from "./postgres-retry.js";
import {
  appendStatement,
  type CopyRow,
  copyStatement,
  type EditRow,
  editStatement,
  importStatement,
  iso,
  json,
  type MessageRow,
  readStatement,
  type Tables,
} from "./postgres-statements.js";

const PACKAGES = ["postgres", "drizzle-orm"];
const { default: postgres } = await importDriver<{ default: typeof import("postgres") }>(
  "postgres",
  "agentix/postgres",
  PACKAGES,
);
const { readMigrationFiles } = await importDriver<typeof import("drizzle-orm/migrator")>(
  "drizzle-orm/migrator",
  "agentix/postgres",
  PACKAGES,
);

/** Options of {@link PostgresStorageBackend}: a `url` or a `client`, plus the schema to work in. */
export type PostgresStorageOptions = PostgresSchemaOptions &
  (
    | {
        /** A connection string, `postgres://user:pass@host:5432/db`: the backend opens (and closes) its own pool. */
        url: string;
        /** Pool size, passed to postgres.js. @default 10 */
        max?: number;
        /**
         * Whether postgres.js uses named prepared statements. Set `false` behind a transaction pooler (PgBouncer in
         * transaction mode, RDS Proxy, Supavisor), which cannot route them; with a `client`, make it with
         * `postgres(url, { prepare: false })` instead. Also `?prepare=false` in a URL.
         * @default true
         */
        prepare?: boolean;
      }
    | {
        /** A client made by `postgres()`. The backend never closes it, and its `...Sync` methods are unavailable. */
        client: Sql;
      }
  );

/** Options every PostgresStorageBackend takes, with `url` or with `client`. */
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

const SCHEMA_NAME = z
  .string()
  .min(1, "must not be empty")
  .refine((s) => s.isWellFormed() && !s.includes("\u0000"), "must be well-formed Unicode without NUL characters")
  // Postgres silently truncates longer names: two tenants would share one schema.
  .refine((s) => Buffer.byteLength(s) <= 63, "must be at most 63 bytes (UTF-8)")
  .refine((s) => !s.startsWith("pg_"), 'must not start with "pg_" (reserved by Postgres)');

const isClient = (v: unknown): v is Sql =>
  typeof v === "function" &&
  ["unsafe", "begin", "end"].every((k) => typeof (v as unknown as Record<string, unknown>)[k] === "function");

const OPTIONS = z
  .strictObject({
    url: z
      .string()
      .regex(/^postgres(ql)?:\/\//, "must be a postgres:// or postgresql:// URL")
      .optional(),
    client: z
      .custom<Sql>(isClient, "expected a client made by postgres() (not a transaction or reserved connection)")
      .optional(),
    max: z.number().int().positive().optional(),
    prepare: z.boolean().optional(),
    schema: SCHEMA_NAME.optional(),
    migrate: z.boolean().optional(),
  })
  .superRefine((o, ctx) => {
    if ((o.url === undefined) === (o.client === undefined))
      ctx.addIssue({ code: "custom", message: "give either url or client" });
    if (o.client !== undefined && o.max !== undefined)
      ctx.addIssue({ code: "custom", path: ["max"], message: "sizes the pool opened from url; not with client" });
    if (o.client !== undefined && o.prepare !== undefined)
      ctx.addIssue({
        code: "custom",
        path: ["prepare"],
        message: "configures the pool opened from url; make the client with postgres(url, { prepare }) instead",
      });
  });

// Shipped beside src/ and dist/ alike; drizzle's migrator reads meta/_journal.json from disk.
const MIGRATIONS_FOLDER = fileURLToPath(new URL("../migrations/postgres", import.meta.url));
let migrationFiles: MigrationMeta[] | undefined;

const quote = (identifier: string) => `"${identifier.replaceAll('"', '""')}"`;

type SessionRow = [id: string, agentId: string, createdAt: string, updatedAt: string, metadata: string | null];
/** A row of a left join that found nothing. */
type Nulls<T extends unknown[]> = { [K in keyof T]: null };

/**
 * Sessions in Postgres through postgres.js: every operation is one prepared statement (one round trip),
 * `forkSession` copies on the server, listings and message loads follow their indexes (messages by
 * `(session_id, position)`). The statements that touch messages are in postgres-statements.ts. The `...Sync` methods
 * run on a worker thread, on a twin built from the same `url`.
 *
 * Every statement names its tables with the schema (`"tenant"."sessions"`) instead of relying on the
 * connection's `search_path`, so that tenants can share one pool, including a client passed in.
 */
export class PostgresStorageBackend extends StorageBackend {
  readonly #sql: Sql;
  readonly #url: string | undefined;
  readonly #max: number | undefined;
  readonly #prepare: boolean | undefined;
  readonly #schema: string;
  readonly #migrate: boolean;
  // Qualified names and column lists as postgres.js fragments: constant text, so each statement is prepared once per connection.
  readonly #sessions: PendingQuery<Row[]>;
  readonly #tables: Tables;
  readonly #sessionColumns: PendingQuery<Row[]>;
  #migrated: Promise<void> | undefined;

  constructor(options: PostgresStorageOptions) {
    super();
    const o = parseOptions(OPTIONS, options, "PostgresStorageBackend");
    this.#url = o.url;
    this.#max = o.max;
    this.#prepare = o.prepare;
    this.#schema = o.schema ?? "public";
    this.#migrate = o.migrate ?? true;
    this.#sql =
      o.client ??
      postgres(o.url as string, {
        ...(o.max === undefined ? {} : { max: o.max }),
        ...(o.prepare === undefined ? {} : { prepare: o.prepare }),
        // With named statements, no pipelining (postgres.js's `max_pipeline`, 100 by default, missing from its
        // types): a statement's first run sends Parse/Describe/Flush without a Sync, and queued behind queries in
        // flight, a transaction pooler hands the server connection on at their ReadyForQuery while the describe
        // is still answered there. Replies then reach the wrong client: calls hung, one's failure was another's
        // (which postgres.js ran again: duplicated) and its success another's (lost). One query in flight per
        // connection keeps every exchange on one server connection; postgres.js then re-prepares a statement
        // the pooler lost (26000) by itself, which is safe, since the Bind failed before anything ran.
        ...(o.prepare === false ? {} : ({ max_pipeline: 0 } as object)),
        connection: { application_name: "agentix" },
        // postgres.js prints server notices to stdout by default; a library must not.
        onnotice: () => {},
      });
    const s = quote(this.#schema);
    this.#sessions = this.#sql.unsafe(`${s}."sessions"`);
    this.#tables = {
      sql: this.#sql,
      sessions: this.#sessions,
      messages: this.#sql.unsafe(`${s}."messages"`),
      keys: this.#sql.unsafe(`${s}."idempotency_keys"`),
    };
    this.#sessionColumns = this.#sql.unsafe(`id, agent_id, ${iso("created_at")}, ${iso("updated_at")}, metadata`);
  }

  protected async insertSession(record: SessionRecord): Promise<SessionRecord | null> {
    await this.#ready();
    const id = record.session_id;
    // One row: [true] when stored, [false, ...the existing row] when the id is taken. But the select reads the
    // statement's snapshot: when a concurrent transaction stored the id and committed after it was taken, ON
    // CONFLICT sees that row and the select does not, [false, null, ...]. Only then is the statement run again,
    // with a new snapshot (rare: it takes two calls for one new id at the same moment).
    for (;;) {
      const [row] = await values<[stored: boolean, ...existing: SessionRow | Nulls<SessionRow>]>(
        () =>
          this.#sql`
        with inserted as (
          insert into ${this.#sessions} (id, agent_id, cwd, metadata, created_at, updated_at)
          values (${id}, ${record.agent_id}, ${cwdOf(record.metadata)}, ${json(record.metadata)},
                  ${record.created_at}, ${record.updated_at})
          on conflict (id) do nothing
          returning id
        )
        select exists (select from inserted), ${this.#sessionColumns}
        from (select) one left join ${this.#sessions} on id = ${id} and not exists (select from inserted)`,
      );
      const [stored, ...existing] = row as [boolean, ...(SessionRow | Nulls<SessionRow>)];
      if (stored) return null;
      if (existing[0] !== null) return toSession(existing as SessionRow);
    }
  }

  protected async readSession(sessionId: string): Promise<SessionRecord | null> {
    await this.#ready();
    const [row] = await values<SessionRow>(
      () => this.#sql`select ${this.#sessionColumns} from ${this.#sessions} where id = ${sessionId}`,
    );
    return row ? toSession(row) : null;
  }

  protected async querySessions(agentId: string, query: SessionQuery): Promise<SessionRecord[]> {
    await this.#ready();
    const { cwd, before, limit } = query;
    const sql = this.#sql;
    // One statement per combination of filters (never `$2 is null or cwd = $2`), so that each plan can use its index.
    // NULLS LAST as in the indexes: the columns are NOT NULL, but the planner matches an index by its declared order.
    const rows = await values<SessionRow>(
      () =>
        sql`
      select ${this.#sessionColumns} from ${this.#sessions}
      where agent_id = ${agentId}
      ${cwd === undefined ? sql`` : sql`and md5(cwd) = md5(${cwd}) and cwd = ${cwd}`}
      ${before === undefined ? sql`` : this.#afterCursor(before.updated_at, before.session_id)}
      order by updated_at desc nulls last, id desc nulls last
      ${limit === undefined ? sql`` : sql`limit ${limit}`}`,
    );
    return rows.map(toSession);
  }

  protected async replaceMetadata(
    sessionId: string,
    metadata: JsonObject | null,
    at: string,
  ): Promise<SessionRecord | null> {
    await this.#ready();
    const [row] = await values<SessionRow>(
      () =>
        this.#sql`
      update ${this.#sessions}
      set metadata = ${json(metadata)}, cwd = ${cwdOf(metadata)}, updated_at = greatest(updated_at, ${at})
      where id = ${sessionId}
      returning ${this.#sessionColumns}`,
    );
    return row ? toSession(row) : null;
  }

  protected async copySession(sessionId: string, target: ForkTarget): Promise<CopyOutcome> {
    await this.#ready();
    const [row] = await values<CopyRow>(() => copyStatement(this.#tables, sessionId, target));
    const [count, copied, taken] = row as CopyRow;
    if (count === null) return { status: "not-found" };
    if (copied) return { status: "copied" };
    // Not inserted: the id was taken (ON CONFLICT), or the length is beyond the count (then a taken id comes first).
    return !taken && target.length !== undefined && target.length > count
      ? { status: "out-of-range", length: count }
      : { status: "exists" };
  }

  protected async removeSession(sessionId: string): Promise<void> {
    await this.#ready();
    // The messages and idempotency keys go with it: ON DELETE CASCADE, served by indexes leading with session_id.
    await values(() => this.#sql`delete from ${this.#sessions} where id = ${sessionId}`);
  }

  protected async appendMessages(sessionId: string, messages: MessageRecord[]): Promise<number | null> {
    await this.#ready();
    const [row] = await values<[number]>(() => appendStatement(this.#tables, sessionId, messages));
    return row ? row[0] : null;
  }

  protected async editMessages(sessionId: string, edit: MessageEdit): Promise<EditOutcome> {
    await this.#ready();
    // Run again when writers of the session collided (see editStatement): nothing was written, and the next
    // run has a newer snapshot.
    for (let attempt = 1; ; attempt++) {
      try {
        const [row] = await values<EditRow>(() => editStatement(this.#tables, sessionId, edit));
        if (row?.[0] !== "stale") return editOutcome(row as EditRow);
      } catch (error) {
        const { code, constraint_name } = error as { code?: string; constraint_name?: string };
        if (code !== "23505" || constraint_name !== "idempotency_keys_pkey" || attempt >= 3) throw error;
      }
    }
  }

  protected async readLength(sessionId: string): Promise<number | null> {
    await this.#ready();
    const [row] = await values<[number]>(
      () => this.#sql`select message_count from ${this.#sessions} where id = ${sessionId}`,
    );
    return row ? row[0] : null;
  }

  protected async readMessages(sessionId: string, range: MessageRange): Promise<MessageRecord[] | null> {
    await this.#ready();
    const rows = await values<MessageRow>(() => readStatement(this.#tables, sessionId, range));
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
    await this.#ready();
    const sql = this.#sql;
    const rows = await values<SessionRow>(
      () =>
        sql`
      select ${this.#sessionColumns} from ${this.#sessions}
      where true
      ${agentId === undefined ? sql`` : sql`and agent_id = ${agentId}`}
      ${after === null ? sql`` : sql`and id > ${after}`}
      order by id
      limit ${limit}`,
    );
    return rows.map(toSession);
  }

  protected override async insertImported(record: SessionRecord, messages: MessageRecord[]): Promise<boolean> {
    await this.#ready();
    const [row] = await values<[boolean]>(() => importStatement(this.#tables, record, messages));
    return row?.[0] === true;
  }

  protected async dispose(): Promise<void> {
    if (this.#url !== undefined) await this.#sql.end({ timeout: 5 });
  }

  protected override syncTwin(): SyncTwin {
    if (this.#url === undefined) {
      throw new AgentixStorageError(
        "PostgresStorageBackend: the ...Sync methods run on a worker thread, which cannot share a client passed in; " +
          "build the backend from { url } to use them",
      );
    }
    const options: PostgresStorageOptions = { url: this.#url, schema: this.#schema, migrate: this.#migrate };
    if (this.#max !== undefined) options.max = this.#max;
    if (this.#prepare !== undefined) options.prepare = this.#prepare;
    return { module: import.meta.url, exportName: "PostgresStorageBackend", options };
  }

  /** Sessions after `(updatedAt, id)` in the listing order (newest first): the keyset condition of a page. */
  #afterCursor(updatedAt: string, id: string): PendingQuery<Row[]> {
    return this.#sql`and (updated_at, id) < (${updatedAt}, ${id})`;
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
      const applied = await this.#migrateSchema();
      this.#migrated ??= Promise.resolve();
      return applied;
    } catch (error) {
      throw toStorageError(error, "PostgresStorageBackend.migrate");
    }
  }

  /** Applies pending migrations once per backend, on first use; a failed attempt is retried by the next call. */
  #ready(): Promise<void> {
    if (!this.#migrate) return Promise.resolve();
    this.#migrated ??= this.#migrateSchema().then(
      () => {},
      (error: unknown) => {
        this.#migrated = undefined;
        throw error;
      },
    );
    return this.#migrated;
  }

  /**
   * Applies the pending migrations from drizzle-kit's files (read with drizzle's `readMigrationFiles`), under an
   * advisory lock on the schema, as one script in one message: see {@link migrationScript}. drizzle's own
   * `migrate()` cannot do this: it runs its own transaction, outside the lock and on the pool's `search_path` (a
   * client passed in must not be changed).
   */
  async #migrateSchema(): Promise<string[]> {
    migrationFiles ??= readMigrationFiles({ migrationsFolder: MIGRATIONS_FOLDER });
    const files = migrationFiles;
    const newest = files.at(-1)?.folderMillis ?? 0;
    const journal = this.#sql.unsafe(`${quote(this.#schema)}."__agentix_migrations"`);
    try {
      // The usual case, once deployed: everything applied already, one query and no lock.
      const [row] = await values<[boolean]>(
        () => this.#sql`select exists (select from ${journal} where created_at >= ${newest})`,
      );
      if (row?.[0] === true) return [];
    } catch (error) {
      // Undefined table or schema: not migrated yet. Anything else is a real failure.
      if (!["42P01", "3F000"].includes((error as { code?: string }).code ?? "")) throw error;
    }
    const tags = migrationTags(MIGRATIONS_FOLDER);
    const results = await runStatement(() => this.#sql.unsafe(migrationScript(this.#schema, files)).values());
    const applied = (results.at(-1) ?? []) as unknown as [string][];
    return applied.map(([millis]) => tags.get(Number(millis)) ?? millis);
  }
}

/**
 * Rows as arrays: column names never matter, so a client passed in with a column transform
 * (`transform: postgres.camel`) reads the same.
 */
async function values<T>(query: () => PendingQuery<Row[]>): Promise<T[]> {
  return (await runStatement(() => query().values())) as unknown as T[];
}

/** What {@link editStatement}'s row says (never `stale`: that is run again). */
function editOutcome([status, length, fingerprint, role, content, timestamp]: EditRow): EditOutcome {
  const popped = role === null ? null : message(role, content as string, timestamp as string);
  switch (status) {
    case "written":
      return { status, length: length as number, popped };
    case "replayed":
      return { status, fingerprint: fingerprint as string, length: length as number, popped };
    case "conflict":
    case "out-of-range":
      return { status, length: length as number };
    default:
      return { status: "not-found" };
  }
}

/** A message record from a row: content is stored as JSON text. */
function message(role: string, content: string, timestamp: string): MessageRecord {
  return { role: role as Role, content: JSON.parse(content) as MessageContent, timestamp };
}

function toSession([id, agentId, createdAt, updatedAt, metadata]: SessionRow): SessionRecord {
  return sessionRecord(
    id,
    agentId,
    createdAt,
    updatedAt,
    metadata === null ? null : (JSON.parse(metadata) as JsonObject),
  );
}
