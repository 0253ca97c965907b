// Small synchronous file helpers shared by the File backend's modules.
import * as fs from "node:fs";

/**
 * Bytes read by {@link readAt} in this process, in all and in one call at most: what the tests measure to check
 * that a read stays local and that no log is read into one Buffer.
 */
export const bytesRead = { total: 0, largest: 0 };

/** The bytes `[from, to)` of an open file (fewer if it ends first). */
export function readAt(fd: number, from: number, to: number): Buffer {
  const buffer = Buffer.allocUnsafe(to - from);
  let done = 0;
  for (let n = 1; done < buffer.length && n > 0; done += n) {
    n = fs.readSync(fd, buffer, done, buffer.length - done, from + done);
  }
  bytesRead.total += done;
  if (done > bytesRead.largest) bytesRead.largest = done;
  return buffer.subarray(0, done);
}

/** Copies the bytes `[from, to)` of an open file to the end of another, a chunk at a time. */
export function copyRange(source: number, target: number, from: number, to: number): void {
  for (let at = from; at < to; ) {
    const chunk = readAt(source, at, Math.min(to, at + (4 << 20)));
    if (chunk.length === 0) throw new Error(`the file ended at ${at}, before ${to}`);
    writeAll(target, chunk);
    at += chunk.length;
  }
}

/** One write call for the whole buffer (looping only if the kernel writes less); with O_APPEND it lands at the end. */
export function writeAll(fd: number, buffer: Buffer, position?: number): void {
  for (let done = 0; done < buffer.length; ) {
    done += fs.writeSync(fd, buffer, done, buffer.length - done, position === undefined ? null : position + done);
  }
}

/** Opens `path`, runs `use` and closes it; `null` when the file does not exist. */
export function withFile<T>(path: string, flags: string | number, use: (fd: number) => T): T | null {
  const fd = ifExists(() => fs.openSync(path, flags));
  if (fd === null) return null;
  try {
    return use(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** `run()`, or `null` when it fails because a file is missing (absent, or deleted meanwhile). */
export function ifExists<T>(run: () => T): T | null {
  try {
    return run();
  } catch (error) {
    if (errno(error) === "ENOENT") return null;
    throw error;
  }
}

export function errno(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}
