import { once } from "node:events";
import { open, rename, rm } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { Command } from "commander";
import type { StorageBackend } from "../core/backend.js";
import { SessionNotFoundError } from "../core/errors.js";
import type { SessionRecord } from "../core/types.js";
import { BATCH_SIZE, CliError, readStorage, scanAll, selectStorage, settledHead } from "./shared.js";

/** Bytes gathered before one write to the stream: few system calls, little memory. */
const CHUNK = 1 << 16;

/** Where the text goes: a stream, written in chunks of about 64 KiB, waiting whenever its buffer is full. */
class Output {
  #pending: string[] = [];
  #size = 0;
  #error: Error | undefined;
  readonly #onError = (error: Error) => {
    this.#error ??= error;
  };

  constructor(readonly stream: Writable) {
    // A failed write (a full disk, a closed pipe) fails the export, instead of an unhandled 'error' event.
    stream.on("error", this.#onError);
  }

  close(): void {
    this.stream.off("error", this.#onError);
  }

  async write(text: string): Promise<void> {
    this.#pending.push(text);
    this.#size += text.length;
    if (this.#size >= CHUNK) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.#pending.length === 0) return;
    const chunk = this.#pending.join("");
    this.#pending = [];
    this.#size = 0;
    if (this.#error) throw this.#error;
    if (!this.stream.write(chunk)) await once(this.stream, "drain");
  }
}

/**
 * Writes one session as one line, `{"session": record, "messages": [...]}` — the bytes of `JSON.stringify` of that
 * object — streaming the messages through `iterateMessages`: at most about `BATCH_SIZE` messages in memory, whatever
 * the session's size. The line holds the record and the number of messages counted at one moment (messages
 * appended meanwhile are left out); a history edited (replaceMessages, popMessage) while it is being read may be
 * seen in part, as `iterateMessages` says. `false` when the session was deleted before any of it was written.
 */
async function exportSession(storage: StorageBackend, record: SessionRecord, out: Output): Promise<boolean> {
  const head = await settledHead(storage, record);
  if (!head) return false; // deleted while exporting
  const start = `{"session":${JSON.stringify(head.session)},"messages":[`;
  let written = 0;
  try {
    // The line starts with the first message, after the first batch was read: a session deleted before is skipped.
    for await (const message of storage.iterateMessages(head.session.session_id, { batchSize: BATCH_SIZE })) {
      if (written === head.length) break;
      await out.write(written === 0 ? `${start}${JSON.stringify(message)}` : `,${JSON.stringify(message)}`);
      written++;
    }
  } catch (error) {
    if (!(error instanceof SessionNotFoundError)) throw error;
    if (written === 0) return false;
    throw new CliError(
      `session ${head.session.session_id} was deleted while it was being exported (${written} of ${head.length} messages written): export again`,
      { cause: error },
    );
  }
  await out.write(written === 0 ? `${start}]}\n` : "]}\n");
  return true;
}

/**
 * Every session (of `agentId` when given) in `session_id` order, one JSON line each, written to `stream` with its
 * back-pressure respected; the number of sessions written. Memory is bounded by the batch size, not the sessions.
 */
export async function exportSessions(storage: StorageBackend, stream: Writable, agentId?: string): Promise<number> {
  const out = new Output(stream);
  let count = 0;
  try {
    for await (const record of scanAll(storage, agentId)) {
      if (await exportSession(storage, record, out)) count++;
    }
    await out.flush();
  } finally {
    out.close();
  }
  return count;
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
      await readStorage(selectStorage(command), async (storage) => {
        if (options.out === undefined) {
          const count = await exportSessions(storage, process.stdout, options.agent);
          process.stderr.write(`Exported ${count} session${count === 1 ? "" : "s"}\n`);
          return;
        }
        // A file is written under a temporary name and renamed when complete, so a failed export leaves no half file.
        const target = resolve(options.out);
        const temp = `${target}.${process.pid}.tmp`;
        const handle = await open(temp, "wx").catch((error: unknown) => {
          throw writeError(error, target, temp);
        });
        const file = handle.createWriteStream();
        // The file's own failures (disk full, a directory in the way) name the user's path; the store's do not.
        let fileError: unknown;
        file.on("error", (error) => {
          fileError ??= error;
        });
        let count: number;
        try {
          count = await exportSessions(storage, file, options.agent);
          file.end();
          await finished(file);
          await rename(temp, target).catch((error: unknown) => {
            fileError = error;
            throw error;
          });
        } catch (error) {
          file.destroy();
          await finished(file).catch(() => {}); // closed
          await rm(temp, { force: true });
          throw error === fileError ? writeError(error, target, temp) : error;
        }
        process.stderr.write(`Exported ${count} session${count === 1 ? "" : "s"} to ${target}\n`);
      });
    });
}
