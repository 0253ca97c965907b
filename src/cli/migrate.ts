import { readFile } from "node:fs/promises";
import { Command } from "commander";
import type { StorageBackend } from "../core/backend.js";
import { storageScheme } from "../url.js";
import { redact, selectStorage, withStorage } from "./shared.js";

/** A backend that can say which migrations it applied (tags such as "0000_init"; none when up to date). */
interface Migrating {
  migrate(): Promise<string[]>;
}

function canMigrate(storage: StorageBackend): storage is StorageBackend & Migrating {
  return typeof (storage as Partial<Migrating>).migrate === "function";
}

/** The tags of the migrations shipped for a dialect (drizzle-kit's journal, beside src/ and dist/ alike). */
async function shipped(dialect: "postgres" | "sqlite"): Promise<string[]> {
  const journal = new URL(`../../migrations/${dialect}/meta/_journal.json`, import.meta.url);
  const { entries } = JSON.parse(await readFile(journal, "utf8")) as { entries: Array<{ tag: string }> };
  return entries.map((entry) => entry.tag);
}

/** `agentix migrate`: applies pending migrations on Postgres or SQLite and says what it did. */
export function migrateCommand(): Command {
  return new Command("migrate")
    .description("apply pending schema migrations (Postgres and SQLite; the other stores have no schema)")
    .action(async (_options: unknown, command: Command) => {
      const url = selectStorage(command);
      const scheme = storageScheme(url);
      if (scheme !== "postgres" && scheme !== "sqlite") {
        process.stdout.write(`Nothing to migrate: a ${scheme} store has no schema (${redact(url)})\n`);
        return;
      }
      await withStorage(url, async (storage) => {
        const where = `${scheme === "postgres" ? "Postgres" : "SQLite"} schema at ${redact(url)}`;
        if (canMigrate(storage)) {
          const applied = await storage.migrate();
          process.stdout.write(
            applied.length === 0 ? `${where} is up to date\n` : `${where}: applied ${applied.join(", ")}\n`,
          );
          return;
        }
        // Backends migrate on first use: any read triggers it (an id of the right shape, so the read reaches the store).
        await storage.getSession("00000000-0000-7000-8000-000000000000");
        process.stdout.write(`${where} is up to date (migrations: ${(await shipped(scheme)).join(", ")})\n`);
      });
    });
}
