// Damage met by a read or a write of one session, thrown as the public CorruptSessionError naming the session,
// the file and the line.
import { join } from "node:path";
import { CorruptSessionError } from "../core/errors.js";
import { DamagedFile, DamagedLine } from "./damage.js";
import { withFile } from "./io.js";
import { countLines, LOG } from "./log.js";

/** `run()`, with damage met on the way thrown as the {@link CorruptSessionError} it is. */
export function checked<T>(dir: string, sessionId: string, run: () => T): T {
  try {
    return run();
  } catch (error) {
    if (error instanceof DamagedFile) {
      throw new CorruptSessionError(sessionId, error.file, undefined, error.message);
    }
    if (error instanceof DamagedLine) {
      const log = join(dir, LOG);
      // The line's number is counted only now: the reads that meet damage do not count what they skip.
      const at = error.at;
      const line = at === undefined ? null : withFile(log, "r", (fd) => countLines(fd, 0, at) + 1);
      throw new CorruptSessionError(sessionId, log, line ?? undefined, error.message);
    }
    throw error;
  }
}
