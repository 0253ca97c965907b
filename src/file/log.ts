/*
 * A session's message log, `messages.jsonl`, and its count, `messages.count`.
 *
 * The log: one message per line, `{"role":…,"content":…,"timestamp":…}\n`, appended under the session's lock,
 * each append ONE write of whole lines. A single message is one line, as agentix has always written it. A batch
 * of n > 1 messages is n lines of which all but the last end in a space before the newline (`{…} \n`: "the batch
 * goes on"); its last line ends as usual and commits it. The committed log ends after the last whole line that
 * does not end in ` \n`. A writer killed in the middle of its write leaves a prefix of its bytes — continued lines
 * with no committing line after them, and/or an unterminated fragment — which every reader ignores and the next
 * append, before it writes, cuts off (the log is replaced by its committed part). Each line is still one JSON
 * value (JSON allows the space), so JSONL tools read the same messages, and a log written before batches existed
 * has no continued line and reads unchanged. Its last bytes tell whether a log ends committed, so reading the
 * newest messages never reads the rest of the log.
 *
 * The count: `messages.count` holds one 128-byte record, `{"count":n,"bytes":b,"ino":i,"check":c}` padded with
 * spaces, rewritten in place after each append: the first b bytes of the log whose inode is i hold n messages.
 * It is a cache, never the truth: trusted only when its checksum holds, i is the log's inode and b is a committed
 * line end within the committed log; the lines after b are then counted (after a writer killed between the log
 * write and the record's, that is one batch). Otherwise (missing, corrupt, a replaced or hand-edited log) the
 * whole log is counted once, and the next append writes a fresh record.
 */
import * as fs from "node:fs";
import type { MessageRecord } from "../core/types.js";
import { parseMessage } from "./damage.js";
import { copyRange, readAt, writeAll } from "./io.js";

export const LOG = "messages.jsonl";
export const COUNT = "messages.count";

const NL = 0x0a;
const SPACE = 0x20;
const RECORD_BYTES = 128;
/** A line written here ends with its timestamp: `JSON.stringify` keeps the key order role, content, timestamp. */
const LINE_TIMESTAMP = /"timestamp":"([^"]{24})"\}\n$/;

/** What `messages.count` says: the first `bytes` bytes of the log with inode `ino` hold `count` messages. */
export interface CountRecord {
  count: number;
  bytes: number;
  ino: number;
}

/** A message as one log line, as every single append writes it; `timestamp` stays the last key (see above). */
export function toLine(m: MessageRecord): string {
  return `${JSON.stringify({ role: m.role, content: m.content, timestamp: m.timestamp })}\n`;
}

/** A batch as the bytes of its one write: every line but the last continued (` \n`), all with `timestamp`. */
export function encodeBatch(messages: MessageRecord[], timestamp: string): Buffer {
  const lines = messages.map((m) => JSON.stringify({ role: m.role, content: m.content, timestamp }));
  return Buffer.from(`${lines.join(" \n")}\n`);
}

/**
 * Where the committed log ends and the timestamp of its last message (`undefined` when it has none). Usually
 * from the last 64 bytes alone: a last line ending in `"}\n` is not continued, so the log ends committed.
 */
export function logTail(fd: number, size: number): { end: number; last: string | undefined } {
  const fast = LINE_TIMESTAMP.exec(readAt(fd, Math.max(0, size - 64), size).toString("latin1"))?.[1];
  if (fast !== undefined) return { end: size, last: fast };
  // A torn end, or a line not written by agentix: the last committed line is parsed.
  const end = committedEnd(fd, size);
  if (end === 0) return { end, last: undefined };
  const line = readTail(fd, end, 1);
  return { end, last: parseLines(line, end - line.length)[0]?.timestamp };
}

/** The end of the committed log: just after the last "\n" not preceded by a space (0 when there is none). */
export function committedEnd(fd: number, size: number): number {
  for (let to = size, chunk = 64; to > 0; chunk = Math.min(chunk * 8, 1 << 22)) {
    const from = Math.max(0, to - chunk);
    const buffer = readAt(fd, from, to);
    for (let i = buffer.lastIndexOf(NL); i !== -1; i = i > 0 ? buffer.lastIndexOf(NL, i - 1) : -1) {
      const before = i > 0 ? buffer[i - 1] : from > 0 ? readAt(fd, from - 1, from)[0] : undefined;
      if (before !== SPACE) return from + i + 1;
    }
    to = from;
  }
  return 0;
}

/** The last `n` lines before `end` (which follows a "\n"), read backwards: the rest of the log is never read. */
export function readTail(fd: number, end: number, n: number): Buffer {
  const chunks: Buffer[] = [];
  let seen = 0;
  for (let start = end, chunk = 65_536; start > 0; chunk = Math.min(chunk * 4, 1 << 24)) {
    const from = Math.max(0, start - chunk);
    const buffer = readAt(fd, from, start);
    // The "\n" that ends the last line does not start one.
    for (let i = start === end ? buffer.length - 1 : buffer.length; i > 0; ) {
      i = buffer.lastIndexOf(NL, i - 1);
      if (i === -1) break;
      if (++seen === n) return Buffer.concat([buffer.subarray(i + 1), ...chunks]);
    }
    chunks.unshift(buffer);
    start = from;
  }
  return Buffer.concat(chunks);
}

/** Parses whole lines one at a time, so that no log has to fit in one string; `base`: the buffer's log offset. */
export function parseLines(buffer: Buffer, base: number): MessageRecord[] {
  const messages: MessageRecord[] = [];
  for (let from = 0, i = buffer.indexOf(NL); i !== -1; from = i + 1, i = buffer.indexOf(NL, from)) {
    messages.push(parseMessage(buffer.toString("utf8", from, i), base + from));
  }
  return messages;
}

/**
 * The number of messages in the committed log `[0, end)` of the open log `fd` (inode `ino`), from `record` when
 * it can be trusted (counting only the lines after it), else by counting every line.
 */
export function countTo(fd: number, ino: number, end: number, record: CountRecord | null): number {
  const trusted = record !== null && record.ino === ino && record.bytes <= end && endsLine(fd, record.bytes, end);
  return trusted ? record.count + countLines(fd, record.bytes, end) : countLines(fd, 0, end);
}

/** Whether the offset `at` (≤ `end`, which is one) ends a committed line of the log. */
function endsLine(fd: number, at: number, end: number): boolean {
  if (at === end || at === 0) return true;
  const bytes = readAt(fd, Math.max(0, at - 2), at);
  return bytes.at(-1) === NL && (bytes.length < 2 || bytes[0] !== SPACE);
}

/** The number of "\\n" in `[from, to)` of an open file, read a MiB at a time. */
export function countLines(fd: number, from: number, to: number): number {
  let lines = 0;
  for (let at = from; at < to; at += 1 << 20) {
    const buffer = readAt(fd, at, Math.min(to, at + (1 << 20)));
    for (let i = buffer.indexOf(NL); i !== -1; i = buffer.indexOf(NL, i + 1)) lines++;
  }
  return lines;
}

/** The count record at `path`, or `null` when it is missing or not one that checks out. */
export function readCount(path: string): CountRecord | null {
  const fd = openCount(path, "r");
  if (fd === null) return null;
  try {
    return readCountAt(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes the count record at `path` (see {@link writeCountAt}). */
export function writeCount(path: string, record: CountRecord): void {
  const fd = openCount(path, fs.constants.O_WRONLY | fs.constants.O_CREAT);
  if (fd === null) return;
  try {
    writeCountAt(fd, record);
  } finally {
    fs.closeSync(fd);
  }
}

/** The count record's file, opened; `null` when it cannot be (missing, unreadable): the log is counted then. */
export function openCount(path: string, flags: string | number): number | null {
  try {
    return fs.openSync(path, flags, 0o666);
  } catch {
    return null;
  }
}

/** The record in the open count file, or `null` when it does not check out. */
export function readCountAt(fd: number): CountRecord | null {
  // Read twice if need be: a reader may meet the record while an append rewrites it.
  return parseCount(readAt(fd, 0, RECORD_BYTES)) ?? parseCount(readAt(fd, 0, RECORD_BYTES));
}

/**
 * Rewrites the count record in place: one write of fewer bytes than a page, which a killed process never leaves
 * half done. Errors are ignored: an older record is trusted only from where it was, and a corrupt one never.
 */
export function writeCountAt(fd: number, record: CountRecord): void {
  const { count, bytes, ino } = record;
  const json = JSON.stringify({ count, bytes, ino, check: checksum(count, bytes, ino) });
  try {
    writeAll(fd, Buffer.from(`${json.padEnd(RECORD_BYTES - 1)}\n`), 0);
  } catch {
    // See above: the count is recounted from what can be trusted.
  }
}

function parseCount(buffer: Buffer): CountRecord | null {
  try {
    const r = JSON.parse(buffer.toString("utf8")) as Partial<Record<keyof CountRecord | "check", unknown>>;
    const natural = (n: unknown, safe: boolean) =>
      (safe ? Number.isSafeInteger(n) : Number.isInteger(n)) && (n as number) >= 0;
    // An inode number may be beyond 2^53: it is compared as the double fstat gives, which JSON carries exactly.
    if (!natural(r.count, true) || !natural(r.bytes, true) || !natural(r.ino, false)) return null;
    const { count, bytes, ino } = r as CountRecord;
    return r.check === checksum(count, bytes, ino) ? { count, bytes, ino } : null;
  } catch {
    return null;
  }
}

/** FNV-1a of the three numbers: a record torn by a power loss (or mixed with another) does not check out. */
function checksum(count: number, bytes: number, ino: number): string {
  let hash = 0x811c9dc5;
  for (const c of `${count}:${bytes}:${ino}`) hash = Math.imul(hash ^ (c.charCodeAt(0) as number), 0x01000193);
  return (hash >>> 0).toString(16).padStart(8, "0");
}

/**
 * Copies the first `at` bytes of a log (a line end within its committed part) to the end of `out`, unparsed,
 * and returns how many bytes it wrote: a prefix that ends inside a batch ends its last line without the space
 * that continues it, so that the kept part of the batch is committed in the copy.
 */
export function copyPrefix(fd: number, out: number, at: number): number {
  const continued = at >= 2 && readAt(fd, at - 2, at)[0] === SPACE;
  copyRange(fd, out, 0, continued ? at - 2 : at);
  if (continued) writeAll(out, Buffer.from("\n"));
  return continued ? at - 1 : at;
}
