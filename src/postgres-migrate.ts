/**
 * The Postgres backend's migrations: drizzle-kit's files of migrations/postgres, applied to one schema under an
 * advisory lock, through any Drizzle Postgres database. Internal to `agentix/postgres`.
 * @module
 */
import { fileURLToPath } from "node:url";
import { DrizzleQueryError, sql } from "drizzle-orm";
import { type MigrationMeta, readMigrationFiles } from "drizzle-orm/migrator";
import { migrationTags } from "./core/migrations.js";
import type { AnyPgDatabase } from "./postgres-statements.js";

// Shipped beside src/ and dist/ alike; drizzle's migrator reads meta/_journal.json from disk.
const MIGRATIONS_FOLDER = fileURLToPath(new URL("../migrations/postgres", import.meta.url));
let migrationFiles: MigrationMeta[] | undefined;

/** Advisory lock namespace ("agtx") of the migrations, keyed on the schema within it. */
const MIGRATION_LOCK = 0x61677478;

/** Rows of any driver's `execute` result: postgres.js returns an array, node-postgres and PGlite `{ rows }`. */
function rowsOf(result: unknown): Record<string, unknown>[] {
  return (Array.isArray(result) ? result : (result as { rows: unknown[] }).rows) as Record<string, unknown>[];
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
  try {
    const journal = sql`${sql.identifier(schema)}.${sql.identifier("__agentix_migrations")}`;
    const [row] = rowsOf(
      await db.execute(sql`select exists (select from ${journal} where created_at >= ${newest}) as ok`),
    );
    return row?.ok === true;
  } catch (error) {
    // Undefined table or schema: not migrated yet. Anything else is a real failure.
    const code = (driverError(error) as { code?: string }).code ?? "";
    if (["42P01", "3F000"].includes(code)) return false;
    throw driverError(error);
  }
}

/**
 * Applies the pending migrations to `schema` and returns their tags.
 *
 * drizzle-kit writes each migration for the `public` schema: unqualified names, and foreign keys qualified as
 * `REFERENCES "public"."sessions"`. So the files are read with drizzle's `readMigrationFiles` and applied here, in
 * one transaction that takes an advisory lock on the schema (many processes may start at once), sets
 * `search_path` to the schema for that transaction only and rewrites the `"public".` qualifier to it. drizzle's
 * own `migrate()` cannot do this: it runs its own transaction, outside the lock and on the pool's `search_path`
 * (a database passed in must not be changed). The bookkeeping table has drizzle's layout, named apart from an
 * application's own `__drizzle_migrations`, and lives in the schema too.
 */
export async function migrateSchema(db: AnyPgDatabase, schema: string): Promise<string[]> {
  if (await isMigrated(db, schema)) return [];
  migrationFiles ??= readMigrationFiles({ migrationsFolder: MIGRATIONS_FOLDER });
  const files = migrationFiles;
  const tags = migrationTags(MIGRATIONS_FOLDER);
  const name = sql.identifier(schema);
  const journal = sql`${name}.${sql.identifier("__agentix_migrations")}`;
  const quoted = `"${schema.replaceAll('"', '""')}"`;
  const done: string[] = [];
  try {
    await db.transaction(async (tx) => {
      await tx.execute(sql`select pg_advisory_xact_lock(${MIGRATION_LOCK}, hashtext(${schema}))`);
      await tx.execute(sql`set local client_min_messages = warning`);
      // Checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the database even when the schema exists.
      const [exists] = rowsOf(
        await tx.execute(sql`select exists (select from pg_namespace where nspname = ${schema}) as ok`),
      );
      if (exists?.ok !== true) await tx.execute(sql`create schema ${name}`);
      await tx.execute(sql`set local search_path to ${name}`);
      await tx.execute(
        sql`create table if not exists ${journal} (id serial primary key, hash text not null, created_at bigint)`,
      );
      const [applied] = rowsOf(await tx.execute(sql`select coalesce(max(created_at), 0)::text as at from ${journal}`));
      for (const migration of files) {
        if (migration.folderMillis <= Number(applied?.at)) continue;
        for (const statement of migration.sql)
          await tx.execute(sql.raw(statement.replaceAll('"public".', `${quoted}.`)));
        await tx.execute(
          sql`insert into ${journal} (hash, created_at) values (${migration.hash}, ${migration.folderMillis})`,
        );
        done.push(tags.get(migration.folderMillis) ?? String(migration.folderMillis));
      }
    });
  } catch (error) {
    throw driverError(error);
  }
  return done;
}
