import { open } from "node:fs/promises";
import { createInterface } from "node:readline";
import { Command } from "commander";
import { AgentixStorageError, ValidationError } from "../core/errors.js";
import type { MessageRecord, SessionRecord } from "../core/types.js";
import { importedSession } from "../core/validation.js";
import { CliError, pool, selectStorage, unreachable, withStorage } from "./shared.js";

interface Line {
  number: number;
  session: SessionRecord;
  messages: MessageRecord[];
}

/** A line that is not a session agentix could import: reported and skipped with --skip-invalid, else the end. */
class InvalidLine extends CliError {
  constructor(number: number, problem: string, options?: ErrorOptions) {
    super(`line ${number}: ${problem}`, options);
  }
}

/**
 * The export's lines, parsed and validated in order, so that the first invalid line is found before any line after
 * it is imported; blank lines are skipped. `invalid` throws to stop there, or returns to go on with the next line.
 */
async function* readLines(
  input: NodeJS.ReadableStream,
  name: string,
  invalid: (line: InvalidLine) => void,
): AsyncGenerator<Line> {
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY })[Symbol.asyncIterator]();
  for (let number = 1; ; number++) {
    let next: IteratorResult<string>;
    try {
      next = await lines.next();
    } catch (error) {
      throw new CliError(`cannot read ${name}: ${(error as Error).message}`, { cause: error });
    }
    if (next.done) return;
    const text = next.value;
    if (text.trim() === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      invalid(new InvalidLine(number, `not valid JSON (${(error as Error).message})`, { cause: error }));
      continue;
    }
    const { session, messages } = (value ?? {}) as { session?: unknown; messages?: unknown };
    if (typeof value !== "object" || session === undefined || messages === undefined) {
      invalid(new InvalidLine(number, 'expected {"session": record, "messages": [...]}, as agentix export writes'));
      continue;
    }
    let valid: ReturnType<typeof importedSession>;
    try {
      // The checks importSession makes, here so that they fail in line order (imports run 8 at a time).
      valid = importedSession(session, messages);
    } catch (error) {
      if (!(error instanceof ValidationError)) throw error;
      invalid(new InvalidLine(number, error.message, { cause: error }));
      continue;
    }
    yield { number, session: valid.record, messages: valid.messages };
  }
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** `agentix import`: reads what `agentix export` wrote, keeping ids, times and order; existing sessions are skipped. */
export function importCommand(): Command {
  return new Command("import")
    .description("read sessions exported by `agentix export` (JSON Lines) from a file or stdin")
    .argument("[file]", "the export to read (default: stdin)")
    .option("--skip-invalid", "report each line that is not a valid session and import the others (default: stop)")
    .action(async (file: string | undefined, options: { skipInvalid?: boolean }, command: Command) => {
      const stdin = file === undefined || file === "-";
      if (stdin && process.stdin.isTTY) {
        throw new CliError("import reads an export from stdin: pipe one in (agentix import < FILE) or name the file");
      }
      const input = stdin
        ? process.stdin
        : (
            await open(file).catch((error: Error) => {
              throw new CliError(`cannot read ${file}: ${error.message}`, { cause: error });
            })
          ).createReadStream();
      await withStorage(selectStorage(command), async (storage) => {
        let imported = 0;
        let skipped = 0;
        let invalid = 0;
        const onInvalid = (line: InvalidLine): void => {
          if (!options.skipInvalid) throw line;
          invalid++;
          process.stderr.write(`agentix: ${line.message} (skipped)\n`);
        };
        // What was imported stays imported (a second run skips it): a failure at a line says how far it got.
        const stopped = () =>
          `stopped there, after importing ${plural(imported, "session")} (and skipping ${skipped} already present)`;
        try {
          await pool(readLines(input, stdin ? "stdin" : file, onInvalid), 8, async (line) => {
            try {
              if (await storage.importSession(line.session, line.messages)) imported++;
              else skipped++;
            } catch (error) {
              if (error instanceof ValidationError) return onInvalid(new InvalidLine(line.number, error.message));
              // An unreachable server is not the line's fault: withStorage names the server.
              if (error instanceof AgentixStorageError && !unreachable(error)) {
                throw new CliError(`line ${line.number}: ${error.message}; ${stopped()}`, { cause: error });
              }
              throw error;
            }
          });
        } catch (error) {
          if (!(error instanceof InvalidLine)) throw error;
          throw new CliError(`${error.message}; ${stopped()}; --skip-invalid imports every valid line`, {
            cause: error,
          });
        }
        const invalidLines = invalid === 0 ? "" : ` and ${plural(invalid, "invalid line")}`;
        process.stdout.write(
          `Imported ${plural(imported, "session")}, skipped ${skipped} already present${invalidLines}\n`,
        );
      });
    });
}
