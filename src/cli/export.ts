import { once } from "node:events";
import { type FileHandle, open, rename, rm } from "node:fs/promises";
import { resolve } from "node:path";
import { Command } from "commander";
import { scanAll, selectStorage, snapshot, withStorage } from "./shared.js";

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
        const out = new Output(temp ? await open(temp, "wx") : undefined);
        let count = 0;
        try {
          for await (const record of scanAll(storage, options.agent)) {
            const dump = await snapshot(storage, record);
            if (!dump) continue; // deleted while exporting
            await out.write(`${JSON.stringify(dump)}\n`);
            count++;
          }
          await out.flush();
          await out.file?.close();
          if (temp && target) await rename(temp, target);
        } catch (error) {
          await out.file?.close().catch(() => {});
          if (temp) await rm(temp, { force: true });
          throw error;
        }
        process.stderr.write(`Exported ${count} session${count === 1 ? "" : "s"}${target ? ` to ${target}` : ""}\n`);
      });
    });
}
