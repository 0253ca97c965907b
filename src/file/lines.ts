// Reading a log's lines by position without holding the log in memory: forward a chunk at a time, or back from
// its end. A log may be larger than a Buffer can be (4 GiB), so nothing here reads a whole range at once.
import type { MessageRecord } from "../core/types.js";
import { parseMessage } from "./damage.js";
import { readAt } from "./io.js";

const NL = 0x0a;
const FIRST_CHUNK = 16 << 10;
const MAX_CHUNK = 4 << 20;

/** The lines of `[from, to)` of an open file, read forward in chunks that grow from 16 KiB to 4 MiB. */
export class LineReader {
  readonly #fd: number;
  readonly #to: number;
  #buffer: Buffer = Buffer.alloc(0);
  /** The file offset of `#buffer[0]`. */
  #at: number;
  #pos = 0;
  #chunk = FIRST_CHUNK;

  /** `from` starts a line; `to` ends one; `expect`: about how many bytes the caller will read (the first chunk). */
  constructor(fd: number, from: number, to: number, expect = FIRST_CHUNK) {
    this.#fd = fd;
    this.#at = from;
    this.#to = to;
    this.#chunk = Math.min(MAX_CHUNK, Math.max(FIRST_CHUNK, Math.ceil(expect)));
  }

  /** The file offset of the next line's start. */
  get offset(): number {
    return this.#at + this.#pos;
  }

  /** Skips up to `n` lines without parsing them; returns how many it skipped (fewer at the end). */
  skip(n: number): number {
    let skipped = 0;
    while (skipped < n) {
      const i = this.#buffer.indexOf(NL, this.#pos);
      if (i === -1) {
        if (!this.#fill()) break;
        continue;
      }
      this.#pos = i + 1;
      skipped++;
    }
    return skipped;
  }

  /** The next line without its "\n", or `undefined` at the end. */
  next(): Buffer | undefined {
    const pieces: Buffer[] = [];
    for (;;) {
      const i = this.#buffer.indexOf(NL, this.#pos);
      if (i !== -1) {
        const line = this.#buffer.subarray(this.#pos, i);
        this.#pos = i + 1;
        return pieces.length === 0 ? line : Buffer.concat([...pieces, line]);
      }
      if (this.#pos < this.#buffer.length) pieces.push(this.#buffer.subarray(this.#pos));
      if (!this.#fill()) return undefined;
    }
  }

  /** Reads the next chunk after the current buffer; `false` at the end of the range. */
  #fill(): boolean {
    const from = this.#at + this.#buffer.length;
    if (from >= this.#to) {
      this.#at = from;
      this.#buffer = Buffer.alloc(0);
      this.#pos = 0;
      return false;
    }
    this.#buffer = readAt(this.#fd, from, Math.min(this.#to, from + this.#chunk));
    this.#at = from;
    this.#pos = 0;
    this.#chunk = Math.min(this.#chunk * 2, MAX_CHUNK);
    return this.#buffer.length > 0;
  }
}

/** Parses a log line (which may end in the space that continues a batch) that starts at byte `at` of the log. */
export function parseLine(line: Buffer, at: number | undefined): MessageRecord {
  return parseMessage(line.toString("utf8"), at);
}

/** Up to `limit` messages (all when `undefined`) from the reader's position on. */
export function readLines(reader: LineReader, limit: number | undefined): MessageRecord[] {
  const messages: MessageRecord[] = [];
  while (limit === undefined || messages.length < limit) {
    const at = reader.offset;
    const line = reader.next();
    if (line === undefined) break;
    messages.push(parseLine(line, at));
  }
  return messages;
}

/** The offset of the start of the `n`-th line before `end` (which follows a "\n"); 0 when there are fewer. */
export function tailStart(fd: number, end: number, n: number): number {
  if (n === 0) return end;
  let seen = 0;
  for (let start = end, chunk = 4096; start > 0; chunk = Math.min(chunk * 4, MAX_CHUNK)) {
    const from = Math.max(0, start - chunk);
    const buffer = readAt(fd, from, start);
    for (let i = start === end ? buffer.length - 1 : buffer.length; i > 0; ) {
      i = buffer.lastIndexOf(NL, i - 1);
      if (i === -1) break;
      if (++seen === n) return from + i + 1;
    }
    start = from;
  }
  return 0;
}

/**
 * The byte offset of position `position` in the committed log `[0, end)` of `count` lines: read back from the end
 * when it is nearer (a pop, a short truncation), else forward from the start.
 */
export function offsetOf(fd: number, end: number, count: number, position: number): number {
  if (position >= count) return end;
  if (count - position <= position) return tailStart(fd, end, count - position);
  const reader = new LineReader(fd, 0, end);
  reader.skip(position);
  return reader.offset;
}

interface PageMark {
  ino: number;
  /** The committed end of the log when the mark was made. */
  end: number;
  position: number;
  byte: number;
  /** The (up to) 32 bytes before `byte`, ending in the "\n" before it. */
  before: Buffer;
}

const MARKS_KEPT = 64;

/**
 * Where the last page read of each of a few recent sessions ended (position → byte offset), so that sequential
 * pages (`iterateMessages`) each read only their own lines. Only a hint: a mark is used for the same log (inode)
 * not shorter than when it was made, at or before the position asked for, and when the bytes before it are
 * still the ones seen; agentix only ever appends to a log in place (an edit or a repair replaces it: a new inode),
 * so those bytes do not change. Anything else reads from the start.
 */
export class PageMarks {
  readonly #marks = new Map<string, PageMark>();

  /** A known line start at or before `position` of the log `fd` (inode `ino`, committed end `end`). */
  find(sessionId: string, fd: number, ino: number, end: number, position: number): PageMark | undefined {
    const mark = this.#marks.get(sessionId);
    if (!mark || mark.ino !== ino || mark.end > end || mark.position > position) return undefined;
    return readAt(fd, mark.byte - mark.before.length, mark.byte).equals(mark.before) ? mark : undefined;
  }

  /** Remembers that position `position` of the log starts at `byte`. */
  remember(sessionId: string, fd: number, ino: number, end: number, position: number, byte: number): void {
    const before = readAt(fd, Math.max(0, byte - 32), byte);
    this.#marks.delete(sessionId);
    this.#marks.set(sessionId, { ino, end, position, byte, before });
    if (this.#marks.size > MARKS_KEPT) this.#marks.delete(this.#marks.keys().next().value as string);
  }
}
