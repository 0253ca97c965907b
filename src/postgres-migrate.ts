/**
 * The Postgres migrations as one script, sent in one message: internal to `agentix/postgres`.
 * @module
 */
import type { MigrationMeta } from "drizzle-orm/migrator";

/** Advisory lock namespace ("agtx") of the migrations, keyed on the schema within it. */
const MIGRATION_LOCK = 0x61677478;

const quote = (identifier: string) => `"${identifier.replaceAll('"', '""')}"`;
/** A string literal that reads the same whatever `standard_conforming_strings` says (an E'' string). */
const literal = (text: string) => `E'${text.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;

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
