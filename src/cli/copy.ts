import { Command } from "commander";
import { Progress } from "./progress.js";
import { pool, readStorage, redact, scanAll, selectStorage, snapshot, withStorage } from "./shared.js";

/** A well-formed session id, so that the backend really looks it up (it answers any other id without asking). */
const PROBE_ID = "00000000-0000-7000-8000-000000000000";

/** `agentix copy`: every session from one backend to another, ids and times kept; sessions already there are skipped. */
export function copyCommand(): Command {
  return new Command("copy")
    .description("copy every session (with its messages) from one storage to another; safe to run again")
    .requiredOption("--to <url>", "the storage to copy into")
    .option("--from <url>", "the storage to copy from (default: --storage, AGENTIX_STORAGE_URL or the File store)")
    .option("--agent <id>", "only this agent's sessions")
    .action(async (options: { from?: string; to: string; agent?: string }, command: Command) => {
      const from = options.from ?? selectStorage(command);
      await readStorage(from, (source) =>
        withStorage(options.to, async (target) => {
          // One read of the target first, so that an unreachable one fails before any progress is shown.
          await target.getSession(PROBE_ID);
          // Counted first, so that the bar has a total; a scan reads records only, not messages.
          let total = 0;
          for await (const _ of scanAll(source, options.agent)) total++;
          const progress = new Progress(total);
          try {
            // A few sessions in flight hide the round trips of a remote target. The source is read through
            // iterateMessages (BATCH_SIZE at a time), but the target's importSession writes a session atomically,
            // from one array of all its messages: copy still holds each session in flight (8 at most) whole in
            // memory on the target side. `agentix export`, which streams, moves sessions larger than memory.
            await pool(scanAll(source, options.agent), 8, async (record) => {
              const dump = await snapshot(source, record);
              if (dump) progress.tick(await target.importSession(dump.session, dump.messages));
            });
          } finally {
            progress.stop();
          }
          process.stdout.write(
            `Copied ${progress.copied} session${progress.copied === 1 ? "" : "s"} from ${redact(from)} to ${redact(options.to)}` +
              `, skipped ${progress.skipped} already present\n`,
          );
        }),
      );
    });
}
