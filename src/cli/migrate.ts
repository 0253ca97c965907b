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

/** `agentix migrate`: applies pending migrations on Postgres (a server or PGlite) or SQLite and says what it did. */
export function migrateCommand(): Command {
  return new Command("migrate")
    .description("apply pending schema migrations (Postgres, PGlite and SQLite; the other stores have no schema)")
    .action(async (_options: unknown, command: Command) => {
      const url = selectStorage(command);
      const scheme = storageScheme(url);
      if (scheme !== "postgres" && scheme !== "pglite" && scheme !== "sqlite") {
        process.stdout.write(`Nothing to migrate: a ${scheme} store has no schema (${redact(url)})\n`);
        return;
      }
      await withStorage(url, async (storage) => {
        const where = `${scheme === "sqlite" ? "SQLite" : "Postgres"} schema at ${redact(url)}`;
        // Both relational backends have migrate(); the guard keeps the types honest.
        if (!canMigrate(storage)) throw new Error(`${where}: this backend cannot migrate`);
        const applied = await storage.migrate();
        process.stdout.write(
          applied.length === 0 ? `${where} is up to date\n` : `${where}: applied ${applied.join(", ")}\n`,
        );
      });
    });
}
