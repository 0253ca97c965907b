/*
 * The agent index's listing file, `agents/<key>/index.slots`: what makes a listing cost its page, not the agent's
 * sessions. One 80-byte slot per session of the agent:
 *
 *   <updated_at> <session_id> <state> <check><spaces>\n      state: l (live) or d (deleted); check: FNV-1a
 *
 * A session's slot number is in its index entry (`agents/<key>/<session_id>` holds `<slot>\n`). Slots are
 * allocated at the end of the file under the agent's lock and never move. Every write that moves a session's
 * `updated_at` (create, fork, import, append, edit, update) first writes the new value into its slot, under the
 * session's lock, so a slot is an upper bound of its session's `updated_at`, and exact once the write is done;
 * a delete marks the slot after the session is gone. A listing reads the file (8 MB at 100,000 sessions), orders
 * the slots and reads only the sessions of its page: each one is read anyway for its record, and one whose record
 * says less than its slot (a write in flight, or killed before its log write) takes its place by its record.
 * Damage (a slot whose check fails, a file cut mid-slot) and a record that says more than its slot make the
 * listing read every session, as it did before the index existed; `agentix doctor --repair` rebuilds the file.
 * A missing file is built from the entries by the first listing or create of the agent.
 */
import * as fs from "node:fs";
import { join } from "node:path";
import { errno, ifExists, readAt, writeAll } from "./io.js";

export const SLOTS = "index.slots";
export const SLOT_BYTES = 80;
const BODY = 24 + 1 + 36 + 1 + 1;
/** `<updated_at> <session_id>`: the listing order is this part's, descending. */
const KEY = 24 + 1 + 36;
const CHUNK = SLOT_BYTES * 50_000;

/** One slot as read. */
export interface Slot {
  slot: number;
  /** `updated_at`, a space and `session_id`: the listing order is this string's, descending. */
  key: string;
  live: boolean;
}

/** A slot's bytes. */
export function encodeSlot(updatedAt: string, sessionId: string, live: boolean): Buffer {
  const body = `${updatedAt} ${sessionId} ${live ? "l" : "d"}`;
  return Buffer.from(`${`${body} ${checksum(body)}`.padEnd(SLOT_BYTES - 1)}\n`, "latin1");
}

/** The slots of an index file, or `null` when there is none; `damaged` when some slot does not check out. */
export function readSlots(path: string): { slots: Slot[]; damaged: boolean } | null {
  return withIndex(path, "r", (fd) => {
    const size = fs.fstatSync(fd).size;
    const slots: Slot[] = [];
    let damaged = size % SLOT_BYTES !== 0;
    // Read 4 MB at a time, in whole slots.
    for (let at = 0; at + SLOT_BYTES <= size; at += CHUNK) {
      const chunk = readAt(fd, at, Math.min(size - (size % SLOT_BYTES), at + CHUNK));
      for (let i = 0; i + SLOT_BYTES <= chunk.length; i += SLOT_BYTES) {
        const slot = (at + i) / SLOT_BYTES;
        // A slot met while its writer rewrites it may be torn: it is read once more.
        const parsed = parseSlot(chunk, i, slot) ?? parseSlot(readAt(fd, at + i, at + i + SLOT_BYTES), 0, slot);
        if (parsed === null) damaged = true;
        else slots.push(parsed);
      }
    }
    return { slots, damaged };
  });
}

/** What {@link newestSlots} found: the greatest keys in ascending order, and whether there were more. */
export interface Newest {
  keys: string[];
  /** More live keys passed the cursor than `want`. */
  cut: boolean;
  damaged: boolean;
}

/**
 * The `want` greatest keys of the live slots below `before` (all of them when fewer), `null` when there is no
 * file: what a page of a listing needs. Every slot is checked as {@link readSlots} checks it, but on its bytes: a
 * key becomes a string only when it beats the least of the keys kept so far, and the file is read from its end,
 * where new sessions' slots are, so that in a store written in time order most slots are passed over at once.
 * `before` must be ASCII (a cursor of a real session is: an ISO time and a UUID).
 */
export function newestSlots(path: string, want: number, before: string | undefined): Newest | null {
  return withIndex(path, "r", (fd) => {
    const size = fs.fstatSync(fd).size;
    const whole = size - (size % SLOT_BYTES);
    const below = before === undefined ? undefined : Buffer.from(before, "latin1");
    /** The kept keys, ascending, and the least of them as bytes (once `want` are kept). */
    const keys: string[] = [];
    let least: Buffer | undefined;
    let cut = false;
    let damaged = size % SLOT_BYTES !== 0;
    for (let end = whole; end > 0; end -= CHUNK) {
      const from = Math.max(0, end - CHUNK);
      const chunk = readAt(fd, from, end);
      for (let i = chunk.length - SLOT_BYTES; i >= 0; i -= SLOT_BYTES) {
        let buffer = chunk;
        let at = i;
        if (!slotChecks(buffer, at)) {
          // A slot met while its writer rewrites it may be torn: it is read once more.
          buffer = readAt(fd, from + i, from + i + SLOT_BYTES);
          at = 0;
          if (buffer.length < SLOT_BYTES || !slotChecks(buffer, at)) {
            damaged = true;
            continue;
          }
        }
        if (buffer[at + BODY - 1] !== 0x6c) continue; // deleted
        if (below && buffer.compare(below, 0, below.length, at, at + KEY) >= 0) continue;
        const vs = least ? buffer.compare(least, 0, KEY, at, at + KEY) : 1;
        if (vs === 0) continue; // the same session twice (a slot copied by hand): once is enough
        if (vs < 0) {
          cut = true;
          continue;
        }
        const key = buffer.toString("latin1", at, at + KEY);
        let lo = 0;
        for (let hi = keys.length; lo < hi; ) {
          const mid = (lo + hi) >>> 1;
          if ((keys[mid] as string) < key) lo = mid + 1;
          else hi = mid;
        }
        if (keys[lo] === key) continue;
        keys.splice(lo, 0, key);
        if (keys.length > want) {
          keys.shift();
          cut = true;
        }
        if (keys.length === want) least = Buffer.from(keys[0] as string, "latin1");
      }
    }
    return { keys, cut, damaged };
  });
}

/** Whether the slot at `i` is whole and its check is its body's: FNV-1a over the bytes, without a string. */
function slotChecks(buffer: Buffer, i: number): boolean {
  if (buffer[i + SLOT_BYTES - 1] !== 0x0a) return false;
  let hash = 0x811c9dc5;
  for (let k = i; k < i + BODY; k++) hash = Math.imul(hash ^ (buffer[k] as number), 0x01000193);
  hash >>>= 0;
  for (let d = 0; d < 8; d++) {
    const nibble = (hash >>> (28 - 4 * d)) & 15;
    if (buffer[i + BODY + 1 + d] !== (nibble < 10 ? 48 + nibble : 87 + nibble)) return false;
  }
  return true;
}

function parseSlot(buffer: Buffer, i: number, slot: number): Slot | null {
  const body = buffer.toString("latin1", i, i + BODY);
  const check = buffer.toString("latin1", i + BODY + 1, i + BODY + 9);
  if (buffer[i + SLOT_BYTES - 1] !== 0x0a || check !== checksum(body)) return null;
  const state = body.charCodeAt(BODY - 1);
  return { slot, key: body.slice(0, 61), live: state === 0x6c };
}

/**
 * Appends a slot (the caller holds the agent's lock) and returns its number. A file cut mid-slot (a killed
 * allocation) is first filled up to a whole slot, which reads as damaged until a repair.
 */
export function appendSlot(path: string, bytes: Buffer, fsync: boolean): number | null {
  return withIndex(path, fs.constants.O_WRONLY, (fd) => {
    const size = fs.fstatSync(fd).size;
    const slot = Math.ceil(size / SLOT_BYTES);
    writeAll(fd, bytes, slot * SLOT_BYTES);
    if (fsync) fs.fdatasyncSync(fd);
    return slot;
  });
}

/** The slot number an index entry holds, `null` for an entry without one (written before the index existed). */
export function slotOf(entry: string): number | null {
  const text = ifExists(() => fs.readFileSync(entry, "latin1"));
  const slot = text === null ? Number.NaN : Number.parseInt(text, 10);
  return Number.isSafeInteger(slot) && slot >= 0 ? slot : null;
}

/** The path of the index file of an agent directory. */
export function slotsPath(agentDir: string): string {
  return join(agentDir, SLOTS);
}

function withIndex<T>(path: string, flags: string | number, use: (fd: number) => T): T | null {
  let fd: number;
  try {
    fd = fs.openSync(path, flags);
  } catch (error) {
    if (errno(error) === "ENOENT") return null;
    throw error;
  }
  try {
    return use(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** FNV-1a of a slot's body, as 8 hex digits. */
function checksum(body: string): string {
  let hash = 0x811c9dc5;
  for (let i = 0; i < body.length; i++) hash = Math.imul(hash ^ body.charCodeAt(i), 0x01000193);
  return (hash >>> 0).toString(16).padStart(8, "0");
}
