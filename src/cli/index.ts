#!/usr/bin/env node
import { readFileSync } from "node:fs";
import { Command } from "commander";
import { copyCommand } from "./copy.js";
import { demoCommand } from "./demo.js";
import { doctorCommand } from "./doctor.js";
import { exportCommand } from "./export.js";
import { importCommand } from "./import.js";
import { migrateCommand } from "./migrate.js";
import { sessionsCommand } from "./sessions.js";
import { type GlobalOptions, reportError } from "./shared.js";

// package.json sits two levels up from src/cli/ and dist/cli/ alike.
const { version } = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
  version: string;
};

const program = new Command("agentix")
  .description("Inspect, move and migrate agentix session stores.")
  .version(version)
  .option(
    "--storage <url>",
    "memory:, file:<dir> (or a directory), sqlite:<path>, postgres://...[?schema=s], redis://...[?prefix=p] " +
      "or redis+cluster://host:port,host:port[?prefix=p] " +
      "(default: $AGENTIX_STORAGE_URL, else the File store in ~/.agentix/projects)",
  )
  .option("--debug", "print stack traces of errors")
  .addHelpText(
    "after",
    `
Examples:
  $ agentix demo
  $ agentix sessions list my-agent --limit 10
  $ agentix sessions show <session-id> --full
  $ agentix export --out backup.jsonl
  $ agentix copy --to "postgres://me@db.example/app?schema=agents"
  $ agentix doctor --repair`,
  )
  .addCommand(demoCommand())
  .addCommand(sessionsCommand())
  .addCommand(exportCommand())
  .addCommand(importCommand())
  .addCommand(copyCommand())
  .addCommand(migrateCommand())
  .addCommand(doctorCommand());

// Commands added with addCommand() keep their own settings: every help page lists --storage and --debug, and
// commander's own errors ("error: unknown option '--lmit'\n(Did you mean --limit?)") read like ours, on one line.
const configure = (command: Command): void => {
  command.configureHelp({ showGlobalOptions: true });
  command.configureOutput({
    outputError: (text, write) =>
      write(
        `${text
          .trimEnd()
          .replace(/^error: /, "agentix: ")
          .replace(/\n+/g, " ")}\n`,
      ),
  });
  command.commands.forEach(configure);
};
configure(program);

// `agentix export | head` closes the pipe early: that is the reader's choice, not an error.
process.stdout.on("error", (error: NodeJS.ErrnoException) => {
  if (error.code === "EPIPE") process.exit(process.exitCode ?? 0);
  throw error;
});

try {
  await program.parseAsync();
} catch (error) {
  reportError(error, program.opts<GlobalOptions>().debug === true);
}
