// The File store's directories and the small writes every operation shares: paths, temporary names, new files,
// session.json rewrites, log replacements, directory fsyncs, the session lock, and the layout made on demand.
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { dirname, join } from "node:path";
import { sessionRecord } from "../core/records.js";
import type { SessionRecord } from "../core/types.js";
import { errno, withFile, writeAll } from "./io.js";
import { withLock } from "./lock.js";
import { carryOver } from "./positions.js";
import { agentKey, META, metaJson, type Pending, settledRecord } from "./session.js";

const TMP_MAX_AGE_MS = 3_600_000;

export class Layout {
  readonly base: string;
  readonly fsync: boolean;
  #ready = false;

  constructor(base: string, fsync: boolean) {
    this.base = base;
    this.fsync = fsync;
  }

  dir(sessionId: string): string {
    return join(this.base, "sessions", sessionId);
  }

  agentDir(agentId: string): string {
    return join(this.base, "agents", agentKey(agentId));
  }

  tmpName(sessionId: string): string {
    // Made again when removed by hand (rarely on the path of an append: only a repair needs a temporary name).
    const tmp = join(this.base, "tmp");
    if (fs.mkdirSync(tmp, { recursive: true }) !== undefined) this.syncDir(this.base);
    return join(tmp, `${sessionId}.${randomBytes(6).toString("hex")}`);
  }

  syncDir(path: string): void {
    // Windows cannot open a directory to fsync it.
    if (this.fsync && process.platform !== "win32") withFile(path, "r", fs.fsyncSync);
  }

  /** Writes a new file, fsynced when asked; `false` when it exists and `mayExist`. */
  writeNew(path: string, chunks: Array<string | Buffer>, mayExist = false): boolean {
    let fd: number;
    try {
      fd = fs.openSync(path, "wx");
    } catch (error) {
      if (mayExist && errno(error) === "EEXIST") return false;
      throw error;
    }
    try {
      for (const chunk of chunks) writeAll(fd, Buffer.from(chunk));
      if (this.fsync) fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    return true;
  }

  /** Rewrites session.json (temp file, rename; pending when told: see src/file/session.ts) and returns the record. */
  writeMeta(sessionId: string, record: SessionRecord, pending?: Pending): SessionRecord {
    const dir = this.dir(sessionId);
    const json = metaJson(record, pending);
    const tmp = this.tmpName(sessionId);
    this.writeNew(tmp, [json]);
    try {
      fs.renameSync(tmp, join(dir, META));
    } catch (error) {
      fs.rmSync(tmp, { force: true });
      throw error;
    }
    this.syncDir(dir);
    const s = JSON.parse(json) as SessionRecord;
    return sessionRecord(s.session_id, s.agent_id, s.created_at, s.updated_at, s.metadata);
  }

  /** Replaces the log by its first `end` bytes (with a rename, never truncated: readers may have it open). */
  replaceLog(sessionId: string, log: string, end: number): void {
    this.settle(sessionId);
    const fixed = this.tmpName(sessionId);
    fs.copyFileSync(log, fixed, fs.constants.COPYFILE_FICLONE);
    const ino = withFile(fixed, "r+", (fd) => {
      fs.ftruncateSync(fd, end);
      if (this.fsync) fs.fsyncSync(fd);
      return fs.fstatSync(fd).ino;
    }) as number;
    // The position index of the kept part, first (see src/file/positions.ts).
    withFile(log, "r", (fd) =>
      carryOver(dirname(log), { fd, ino: fs.fstatSync(fd).ino, end }, end, ino, this.tmpName(sessionId)),
    );
    fs.renameSync(fixed, log);
    this.syncDir(dirname(log));
  }

  /** Writes a pending session.json plain, as it resolves, before the log is replaced (see src/file/session.ts). */
  settle(sessionId: string): void {
    const record = settledRecord(this.dir(sessionId), sessionId);
    if (record) this.writeMeta(sessionId, record);
  }

  /** Runs `run` holding the session's lock (see src/file/lock.ts). */
  locked<T>(sessionId: string, run: () => T): T {
    this.prepare();
    const locks = join(this.base, "locks");
    const lock = () => withLock(join(locks, `${sessionId}.lock`), this.dir(sessionId), sessionId, run);
    try {
      return lock();
    } catch (error) {
      // `locks/` (or more) removed by hand since this backend made it: made again, and the lock taken then.
      if (errno(error) !== "ENOENT" || fs.existsSync(locks)) throw error;
      this.#ready = false;
      this.prepare();
      return lock();
    }
  }

  /** Creates the directories, once, and removes what a crash left in `tmp/`. */
  prepare(): void {
    if (this.#ready) return;
    const made = ["sessions", "agents", "locks", "tmp"].map((n) =>
      fs.mkdirSync(join(this.base, n), { recursive: true }),
    );
    const first = made.find((path) => path !== undefined);
    // Every directory from the base up to the parent of the first one created gains an entry.
    for (let dir = this.base; first !== undefined; dir = dirname(dir)) {
      this.syncDir(dir);
      if (dir === dirname(first) || dir === dirname(dir)) break;
    }
    for (const name of fs.readdirSync(join(this.base, "tmp"))) {
      const path = join(this.base, "tmp", name);
      const mtime = fs.statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? Date.now();
      if (mtime < Date.now() - TMP_MAX_AGE_MS) fs.rmSync(path, { recursive: true, force: true });
    }
    this.#ready = true;
  }
}
