// The agent index of the File store: `agents/<key>/` holds one entry per session (its slot number) and the
// listing file (src/file/listing.ts). Listings and scans by agent are served from it; this module keeps it
// up to date for the backend, which calls it under the session's lock.
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { join } from "node:path";
import { compareSessions, cwdOf } from "../core/records.js";
import type { SessionQuery, SessionRecord } from "../core/types.js";
import { errno, ifExists, readAt, writeAll } from "./io.js";
import {
  appendSlot,
  encodeSlot,
  type Newest,
  newestSlots,
  readSlots,
  SLOT_BYTES,
  type Slot,
  slotOf,
  slotsPath,
} from "./listing.js";
import { agentKey, sessionIds } from "./session.js";

/** What the index needs of the backend. */
export interface IndexContext {
  base: string;
  fsync: boolean;
  /** The session's record; `null` when it is missing or damaged (which is reported). */
  read(sessionId: string): SessionRecord | null;
  /** Runs `run` holding the lock `name` (a file name in `locks/`). */
  lock<T>(name: string, run: () => T): T;
  /** Runs `run` holding the session's lock. */
  lockSession<T>(sessionId: string, run: () => T): T;
  syncDir(path: string): void;
}

/** Where a session's slot is: remembered per backend, checked before each use. */
interface Place {
  path: string;
  slot: number;
}

const PLACES_KEPT = 4096;
const READ_ONLY = new Set(["EACCES", "EPERM", "EROFS"]);

export class AgentIndex {
  readonly #ctx: IndexContext;
  readonly #places = new Map<string, Place>();
  /** The ids of an agent's slots in id order, for scans, with the size of the file they were read from. */
  readonly #scans = new Map<string, { ino: number; size: number; ids: string[] }>();

  constructor(ctx: IndexContext) {
    this.#ctx = ctx;
  }

  agentDir(agentId: string): string {
    return join(this.#ctx.base, "agents", agentKey(agentId));
  }

  /**
   * Gives a new session (its directory not yet in place) a slot holding `updatedAt` and returns the bytes of
   * its index entry; `null` when the agent has no listing file and none can be made. The caller holds the
   * session's lock.
   */
  allocate(agentId: string, sessionId: string, updatedAt: string): Buffer | null {
    const path = slotsPath(this.agentDir(agentId));
    const slot = this.#ctx.lock(lockName(agentId), () => {
      if (!fs.existsSync(path) && !this.#build(agentId)) return null;
      return appendSlot(path, encodeSlot(updatedAt, sessionId, true), this.#ctx.fsync);
    });
    if (slot === null) return null;
    this.#remember(sessionId, { path, slot });
    return Buffer.from(`${slot}\n`);
  }

  /**
   * Before a write that moves the session's `updated_at` to `at`: its slot says `at` (an upper bound until the
   * write is done). `agentOf` gives the session's agent when its slot is not remembered.
   */
  raise(sessionId: string, agentOf: () => string, at: string): void {
    const bytes = encodeSlot(at, sessionId, true);
    const known = this.#places.get(sessionId);
    if (known && this.#rewrite(known, sessionId, bytes)) return;
    const place = this.#find(sessionId, agentOf());
    if (place && this.#rewrite(place, sessionId, bytes)) this.#remember(sessionId, place);
  }

  /** After a delete: the session's slot marked deleted. */
  drop(sessionId: string, agentId: string, at: string): void {
    const place = this.#places.get(sessionId) ?? this.#find(sessionId, agentId);
    this.#places.delete(sessionId);
    if (place) this.#rewrite(place, sessionId, encodeSlot(at, sessionId, false));
  }

  /** The listing from the slots; `null` when they cannot be trusted (damaged, missing): read every session then. */
  list(agentId: string, query: SessionQuery, whole = false): SessionRecord[] | null {
    const dir = this.agentDir(agentId);
    const before = query.before && `${query.before.updated_at} ${query.before.session_id}`;
    const limit = query.limit ?? Number.POSITIVE_INFINITY;
    // A page needs about its own number of candidates: the newest few are picked from the slots' bytes without
    // sorting them all (when they run out, as records that move down or a cwd filter may make them, the listing
    // is made again from all).
    const want = whole || query.cwd !== undefined ? Number.POSITIVE_INFINITY : limit * 2 + 32;
    const read = () =>
      Number.isFinite(want) && (before === undefined || ASCII.test(before))
        ? newestSlots(slotsPath(dir), want, before)
        : allSlots(slotsPath(dir), before);
    let index = read();
    if (index === null) {
      if (!fs.existsSync(dir)) return [];
      index = this.#tryBuild(agentId) ? read() : null;
    }
    if (index === null || index.damaged) return null;
    const { keys, cut } = index;
    const page: SessionRecord[] = [];
    const seen = new Set<string>();
    /** Sessions read whose record says less than their slot, in listing order: they wait for their place. */
    const held: SessionRecord[] = [];
    for (let i = keys.length - 1; page.length < limit; ) {
      const next = i >= 0 ? (keys[i] as string) : undefined;
      const first = held[0];
      if (first && (next === undefined || keyOf(first) > next)) {
        page.push(held.shift() as SessionRecord);
        continue;
      }
      if (next === undefined) break;
      i--;
      const id = next.slice(25);
      if (seen.has(id)) continue;
      seen.add(id);
      const record = this.#ctx.read(id);
      if (!record || record.agent_id !== agentId) continue;
      const key = keyOf(record);
      if (key > next) {
        // A slot behind its session (a write not made by this index's writers): fixed, and this listing read whole.
        this.#heal(id, agentId);
        return null;
      }
      if (query.cwd !== undefined && cwdOf(record.metadata) !== query.cwd) continue;
      if (key === next) page.push(record);
      else {
        const at = held.findIndex((h) => compareSessions(record, h) < 0);
        held.splice(at === -1 ? held.length : at, 0, record);
      }
    }
    return cut && page.length < limit ? this.list(agentId, query, true) : page;
  }

  /** A page of the agent's sessions in id order after `after`; `null` without a trustworthy listing file. */
  scan(agentId: string, after: string | null, limit: number): SessionRecord[] | null {
    const path = slotsPath(this.agentDir(agentId));
    const stat = fs.statSync(path, { throwIfNoEntry: false });
    if (!stat) return null;
    let cached = this.#scans.get(agentId);
    if (!cached || cached.ino !== stat.ino || cached.size !== stat.size) {
      const index = readSlots(path);
      if (!index || index.damaged) return null;
      const ids = [...new Set(index.slots.filter((s) => s.live).map((s) => s.key.slice(25)))].sort();
      cached = { ino: stat.ino, size: stat.size, ids };
      this.#scans.set(agentId, cached);
      if (this.#scans.size > 16) this.#scans.delete(this.#scans.keys().next().value as string);
    }
    const { ids } = cached;
    // Slots are only ever added (a delete marks its slot): ids cached for this size are every session's.
    let lo = 0;
    for (let hi = ids.length; lo < hi; ) {
      const mid = (lo + hi) >>> 1;
      if (after !== null && (ids[mid] as string) <= after) lo = mid + 1;
      else hi = mid;
    }
    const page: SessionRecord[] = [];
    for (let i = lo; i < ids.length && page.length < limit; i++) {
      const record = this.#ctx.read(ids[i] as string);
      if (record && record.agent_id === agentId) page.push(record);
    }
    return page;
  }

  /**
   * Makes the agent's listing file again from its entries and their sessions (what `agentix doctor --repair`
   * does): the old file, if any, is moved aside (`index.slots.corrupt-<time>`). Returns the number of slots.
   */
  rebuild(agentId: string, aside: string | undefined): number {
    return this.#ctx.lock(lockName(agentId), () => {
      const path = slotsPath(this.agentDir(agentId));
      if (aside !== undefined) ifExists(() => fs.renameSync(path, aside));
      else ifExists(() => fs.rmSync(path));
      this.#places.clear();
      this.#scans.delete(agentId);
      this.#build(agentId);
      return readSlots(path)?.slots.length ?? 0;
    });
  }

  /** What a check finds wrong with the agent's listing file (for `agentix doctor`), or `null`. */
  problem(agentId: string): string | null {
    const dir = this.agentDir(agentId);
    const index = readSlots(slotsPath(dir));
    if (index === null) return "no listing file (index.slots)";
    if (index.damaged) return "a damaged listing file (index.slots)";
    const live = new Map<string, string>();
    for (const s of index.slots) if (s.live) live.set(s.key.slice(25), s.key);
    for (const id of sessionIds(dir)) {
      const record = this.#ctx.read(id);
      if (!record || record.agent_id !== agentId) continue;
      const key = live.get(id);
      if (key === undefined) return `session ${id} has no slot in the listing file`;
      if (keyOf(record) > key) return `session ${id}'s slot is behind its updated_at`;
    }
    return null;
  }

  #tryBuild(agentId: string): boolean {
    try {
      return this.#ctx.lock(
        lockName(agentId),
        () => fs.existsSync(slotsPath(this.agentDir(agentId))) || this.#build(agentId),
      );
    } catch (error) {
      if (READ_ONLY.has(errno(error) ?? "")) return false; // a store this process may read but not write
      throw error;
    }
  }

  /** Writes the listing file from the entries (holding the agent's lock); `false` when the agent has no directory. */
  #build(agentId: string): boolean {
    const dir = this.agentDir(agentId);
    if (!fs.existsSync(dir)) return false;
    const slots: Buffer[] = [];
    const entries: Array<[string, number]> = [];
    for (const id of sessionIds(dir)) {
      const record = this.#ctx.read(id);
      if (!record || record.agent_id !== agentId) continue;
      entries.push([id, slots.length]);
      slots.push(encodeSlot(record.updated_at, id, true));
    }
    const path = slotsPath(dir);
    const tmp = `${path}.${randomBytes(6).toString("hex")}`;
    const fd = fs.openSync(tmp, "wx");
    try {
      for (let i = 0; i < slots.length; i += 4096) writeAll(fd, Buffer.concat(slots.slice(i, i + 4096)));
      if (this.#ctx.fsync) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, path);
    // The entries learn their slots once the file is in place: a writer that finds one finds the file.
    for (const [id, slot] of entries) writeEntry(join(dir, id), Buffer.from(`${slot}\n`), this.#ctx.fsync);
    this.#ctx.syncDir(dir);
    return true;
  }

  /** Under the session's lock, its slot set to what its record says (the record is read again there). */
  #heal(sessionId: string, agentId: string): void {
    try {
      this.#ctx.lockSession(sessionId, () => {
        const record = this.#ctx.read(sessionId);
        if (record?.agent_id === agentId) this.raise(sessionId, () => agentId, record.updated_at);
      });
    } catch (error) {
      if (!READ_ONLY.has(errno(error) ?? "")) throw error;
    }
  }

  #find(sessionId: string, agentId: string): Place | null {
    const dir = this.agentDir(agentId);
    const slot = slotOf(join(dir, sessionId));
    return slot === null ? null : { path: slotsPath(dir), slot };
  }

  /** Writes the slot if it holds the session (live); `false` when it does not (a stale memory, a rebuilt file). */
  #rewrite(place: Place, sessionId: string, bytes: Buffer): boolean {
    const fd = ifExists(() => fs.openSync(place.path, fs.constants.O_RDWR));
    if (fd === null) return false;
    try {
      const at = place.slot * SLOT_BYTES;
      const current = readAt(fd, at, at + SLOT_BYTES).toString("latin1", 25, 63);
      if (current !== `${sessionId} l`) return false;
      writeAll(fd, bytes, at);
      if (this.#ctx.fsync) fs.fdatasyncSync(fd);
      return true;
    } finally {
      fs.closeSync(fd);
    }
  }

  #remember(sessionId: string, place: Place): void {
    this.#places.delete(sessionId);
    this.#places.set(sessionId, place);
    if (this.#places.size > PLACES_KEPT) this.#places.delete(this.#places.keys().next().value as string);
  }
}

/** An index entry's new content, by rename: a reader sees the old entry or the new one. */
export function writeEntry(entry: string, bytes: Buffer, fsync: boolean): void {
  const tmp = `${entry}.${randomBytes(6).toString("hex")}`;
  const fd = fs.openSync(tmp, "wx");
  try {
    writeAll(fd, bytes);
    if (fsync) fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, entry);
}

const ASCII = /^[\x20-\x7e]*$/;

/** Every live key below `before`, ascending: a whole listing's candidates. */
function allSlots(path: string, before: string | undefined): Newest | null {
  const index = readSlots(path);
  if (index === null) return null;
  const keys: string[] = [];
  for (const s of index.slots) if (s.live && (before === undefined || s.key < before)) keys.push(s.key);
  return { keys: keys.sort(), cut: false, damaged: index.damaged };
}

function lockName(agentId: string): string {
  return `agent.${agentKey(agentId)}.lock`;
}

function keyOf(record: SessionRecord): string {
  return `${record.updated_at} ${record.session_id}`;
}

export type { Slot };
