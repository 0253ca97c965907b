// `agentix doctor` on a SQLite store: SQLite's own integrity and foreign-key checks (read only: a damaged
// database file is not repaired in place; restore it from a backup or with the sqlite3 shell's `.recover`).
import { createRequire } from "node:module";
import type { Finding } from "./report.js";

interface Statement {
  all(): Array<Record<string, unknown>>;
}
interface Database {
  prepare(sql: string): Statement;
  close(): void;
}

/** Runs `PRAGMA integrity_check` and `PRAGMA foreign_key_check` on the database file at `path`. */
export function checkSqliteStore(path: string): Finding[] {
  const require = createRequire(import.meta.url);
  let open: new (path: string, options: { readonly: boolean; fileMustExist: boolean }) => Database;
  try {
    open = require("better-sqlite3") as typeof open;
  } catch (error) {
    throw new Error("agentix doctor on sqlite: needs better-sqlite3 (npm install better-sqlite3@12)", { cause: error });
  }
  const db = new open(path, { readonly: true, fileMustExist: true });
  try {
    const findings: Finding[] = [];
    for (const row of db.prepare("PRAGMA integrity_check").all()) {
      const text = String(Object.values(row)[0]);
      if (text !== "ok") findings.push({ where: path, problem: `integrity_check: ${text}`, repaired: undefined });
    }
    for (const row of db.prepare("PRAGMA foreign_key_check").all()) {
      findings.push({
        where: `${path}: table ${String(row.table)}, row ${String(row.rowid)}`,
        problem: `a row without its ${String(row.parent)} row (foreign_key_check)`,
        repaired: undefined,
      });
    }
    return findings;
  } finally {
    db.close();
  }
}
