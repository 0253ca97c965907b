/*
 * A session's idempotency keys, `keys.jsonl`: one line per keyed write, read and written only under the session's
 * lock, deleted with the session directory, never copied by a fork.
 *
 *   {"s":"c","key":…,"fingerprint":…,"length":n,"check":{…},"popped":…}\n
 *
 * `s` (always the 7th byte of the line) is the state: `c` committed, `a` aborted, `p` pending. Why pending: the
 * key must be remembered exactly when the edit happened, and a log write and a key write are two writes, so a
 * kill can land between them. Writing the key after the edit would let a retry after such a kill apply the edit
 * twice; writing it before, as committed, would answer a retry with an edit that never happened. So the key line
 * is written first as pending, with a `check` saying how to tell from the log whether the edit happened; the edit
 * follows; then one byte written in place turns `p` into `c`. A writer killed in between leaves the last line
 * pending, and the next locked writer settles it from the log before it changes anything:
 *
 * - a rewrite (replace, pop) builds the new log in a temporary file and renames it over the log: `check` holds
 *   that file's inode, and the edit happened exactly when the log is that inode (a rename is all or nothing);
 * - an append: `check` holds the log's inode, where the batch goes (`from`, `to`) and the SHA-256 of its bytes;
 *   the edit happened exactly when those bytes are there, committed, in that inode.
 *
 * Both facts stay true until the log is replaced, which only a locked writer does (an edit, or an append that
 * repairs a torn log), after settling the pending line. Appends that change nothing else need no check. A line
 * torn by a kill (no "\n") was never followed by its edit and is cut off. Aborted lines are ignored. Once the file
 * passes 2,000 lines it is rewritten (temp file, rename) with its 1,000 newest committed keys.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { join } from "node:path";
import type { MessageRecord } from "../core/types.js";
import { errno, readAt, writeAll } from "./io.js";
import { LineReader, tailStart } from "./lines.js";

export const KEYS = "keys.jsonl";
const KEYS_KEPT = 1000;
const PRUNE_AT = 2000;
const STATE_AT = 6;

/** What a key remembers of its write. */
export interface RememberedWrite {
  fingerprint: string;
  length: number;
  popped: MessageRecord | null;
}

/** How to tell from the log whether a pending write happened (see above). */
export type Check = { ino: number } | { ino: number; from: number; to: number; hash: string };

/** The log as a writer holding the lock sees it: its open descriptor, inode and committed end. */
export interface LogState {
  fd: number;
  ino: number;
  end: number;
}

/** The SHA-256 of the bytes of a batch, as an append's check holds it. */
export function hashOf(bytes: Buffer): string {
  return createHash("sha256").update(bytes).digest("base64url");
}

/** The keys file of one session, opened under its lock for one write. */
export class KeyFile {
  readonly #path: string;
  #fd: number | null;
  /** Start and end of each committed line, oldest first (after {@link KeyFile.find}). */
  #committed: Array<[number, number]> = [];
  #lines = 0;
  /** The offset of the line this write added, while it is pending. */
  #pending: number | null = null;

  /** Opens the file if it exists (`create`: creates it). */
  constructor(dir: string, create: boolean) {
    this.#path = join(dir, KEYS);
    this.#fd = openKeys(this.#path, create);
  }

  /** Settles a line left pending by a killed writer, from the log; cuts off a torn line. */
  settle(log: LogState): void {
    const fd = this.#fd;
    if (fd === null) return;
    const size = fs.fstatSync(fd).size;
    if (size === 0) return;
    const tail = readAt(fd, size - 1, size);
    let end = size;
    if (tail[0] !== 0x0a) {
      end = lastLineEnd(fd, size);
      fs.ftruncateSync(fd, end);
      if (end === 0) return;
    }
    const start = tailStart(fd, end, 1);
    if (readAt(fd, start + STATE_AT, start + STATE_AT + 1).toString() !== "p") return;
    const { check } = JSON.parse(readAt(fd, start, end).toString("utf8")) as { check: Check };
    writeAll(fd, Buffer.from(happened(check, log) ? "c" : "a"), start + STATE_AT);
  }

  /** The write remembered under `key` (after {@link KeyFile.settle}), reading the file one line at a time. */
  find(key: string): RememberedWrite | undefined {
    const fd = this.#fd;
    if (fd === null) return undefined;
    const head = Buffer.from(`{"s":"c",${JSON.stringify({ key }).slice(1, -1)},"fingerprint":`);
    const reader = new LineReader(fd, 0, fs.fstatSync(fd).size);
    let found: RememberedWrite | undefined;
    for (let start = reader.offset, line = reader.next(); line !== undefined; line = reader.next()) {
      this.#lines++;
      if (line[STATE_AT] === 0x63) this.#committed.push([start, reader.offset]);
      if (line.subarray(0, head.length).equals(head)) {
        const { fingerprint, length, popped } = JSON.parse(line.toString("utf8")) as RememberedWrite;
        found = { fingerprint, length, popped };
      }
      start = reader.offset;
    }
    return found;
  }

  /** Writes the key's line: pending with `check` (then {@link KeyFile.commit}), or committed without. */
  write(key: string, write: RememberedWrite, check: Check | undefined, fsync: boolean): void {
    if (this.#fd === null) this.#fd = openKeys(this.#path, true) as number;
    const fd = this.#fd;
    const { fingerprint, length, popped } = write;
    const state = check === undefined ? "c" : "p";
    const line = `${JSON.stringify({ s: state, key, fingerprint, length, check: check ?? null, popped })}\n`;
    const at = fs.fstatSync(fd).size;
    writeAll(fd, Buffer.from(line), at);
    if (check !== undefined) {
      if (fsync) fs.fdatasyncSync(fd);
      this.#pending = at;
    } else {
      this.#committed.push([at, at + Buffer.byteLength(line)]);
    }
    this.#lines++;
  }

  /**
   * Marks the pending line committed, once its edit is durable: one byte written in place. (A write that fails
   * is not marked aborted here: its line stays pending, and the next writer settles it from the log.)
   */
  commit(): void {
    if (this.#fd === null || this.#pending === null) return;
    const at = this.#pending;
    this.#pending = null;
    writeAll(this.#fd, Buffer.from("c"), at + STATE_AT);
    this.#committed.push([at, fs.fstatSync(this.#fd).size]);
  }

  /** Rewrites the file with its newest committed keys once it holds too many lines (temp file, rename). */
  prune(tmp: string, fsync: boolean): void {
    const fd = this.#fd;
    if (fd === null || this.#lines <= PRUNE_AT) return;
    const out = fs.openSync(tmp, "wx");
    try {
      for (const [from, to] of this.#committed.slice(-KEYS_KEPT)) writeAll(out, readAt(fd, from, to));
      if (fsync) fs.fsyncSync(out);
    } finally {
      fs.closeSync(out);
    }
    fs.renameSync(tmp, this.#path);
  }

  close(): void {
    if (this.#fd !== null) fs.closeSync(this.#fd);
    this.#fd = null;
  }
}

/** Whether the pending write that `check` describes happened, as the log shows it. */
function happened(check: Check, log: LogState): boolean {
  if (check.ino !== log.ino) return false;
  if (!("to" in check)) return true;
  if (log.end < check.to) return false;
  const hash = createHash("sha256");
  for (let at = check.from; at < check.to; at += 4 << 20) {
    hash.update(readAt(log.fd, at, Math.min(check.to, at + (4 << 20))));
  }
  return hash.digest("base64url") === check.hash;
}

/** The end of the last "\n"-terminated line of a file that does not end in one. */
function lastLineEnd(fd: number, size: number): number {
  for (let to = size, chunk = 4096; to > 0; chunk *= 4) {
    const from = Math.max(0, to - chunk);
    const i = readAt(fd, from, to).lastIndexOf(0x0a);
    if (i !== -1) return from + i + 1;
    to = from;
  }
  return 0;
}

function openKeys(path: string, create: boolean): number | null {
  try {
    // Not O_APPEND: a state byte is written in place, and Linux ignores the position of a write under O_APPEND.
    return fs.openSync(path, create ? fs.constants.O_RDWR | fs.constants.O_CREAT : fs.constants.O_RDWR, 0o666);
  } catch (error) {
    if (errno(error) === "ENOENT") return null;
    throw error;
  }
}
