// The File backend's per-session lock: a directory made by proper-lockfile.
import * as fs from "node:fs";
import lockfile from "proper-lockfile";
import { AgentixStorageError } from "../core/errors.js";
import { errno } from "./io.js";

/** A lock older than this was left by a crashed process and is taken over (an append holds it for milliseconds). */
const LOCK_STALE_MS = 10_000;
const LOCK_WAIT_MS = 15_000;
const SLEEPER = new Int32Array(new SharedArrayBuffer(4));
/**
 * The only fs functions proper-lockfile calls: its sync API copies the fs object it is given on every lock, and
 * copying all of graceful-fs took about a third of an append's time.
 */
const LOCK_FS = {
  mkdirSync: fs.mkdirSync,
  realpathSync: fs.realpathSync,
  statSync: fs.statSync,
  rmdirSync: fs.rmdirSync,
  utimesSync: fs.utimesSync,
};

/**
 * Runs `run` holding the lock `lockfilePath` of the session directory `dir`: a directory made by proper-lockfile
 * with mkdir (atomic on every file system, NFS included), taken over once stale when a crashed process left it.
 * Its `lockSync` does not retry and the backend cannot await, so the loop sleeps with `Atomics.wait`, which blocks
 * this thread only. The lock is never held across an `await`, so proper-lockfile's refresh timer never has to run.
 */
export function withLock<T>(lockfilePath: string, dir: string, sessionId: string, run: () => T): T {
  const deadline = performance.now() + LOCK_WAIT_MS;
  let release: (() => void) | undefined;
  for (let attempt = 0; !release; attempt++) {
    try {
      release = lockfile.lockSync(dir, { lockfilePath, realpath: false, stale: LOCK_STALE_MS, fs: LOCK_FS });
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
