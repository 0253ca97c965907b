import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import type { MessageRecord } from "../src/index.js";
import { SqliteStorageBackend } from "../src/sqlite.js";
import { openV1Database, sqliteJournal } from "./support/sqlite-v1.js";

// Several processes share one SQLite file: each writer is a real process (test/fixtures/sqlite-writer.ts),
// held at a barrier until all are up, so that their writes overlap.

const root = fileURLToPath(new URL("..", import.meta.url));
const writerScript = fileURLToPath(new URL("./fixtures/sqlite-writer.ts", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "agentix-sqlite-mp-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A writer process and the lines it prints. */
class Writer {
  readonly child: ChildProcessWithoutNullStreams;
  readonly #lines: AsyncIterator<string>;
  readonly #stderr: string[] = [];

  constructor(sessionId: string, name: string, count: number, mode?: number | "cas") {
    const args = [writerScript, sessionId, name, String(count), ...(mode === undefined ? [] : [String(mode)])];
    this.child = spawn(process.execPath, ["--import", "tsx", ...args], { cwd: root });
    this.child.stderr.on("data", (chunk: Buffer) => this.#stderr.push(chunk.toString()));
    this.#lines = createInterface({ input: this.child.stdout })[Symbol.asyncIterator]();
  }

  async next(): Promise<string> {
    const line = await this.#lines.next();
    if (line.done) throw new Error(`writer exited (${this.child.exitCode}): ${this.#stderr.join("")}`);
    return line.value;
  }
}

/**
 * Starts one writer process per session id (`new`: a session of its own), runs `rounds` with them once all
 * are ready, then ends them and checks that each exited cleanly.
 */
async function withWriters<T>(
  sessionIds: string[],
  count: number,
  rounds: (writers: Writer[]) => Promise<T>,
  mode?: number | "cas",
) {
  const writers = sessionIds.map((id, i) => new Writer(id, `w${i}`, count, mode));
  let result: T;
  try {
    for (const line of await Promise.all(writers.map((w) => w.next()))) expect(line).toBe("ready");
    result = await rounds(writers);
  } catch (error) {
    for (const w of writers) w.child.kill();
    throw error;
  }
  const exits = writers.map((w) => (w.child.exitCode === null ? once(w.child, "exit") : [w.child.exitCode]));
  for (const w of writers) w.child.stdin.end();
  expect((await Promise.all(exits)).map(([code]) => code)).toEqual(writers.map(() => 0));
  return result;
}

/**
 * What a writer reports after a round: its session, the lengths its saveMessages calls returned, and how many
 * ConflictErrors its compare-and-swap loop retried.
 */
interface Done {
  sessionId: string;
  lengths: number[];
  conflicts: number;
}

/** Releases all writers at once on `file`; resolves with what each one reports when all are done. */
async function roundOf(writers: Writer[], file: string): Promise<Done[]> {
  for (const w of writers) w.child.stdin.write(`${file}\n`);
  return Promise.all(
    writers.map(async (w) => {
      const sessionId = await w.next();
      const { lengths, conflicts } = JSON.parse(await w.next()) as Omit<Done, "sessionId">;
      expect(await w.next()).toBe("ready");
      return { sessionId, lengths, conflicts };
    }),
  );
}

/** {@link roundOf}, resolving with each writer's session id. */
async function round(writers: Writer[], file: string): Promise<string[]> {
  return (await roundOf(writers, file)).map((d) => d.sessionId);
}

/** The messages table's row count and the sessions row's message_count, read directly from the file. */
function storedCounts(file: string, sessionId: string): { rows: number; column: number } {
  const db = new Database(file, { readonly: true });
  try {
    return {
      rows: db.prepare("SELECT count(*) FROM messages WHERE session_id = ?").pluck().get(sessionId) as number,
      column: db.prepare("SELECT message_count FROM sessions WHERE id = ?").pluck().get(sessionId) as number,
    };
  } finally {
    db.close();
  }
}

/** Checks one writer's messages: `seq` 0..count-1, in order, nothing lost, nothing twice. */
function expectInOrder(messages: MessageRecord[], writer: string, count: number): void {
  const seqs = messages
    .map((m) => m.content as { writer: string; seq: number })
    .filter((c) => c.writer === writer)
    .map((c) => c.seq);
  expect(seqs).toEqual(Array.from({ length: count }, (_, i) => i));
}

describe("SqliteStorageBackend with several processes on one file", { timeout: 120_000 }, () => {
  it("appends from 4 processes to one session at once: nothing lost or duplicated, each writer in order", async () => {
    const file = join(dir, "shared.db");
    const count = 250;
    const setup = new SqliteStorageBackend({ path: file });
    const sessionId = await setup.createSession("multiprocess");
    await setup.close();

    const writers = 4;
    await withWriters(Array(writers).fill(sessionId), count, (w) => round(w, file));

    await using b = new SqliteStorageBackend({ path: file });
    const messages = await b.loadMessages(sessionId);
    expect(messages).toHaveLength(writers * count);
    for (let i = 0; i < writers; i++) expectInOrder(messages, `w${i}`, count);
    const times = messages.map((m) => m.timestamp);
    expect(times).toEqual([...times].sort());
    expect((await b.getSession(sessionId))?.updated_at).toBe(times.at(-1));
    // The writes really overlapped: more changes of writer than one block per writer would give.
    const writerOf = (m: MessageRecord | undefined) => (m?.content as { writer: string } | undefined)?.writer;
    const switches = messages.filter((m, i) => i > 0 && writerOf(m) !== writerOf(messages[i - 1])).length;
    expect(switches).toBeGreaterThan(writers - 1);
  });

  it("starts 4 processes together on new files: each file is migrated once, and every writer's session is whole", async () => {
    // Many rounds, since two processes migrating the same new file collide only when their first calls overlap.
    const rounds = 20;
    const count = 5;
    const writers = 4;
    const files = await withWriters(Array(writers).fill("new"), count, async (w) => {
      const done: Array<{ file: string; ids: string[] }> = [];
      for (let r = 0; r < rounds; r++) {
        const file = join(dir, `fresh-${r}`, "new.db");
        done.push({ file, ids: await round(w, file) });
      }
      return done;
    });

    for (const { file, ids } of files) {
      expect(new Set(ids).size).toBe(writers);
      await using b = new SqliteStorageBackend({ path: file, migrate: false });
      const sessions = await b.listSessions("multiprocess");
      expect(sessions.map((s) => s.session_id).sort()).toEqual([...ids].sort());
      for (const [i, id] of ids.entries()) expectInOrder(await b.loadMessages(id), `w${i}`, count);
      const db = new Database(file, { readonly: true });
      try {
        const applied = db.prepare("SELECT hash FROM __drizzle_migrations").pluck().all();
        expect(applied.length).toBeGreaterThan(0);
        expect(applied).toHaveLength(new Set(applied).size); // no migration recorded twice
      } finally {
        db.close();
      }
    }
  });
  it("saves batches from 4 processes to one session at once: each batch contiguous, where its length says", async () => {
    const file = join(dir, "batches.db");
    // Enough batches that the writers overlap even when one process opens the file much later than the others
    // (at 29 batches each, a loaded CI machine once ran them one after the other).
    const count = 1404;
    const batch = 7; // 200 batches of 7 and one of 4 per writer
    const setup = new SqliteStorageBackend({ path: file });
    const sessionId = await setup.createSession("multiprocess");
    await setup.close();

    const writers = 4;
    const done = await withWriters(Array(writers).fill(sessionId), count, (w) => roundOf(w, file), batch);

    await using b = new SqliteStorageBackend({ path: file });
    const messages = await b.loadMessages(sessionId);
    expect(messages).toHaveLength(writers * count);
    expect(await b.countMessages(sessionId)).toBe(writers * count);
    expect(storedCounts(file, sessionId)).toEqual({ rows: writers * count, column: writers * count });
    const ends: number[] = [];
    for (const [i, { lengths }] of done.entries()) {
      expectInOrder(messages, `w${i}`, count);
      expect(lengths).toHaveLength(Math.ceil(count / batch));
      expect(lengths).toEqual([...lengths].sort((x, y) => x - y));
      for (const [k, end] of lengths.entries()) {
        // The batch's messages are exactly the `size` positions before the length it returned.
        const size = Math.min(batch, count - k * batch);
        const got = messages.slice(end - size, end);
        expect(got.map((m) => m.content)).toEqual(
          Array.from({ length: size }, (_, j) => ({ writer: `w${i}`, seq: k * batch + j })),
        );
        expect(new Set(got.map((m) => m.timestamp)).size).toBe(1);
        ends.push(end);
      }
    }
    expect(new Set(ends).size).toBe(ends.length);
    expect(Math.max(...ends)).toBe(writers * count);
    const times = messages.map((m) => m.timestamp);
    expect(times).toEqual([...times].sort());
    expect((await b.getSession(sessionId))?.updated_at).toBe(times.at(-1));
    // The batches really overlapped: more changes of writer than one block per writer would give.
    const writerOf = (m: MessageRecord | undefined) => (m?.content as { writer: string } | undefined)?.writer;
    const switches = messages.filter((m, i) => i > 0 && writerOf(m) !== writerOf(messages[i - 1])).length;
    expect(switches).toBeGreaterThan(writers - 1);
  });

  it("runs compare-and-swap loops from 4 processes on one session: nothing lost, counts exact, each length once", async () => {
    const file = join(dir, "cas.db");
    const count = 150;
    const setup = new SqliteStorageBackend({ path: file });
    const sessionId = await setup.createSession("multiprocess");
    await setup.close();

    const writers = 4;
    const done = await withWriters(Array(writers).fill(sessionId), count, (w) => roundOf(w, file), "cas");

    const total = writers * count;
    await using b = new SqliteStorageBackend({ path: file });
    const messages = await b.loadMessages(sessionId);
    expect(messages).toHaveLength(total);
    expect(await b.countMessages(sessionId)).toBe(total);
    expect(storedCounts(file, sessionId)).toEqual({ rows: total, column: total });
    const db = new Database(file, { readonly: true });
    try {
      const positions = db
        .prepare("SELECT position FROM messages WHERE session_id = ? ORDER BY id")
        .pluck()
        .all(sessionId);
      expect(positions).toEqual(Array.from({ length: total }, (_, i) => i));
    } finally {
      db.close();
    }
    // Each successful save landed exactly at the length it expected: its message is the one before its result.
    const ends: number[] = [];
    for (const [i, { lengths }] of done.entries()) {
      expectInOrder(messages, `w${i}`, count);
      expect(lengths).toHaveLength(count);
      for (const [seq, end] of lengths.entries()) {
        expect(messages[end - 1]?.content).toEqual({ writer: `w${i}`, seq });
        ends.push(end);
      }
    }
    expect(new Set(ends).size).toBe(total);
    // The loops really raced: some compare-and-swaps lost and were retried.
    expect(done.reduce((sum, d) => sum + d.conflicts, 0)).toBeGreaterThan(0);
  });

  it("starts 4 processes together on files of the previous schema: each is upgraded once, nothing lost", async () => {
    const sessionId = "01900000-0000-7000-8000-000000000001";
    const rounds = 10;
    const count = 5;
    const writers = 4;
    const files = Array.from({ length: rounds }, (_, r) => join(dir, `v1-${r}.db`));
    for (const file of files) {
      const db = openV1Database(file);
      db.prepare("INSERT INTO sessions VALUES (?, 'multiprocess', NULL, NULL, ?, ?)").run(
        sessionId,
        "2026-01-01T00:00:00.000Z",
        "2026-01-01T00:00:00.000Z",
      );
      const insert = db.prepare(
        "INSERT INTO messages (session_id, role, content, created_at) VALUES (?, 'user', ?, '2026-01-01T00:00:00.000Z')",
      );
      for (const text of ["old 1", "old 2", "old 3"]) insert.run(sessionId, JSON.stringify(text));
      db.close();
    }
    await withWriters(
      Array(writers).fill(sessionId),
      count,
      async (w) => {
        for (const file of files) await roundOf(w, file);
      },
      2,
    );

    const migrations = sqliteJournal().entries.map((e) => e.when);
    for (const file of files) {
      await using b = new SqliteStorageBackend({ path: file, migrate: false });
      const messages = await b.loadMessages(sessionId);
      expect(messages.slice(0, 3).map((m) => m.content)).toEqual(["old 1", "old 2", "old 3"]);
      for (let i = 0; i < writers; i++) expectInOrder(messages, `w${i}`, count);
      expect(messages).toHaveLength(3 + writers * count);
      expect(await b.countMessages(sessionId)).toBe(3 + writers * count);
      expect(storedCounts(file, sessionId)).toEqual({ rows: 3 + writers * count, column: 3 + writers * count });
      const db = new Database(file, { readonly: true });
      try {
        expect(db.prepare("SELECT created_at FROM __drizzle_migrations ORDER BY id").pluck().all()).toEqual(migrations);
      } finally {
        db.close();
      }
    }
  });
});
