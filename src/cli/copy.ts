import { Command } from "commander";
import { Progress } from "./progress.js";
import { pool, readStorage, redact, scanAll, selectStorage, streamSession, withStorage } from "./shared.js";

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
            // A few sessions in flight hide the round trips of a remote target. Each streams: read through
            // iterateMessages and written by the target's streamed importSession, BATCH_SIZE at a time, so that a
            // session larger than memory can be copied; it appears in the target at once, when complete.
            await pool(scanAll(source, options.agent), 8, async (record) => {
              const copied = await streamSession(source, record, target);
              if (copied !== null) progress.tick(copied);
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
