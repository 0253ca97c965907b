// SQLite databases as earlier releases left them, for the upgrade tests: agentix 0.1 (contract v1: the tables of
// migrations/sqlite/0000_init.sql only) or any later schema, with drizzle's bookkeeping of the migrations applied.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";

const migrations = fileURLToPath(new URL("../../migrations/sqlite", import.meta.url));

interface Journal {
  entries: Array<{ idx: number; when: number; tag: string }>;
}

/** The committed journal: every migration's tag and time, oldest first. */
export function sqliteJournal(): Journal {
  return JSON.parse(readFileSync(join(migrations, "meta", "_journal.json"), "utf8")) as Journal;
}

/**
 * A copy of migrations/sqlite that stops after `tag` (a committed migration is never edited, so this is
 * that release's folder). The caller removes it.
 */
export function migrationsUpTo(tag: string): string {
  const journal = sqliteJournal();
  const end = journal.entries.findIndex((e) => e.tag === tag);
  if (end < 0) throw new Error(`no migration ${tag}`);
  const folder = mkdtempSync(join(tmpdir(), "agentix-sqlite-migrations-"));
  const kept = journal.entries.slice(0, end + 1);
  for (const e of kept) cpSync(join(migrations, `${e.tag}.sql`), join(folder, `${e.tag}.sql`));
  mkdirSync(join(folder, "meta")); // drizzle's migrator reads only the journal and the SQL files
  writeFileSync(join(folder, "meta", "_journal.json"), JSON.stringify({ ...journal, entries: kept }));
  return folder;
}

/**
 * Creates `file` at the first release's schema (0000_init), applied and recorded as agentix 0.1 did (its
 * migrator kept drizzle's bookkeeping), and returns an open connection with foreign keys on, as 0.1 used it.
 */
export function openV1Database(file: string): Database.Database {
  return openDatabaseAt(file, "0000_init");
}

/**
 * Brings `file` (new, or of an older schema) to the schema of the release whose newest migration is `tag`, as
 * that release's migrator did, and returns an open connection with WAL and foreign keys on.
 */
export function openDatabaseAt(file: string, tag: string): Database.Database {
  const folder = migrationsUpTo(tag);
  const db = new Database(file);
  try {
    db.pragma("journal_mode = WAL");
    db.pragma("foreign_keys = ON");
    migrate(drizzle({ client: db }), { migrationsFolder: folder });
    return db;
  } catch (error) {
    db.close();
    throw error;
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}
