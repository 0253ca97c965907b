/**
 * Streamed imports into the File store (`importSession` given an iterable): the session's log is written under
 * `tmp/` one chunk at a time, then moved into the new session's directory, which is renamed into place as every new
 * session is (FileStorageBackend's publish step): readers see the whole session or none of it. A crash leaves a
 * file under `tmp/`, which nothing reads (`agentix doctor --repair` removes stale ones). Internal to `agentix/file`.
 * @module
 */
import fs from "node:fs";
import type { MessageRecord, StagedImport } from "../core/types.js";
import { writeAll } from "./io.js";
import { toLine, writeCount } from "./log.js";

interface Staging {
  /** The log being written, under `tmp/`. */
  path: string;
  /** Its size, and its number of lines. */
  bytes: number;
  count: number;
}

/** The logs of the streamed imports under way, by stage. */
export class FileImports {
  readonly #staged = new Map<string, Staging>();

  constructor(readonly fsync: boolean) {}

  /** Starts the import's log at `path` (a fresh temporary name). */
  begin({ stage }: StagedImport, path: string): true {
    fs.closeSync(fs.openSync(path, "wx"));
    this.#staged.set(stage, { path, bytes: 0, count: 0 });
    return true;
  }

  /** Appends the chunk's lines to the import's log, in one write. */
  stage({ stage }: StagedImport, messages: MessageRecord[]): true {
    const staging = this.#get(stage);
    const chunk = Buffer.from(messages.map(toLine).join(""));
    const fd = fs.openSync(staging.path, "a");
    try {
      writeAll(fd, chunk);
    } finally {
      fs.closeSync(fd);
    }
    staging.bytes += chunk.length;
    staging.count += messages.length;
    return true;
  }

  /**
   * Moves the import's log to `log` in the new session's directory (still under a temporary name) and writes its
   * count record beside it at `count`: the publish step's `fillLog`.
   */
  moveTo({ stage }: StagedImport, log: string, count: string): true {
    const staging = this.#get(stage);
    if (this.fsync) {
      const fd = fs.openSync(staging.path, "r");
      try {
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    }
    fs.renameSync(staging.path, log);
    this.#staged.delete(stage);
    writeCount(count, { count: staging.count, bytes: staging.bytes, ino: fs.statSync(log).ino });
    return true;
  }

  /** Removes the import's log, if it is still there. */
  discard({ stage }: StagedImport): void {
    const staging = this.#staged.get(stage);
    this.#staged.delete(stage);
    if (staging) fs.rmSync(staging.path, { force: true });
  }

  #get(stage: string): Staging {
    const staging = this.#staged.get(stage);
    if (!staging) throw new Error(`import ${stage} was not begun or is over`);
    return staging;
  }
}
