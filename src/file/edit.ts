// History edits on the File backend (replace, pop, compare-and-swap, idempotency keys), run under the session's
// lock. An edit that drops messages writes a new log (the kept byte prefix, copied unparsed, then the new lines)
// to a temporary file and renames it over the log: a kill leaves the old log or the new one, and readers that
// have the old one open read it to its end. An edit that only appends is one batch, as `appendMessages` writes;
// one that also writes metadata writes a new log, so that the metadata can name it (src/file/session.ts).
import * as fs from "node:fs";
import { join } from "node:path";
import { latest } from "../core/clock.js";
import type { EditOutcome, JsonObject, MessageEdit, MessageRecord } from "../core/types.js";
import { ifExists, readAt, writeAll } from "./io.js";
import { hashOf, KeyFile } from "./keys.js";
import { offsetOf, parseLine } from "./lines.js";
import { COUNT, copyPrefix, countTo, encodeBatch, LOG, logTail, openCount, readCountAt, writeCountAt } from "./log.js";
import { carryOver } from "./positions.js";
import { META, readHead } from "./session.js";

/** What an edit needs of the backend. */
export interface EditContext {
  /** The session's directory. */
  dir: string;
  sessionId: string;
  fsync: boolean;
  /** A new temporary path on the same file system. */
  tmpName(): string;
  syncDir(path: string): void;
  /**
   * Rewrites session.json with `updated_at` raised to `at` and `metadata` (`undefined`: kept), temp file and
   * rename; pending on the new log's inode `commitIno` when given (see src/file/session.ts).
   */
  writeMeta(at: string, metadata?: JsonObject | null, commitIno?: number): void;
  /** A pending session.json written plain, before the log is replaced. */
  settle(): void;
  /** Replaces the log by its first `end` bytes (the repair of a torn log). */
  replaceLog(log: string, end: number): void;
  /** Before a write that moves `updated_at` to `at`: the agent index told (src/file/agents.ts). */
  raiseIndex(at: string): void;
}

/** Runs `edit` as `StorageBackend.editMessages` documents it; the caller holds the session's lock. */
export function editLog(ctx: EditContext, edit: MessageEdit): EditOutcome {
  const log = join(ctx.dir, LOG);
  let fd = ifExists(() => fs.openSync(log, fs.constants.O_RDWR | fs.constants.O_APPEND));
  if (fd === null) return { status: "not-found" }; // deleted before we got the lock
  const keys = new KeyFile(ctx.dir, false);
  const counter = openCount(join(ctx.dir, COUNT), fs.constants.O_RDWR | fs.constants.O_CREAT);
  try {
    let { size, ino } = fs.fstatSync(fd);
    const tail = logTail(fd, size);
    keys.settle({ fd, ino, end: tail.end });
    const count = countTo(fd, ino, tail.end, counter === null ? null : readCountAt(counter));
    const key = edit.idempotency;
    const remembered = key === undefined ? undefined : keys.find(key.key);
    if (remembered) return { status: "replayed", ...remembered };
    if (edit.expectedLength !== undefined && edit.expectedLength !== count)
      return { status: "conflict", length: count };
    if (edit.from !== undefined && edit.from > count) return { status: "out-of-range", length: count };
    const keep = edit.pop ? Math.max(0, count - 1) : (edit.from ?? count);
    const head = readHead(join(ctx.dir, META), ctx.sessionId);
    const floor = head.updatedAt;
    const meta = edit.metadata;
    const updatedAt = latest(floor, tail.last ?? floor);
    const length = keep + edit.messages.length;
    const remember = (popped: MessageRecord | null, check?: Parameters<KeyFile["write"]>[2]) => {
      if (key) keys.write(key.key, { fingerprint: key.fingerprint, length, popped }, check, ctx.fsync);
    };

    if (keep === count && edit.messages.length === 0) {
      if (meta !== undefined) {
        // session.json alone changes (one rename), before the key: a replay never skips a metadata write.
        const at = latest(edit.at, updatedAt);
        ctx.raiseIndex(at);
        ctx.writeMeta(at, meta);
      }
      remember(null); // the list does not change: nothing but the key (and metadata) is written
    } else if (keep === count && meta === undefined) {
      if (tail.end < size) {
        // A writer was killed mid-append: its partial batch goes before anything is written after it.
        fs.closeSync(fd);
        fd = null;
        ctx.replaceLog(log, tail.end);
        fd = fs.openSync(log, fs.constants.O_RDWR | fs.constants.O_APPEND);
        ({ size, ino } = fs.fstatSync(fd));
      }
      const stamp = latest((edit.messages[0] as MessageRecord).timestamp, updatedAt);
      const batch = encodeBatch(edit.messages, stamp);
      ctx.raiseIndex(stamp);
      remember(null, { ino, from: size, to: size + batch.length, hash: hashOf(batch) });
      try {
        writeAll(fd, batch);
        if (ctx.fsync) fs.fdatasyncSync(fd);
      } catch (error) {
        fs.ftruncateSync(fd, size); // leave no partial batch behind a failed write
        throw error;
      }
      keys.commit();
      if (counter !== null) writeCountAt(counter, { count: length, bytes: size + batch.length, ino });
    } else {
      // Drops messages, or writes metadata: a new log renamed in, its metadata pending on it (src/file/session.ts).
      if (head.pending && meta === undefined) ctx.settle();
      const at = keep === count ? tail.end : offsetOf(fd, tail.end, count, keep);
      const popped = edit.pop ? parseLine(readAt(fd, at, tail.end), at) : null;
      const first = keep === count ? (edit.messages[0] as MessageRecord).timestamp : edit.at;
      const stamp = latest(first, updatedAt);
      const batch = edit.messages.length === 0 ? Buffer.alloc(0) : encodeBatch(edit.messages, stamp);
      const metaAt = meta === undefined ? stamp : latest(edit.at, stamp);
      ctx.raiseIndex(metaAt);
      const old = { fd, ino, end: tail.end };
      rewrite(ctx, fd, log, at, batch, (newIno, bytes) => {
        carryOver(ctx.dir, old, at, newIno, ctx.tmpName());
        // A truncation leaves older messages last: session.json carries the edit's time (first: a kill before the
        // rename leaves updated_at moved forward, never the list changed with updated_at moved back).
        if (meta !== undefined) ctx.writeMeta(metaAt, meta, newIno);
        else if (batch.length === 0) ctx.writeMeta(stamp);
        remember(popped, { ino: newIno });
        if (counter !== null) writeCountAt(counter, { count: length, bytes, ino: newIno });
      });
      keys.commit();
      ctx.syncDir(ctx.dir);
      if (meta !== undefined) ctx.writeMeta(metaAt, meta); // settled: plain again
      keys.prune(ctx.tmpName(), ctx.fsync);
      return { status: "written", length, popped };
    }
    keys.prune(ctx.tmpName(), ctx.fsync);
    return { status: "written", length, popped: null };
  } finally {
    // A write that failed leaves its key line pending: the next writer settles it from the log, as after a kill.
    if (fd !== null) fs.closeSync(fd);
    if (counter !== null) fs.closeSync(counter);
    keys.close();
  }
}

/**
 * Replaces the log by its first `at` bytes followed by `batch`: written to a temporary file (fsynced when asked),
 * `beforeRename(ino, size)` told its inode and size, then renamed over the log (the caller syncs the directory).
 */
function rewrite(
  ctx: EditContext,
  fd: number,
  log: string,
  at: number,
  batch: Buffer,
  beforeRename: (ino: number, bytes: number) => void,
): void {
  const tmp = ctx.tmpName();
  const out = fs.openSync(tmp, "wx");
  let renamed = false;
  try {
    const kept = copyPrefix(fd, out, at);
    writeAll(out, batch);
    if (ctx.fsync) fs.fsyncSync(out);
    beforeRename(fs.fstatSync(out).ino, kept + batch.length);
    fs.renameSync(tmp, log);
    renamed = true;
  } finally {
    fs.closeSync(out);
    if (!renamed) fs.rmSync(tmp, { force: true });
  }
}
