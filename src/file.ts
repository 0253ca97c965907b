import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { dirname, join } from "node:path";
import { z } from "zod";
import { type ForkTarget, SyncStorageBackend } from "./core/backend.js";
import { latest, now } from "./core/clock.js";
import { AgentixStorageError, CorruptSessionError } from "./core/errors.js";
import { DEFAULT_BASE_PATH, expandHome } from "./core/paths.js";
import { compareSessions, cwdOf, isAfter, sessionRecord } from "./core/records.js";
import type {
  CopyOutcome,
  EditOutcome,
  JsonObject,
  MessageEdit,
  MessageRange,
  MessageRecord,
  SessionQuery,
  SessionRecord,
  StagedImport,
} from "./core/types.js";
import { parseOptions } from "./core/validation.js";
import { AgentIndex, writeEntry } from "./file/agents.js";
import { DamagedFile, DamagedLine } from "./file/damage.js";
import { editLog } from "./file/edit.js";
import { FileImports } from "./file/import.js";
import { errno, ifExists, withFile, writeAll } from "./file/io.js";
import { KeyFile } from "./file/keys.js";
import { LineReader, offsetOf, PageMarks, parseLine, readLines } from "./file/lines.js";
import { withLock } from "./file/lock.js";
import {
  COUNT,
  committedEnd,
  copyPrefix,
  countLines,
  countTo,
  encodeBatch,
  LOG,
  logTail,
  openCount,
  parseLines,
  readCount,
  readCountAt,
  readTail,
  toLine,
  writeCount,
  writeCountAt,
} from "./file/log.js";
import { agentKey, META, metaJson, readStored, sessionIds, updatedAtFloor } from "./file/session.js";

/** Options of {@link FileStorageBackend}. */
export interface FileStorageOptions {
  /**
   * The directory that holds every session; created on the first write, `~` expanded.
   * @default "~/.agentix/projects"
   */
  basePath?: string;
  /**
   * Make every write durable before the call returns: fsync the file and, after a rename, its directory.
   * Without it, a returned call survives a crash of the process but not of the machine.
   * @default false
   */
  fsync?: boolean;
  /**
   * Told about each damaged session that a listing (`listSessions`) or a scan (`scanSessions`, and so
   * `agentix export` and `copy`) skipped. The damaged session's own calls throw the same
   * {@link CorruptSessionError}; `agentix doctor --repair` quarantines the damage.
   * @default a process warning (`process.emitWarning`), once per session and backend
   */
  onCorruptSession?: (error: CorruptSessionError) => void;
}

const optionsSchema = z.strictObject({
  basePath: z.string().min(1).optional(),
  fsync: z.boolean().optional(),
  onCorruptSession: z
    .custom<(error: CorruptSessionError) => void>((v) => typeof v === "function", "must be a function")
    .optional(),
});

const TMP_MAX_AGE_MS = 3_600_000;
const APPEND = fs.constants.O_RDWR | fs.constants.O_APPEND;
/** What making a session exist came to: stored, the id taken already, or the source of a copy gone. */
type Published = "stored" | "taken" | "gone";

/**
 * Sessions as files a person can read (the default backend): per session a
 * directory with `session.json` (the record), `messages.jsonl` (an append-only
 * log, one message per line; batches framed as src/file/log.ts describes) and
 * `messages.count` (a cache of the message count), `keys.jsonl` (idempotency
 * keys, src/file/keys.ts), plus an index directory per agent. A session exists
 * once its directory has been renamed into place, complete. Several processes
 * may share the base directory: writes take a per-session lock (a fork, its
 * new id's); reads take none. Edits that drop messages replace the log by
 * rename (src/file/edit.ts), so a reader reads one log to its end.
 */
export class FileStorageBackend extends SyncStorageBackend {
  readonly #base: string;
  readonly #fsync: boolean;
  readonly #pages = new PageMarks();
  readonly #onCorrupt: (error: CorruptSessionError) => void;
  readonly #warned = new Set<string>();
  readonly #index: AgentIndex;
  #imports: FileImports | undefined;
  #ready = false;

  constructor(options: FileStorageOptions = {}) {
    super();
    const o = parseOptions(optionsSchema, options, "FileStorageBackend");
    this.#base = expandHome(o.basePath ?? DEFAULT_BASE_PATH);
    this.#fsync = o.fsync ?? false;
    this.#onCorrupt =
      o.onCorruptSession ??
      ((error) => {
        if (this.#warned.has(error.sessionId)) return;
        this.#warned.add(error.sessionId);
        process.emitWarning(error.message, { code: "AGENTIX_CORRUPT_SESSION" });
      });
    this.#index = new AgentIndex({
      base: this.#base,
      fsync: this.#fsync,
      read: (id) => this.#readOrReport(id),
      lock: (name, run) => {
        this.#layout();
        return withLock(join(this.#base, "locks", name), this.#base, name, run);
      },
      lockSession: (id, run) => this.#locked(id, run),
      syncDir: (path) => this.#syncDir(path),
    });
  }

  /** The absolute directory the sessions are stored in. */
  get basePath(): string {
    return this.#base;
  }

  protected insertSession(record: SessionRecord): SessionRecord | null {
    for (let attempt = 0; ; attempt++) {
      // Most get-or-creates find the session: it is read, and nothing is written or locked.
      const existing = this.readSession(record.session_id);
      if (existing) return existing;
      if (this.#publish(record, (log) => this.#writeNew(log, [])) === "stored") return null;
      // Taken meanwhile: the winner is read on the next turn (or, deleted again since, the insert is retried).
      if (attempt === 2) {
        throw new AgentixStorageError(`session ${record.session_id}: its directory holds no readable session`);
      }
    }
  }

  protected readSession(sessionId: string): SessionRecord | null {
    return this.#checked(sessionId, () => {
      const dir = this.#dir(sessionId);
      const s = readStored(dir, sessionId);
      // The later of the session's own updated_at (creation, fork, import, update) and its last message's timestamp.
      const updatedAt =
        s && withFile(join(dir, LOG), "r", (fd) => latest(s.updated_at, logTail(fd, fs.fstatSync(fd).size).last ?? ""));
      return s && updatedAt ? sessionRecord(s.session_id, s.agent_id, s.created_at, updatedAt, s.metadata) : null;
    });
  }

  protected querySessions(agentId: string, query: SessionQuery): SessionRecord[] {
    const listed = this.#index.list(agentId, query);
    if (listed !== null) return listed;
    // Without a listing file that can be trusted (none can be made, or it is damaged): every session is read.
    const matches: SessionRecord[] = [];
    for (const id of sessionIds(this.#agentDir(agentId))) {
      const record = this.#readOrReport(id);
      // Skipped: an entry whose session is not (or no longer) in place, or, after a hash collision, another agent's.
      if (!record || record.agent_id !== agentId) continue;
      if (query.cwd !== undefined && cwdOf(record.metadata) !== query.cwd) continue;
      if (query.before && !isAfter(record, query.before)) continue;
      matches.push(record);
    }
    return matches.sort(compareSessions).slice(0, query.limit);
  }

  protected replaceMetadata(sessionId: string, metadata: JsonObject | null, at: string): SessionRecord | null {
    const dir = this.#dir(sessionId);
    if (!fs.existsSync(dir)) return null;
    return this.#locked(sessionId, () => {
      const current = this.readSession(sessionId);
      if (!current) return null; // deleted before we got the lock
      const updatedAt = latest(current.updated_at, at);
      this.#index.raise(sessionId, () => current.agent_id, updatedAt);
      return this.#writeMeta(sessionId, { ...current, updated_at: updatedAt, metadata });
    });
  }

  protected copySession(sessionId: string, target: ForkTarget): CopyOutcome {
    const source = this.#dir(sessionId);
    const stored = this.#checked(sessionId, () => readStored(source, sessionId));
    if (!stored) return { status: "not-found" };
    if (fs.existsSync(this.#dir(target.session_id))) return { status: "exists" };
    const at = target.created_at;
    const metadata = target.metadata === undefined ? stored.metadata : target.metadata;
    const record = sessionRecord(target.session_id, stored.agent_id, at, at, metadata);
    let short: number | undefined;
    const published = this.#publish(record, (log, count) => {
      const copied = this.#checked(sessionId, () => this.#copyLog(source, log, count, target.length));
      if (typeof copied === "number") short = copied;
      return copied === true;
    });
    if (published === "stored") return { status: "copied" };
    if (published === "taken") return { status: "exists" };
    return short === undefined ? { status: "not-found" } : { status: "out-of-range", length: short };
  }

  protected removeSession(sessionId: string): void {
    if (!fs.existsSync(this.#dir(sessionId))) return;
    this.#locked(sessionId, () => {
      // Renamed away first, so that the session disappears at once, then removed.
      const trash = this.#tmpName(sessionId);
      if (ifExists(() => fs.renameSync(this.#dir(sessionId), trash)) === null) return;
      try {
        this.#syncDir(join(this.#base, "sessions"));
        let agentId: string | undefined;
        try {
          agentId = readStored(trash, sessionId)?.agent_id;
        } catch {
          // A damaged session.json does not say whose the session was: its entry is looked for in every agent's index.
        }
        const agentDirs =
          agentId === undefined
            ? (ifExists(() => fs.readdirSync(join(this.#base, "agents"))) ?? []).map((n) =>
                join(this.#base, "agents", n),
              )
            : [this.#agentDir(agentId)];
        for (const agentDir of agentDirs) {
          if (ifExists(() => fs.rmSync(join(agentDir, sessionId))) !== null) this.#syncDir(agentDir);
        }
        if (agentId !== undefined) this.#index.drop(sessionId, agentId, now());
      } finally {
        fs.rmSync(trash, { recursive: true, force: true });
      }
    });
  }

  protected appendMessages(sessionId: string, messages: MessageRecord[]): number | null {
    const dir = this.#dir(sessionId);
    if (!fs.existsSync(dir)) return null;
    return this.#locked(sessionId, () => this.#checked(sessionId, () => this.#append(sessionId, dir, messages)));
  }

  /** {@link FileStorageBackend.appendMessages} under the session's lock. */
  #append(sessionId: string, dir: string, messages: MessageRecord[]): number | null {
    {
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
          this.#replaceLog(sessionId, log, tail.end);
          fd = fs.openSync(log, APPEND);
          ({ size, ino } = fs.fstatSync(fd));
        }
        const floor = updatedAtFloor(join(dir, META), sessionId);
        const timestamp = latest((messages[0] as MessageRecord).timestamp, latest(floor, tail.last ?? floor));
        const batch = encodeBatch(messages, timestamp);
        this.#index.raise(sessionId, () => this.#agentOf(dir, sessionId), timestamp);
        try {
          writeAll(fd, batch);
          if (this.#fsync) fs.fdatasyncSync(fd);
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
  }

  protected readLength(sessionId: string): number | null {
    const dir = this.#dir(sessionId);
    // The record first: appends made after it is read only add lines after the offset it holds.
    const record = readCount(join(dir, COUNT));
    return withFile(join(dir, LOG), "r", (fd) => {
      const { size, ino } = fs.fstatSync(fd);
      return countTo(fd, ino, committedEnd(fd, size), record);
    });
  }

  protected editMessages(sessionId: string, edit: MessageEdit): EditOutcome {
    const dir = this.#dir(sessionId);
    if (!fs.existsSync(dir)) return { status: "not-found" };
    return this.#locked(sessionId, () =>
      this.#checked(sessionId, () =>
        editLog(
          {
            dir,
            sessionId,
            fsync: this.#fsync,
            tmpName: () => this.#tmpName(sessionId),
            syncDir: (path) => this.#syncDir(path),
            raiseUpdatedAt: (at) => {
              const current = readStored(dir, sessionId) as SessionRecord;
              this.#writeMeta(sessionId, { ...current, updated_at: latest(current.updated_at, at) });
            },
            replaceLog: (log, end) => this.#replaceLog(sessionId, log, end),
            raiseIndex: (at) => this.#index.raise(sessionId, () => this.#agentOf(dir, sessionId), at),
          },
          edit,
        ),
      ),
    );
  }

  protected readMessages(sessionId: string, range: MessageRange): MessageRecord[] | null {
    return this.#checked(sessionId, () => this.#read(sessionId, range));
  }

  #read(sessionId: string, range: MessageRange): MessageRecord[] | null {
    return withFile(join(this.#dir(sessionId), LOG), "r", (fd) => {
      const { size, ino } = fs.fstatSync(fd);
      const end = committedEnd(fd, size);
      if ("last" in range) {
        const tail = readTail(fd, end, range.last);
        return parseLines(tail, end - tail.length);
      }
      // A page starts where the previous page of this log ended, when that is known (and still checks out).
      const start = range.offset === 0 ? undefined : this.#pages.find(sessionId, fd, ino, end, range.offset);
      // With a mark, the first chunk is sized for the page from the mean line length so far (plus a margin).
      const perLine = start && start.position > 0 ? start.byte / start.position : 0;
      const reader = new LineReader(fd, start?.byte ?? 0, end, (range.limit ?? 0) * perLine * 1.25 + 4096);
      const skip = range.offset - (start?.position ?? 0);
      const skipped = reader.skip(skip);
      const messages = skipped < skip ? [] : readLines(reader, range.limit);
      this.#pages.remember(sessionId, fd, ino, end, (start?.position ?? 0) + skipped + messages.length, reader.offset);
      return messages;
    });
  }

  protected override scanPage(after: string | null, limit: number, agentId: string | undefined): SessionRecord[] {
    const indexed = agentId === undefined ? null : this.#index.scan(agentId, after, limit);
    if (indexed !== null) return indexed;
    const dir = agentId === undefined ? join(this.#base, "sessions") : this.#agentDir(agentId);
    const page: SessionRecord[] = [];
    for (const id of sessionIds(dir).sort()) {
      if (page.length === limit) break;
      if (after !== null && id <= after) continue;
      const record = this.#readOrReport(id);
      if (record && (agentId === undefined || record.agent_id === agentId)) page.push(record);
    }
    return page;
  }

  protected override insertImported(record: SessionRecord, messages: MessageRecord[]): boolean {
    if (fs.existsSync(this.#dir(record.session_id))) return false;
    const published = this.#publish(record, (log, count) => {
      const lines = messages.map(toLine);
      this.#writeNew(log, lines);
      const bytes = lines.reduce((sum, line) => sum + Buffer.byteLength(line), 0);
      writeCount(count, { count: lines.length, bytes, ino: fs.statSync(log).ino });
      return true;
    });
    return published === "stored";
  }

  // A streamed import: its log written under tmp/, moved in by the publish step (see src/file/import.ts).
  protected override beginImport(staged: StagedImport): boolean {
    const id = staged.record.session_id;
    this.#imports ??= new FileImports(this.#fsync);
    return !fs.existsSync(this.#dir(id)) && this.#imports.begin(staged, this.#tmpName(id));
  }
  protected override stageMessages(staged: StagedImport, _offset: number, messages: MessageRecord[]): boolean {
    return (
      !fs.existsSync(this.#dir(staged.record.session_id)) && (this.#imports as FileImports).stage(staged, messages)
    );
  }
  protected override publishImport(staged: StagedImport): boolean {
    const imports = this.#imports as FileImports;
    return this.#publish(staged.record, (log, count) => imports.moveTo(staged, log, count)) === "stored";
  }
  protected override discardImport(staged: StagedImport): void {
    this.#imports?.discard(staged);
  }

  /** Nothing to release: every call opens and closes its own files. */
  protected dispose(): void {}

  /**
   * Makes a session exist, all at once: its directory is filled under a
   * temporary name (`fillLog` writes the log and may write its count record),
   * then renamed into place; the rename fails if the id is taken. The agent's
   * index entry comes first; readers skip an entry without a session. Under
   * the session's lock (also for a fork: its id may be the caller's), so that
   * a delete of the same id cannot remove the index entry of a session created
   * meanwhile.
   */
  #publish(record: SessionRecord, fillLog: (log: string, count: string) => boolean): Published {
    const { session_id, agent_id } = record;
    const publish = (): Published => {
      const dir = this.#dir(session_id);
      if (fs.existsSync(dir)) return "taken";
      const tmp = this.#tmpName(session_id);
      fs.mkdirSync(tmp);
      try {
        this.#writeNew(join(tmp, META), [metaJson(record)]);
        if (!fillLog(join(tmp, LOG), join(tmp, COUNT))) return "gone";
        this.#syncDir(tmp);
        const agentDir = this.#agentDir(agent_id);
        if (fs.mkdirSync(agentDir, { recursive: true })) this.#syncDir(join(this.#base, "agents"));
        // Its slot in the listing file holds the new session's updated_at (its last copied message may be later).
        const last = withFile(join(tmp, LOG), "r", (fd) => logTail(fd, fs.fstatSync(fd).size).last);
        const slot = this.#index.allocate(agent_id, session_id, latest(record.updated_at, last ?? ""));
        const entry = join(agentDir, session_id);
        const created = this.#writeNew(entry, slot === null ? [] : [slot], true);
        this.#syncDir(agentDir);
        // `sessions/` too is made again when removed by hand.
        if (fs.mkdirSync(dirname(dir), { recursive: true }) !== undefined) this.#syncDir(this.#base);
        try {
          fs.renameSync(tmp, dir);
        } catch (error) {
          // Another writer won (only after taking over a stale lock): its entry stays if it is this agent's.
          const winner = fs.existsSync(dir) ? this.#ownerOf(session_id) : undefined;
          if (created && winner !== agent_id) fs.rmSync(entry, { force: true });
          this.#index.drop(session_id, agent_id, record.updated_at);
          if (winner === undefined) throw error;
          return "taken";
        }
        // An entry left by a session of this id deleted in a crash learns the new slot once the session is in place.
        if (!created && slot !== null) writeEntry(entry, slot, this.#fsync);
        this.#syncDir(join(this.#base, "sessions"));
        return "stored";
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    };
    return this.#locked(session_id, publish);
  }

  /**
   * Fills a fork's log with the first `length` messages (all when `undefined`) of the source's committed log, a
   * byte prefix copied unparsed from one open log (the source may be replaced meanwhile), and writes its count
   * (from the source's record when that is the log's). `false` when the source is gone; its length when that is
   * less than `length`.
   */
  #copyLog(source: string, log: string, count: string, length: number | undefined): boolean | number {
    const record = readCount(join(source, COUNT));
    const copied = withFile(join(source, LOG), "r", (fd) => {
      const { size, ino } = fs.fstatSync(fd);
      const end = committedEnd(fd, size);
      const total = countTo(fd, ino, end, record);
      if (length !== undefined && length > total) return total;
      const bytes = length === undefined ? end : offsetOf(fd, end, total, length);
      // Every line is checked before anything is copied: a fork never copies a line that is not a message.
      const reader = new LineReader(fd, 0, bytes);
      for (let at = reader.offset, line = reader.next(); line !== undefined; at = reader.offset, line = reader.next()) {
        parseLine(line, at);
      }
      const out = fs.openSync(log, "wx");
      try {
        const copied = copyPrefix(fd, out, bytes);
        if (this.#fsync) fs.fsyncSync(out);
        writeCount(count, { count: length ?? total, bytes: copied, ino: fs.fstatSync(out).ino });
      } finally {
        fs.closeSync(out);
      }
      return true;
    });
    return copied ?? false; // null: the source was deleted meanwhile
  }

  /** The agent of the session in `dir` (which exists: the caller holds its lock). */
  #agentOf(dir: string, sessionId: string): string {
    return (readStored(dir, sessionId) as SessionRecord).agent_id;
  }

  /** The agent of a session in place, `null` when its session.json is missing or damaged. */
  #ownerOf(sessionId: string): string | null {
    try {
      return readStored(this.#dir(sessionId), sessionId)?.agent_id ?? null;
    } catch {
      return null;
    }
  }

  /** `run()`, with damage met on the way thrown as the {@link CorruptSessionError} it is. */
  #checked<T>(sessionId: string, run: () => T): T {
    try {
      return run();
    } catch (error) {
      if (error instanceof DamagedFile) {
        throw new CorruptSessionError(sessionId, error.file, undefined, error.message);
      }
      if (error instanceof DamagedLine) {
        const log = join(this.#dir(sessionId), LOG);
        // The line's number is counted only now: the reads that meet damage do not count what they skip.
        const at = error.at;
        const line = at === undefined ? null : withFile(log, "r", (fd) => countLines(fd, 0, at) + 1);
        throw new CorruptSessionError(sessionId, log, line ?? undefined, error.message);
      }
      throw error;
    }
  }

  /** The session for a listing or a scan: a damaged one is reported and skipped. */
  #readOrReport(sessionId: string): SessionRecord | null {
    try {
      return this.readSession(sessionId);
    } catch (error) {
      if (!(error instanceof CorruptSessionError)) throw error;
      this.#onCorrupt(error);
      return null;
    }
  }

  /** Rewrites session.json (temp file, rename) and returns the record written. */
  #writeMeta(sessionId: string, record: SessionRecord): SessionRecord {
    const dir = this.#dir(sessionId);
    const json = metaJson(record);
    const tmp = this.#tmpName(sessionId);
    this.#writeNew(tmp, [json]);
    try {
      fs.renameSync(tmp, join(dir, META));
    } catch (error) {
      fs.rmSync(tmp, { force: true });
      throw error;
    }
    this.#syncDir(dir);
    const s = JSON.parse(json) as SessionRecord;
    return sessionRecord(s.session_id, s.agent_id, s.created_at, s.updated_at, s.metadata);
  }

  /** Replaces the log by its first `end` bytes (with a rename, never truncated: readers may have it open). */
  #replaceLog(sessionId: string, log: string, end: number): void {
    const fixed = this.#tmpName(sessionId);
    fs.copyFileSync(log, fixed, fs.constants.COPYFILE_FICLONE);
    withFile(fixed, "r+", (fd) => {
      fs.ftruncateSync(fd, end);
      if (this.#fsync) fs.fsyncSync(fd);
    });
    fs.renameSync(fixed, log);
    this.#syncDir(dirname(log));
  }

  /** Writes a new file, fsynced when asked; `false` when it exists and `mayExist`. */
  #writeNew(path: string, chunks: Array<string | Buffer>, mayExist = false): boolean {
    let fd: number;
    try {
      fd = fs.openSync(path, "wx");
    } catch (error) {
      if (mayExist && errno(error) === "EEXIST") return false;
      throw error;
    }
    try {
      for (const chunk of chunks) writeAll(fd, Buffer.from(chunk));
      if (this.#fsync) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    return true;
  }

  /** Runs `run` holding the session's lock (see src/file/lock.ts). */
  #locked<T>(sessionId: string, run: () => T): T {
    this.#layout();
    const locks = join(this.#base, "locks");
    const lock = () => withLock(join(locks, `${sessionId}.lock`), this.#dir(sessionId), sessionId, run);
    try {
      return lock();
    } catch (error) {
      // `locks/` (or more) removed by hand since this backend made it: made again, and the lock taken then.
      if (errno(error) !== "ENOENT" || fs.existsSync(locks)) throw error;
      this.#ready = false;
      this.#layout();
      return lock();
    }
  }

  /** Creates the directories, once, and removes what a crash left in `tmp/`. */
  #layout(): void {
    if (this.#ready) return;
    const made = ["sessions", "agents", "locks", "tmp"].map((n) =>
      fs.mkdirSync(join(this.#base, n), { recursive: true }),
    );
    const first = made.find((path) => path !== undefined);
    // Every directory from the base up to the parent of the first one created gains an entry.
    for (let dir = this.#base; first !== undefined; dir = dirname(dir)) {
      this.#syncDir(dir);
      if (dir === dirname(first) || dir === dirname(dir)) break;
    }
    for (const name of fs.readdirSync(join(this.#base, "tmp"))) {
      const path = join(this.#base, "tmp", name);
      const mtime = fs.statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? Date.now();
      if (mtime < Date.now() - TMP_MAX_AGE_MS) fs.rmSync(path, { recursive: true, force: true });
    }
    this.#ready = true;
  }

  #syncDir(path: string): void {
    // Windows cannot open a directory to fsync it.
    if (this.#fsync && process.platform !== "win32") withFile(path, "r", fs.fsyncSync);
  }

  #dir(sessionId: string): string {
    return join(this.#base, "sessions", sessionId);
  }

  #agentDir(agentId: string): string {
    return join(this.#base, "agents", agentKey(agentId));
  }

  #tmpName(sessionId: string): string {
    // Made again when removed by hand (rarely on the path of an append: only a repair needs a temporary name).
    const tmp = join(this.#base, "tmp");
    if (fs.mkdirSync(tmp, { recursive: true }) !== undefined) this.#syncDir(this.#base);
    return join(tmp, `${sessionId}.${randomBytes(6).toString("hex")}`);
  }
}
