/*
 * A session's position index, `messages.index`: where every K-th message of the log starts (positions K, 2K, …),
 * so that a page at any offset reads at most K - 1 lines it does not return instead of every line before it.
 *
 *   header (64 bytes): {"v":1,"k":K,"ino":I} padded with spaces, "\n"
 *   entry n (32 bytes, n = 1, 2, …): <byte offset of position nK, 12 hex> <hash, 8 hex> <check, 8 hex> " \n"
 *
 * `hash` is FNV-1a of the first (up to) 32 bytes of that line, `check` FNV-1a of (I, n, offset, hash). It is a
 * hint, never the truth: an entry is used only when the header names the inode of the log being read, its check
 * holds, the offset lies in the committed log, the byte before it is "\n" and the line's first bytes still hash
 * to `hash`. Its entries are a function of the log's bytes alone, and agentix only ever appends to a log in place
 * (an edit or a repair writes a new inode), so any process may add entries at the end, readers included, without
 * a lock: two processes adding the same entries write the same bytes. An index that does not check out is built
 * again (temporary file, rename) by the read that met it, up to the position it needed; appends add nothing (the
 * next deep read extends it); edits that write a new log carry the entries of the kept prefix over to it, written
 * before the new log is renamed into place (src/file/edit.ts, Layout.replaceLog). Every write here may fail (a
 * read-only store, a full disk): the index is then left as it is, and reads read the log from the start.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { join } from "node:path";
import { errno, readAt, writeAll } from "./io.js";
import { LineReader } from "./lines.js";
import { LOG } from "./log.js";

export const INDEX = "messages.index";
/** Every K-th position is indexed. */
export const K = 32;
const HEADER = 64;
const ENTRY = 32;
const HASHED = 32;

/** A known line start: position `position` of the log begins at byte `byte`. */
export interface LineStart {
  position: number;
  byte: number;
}

/** The log a reader or writer holds open: its descriptor, inode and committed end. */
export interface OpenLog {
  fd: number;
  ino: number;
  end: number;
}

function fnv(text: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193);
  return (hash >>> 0).toString(16).padStart(8, "0");
}

function headerBytes(ino: number): Buffer {
  return Buffer.from(`${JSON.stringify({ v: 1, k: K, ino }).padEnd(HEADER - 1)}\n`);
}

/** The hash of the first bytes of the line that starts at `byte`; `null` when the byte before is not "\n". */
function lineHash(fd: number, byte: number, end: number): string | null {
  const bytes = readAt(fd, byte - 1, Math.min(end, byte + HASHED));
  if (bytes.length < 2 || bytes[0] !== 0x0a) return null;
  return fnv(bytes.subarray(1).toString("latin1"));
}

function entryBytes(ino: number, n: number, byte: number, hash: string): string {
  const offset = byte.toString(16).padStart(12, "0");
  return `${offset} ${hash} ${fnv(`${ino}:${n}:${offset}:${hash}`)} \n`;
}

/** Entry `n`'s line start, when its bytes are an entry of the log `log` and it checks out against the log. */
function checkEntry(bytes: Buffer, n: number, log: OpenLog): LineStart | null {
  if (bytes.length !== ENTRY) return null;
  const text = bytes.toString("latin1");
  const [offset, hash, check] = text.split(" ");
  if (offset === undefined || hash === undefined || !/^[0-9a-f]{12}$/.test(offset)) return null;
  if (check !== fnv(`${log.ino}:${n}:${offset}:${hash}`)) return null;
  const byte = Number.parseInt(offset, 16);
  if (byte <= 0 || byte >= log.end || lineHash(log.fd, byte, log.end) !== hash) return null;
  return { position: n * K, byte };
}

/** The inode the index's header names, or `null` when it is not a header of this format. */
function headerIno(bytes: Buffer): number | null {
  try {
    const h = JSON.parse(bytes.toString("utf8")) as { v?: unknown; k?: unknown; ino?: unknown };
    return h.v === 1 && h.k === K && Number.isInteger(h.ino) ? (h.ino as number) : null;
  } catch {
    return null;
  }
}

/** Opens the index for reading and, when allowed, adding entries; `null` when there is none. */
function openIndex(path: string): { fd: number; writable: boolean } | null {
  for (const [flags, writable] of [
    ["r+", true],
    ["r", false],
  ] as const) {
    try {
      return { fd: fs.openSync(path, flags), writable };
    } catch (error) {
      const code = errno(error);
      if (code === "ENOENT" || code === "ENOTDIR") return null;
      if (code !== "EACCES" && code !== "EPERM" && code !== "EROFS") return null;
    }
  }
  return null;
}

/**
 * Entries from the line start `from` (an indexed position, or 0) on, scanning the log up to position `upTo`
 * (rounded down to a multiple of K) or its committed end, as the bytes to write after entry `from.position / K`.
 */
function scan(log: OpenLog, from: LineStart, upTo: number): { bytes: string; last: LineStart } {
  const reader = new LineReader(log.fd, from.byte, log.end);
  let last = from;
  let bytes = "";
  while (last.position + K <= upTo) {
    if (reader.skip(K) < K || reader.offset >= log.end) break;
    const n = last.position / K + 1;
    const byte = reader.offset;
    bytes += entryBytes(log.ino, n, byte, lineHash(log.fd, byte, log.end) as string);
    last = { position: n * K, byte };
  }
  return { bytes, last };
}

/**
 * A line start at or before `position` of the open log of the session in `dir`, from its index (extended or
 * built again on the way, as far as `position`); `{ 0, 0 }` when nothing better is known.
 * `tmpName`: a temporary path on the same file system, `null` when none can be had (nothing is built then).
 */
export function locate(
  dir: string,
  log: OpenLog,
  position: number,
  tmpName: () => string | null,
  seen?: SeenEntries,
): LineStart {
  const start = { position: 0, byte: 0 };
  const want = Math.floor(position / K);
  if (want === 0) return start;
  const known = seen?.find(dir, log, want);
  if (known) return known;
  const found = locateIn(dir, log, position, tmpName, want, start);
  if (found.position > 0) seen?.remember(dir, log, found);
  return found;
}

function locateIn(
  dir: string,
  log: OpenLog,
  position: number,
  tmpName: () => string | null,
  want: number,
  start: LineStart,
): LineStart {
  const path = join(dir, INDEX);
  const index = openIndex(path);
  try {
    if (index !== null && headerIno(readAt(index.fd, 0, HEADER)) === log.ino) {
      const entries = Math.max(0, Math.floor((fs.fstatSync(index.fd).size - HEADER) / ENTRY));
      const n = Math.min(want, entries);
      const found =
        n === 0 ? start : checkEntry(readAt(index.fd, HEADER + (n - 1) * ENTRY, HEADER + n * ENTRY), n, log);
      if (found !== null) {
        if (n === want || !index.writable) return found;
        // The index ends before the position: the lines in between are scanned once, and their entries added.
        const more = scan(log, found, position);
        if (more.bytes.length > 0) tryWrite(() => writeAll(index.fd, Buffer.from(more.bytes), HEADER + n * ENTRY));
        return more.last;
      }
    }
    // Missing, of another log, or damaged: built again, from the start. Not when the log this read holds open has
    // been replaced since: the index may be the new log's already (an edit writes it before renaming the log).
    if (fs.statSync(join(dir, LOG), { throwIfNoEntry: false })?.ino !== log.ino) return start;
    const built = scan(log, start, position);
    const tmp = tmpName();
    if (tmp !== null) tryWrite(() => replaceIndex(path, tmp, headerBytes(log.ino), built.bytes));
    return built.last;
  } finally {
    if (index !== null) fs.closeSync(index.fd);
  }
}

const SEEN_KEPT = 256;

/**
 * Entries this process used lately (per log, by inode), so that a page read again, or one near it, does not open
 * the index: an entry is still checked against the log's bytes before each use, as one read from the index is.
 */
export class SeenEntries {
  readonly #entries = new Map<string, { ino: number; byte: number; hash: string }>();

  find(dir: string, log: OpenLog, n: number): LineStart | undefined {
    const key = `${dir}:${n}`;
    const e = this.#entries.get(key);
    if (!e || e.ino !== log.ino || e.byte >= log.end) return undefined;
    if (lineHash(log.fd, e.byte, log.end) !== e.hash) {
      this.#entries.delete(key);
      return undefined;
    }
    return { position: n * K, byte: e.byte };
  }

  remember(dir: string, log: OpenLog, found: LineStart): void {
    const hash = lineHash(log.fd, found.byte, log.end);
    if (hash === null) return;
    const key = `${dir}:${found.position / K}`;
    this.#entries.delete(key);
    this.#entries.set(key, { ino: log.ino, byte: found.byte, hash });
    if (this.#entries.size > SEEN_KEPT) this.#entries.delete(this.#entries.keys().next().value as string);
  }
}

/**
 * Before an edit renames `newIno` over the log `log` (held open, under the session's lock): the new log's index,
 * holding the entries of the old one whose line starts lie before `cut` (the kept prefix, copied byte for byte).
 */
export function carryOver(dir: string, log: OpenLog, cut: number, newIno: number, tmp: string): void {
  const path = join(dir, INDEX);
  const index = openIndex(path);
  let entries = "";
  if (index !== null) {
    try {
      if (headerIno(readAt(index.fd, 0, HEADER)) === log.ino) {
        const count = Math.max(0, Math.floor((fs.fstatSync(index.fd).size - HEADER) / ENTRY));
        // The entries before the cut, found by bisection (their offsets grow), the last of them checked.
        let lo = 0;
        let hi = count;
        while (lo < hi) {
          const mid = (lo + hi + 1) >> 1;
          const byte = Number.parseInt(
            readAt(index.fd, HEADER + (mid - 1) * ENTRY, HEADER + mid * ENTRY)
              .toString("latin1")
              .slice(0, 12),
            16,
          );
          if (byte < cut) lo = mid;
          else hi = mid - 1;
        }
        const kept = readAt(index.fd, HEADER, HEADER + lo * ENTRY);
        const lastOk = lo === 0 || checkEntry(kept.subarray((lo - 1) * ENTRY), lo, log) !== null;
        if (lastOk) entries = rekey(kept, log.ino, newIno);
      }
    } finally {
      fs.closeSync(index.fd);
    }
  }
  if (index === null && !fs.existsSync(dir)) return;
  // Not written, the old log's index must not stay: its inode number may be a later log's once this log is gone.
  tryWrite(
    () => replaceIndex(path, tmp, headerBytes(newIno), entries),
    () => fs.rmSync(path, { force: true }),
  );
}

/** Entries of the index of inode `from` rewritten for inode `to` (the check names the inode). */
function rekey(bytes: Buffer, from: number, to: number): string {
  let out = "";
  for (let n = 1; n * ENTRY <= bytes.length; n++) {
    const [offset, hash, check] = bytes.toString("latin1", (n - 1) * ENTRY, n * ENTRY).split(" ");
    // An entry that does not check out ends what is carried over (the rest is built again when needed).
    if (offset === undefined || hash === undefined || check !== fnv(`${from}:${n}:${offset}:${hash}`)) break;
    out += entryBytes(to, n, Number.parseInt(offset, 16), hash);
  }
  return out;
}

function replaceIndex(path: string, tmp: string, header: Buffer, entries: string): void {
  const fd = fs.openSync(tmp, "wx");
  try {
    writeAll(fd, Buffer.concat([header, Buffer.from(entries)]));
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, path);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    throw error;
  }
}

/** Runs a write of the index; a failure leaves the index as it was (see the top of this file). */
function tryWrite(write: () => void, otherwise?: () => void): void {
  try {
    write();
  } catch {
    // A hint that could not be written: the reads it would have helped read the log from an earlier line.
    if (otherwise) tryWrite(otherwise);
  }
}

/** What is wrong with the index of the open log (for `agentix doctor`), or `null` when it checks out or is absent. */
export function indexProblem(dir: string, log: OpenLog): string | null {
  const index = openIndex(join(dir, INDEX));
  if (index === null) return null;
  try {
    const size = fs.fstatSync(index.fd).size;
    const ino = headerIno(readAt(index.fd, 0, HEADER));
    if (ino === null) return "a damaged header";
    if (ino !== log.ino) return "the index of another log (stale)";
    if (size < HEADER || (size - HEADER) % ENTRY !== 0) return "a torn last entry";
    for (let n = 1; HEADER + n * ENTRY <= size; n++) {
      if (checkEntry(readAt(index.fd, HEADER + (n - 1) * ENTRY, HEADER + n * ENTRY), n, log) === null) {
        return `entry ${n} does not check out against the log`;
      }
    }
    return null;
  } finally {
    fs.closeSync(index.fd);
  }
}

/** A temporary name for an index written by a reader: in the store's `tmp/`, `null` when that is missing. */
export function tmpIn(base: string, sessionId: string): () => string | null {
  return () => {
    const tmp = join(base, "tmp");
    return fs.existsSync(tmp) ? join(tmp, `${sessionId}.${randomBytes(6).toString("hex")}.index`) : null;
  };
}
