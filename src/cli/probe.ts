import { existsSync } from "node:fs";
import { join } from "node:path";
import { storagePath, storageScheme } from "../url.js";
import { CliError, redact } from "./shared.js";

/**
 * For the commands that only read (`sessions list/show`, `export`, `copy --from`): fails with one line when the
 * store does not exist, before any backend is built, since building one and reading through it creates what is
 * missing (the File directory, the SQLite file and its directory, the PGlite directory, the Postgres schema and
 * tables, by migrating on first use). A person who only wanted to look must not get a new, empty store, e.g. from a mistyped path or
 * `?schema=`. Memory and Redis stores have nothing to create.
 */
export async function requireStore(url: string): Promise<void> {
  const scheme = storageScheme(url);
  const migrate = `run \`agentix migrate --storage ${redact(url)}\``;
  if (scheme === "file") {
    const dir = storagePath(url) as string;
    if (!existsSync(dir)) throw new CliError(`no agentix store at ${dir}: the directory does not exist`);
  } else if (scheme === "sqlite") {
    const path = storagePath(url);
    if (path === undefined) return;
    if (!existsSync(path)) throw new CliError(`no agentix database at ${path}: ${migrate}`);
    const { default: Database } = await import("better-sqlite3").catch(() => ({ default: undefined }));
    if (Database === undefined) return; // the backend names the package to install
    const db = new Database(path, { readonly: true, fileMustExist: true });
    try {
      const found = db.prepare("select 1 from sqlite_master where type = 'table' and name = 'sessions'").get();
      if (found === undefined) throw new CliError(`no agentix tables in ${path}: ${migrate}`);
    } finally {
      db.close();
    }
  } else if (scheme === "pglite") {
    const dir = storagePath(url);
    if (dir === undefined) return; // in memory: nothing to create
    if (!existsSync(join(dir, "PG_VERSION"))) throw new CliError(`no agentix database at ${dir}: ${migrate}`);
    const schema = new URLSearchParams(url.split(/\?(.*)/s)[1] ?? "").get("schema") ?? "public";
    const { PGlite } = await import("@electric-sql/pglite").catch(() => ({ PGlite: undefined }));
    if (PGlite === undefined) return; // the backend names the package to install
    // Closed before the backend opens the directory: one PGlite per directory at a time.
    const db = await PGlite.create(dir);
    try {
      const { rows } = await db.query<{ found: boolean }>(
        "select to_regclass(format('%I.%I', $1::text, 'sessions')) is not null as found",
        [schema],
      );
      if (rows[0]?.found !== true) throw new CliError(`no agentix tables in schema ${schema}: ${migrate}`);
    } finally {
      await db.close();
    }
  } else if (scheme === "postgres") {
    const parsed = new URL(url);
    const schema = parsed.searchParams.get("schema") ?? "public";
    for (const agentixParam of ["schema", "prepare"]) parsed.searchParams.delete(agentixParam);
    const { default: postgres } = await import("postgres").catch(() => ({ default: undefined }));
    if (postgres === undefined) return;
    // prepare: false, so that the probe works behind a transaction pooler too.
    const sql = postgres(parsed.href, { max: 1, prepare: false, onnotice: () => {} });
    try {
      const [row] = await sql`select to_regclass(format('%I.%I', ${schema}::text, 'sessions')) is not null as found`;
      if (row?.found !== true) throw new CliError(`no agentix tables in schema ${schema}: ${migrate}`);
    } finally {
      await sql.end({ timeout: 1 });
    }
  }
}
