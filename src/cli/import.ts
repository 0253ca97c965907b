import { open } from "node:fs/promises";
import { createInterface } from "node:readline";
import { Command } from "commander";
import { AgentixStorageError } from "../core/errors.js";
import type { MessageRecord, SessionRecord } from "../core/types.js";
import { CliError, pool, selectStorage, withStorage } from "./shared.js";

interface Line {
  number: number;
  session: SessionRecord;
  messages: MessageRecord[];
}

/** The export's lines, parsed; blank lines are skipped. Shapes are checked by `importSession` itself. */
async function* readLines(input: NodeJS.ReadableStream): AsyncGenerator<Line> {
  let number = 0;
  for await (const text of createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })) {
    number++;
    if (text.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      throw new CliError(`line ${number}: not valid JSON (${(error as Error).message})`);
    }
    const { session, messages } = (value ?? {}) as { session?: unknown; messages?: unknown };
    if (typeof value !== "object" || session === undefined || messages === undefined) {
      throw new CliError(`line ${number}: expected {"session": record, "messages": [...]}, as agentix export writes`);
    }
    yield { number, session: session as SessionRecord, messages: messages as MessageRecord[] };
  }
}

/** `agentix import`: reads what `agentix export` wrote, keeping ids, times and order; existing sessions are skipped. */
export function importCommand(): Command {
  return new Command("import")
    .description("read sessions exported by `agentix export` (JSON Lines) from a file or stdin")
    .argument("[file]", "the export to read (default: stdin)")
    .action(async (file: string | undefined, _options: unknown, command: Command) => {
      if ((file === undefined || file === "-") && process.stdin.isTTY) {
        throw new CliError("import reads an export from stdin: pipe one in (agentix import < FILE) or name the file");
      }
      const input =
        file === undefined || file === "-"
          ? process.stdin
          : (
              await open(file).catch((error: Error) => {
                throw new CliError(`cannot read ${file}: ${error.message}`, { cause: error });
              })
            ).createReadStream();
      await withStorage(selectStorage(command), async (storage) => {
        let imported = 0;
        let skipped = 0;
        await pool(readLines(input), 8, async (line) => {
          try {
            if (await storage.importSession(line.session, line.messages)) imported++;
            else skipped++;
          } catch (error) {
            if (error instanceof AgentixStorageError) {
              throw new CliError(`line ${line.number}: ${error.message}`, { cause: error });
            }
            throw error;
          }
        });
        const s = (n: number) => (n === 1 ? "" : "s");
        process.stdout.write(`Imported ${imported} session${s(imported)}, skipped ${skipped} already present\n`);
      });
    });
}
