// A fork's log: a byte prefix of the source's committed log, every line checked, copied unparsed.
import * as fs from "node:fs";
import { join } from "node:path";
import { withFile } from "./io.js";
import { LineReader, offsetOf, parseLine } from "./lines.js";
import { COUNT, committedEnd, copyPrefix, countTo, LOG, readCount, writeCount } from "./log.js";

/**
 * Fills a fork's log with the first `length` messages (all when `undefined`) of the source's committed log, a
 * byte prefix copied unparsed from one open log (the source may be replaced meanwhile), and writes its count
 * (from the source's record when that is the log's). `false` when the source is gone; its length when that is
 * less than `length`.
 */
export function copyLog(
  source: string,
  log: string,
  count: string,
  length: number | undefined,
  fsync: boolean,
): boolean | number {
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
      if (fsync) fs.fsyncSync(out);
      writeCount(count, { count: length ?? total, bytes: copied, ino: fs.fstatSync(out).ino });
    } finally {
      fs.closeSync(out);
    }
    return true;
  });
  return copied ?? false; // null: the source was deleted meanwhile
}
