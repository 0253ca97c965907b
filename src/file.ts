import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { dirname, join } from "node:path";
import lockfile from "proper-lockfile";
import { z } from "zod";
import { type ForkTarget, SyncStorageBackend } from "./core/backend.js";
import { latest } from "./core/clock.js";
import { AgentixStorageError } from "./core/errors.js";
import { DEFAULT_BASE_PATH, expandHome } from "./core/paths.js";
import { compareSessions, cwdOf, isAfter, sessionRecord } from "./core/records.js";
import type { MessageRecord, SessionQuery, SessionRecord } from "./core/types.js";
import { isSessionId, parseOptions } from "./core/validation.js";

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
}

const optionsSchema = z.strictObject({ basePath: z.string().min(1).optional(), fsync: z.boolean().optional() });

const META = "session.json";
const LOG = "messages.jsonl";
const NL = 0x0a;
/** A line written here ends with its timestamp: `JSON.stringify` keeps the key order role, content, timestamp. */
const LINE_TIMESTAMP = /"timestamp":"([^"]{24})"\}\n$/;
/** In session.json, `updated_at` follows the fixed-length `session_id` and `created_at`: it is in the first bytes. */
const HEAD_UPDATED_AT = /"updated_at": "([^"]{24})"/;
/** A lock older than this was left by a crashed process and is taken over (an append holds it for milliseconds). */
const LOCK_STALE_MS = 10_000;
const LOCK_WAIT_MS = 15_000;
const TMP_MAX_AGE_MS = 3_600_000;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));

/**
 * Sessions as files a person can read (the default backend): per session a
 * directory with `session.json` (the record) and `messages.jsonl` (an
 * append-only log, one message per line), plus an index directory per agent.
 * A session exists once its directory has been renamed into place, complete.
 * Several processes may share the base directory: appends and deletes take a
 * per-session lock; everything else needs none.
 */
export class FileStorageBackend extends SyncStorageBackend {
  readonly #base: string;
  readonly #fsync: boolean;
  #ready = false;

  constructor(options: FileStorageOptions = {}) {
    super();
    const o = parseOptions(optionsSchema, options, "FileStorageBackend");
    this.#base = expandHome(o.basePath ?? DEFAULT_BASE_PATH);
    this.#fsync = o.fsync ?? false;
  }

  /** The absolute directory the sessions are stored in. */
  get basePath(): string {
    return this.#base;
  }

  protected insertSession(record: SessionRecord): void {
    this.#publish(record, (log) => this.#writeNew(log, []));
  }

  protected readSession(sessionId: string): SessionRecord | null {
    const dir = this.#dir(sessionId);
    const s = readStored(dir);
    // The later of the session's own updated_at (creation, fork, import) and its last message's timestamp.
    const updatedAt = s && withFile(join(dir, LOG), "r", (fd) => latest(s.updated_at, lastTimestamp(fd) ?? ""));
    return s && updatedAt ? sessionRecord(s.session_id, s.agent_id, s.created_at, updatedAt, s.metadata) : null;
  }

  protected querySessions(agentId: string, query: SessionQuery): SessionRecord[] {
    const matches: SessionRecord[] = [];
    for (const id of sessionIds(this.#agentDir(agentId))) {
      const record = this.readSession(id);
      // Skipped: an entry whose session is not (or no longer) in place, or, after a hash collision, another agent's.
      if (!record || record.agent_id !== agentId) continue;
      if (query.cwd !== undefined && cwdOf(record.metadata) !== query.cwd) continue;
      if (query.before && !isAfter(record, query.before)) continue;
      matches.push(record);
    }
    return matches.sort(compareSessions).slice(0, query.limit);
  }

  protected copySession(sessionId: string, target: ForkTarget): boolean {
    const source = this.#dir(sessionId);
    const stored = readStored(source);
    if (!stored) return false;
    const at = target.created_at;
    return this.#publish(sessionRecord(target.session_id, stored.agent_id, at, at, stored.metadata), (log) => {
      const copied = ifExists(() => fs.copyFileSync(join(source, LOG), log, fs.constants.COPYFILE_FICLONE));
      if (copied === null) return false; // the source was deleted meanwhile
      // The copy may end in a line still being appended (or torn by a crash): it keeps whole lines only.
      withFile(log, "r+", (fd) => {
        fs.ftruncateSync(fd, completeEnd(fd, fs.fstatSync(fd).size));
        if (this.#fsync) fs.fsyncSync(fd);
      });
      return true;
    });
  }

  protected removeSession(sessionId: string): void {
    if (!fs.existsSync(this.#dir(sessionId))) return;
    this.#locked(sessionId, () => {
      // Renamed away first, so that the session disappears at once, then removed.
      const trash = this.#tmpName(sessionId);
      if (ifExists(() => fs.renameSync(this.#dir(sessionId), trash)) === null) return;
      try {
        this.#syncDir(join(this.#base, "sessions"));
        const { agent_id } = readStored(trash) as SessionRecord;
        fs.rmSync(join(this.#agentDir(agent_id), sessionId), { force: true });
        this.#syncDir(this.#agentDir(agent_id));
      } finally {
        fs.rmSync(trash, { recursive: true, force: true });
      }
    });
  }

  protected appendMessage(sessionId: string, message: MessageRecord): boolean {
    const dir = this.#dir(sessionId);
    const log = join(dir, LOG);
    if (!fs.existsSync(dir)) return false;
    return this.#locked(sessionId, () => {
      // Only the head of session.json and the tail of the log are read: an append costs the same at any log size.
      const tail = withFile(log, "r", (fd) => {
        const size = fs.fstatSync(fd).size;
        const end = completeEnd(fd, size);
        return { last: lastTimestamp(fd, size), torn: end < size ? readAt(fd, 0, end) : null };
      });
      if (tail === null) return false; // deleted before we got the lock
      if (tail.torn) {
        // A writer was killed mid-append: the log is replaced (not truncated, for readers) by its whole lines.
        const fixed = this.#tmpName(sessionId);
        this.#writeNew(fixed, [tail.torn]);
        fs.renameSync(fixed, log);
        this.#syncDir(dir);
      }
      const floor = updatedAtFloor(join(dir, META));
      const timestamp = latest(message.timestamp, latest(floor, tail.last ?? floor));
      const line = Buffer.from(toLine({ ...message, timestamp }));
      withFile(log, fs.constants.O_WRONLY | fs.constants.O_APPEND, (fd) => {
        const size = fs.fstatSync(fd).size;
        try {
          writeAll(fd, line);
          if (this.#fsync) fs.fdatasyncSync(fd);
        } catch (error) {
          fs.ftruncateSync(fd, size); // leave no partial line behind a failed write
          throw error;
        }
      });
      return true;
    });
  }

  protected readMessages(sessionId: string, last: number | undefined): MessageRecord[] | null {
    return withFile(join(this.#dir(sessionId), LOG), "r", (fd) => {
      const end = completeEnd(fd, fs.fstatSync(fd).size);
      return parseLines(last === undefined ? readAt(fd, 0, end) : readTail(fd, end, last));
    });
  }

  protected override scanPage(after: string | null, limit: number, agentId: string | undefined): SessionRecord[] {
    const dir = agentId === undefined ? join(this.#base, "sessions") : this.#agentDir(agentId);
    const page: SessionRecord[] = [];
    for (const id of sessionIds(dir).sort()) {
      if (page.length === limit) break;
      if (after !== null && id <= after) continue;
      const record = this.readSession(id);
      if (record && (agentId === undefined || record.agent_id === agentId)) page.push(record);
    }
    return page;
  }

  protected override insertImported(record: SessionRecord, messages: MessageRecord[]): boolean {
    if (fs.existsSync(this.#dir(record.session_id))) return false;
    return this.#publish(record, (log) => this.#writeNew(log, messages.map(toLine)));
  }

  /** Nothing to release: every call opens and closes its own files. */
  protected dispose(): void {}

  /**
   * Makes a session exist, all at once: its directory is filled under a
   * temporary name, then renamed into place. The agent's index entry comes
   * first; readers skip an entry without a session. `false` when the id exists
   * already or `fillLog` finds its source gone.
   */
  #publish(record: SessionRecord, fillLog: (path: string) => boolean): boolean {
    this.#layout();
    const tmp = this.#tmpName(record.session_id);
    const dir = this.#dir(record.session_id);
    fs.mkdirSync(tmp);
    try {
      // updated_at before agent_id and metadata, so that an append finds it in the first bytes.
      const { session_id, created_at, updated_at, agent_id, metadata } = record;
      const json = JSON.stringify({ session_id, created_at, updated_at, agent_id, metadata }, null, 2);
      this.#writeNew(join(tmp, META), [`${json}\n`]);
      if (!fillLog(join(tmp, LOG))) return false;
      this.#syncDir(tmp);
      const agentDir = this.#agentDir(agent_id);
      if (fs.mkdirSync(agentDir, { recursive: true })) this.#syncDir(join(this.#base, "agents"));
      const entry = join(agentDir, session_id);
      const created = this.#writeNew(entry, [], true);
      this.#syncDir(agentDir);
      try {
        fs.renameSync(tmp, dir);
      } catch (error) {
        if (created) fs.rmSync(entry, { force: true });
        if (fs.existsSync(dir)) return false;
        throw error;
      }
      this.#syncDir(join(this.#base, "sessions"));
      return true;
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
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

  /**
   * Runs `run` holding the session's lock: a directory under `locks/` made by
   * proper-lockfile with mkdir (atomic on every file system, NFS included),
   * taken over once stale when a crashed process left it. Its `lockSync` does
   * not retry and this backend cannot await, so the loop sleeps with
   * `Atomics.wait`, which blocks this thread only. The lock is never held
   * across an `await`, so proper-lockfile's refresh timer never has to run.
   */
  #locked<T>(sessionId: string, run: () => T): T {
    this.#layout();
    const lockfilePath = join(this.#base, "locks", `${sessionId}.lock`);
    const deadline = performance.now() + LOCK_WAIT_MS;
    let release: (() => void) | undefined;
    for (let attempt = 0; !release; attempt++) {
      try {
        release = lockfile.lockSync(this.#dir(sessionId), { lockfilePath, realpath: false, stale: LOCK_STALE_MS });
      } catch (error) {
        if (errno(error) !== "ELOCKED") throw error;
        if (performance.now() > deadline) {
          const message = `session ${sessionId} stayed locked by another process (${lockfilePath})`;
          throw new AgentixStorageError(message, { cause: error });
        }
        Atomics.wait(SLEEPER, 0, 0, 1 + Math.random() * Math.min(2 ** attempt, 20));
      }
    }
    try {
      return run();
    } finally {
      release();
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
    return join(this.#base, "tmp", `${sessionId}.${randomBytes(6).toString("hex")}`);
  }
}

/**
 * An agent's directory name: a slug for people plus the SHA-256 of the exact id.
 * The hash makes it injective (also on case-insensitive file systems) and short
 * (at most 113 bytes for any id); the slug has no dot, so no name is "." or "..".
 */
function agentKey(agentId: string): string {
  const slug = agentId
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, "_")
    .slice(0, 48);
  return `${slug}.${createHash("sha256").update(agentId).digest("hex")}`;
}

/** A message as one log line; `updated_at` lookups rely on `timestamp` being its last key. */
function toLine(m: MessageRecord): string {
  return `${JSON.stringify({ role: m.role, content: m.content, timestamp: m.timestamp })}\n`;
}

/** A session's session.json, or `null` when it is not (or no longer) there. */
function readStored(dir: string): SessionRecord | null {
  return ifExists(() => JSON.parse(fs.readFileSync(join(dir, META), "utf8")) as SessionRecord);
}

/** The session ids in a directory: anything else there (a temporary name) is not one. */
function sessionIds(dir: string): string[] {
  return ifExists(() => fs.readdirSync(dir).filter(isSessionId)) ?? [];
}

/** The session's own `updated_at`, read from the head of session.json (parsed whole only if edited by hand). */
function updatedAtFloor(path: string): string {
  const head = withFile(path, "r", (fd) => HEAD_UPDATED_AT.exec(readAt(fd, 0, 160).toString("latin1"))?.[1]);
  return head ?? (JSON.parse(fs.readFileSync(path, "utf8")) as SessionRecord).updated_at;
}

/** The timestamp of the log's last whole line, from its last bytes; `undefined` when it has none. */
function lastTimestamp(fd: number, size = fs.fstatSync(fd).size): string | undefined {
  const fast = LINE_TIMESTAMP.exec(readAt(fd, Math.max(0, size - 64), size).toString("latin1"))?.[1];
  if (fast !== undefined) return fast;
  // A torn last line, or a line not written by agentix: the last whole line is parsed.
  const end = completeEnd(fd, size);
  return end === 0 ? undefined : parseLines(readTail(fd, end, 1))[0]?.timestamp;
}

/** Where the whole lines end: just after the last "\n" (0 when there is none). */
function completeEnd(fd: number, size: number): number {
  for (let end = size, chunk = 64; end > 0; chunk = Math.min(chunk * 8, 1 << 22)) {
    const from = Math.max(0, end - chunk);
    const i = readAt(fd, from, end).lastIndexOf(NL);
    if (i !== -1) return from + i + 1;
    end = from;
  }
  return 0;
}

/** The last `n` lines before `end` (which follows a "\n"), read backwards: the rest of the log is never read. */
function readTail(fd: number, end: number, n: number): Buffer {
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

/** Parses whole lines one at a time, so that no log has to fit in one string. */
function parseLines(buffer: Buffer): MessageRecord[] {
  const messages: MessageRecord[] = [];
  for (let from = 0, i = buffer.indexOf(NL); i !== -1; from = i + 1, i = buffer.indexOf(NL, from)) {
    messages.push(JSON.parse(buffer.toString("utf8", from, i)) as MessageRecord);
  }
  return messages;
}

function readAt(fd: number, from: number, to: number): Buffer {
  const buffer = Buffer.allocUnsafe(to - from);
  let done = 0;
  for (let n = 1; done < buffer.length && n > 0; done += n) {
    n = fs.readSync(fd, buffer, done, buffer.length - done, from + done);
  }
  return buffer.subarray(0, done);
}

/** One write call per line (looping only if the kernel writes less); with O_APPEND it lands at the end. */
function writeAll(fd: number, buffer: Buffer): void {
  for (let done = 0; done < buffer.length; ) done += fs.writeSync(fd, buffer, done, buffer.length - done);
}

/** Opens `path`, runs `use` and closes it; `null` when the file does not exist. */
function withFile<T>(path: string, flags: string | number, use: (fd: number) => T): T | null {
  const fd = ifExists(() => fs.openSync(path, flags));
  if (fd === null) return null;
  try {
    return use(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** `run()`, or `null` when it fails because a file is missing (absent, or deleted meanwhile). */
function ifExists<T>(run: () => T): T | null {
  try {
    return run();
  } catch (error) {
    if (errno(error) === "ENOENT") return null;
    throw error;
  }
}

function errno(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}
