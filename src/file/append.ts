// A plain append to a session's log, under the session's lock: one write of whole lines (a batch as src/file/log.ts
// frames it), after cutting off what a writer killed mid-append left.
import * as fs from "node:fs";
import { join } from "node:path";
import { latest } from "../core/clock.js";
import type { MessageRecord } from "../core/types.js";
import { ifExists, writeAll } from "./io.js";
import { KeyFile } from "./keys.js";
import type { Layout } from "./layout.js";
import { COUNT, countTo, encodeBatch, LOG, logTail, openCount, readCountAt, writeCountAt } from "./log.js";
import { META, updatedAtFloor } from "./session.js";

const APPEND = fs.constants.O_RDWR | fs.constants.O_APPEND;

/** What an append needs of the backend besides the layout. */
export interface AppendContext {
  layout: Layout;
  /** Before a write that moves `updated_at` to `at`: the agent index told (src/file/agents.ts). */
  raiseIndex(at: string): void;
}

/** Appends `messages` to the log in `dir` and returns the new count; `null` when the session is gone. */
export function appendLog(
  ctx: AppendContext,
  sessionId: string,
  dir: string,
  messages: MessageRecord[],
): number | null {
  const log = join(dir, LOG);
  let fd = ifExists(() => fs.openSync(log, APPEND));
  if (fd === null) return null; // deleted before we got the lock
  const counter = openCount(join(dir, COUNT), fs.constants.O_RDWR | fs.constants.O_CREAT);
  try {
    // Only the tail of the log, its count record and the head of session.json are read: an append costs the
    // same at any log size.
    let { size, ino } = fs.fstatSync(fd);
    const tail = logTail(fd, size);
    let count = countTo(fd, ino, tail.end, counter === null ? null : readCountAt(counter));
    if (tail.end < size) {
      // A writer was killed mid-append: its partial batch goes before anything is written after it (and a
      // keyed write left pending is settled first, from the log as it was: see src/file/keys.ts).
      const keys = new KeyFile(dir, false);
      try {
        keys.settle({ fd, ino, end: tail.end });
      } finally {
        keys.close();
      }
      fs.closeSync(fd);
      fd = null;
      ctx.layout.replaceLog(sessionId, log, tail.end);
      fd = fs.openSync(log, APPEND);
      ({ size, ino } = fs.fstatSync(fd));
    }
    const floor = updatedAtFloor(join(dir, META), sessionId);
    const timestamp = latest((messages[0] as MessageRecord).timestamp, latest(floor, tail.last ?? floor));
    const batch = encodeBatch(messages, timestamp);
    ctx.raiseIndex(timestamp);
    try {
      writeAll(fd, batch);
      if (ctx.layout.fsync) fs.fdatasyncSync(fd);
    } catch (error) {
      fs.ftruncateSync(fd, size); // leave no partial batch behind a failed write
      throw error;
    }
    count += messages.length;
    if (counter !== null) writeCountAt(counter, { count, bytes: size + batch.length, ino });
    return count;
  } finally {
    if (fd !== null) fs.closeSync(fd);
    if (counter !== null) fs.closeSync(counter);
  }
}
