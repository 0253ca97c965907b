/**
 * The Postgres backend's migrations: drizzle-kit's files of migrations/postgres, applied to one schema under an
 * advisory lock as one script in one message, through any Drizzle Postgres database. Internal to `agentix/postgres`.
 * @module
 */
import { fileURLToPath } from "node:url";
import { DrizzleQueryError, sql } from "drizzle-orm";
import { type MigrationMeta, readMigrationFiles } from "drizzle-orm/migrator";
import { migrationTags } from "./core/migrations.js";
import { runStatement } from "./postgres-retry.js";
import type { AnyPgDatabase } from "./postgres-statements.js";

// Shipped beside src/ and dist/ alike; drizzle's migrator reads meta/_journal.json from disk.
const MIGRATIONS_FOLDER = fileURLToPath(new URL("../migrations/postgres", import.meta.url));
let migrationFiles: MigrationMeta[] | undefined;

/** Advisory lock namespace ("agtx") of the migrations, keyed on the schema within it. */
const MIGRATION_LOCK = 0x61677478;

const quote = (identifier: string) => `"${identifier.replaceAll('"', '""')}"`;
/** A string literal that reads the same whatever `standard_conforming_strings` says (an E'' string). */
const literal = (text: string) => `E'${text.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;

/** Rows of one result: postgres.js returns an array, node-postgres and PGlite `{ rows }`. */
function rowsOf(result: unknown): Record<string, unknown>[] {
  return (Array.isArray(result) ? result : ((result as { rows?: unknown[] } | undefined)?.rows ?? [])) as Record<
    string,
    unknown
  >[];
}

/** The error the driver threw, out of Drizzle's `DrizzleQueryError` (whose message holds the query and parameters). */
export function driverError(error: unknown): unknown {
  return error instanceof DrizzleQueryError && error.cause !== undefined ? error.cause : error;
}

/**
 * Whether the schema has every migration: one query, and no lock. `false` also when the schema or the bookkeeping
 * table does not exist yet.
 */
export async function isMigrated(db: AnyPgDatabase, schema: string): Promise<boolean> {
  migrationFiles ??= readMigrationFiles({ migrationsFolder: MIGRATIONS_FOLDER });
  const newest = migrationFiles.at(-1)?.folderMillis ?? 0;
  const journal = sql`${sql.identifier(schema)}.${sql.identifier("__agentix_migrations")}`;
  try {
    const [row] = rowsOf(
      await runStatement(() =>
        unwrapped(db.execute(sql`select exists (select from ${journal} where created_at >= ${newest}) as ok`)),
      ),
    );
    return row?.ok === true;
  } catch (error) {
    // Undefined table or schema: not migrated yet. Anything else is a real failure.
    const code = (error as { code?: string }).code ?? "";
    if (["42P01", "3F000"].includes(code)) return false;
    throw error;
  }
}

/**
 * Applies the pending migrations to `schema` and returns their tags: {@link migrationScript}, sent as one message
 * (simple query protocol) through the database's driver. drizzle's own `migrate()` cannot do this: it runs its own
 * transaction, outside the lock and on the pool's `search_path` (a database passed in must not be changed).
 */
export async function migrateSchema(db: AnyPgDatabase, schema: string): Promise<string[]> {
  if (await isMigrated(db, schema)) return [];
  migrationFiles ??= readMigrationFiles({ migrationsFolder: MIGRATIONS_FOLDER });
  const script = migrationScript(schema, migrationFiles);
  const results = await runStatement(() => runScript(db, script));
  const tags = migrationTags(MIGRATIONS_FOLDER);
  // The first column of each row (whatever a client's column transform names it): a migration's created_at.
  return rowsOf(results.at(-1)).map((row) => {
    const millis = String(Object.values(row)[0]);
    return tags.get(Number(millis)) ?? millis;
  });
}

/**
 * Runs a multi-statement script in one message and returns each statement's result. Drizzle's `execute` without
 * parameters takes the simple query protocol on postgres.js, node-postgres and Neon's Pool; PGlite's `query` is
 * always the extended protocol (one statement), so there the script goes to its `exec`.
 */
async function runScript(db: AnyPgDatabase, script: string): Promise<unknown[]> {
  const client = (db as unknown as { $client?: { exec?: unknown } }).$client;
  const exec = typeof client?.exec === "function" ? (client.exec as (query: string) => Promise<unknown[]>) : undefined;
  const results = exec ? await exec.call(client, script) : await unwrapped(db.execute(sql.raw(script)));
  return Array.isArray(results) ? results : [results];
}

/** A query's outcome, its error as the driver threw it. */
async function unwrapped<T>(query: PromiseLike<T>): Promise<T> {
  try {
    return await query;
  } catch (error) {
    throw driverError(error);
  }
}

/**
 * The whole migration as one multi-statement script, for the simple query protocol: the server runs it as one
 * implicit transaction (all or nothing) and the client sends it in one message. So the transaction is never idle
 * between statements, waiting for a round trip: a server with a short `idle_in_transaction_session_timeout` has
 * nothing to kill (postgres.js crashes the process when that happens to an open `sql.begin`), and a transaction
 * pooler sees one transaction. It reads the committed state whatever the database's default isolation (a
 * SERIALIZABLE snapshot would predate the advisory lock's wait and miss what the process before it applied).
 *
 * drizzle-kit writes each migration for the `public` schema: unqualified names, and foreign keys qualified as
 * `REFERENCES "public"."sessions"`. So the script takes an advisory lock on the schema (many processes may start at
 * once), creates the schema when missing (checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on
 * the database even when the schema exists), sets `search_path` to it for this transaction only, and runs each
 * pending migration with the `"public".` qualifier rewritten, then records it in the bookkeeping table (drizzle's
 * layout, named apart from an application's own `__drizzle_migrations`). Its last result is the `created_at` of
 * each migration it applied.
 */
export function migrationScript(schema: string, files: MigrationMeta[]): string {
  const s = quote(schema);
  const journal = `${s}."__agentix_migrations"`;
  const blocks = files.map((migration) => {
    const run = migration.sql
      .filter((statement) => statement.trim() !== "")
      .map((statement) => `execute ${literal(statement.replaceAll('"public".', `${s}.`))};`);
    const millis = Number(migration.folderMillis);
    return doBlock(`
      if coalesce((select max(created_at) from ${journal}), 0) < ${millis} then
        ${run.join("\n        ")}
        insert into ${journal} (hash, created_at) values (${literal(migration.hash)}, ${millis});
      end if;`);
  });
  return [
    "set transaction isolation level read committed",
    "set local client_min_messages = warning",
    `select pg_advisory_xact_lock(${MIGRATION_LOCK}, hashtext(${literal(schema)}))`,
    doBlock(`
      if not exists (select from pg_namespace where nspname = ${literal(schema)}) then
        execute ${literal(`create schema ${s}`)};
      end if;`),
    `set local search_path to ${s}`,
    `create table if not exists ${journal} (id serial primary key, hash text not null, created_at bigint)`,
    ...blocks,
    // The rows this transaction inserted: their xmin is its transaction id.
    `select created_at::text from ${journal} where xmin::text = (txid_current() % 4294967296)::text order by id`,
  ].join(";\n");
}

/** A DO block, dollar-quoted with a tag that its body does not contain. */
function doBlock(body: string): string {
  let tag = "$agentix$";
  for (let n = 0; body.includes(tag); n++) tag = `$agentix${n}$`;
  return `do ${tag} begin ${body}\nend ${tag}`;
}
