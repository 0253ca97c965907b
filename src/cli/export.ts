import { once } from "node:events";
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { Command } from "commander";
import { CliError, scanAll, selectStorage, snapshot, withStorage } from "./shared.js";

/** Where the lines go: stdout (waiting whenever its buffer is full) or a file, written in chunks of about 1 MiB. */
class Output {
  #pending: string[] = [];
  #size = 0;
  constructor(readonly file?: FileHandle) {}

  async write(line: string): Promise<void> {
    if (!this.file) {
      if (!process.stdout.write(line)) await once(process.stdout, "drain");
      return;
    }
    this.#pending.push(line);
    this.#size += line.length;
    if (this.#size >= 1 << 20) await this.flush();
  }

  async flush(): Promise<void> {
    if (!this.file || this.#pending.length === 0) return;
    const chunk = this.#pending.join("");
    this.#pending = [];
    this.#size = 0;
    await this.file.appendFile(chunk);
  }
}

/** A failure to write the output, said of the user's path (not of the temp file it was written to). */
function writeError(error: unknown, path: string, temp: string): CliError {
  const message =
    (error as NodeJS.ErrnoException).code === "ENOENT"
      ? `no such directory: ${dirname(path)}`
      : error instanceof Error
        ? error.message.replaceAll(temp, path)
        : String(error);
  return new CliError(`cannot write ${path}: ${message}`, { cause: error });
}

/** `agentix export`: every session with its messages, one JSON line per session. */
export function exportCommand(): Command {
  return new Command("export")
    .description('write sessions with their messages as JSON Lines: {"session": record, "messages": [...]} per line')
    .option("--agent <id>", "only this agent's sessions")
    .option("--out <file>", "write to this file instead of stdout")
    .action(async (options: { agent?: string; out?: string }, command: Command) => {
      await withStorage(selectStorage(command), async (storage) => {
        // A file is written under a temporary name and renamed when complete, so a failed export leaves no half file.
        const target = options.out === undefined ? undefined : resolve(options.out);
        const temp = target && `${target}.${process.pid}.tmp`;
        // The file's own failures (no such directory, disk full, a directory in the way) name the user's path.
        const file = <T>(step: Promise<T>): Promise<T> =>
          target === undefined || temp === undefined
            ? step
            : step.catch((error: unknown) => {
                throw writeError(error, target, temp);
              });
        const out = new Output(temp ? await file(open(temp, "wx")) : undefined);
        let count = 0;
        try {
          for await (const record of scanAll(storage, options.agent)) {
            const dump = await snapshot(storage, record);
            if (!dump) continue; // deleted while exporting
            await file(out.write(`${JSON.stringify(dump)}\n`));
            count++;
          }
          await file(out.flush());
          await file(out.file?.close() ?? Promise.resolve());
          if (temp && target) await file(rename(temp, target));
        } catch (error) {
          await out.file?.close().catch(() => {});
          if (temp) await rm(temp, { force: true });
          throw error;
        }
        process.stderr.write(`Exported ${count} session${count === 1 ? "" : "s"}${target ? ` to ${target}` : ""}\n`);
      });
    });
}
