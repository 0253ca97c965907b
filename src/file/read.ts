// Reading a range of a session's log: the newest `last` lines read back from the end, or `limit` lines from
// position `offset` on, started from the nearest known line start (the page marks of sequential pages, else the
// position index) so that a page at any depth reads only its own lines and fewer than K others.
import * as fs from "node:fs";
import { join } from "node:path";
import type { MessageRange, MessageRecord } from "../core/types.js";
import { withFile } from "./io.js";
import { LineReader, type PageMarks, readLines } from "./lines.js";
import { committedEnd, LOG, parseLines, readTail } from "./log.js";
import { K, type LineStart, locate, type SeenEntries } from "./positions.js";

/** The messages of `range` in the log of the session in `dir`; `null` when the session is gone. */
export function readRange(
  dir: string,
  sessionId: string,
  range: MessageRange,
  pages: PageMarks,
  tmpName: () => string | null,
  seen: SeenEntries,
): MessageRecord[] | null {
  return withFile(join(dir, LOG), "r", (fd) => {
    const { size, ino } = fs.fstatSync(fd);
    const end = committedEnd(fd, size);
    if ("last" in range) {
      const tail = readTail(fd, end, range.last);
      return parseLines(tail, end - tail.length);
    }
    // A page starts where the previous page of this log ended, when that is known (and still checks out).
    let start: LineStart | undefined =
      range.offset === 0 ? undefined : pages.find(sessionId, fd, ino, end, range.offset);
    if (range.offset >= 2 * K && (start === undefined || start.position + K <= range.offset)) {
      const located = locate(dir, { fd, ino, end }, range.offset, tmpName, seen);
      if (start === undefined || located.position > start.position) start = located;
    }
    // From a known line start, the first chunk is sized for the page from the mean line length so far (plus a margin).
    const from = start ?? { position: 0, byte: 0 };
    const skip = range.offset - from.position;
    const perLine = from.position > 0 ? from.byte / from.position : 0;
    const reader = new LineReader(fd, from.byte, end, ((range.limit ?? 0) + skip) * perLine * 1.25 + 4096);
    const skipped = reader.skip(skip);
    const messages = skipped < skip ? [] : readLines(reader, range.limit);
    pages.remember(sessionId, fd, ino, end, from.position + skipped + messages.length, reader.offset);
    return messages;
  });
}
