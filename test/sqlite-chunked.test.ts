// Forks and deletes of big SQLite sessions in short transactions (issue 17, src/sqlite-chunked.ts): another
// connection writing all along, with a busy timeout far below what one transaction copying the whole session took,
// is never refused; it never sees a fork half made; the copy is exact, and a delete leaves no row behind.
import { mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Worker } from "node:worker_threads";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { SqliteStorageBackend } from "../src/sqlite.js";
import { CHUNK_ROWS } from "../src/sqlite-chunked.js";

const dir = mkdtempSync(join(tmpdir(), "agentix-sqlite-chunked-"));
const MESSAGES = 300_000; // one transaction copying them took about 1.4 s here, against the other writer's 300 ms
const FORK_ID = "01900000-0000-7000-8000-0000000000f0";

// The other writer, on a thread of its own (the backend blocks this one while it forks): it appends to a table of
// its own in the same database (so it needs the same write lock) with a 300 ms busy timeout, and reads the fork's
// session row and message rows in one snapshot: once the row is there, all the messages must be.
const WRITER = `
const { workerData, parentPort } = require("node:worker_threads");
const Database = require(workerData.driver);
const db = new Database(workerData.path, { timeout: 300 });
const write = db.prepare("insert into probe (at) values (?)");
const seen = db.prepare("select (select message_count from sessions where id = ?) as n, (select count(*) from messages where session_id = ?) as rows");
const read = db.transaction(() => seen.get(workerData.fork, workerData.fork));
let writes = 0, busy = 0, partial = 0, published = false;
const stop = new Int32Array(workerData.stop);
while (Atomics.load(stop, 0) === 0) {
  try { write.run(Date.now()); writes++; } catch (e) { if (e.code === "SQLITE_BUSY") busy++; else throw e; }
  const row = read.deferred();
  if (row.n !== null) { published = true; if (row.rows !== row.n) partial++; }
  Atomics.wait(stop, 0, 0, 2);
}
db.close();
parentPort.postMessage({ writes, busy, partial, published });
`;

function otherWriter(path: string) {
  const stop = new SharedArrayBuffer(4);
  const driver = createRequire(import.meta.url).resolve("better-sqlite3");
  const worker = new Worker(WRITER, { eval: true, workerData: { path, driver, fork: FORK_ID, stop } });
  const done = new Promise<{ writes: number; busy: number; partial: number; published: boolean }>((resolve, reject) => {
    worker.once("message", resolve);
    worker.once("error", reject);
  });
  return {
    finish: () => {
      Atomics.store(new Int32Array(stop), 0, 1);
      Atomics.notify(new Int32Array(stop), 0);
      return done;
    },
  };
}

describe("SQLite: big forks and deletes in short transactions", () => {
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(`a fork and a delete of ${MESSAGES} messages never make another writer wait past its 300 ms busy timeout`, async () => {
    expect(MESSAGES).toBeGreaterThan(CHUNK_ROWS * 10);
    const path = join(dir, "big.db");
    const b = new SqliteStorageBackend({ path });
    const id = await b.createSession("big");
    const batch = Array.from({ length: 10_000 }, (_, i) => ({ role: "user" as const, content: `m${i}` }));
    for (let n = 0; n < MESSAGES; n += batch.length) await b.saveMessages(id, batch);
    const setup = new Database(path);
    setup.exec("create table probe (at integer)");
    setup.close();

    const writer = otherWriter(path);
    await new Promise((r) => setTimeout(r, 100)); // the worker is writing
    const fork = await b.forkSession(id, { sessionId: FORK_ID, metadata: { forked: true } });
    await new Promise((r) => setTimeout(r, 50));
    const duringFork = await writer.finish();
    expect(fork).toBe(FORK_ID);
    expect(duringFork).toMatchObject({ busy: 0, partial: 0, published: true });
    expect(duringFork.writes).toBeGreaterThan(10);

    // The copy is exact: same contents in the same order, the fork's own metadata.
    expect(await b.countMessages(fork)).toBe(MESSAGES);
    const [first, last] = [await b.loadMessages(fork, { limit: 3 }), await b.loadMessages(fork, { last: 3 })];
    expect(first.map((m) => m.content)).toEqual(["m0", "m1", "m2"]);
    expect(last.map((m) => m.content)).toEqual(["m9997", "m9998", "m9999"]);
    expect((await b.getSession(fork))?.metadata).toEqual({ forked: true });

    const deleting = otherWriter(path);
    await new Promise((r) => setTimeout(r, 100));
    await b.deleteSession(id);
    await new Promise((r) => setTimeout(r, 50));
    expect(await deleting.finish()).toMatchObject({ busy: 0 });
    expect(await b.getSession(id)).toBeNull();
    await b.close();
    const check = new Database(path, { readonly: true });
    const count = (session: string) =>
      (check.prepare("select count(*) as n from messages where session_id = ?").get(session) as { n: number }).n;
    expect([count(id), count(fork)]).toEqual([0, MESSAGES]);
    check.close();
  }, 120_000);

  it("rows left under an id by a crash in the middle are dropped when a session of that id is created", async () => {
    const path = join(dir, "stray.db");
    const b = new SqliteStorageBackend({ path });
    await b.createSession("warm-up");
    const stray = "01900000-0000-7000-8000-0000000000aa";
    // What a chunked fork or delete interrupted by a crash leaves: message rows whose session row does not exist.
    const raw = new Database(path);
    raw.pragma("foreign_keys = OFF");
    raw
      .prepare(
        "insert into messages (session_id, position, role, content, created_at) values (?, 0, 'user', '\"old\"', '2020-01-01T00:00:00.000Z')",
      )
      .run(stray);
    raw.close();
    expect(await b.getSession(stray)).toBeNull();
    const id = await b.createSession("new", null, { sessionId: stray });
    expect(id).toBe(stray);
    await b.saveMessage(id, "user", "new");
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["new"]);
    await b.close();
  });
});
