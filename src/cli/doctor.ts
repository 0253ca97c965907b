import { fileURLToPath } from "node:url";
import { Command } from "commander";
import { expandHome } from "../core/paths.js";
import type { FileStorageBackend } from "../file.js";
import { createEmbeddedBackend, storageScheme } from "../url.js";
import { checkFileStore } from "./doctor/file.js";
import { formatFindings } from "./doctor/report.js";
import { checkSqliteStore } from "./doctor/sqlite.js";
import { CliError, redact, selectStorage } from "./shared.js";

/**
 * `agentix doctor [--repair]`: checks a store and prints what it found; with `--repair`, quarantines damaged
 * lines and files next to their session (never deleting data), rebuilds the index and removes stale locks and
 * temporary files. Idempotent. Exit code 1 while problems are left.
 */
export function doctorCommand(): Command {
  return new Command("doctor")
    .description(
      "check a store for damage (File: every session's files and the agent index; SQLite: integrity_check); " +
        "--repair quarantines damaged lines and files next to their session (never deleting data), rebuilds " +
        "the agent index and removes stale locks and temporary files",
    )
    .option("--repair", "repair what can be repaired safely")
    .action(async (options: { repair?: boolean }, command: Command) => {
      const url = selectStorage(command);
      const scheme = storageScheme(url);
      const repair = options.repair === true;
      let findings: ReturnType<typeof checkFileStore>;
      let store: string;
      if (scheme === "file") {
        const backend = createEmbeddedBackend(url) as FileStorageBackend;
        store = `File store ${backend.basePath}`;
        await backend.close();
        findings = checkFileStore(backend.basePath, repair);
      } else if (scheme === "sqlite") {
        const rest = url.slice("sqlite:".length);
        const path = rest.startsWith("//") ? fileURLToPath(`file:${rest}`) : expandHome(rest);
        store = `SQLite store ${path}`;
        findings = checkSqliteStore(path);
      } else if (scheme === "memory") {
        process.stdout.write("memory: nothing to check (it lives in this process only)\n");
        return;
      } else {
        throw new CliError(`agentix doctor does not check ${scheme} stores yet (${redact(url)})`);
      }
      process.stdout.write(`${formatFindings(findings, store, repair).join("\n")}\n`);
      if (findings.some((f) => f.repaired === undefined)) process.exitCode = 1;
    });
}
