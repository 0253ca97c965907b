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

  constructor(sessionId: string, name: string, count: number) {
    this.child = spawn(process.execPath, ["--import", "tsx", writerScript, sessionId, name, String(count)], {
      cwd: root,
    });
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
async function withWriters<T>(sessionIds: string[], count: number, rounds: (writers: Writer[]) => Promise<T>) {
  const writers = sessionIds.map((id, i) => new Writer(id, `w${i}`, count));
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

/** Releases all writers at once on `file`; resolves with each one's session id when all are done. */
async function round(writers: Writer[], file: string): Promise<string[]> {
  for (const w of writers) w.child.stdin.write(`${file}\n`);
  return Promise.all(
    writers.map(async (w) => {
      const sessionId = await w.next();
      expect(await w.next()).toBe("ready");
      return sessionId;
    }),
  );
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
});
