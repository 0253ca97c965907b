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
import { appendLog } from "./file/append.js";
import { checked } from "./file/checked.js";
import { copyLog } from "./file/copy.js";
import { editLog } from "./file/edit.js";
import { FileImports } from "./file/import.js";
import { ifExists, withFile } from "./file/io.js";
import { Layout } from "./file/layout.js";
import { PageMarks } from "./file/lines.js";
import { withLock } from "./file/lock.js";
import { COUNT, committedEnd, countTo, LOG, logTail, readCount, toLine, writeCount } from "./file/log.js";
import { SeenEntries, tmpIn } from "./file/positions.js";
import { readRange } from "./file/read.js";
import { META, metaJson, readStored, sessionIds } from "./file/session.js";

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
  readonly #fs: Layout;
  readonly #pages = new PageMarks();
  readonly #seen = new SeenEntries();
  readonly #onCorrupt: (error: CorruptSessionError) => void;
  readonly #warned = new Set<string>();
  readonly #index: AgentIndex;
  #imports: FileImports | undefined;

  constructor(options: FileStorageOptions = {}) {
    super();
    const o = parseOptions(optionsSchema, options, "FileStorageBackend");
    this.#base = expandHome(o.basePath ?? DEFAULT_BASE_PATH);
    this.#fs = new Layout(this.#base, o.fsync ?? false);
    this.#onCorrupt =
      o.onCorruptSession ??
      ((error) => {
        if (this.#warned.has(error.sessionId)) return;
        this.#warned.add(error.sessionId);
        process.emitWarning(error.message, { code: "AGENTIX_CORRUPT_SESSION" });
      });
    this.#index = new AgentIndex({
      base: this.#base,
      fsync: this.#fs.fsync,
      read: (id) => this.#readOrReport(id),
      lock: (name, run) => {
        this.#fs.prepare();
        return withLock(join(this.#base, "locks", name), this.#base, name, run);
      },
      lockSession: (id, run) => this.#locked(id, run),
      syncDir: (path) => this.#fs.syncDir(path),
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
      return this.#fs.writeMeta(sessionId, { ...current, updated_at: updatedAt, metadata });
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
      const copied = this.#checked(sessionId, () => copyLog(source, log, count, target.length, this.#fs.fsync));
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
      const trash = this.#fs.tmpName(sessionId);
      if (ifExists(() => fs.renameSync(this.#dir(sessionId), trash)) === null) return;
      try {
        this.#fs.syncDir(join(this.#base, "sessions"));
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
          if (ifExists(() => fs.rmSync(join(agentDir, sessionId))) !== null) this.#fs.syncDir(agentDir);
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
    const raiseIndex = (at: string) => this.#index.raise(sessionId, () => this.#agentOf(dir, sessionId), at);
    return this.#locked(sessionId, () =>
      this.#checked(sessionId, () => appendLog({ layout: this.#fs, raiseIndex }, sessionId, dir, messages)),
    );
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
            fsync: this.#fs.fsync,
            tmpName: () => this.#fs.tmpName(sessionId),
            syncDir: (path) => this.#fs.syncDir(path),
            writeMeta: (at, metadata, commitIno) => {
              const current = readStored(dir, sessionId) as SessionRecord;
              const record = {
                ...current,
                updated_at: latest(current.updated_at, at),
                metadata: metadata === undefined ? current.metadata : metadata,
              };
              const pending = commitIno === undefined ? undefined : { commitIno, priorMetadata: current.metadata };
              this.#fs.writeMeta(sessionId, record, pending);
            },
            settle: () => this.#fs.settle(sessionId),
            replaceLog: (log, end) => this.#fs.replaceLog(sessionId, log, end),
            raiseIndex: (at) => this.#index.raise(sessionId, () => this.#agentOf(dir, sessionId), at),
          },
          edit,
        ),
      ),
    );
  }

  protected readMessages(sessionId: string, range: MessageRange): MessageRecord[] | null {
    const tmpName = tmpIn(this.#base, sessionId);
    return this.#checked(sessionId, () =>
      readRange(this.#dir(sessionId), sessionId, range, this.#pages, tmpName, this.#seen),
    );
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
    this.#imports ??= new FileImports(this.#fs.fsync);
    return !fs.existsSync(this.#dir(id)) && this.#imports.begin(staged, this.#fs.tmpName(id));
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
      const tmp = this.#fs.tmpName(session_id);
      fs.mkdirSync(tmp);
      try {
        this.#writeNew(join(tmp, META), [metaJson(record)]);
        if (!fillLog(join(tmp, LOG), join(tmp, COUNT))) return "gone";
        this.#fs.syncDir(tmp);
        const agentDir = this.#agentDir(agent_id);
        if (fs.mkdirSync(agentDir, { recursive: true })) this.#fs.syncDir(join(this.#base, "agents"));
        // Its slot in the listing file holds the new session's updated_at (its last copied message may be later).
        const last = withFile(join(tmp, LOG), "r", (fd) => logTail(fd, fs.fstatSync(fd).size).last);
        const slot = this.#index.allocate(agent_id, session_id, latest(record.updated_at, last ?? ""));
        const entry = join(agentDir, session_id);
        const created = this.#writeNew(entry, slot === null ? [] : [slot], true);
        this.#fs.syncDir(agentDir);
        // `sessions/` too is made again when removed by hand.
        if (fs.mkdirSync(dirname(dir), { recursive: true }) !== undefined) this.#fs.syncDir(this.#base);
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
        if (!created && slot !== null) writeEntry(entry, slot, this.#fs.fsync);
        this.#fs.syncDir(join(this.#base, "sessions"));
        return "stored";
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    };
    return this.#locked(session_id, publish);
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
    return checked(this.#dir(sessionId), sessionId, run);
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

  /** Writes a new file, fsynced when asked; `false` when it exists and `mayExist`. */
  #writeNew(path: string, chunks: Array<string | Buffer>, mayExist = false): boolean {
    return this.#fs.writeNew(path, chunks, mayExist);
  }

  #locked<T>(sessionId: string, run: () => T): T {
    return this.#fs.locked(sessionId, run);
  }

  #dir(sessionId: string): string {
    return this.#fs.dir(sessionId);
  }

  #agentDir(agentId: string): string {
    return this.#fs.agentDir(agentId);
  }
}
