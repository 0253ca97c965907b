// A File session whose log is larger than a Buffer can be (5 GiB; Node's limit is 4 GiB): its tail, a deep page,
// its count and an iteration over all of it work, reading the log a chunk at a time. The log is written here in
// the backend's exact line format (single-message lines), a few very large messages, with its count record.
// Under RELIABILITY_FULL (npm run test:reliability) 5 GiB, which takes minutes (mostly the write); 128 MiB otherwise.
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { MessageRecord } from "../../src/core/types.js";
import { bytesRead } from "../../src/file/io.js";
import { COUNT, LOG, writeCount } from "../../src/file/log.js";
import { FileStorageBackend } from "../../src/file.js";
import { FULL, figure, scaled } from "./support.js";

const MESSAGE = 64 << 20; // bytes of content per message
/** 80 × 64 MiB: 5 GiB of log under `npm run test:reliability`; 128 MiB in `npm test`. */
const MESSAGES = scaled(2, 80);
const TIMESTAMP = "2030-01-01T00:00:00.000Z"; // after the session was made: its updated_at

const root = mkdtempSync(join(tmpdir(), "agentix-file-huge-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The log line of message `i`: `{"role":"user","content":"<i> xxx…","timestamp":…}\n`, as the backend writes it. */
function writeLog(path: string): number {
  const filler = Buffer.alloc(MESSAGE, "x");
  const fd = openSync(path, "a");
  try {
    for (let i = 0; i < MESSAGES; i++) {
      writeSync(fd, `{"role":"user","content":"${i} `);
      for (let done = 0; done < filler.length; ) done += writeSync(fd, filler, done);
      writeSync(fd, `","timestamp":"${TIMESTAMP}"}\n`);
    }
    return fstatSync(fd).size;
  } finally {
    closeSync(fd);
  }
}

/** The number a message's content starts with. */
const numberOf = (content: unknown) => Number((content as string).slice(0, 8).split(" ")[0]);

describe(`a File log of ${FULL ? "5 GiB" : "128 MiB"}`, () => {
  it("loads its tail, pages at a deep offset, counts and iterates", { timeout: 600_000 }, async () => {
    const started = performance.now();
    const b = new FileStorageBackend({ basePath: root });
    const id = await b.createSession("agent");
    const dir = join(root, "sessions", id);
    const size = writeLog(join(dir, LOG));
    expect(size).toBeGreaterThan(FULL ? 5 * 2 ** 30 : 128 << 20);
    writeCount(join(dir, COUNT), { count: MESSAGES, bytes: size, ino: statSync(join(dir, LOG)).ino });
    const written = performance.now();
    bytesRead.largest = 0;

    const tail = await b.loadMessages(id, { last: 2 });
    expect(tail.map((m) => numberOf(m.content))).toEqual([MESSAGES - 2, MESSAGES - 1]);
    expect((tail[1] as MessageRecord).content).toHaveLength(`${MESSAGES - 1} `.length + MESSAGE);
    expect(await b.countMessages(id)).toBe(MESSAGES);
    expect((await b.getSession(id))?.updated_at).toBe(TIMESTAMP);
    const offset = Math.floor(MESSAGES * 0.9);
    const deep = await b.loadMessages(id, { offset, limit: 3 });
    const expected = Array.from({ length: Math.min(3, MESSAGES - offset) }, (_, k) => offset + k);
    expect(deep.map((m) => numberOf(m.content))).toEqual(expected);
    let n = 0;
    for await (const m of b.iterateMessages(id, { batchSize: 2 })) {
      expect(numberOf(m.content)).toBe(n);
      n++;
    }
    expect(n).toBe(MESSAGES);
    // One message's line, read in pieces: never anything near the log's size in one Buffer.
    expect(bytesRead.largest).toBeLessThanOrEqual(16 << 20);
    await b.close();
    figure("file_5gib_write_s", ((written - started) / 1000).toFixed(1));
    figure("file_5gib_reads_s", ((performance.now() - written) / 1000).toFixed(1));
  });
});
