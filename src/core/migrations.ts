import { readFileSync } from "node:fs";
import { join } from "node:path";

/**
 * The tag of each migration in a drizzle-kit folder (`0000_init`, ...), by its `when`: drizzle's
 * `readMigrationFiles` keeps only the time (`folderMillis`), and `migrate()` reports the tags it applied.
 */
export function migrationTags(folder: string): Map<number, string> {
  const journal = JSON.parse(readFileSync(join(folder, "meta", "_journal.json"), "utf8")) as {
    entries: Array<{ when: number; tag: string }>;
  };
  return new Map(journal.entries.map((entry) => [entry.when, entry.tag]));
}
