import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { migrate } from "drizzle-orm/better-sqlite3/migrator";
import { afterAll, describe, expect, it } from "vitest";
import { AgentixStorageError, BackendClosedError, ValidationError } from "../src/index.js";
import { SqliteStorageBackend, type SqliteStorageOptions } from "../src/sqlite.js";
import { runConformanceSuite } from "../src/testing/index.js";

const dir = mkdtempSync(join(tmpdir(), "agentix-sqlite-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let files = 0;
const freshFile = () => join(dir, `db-${++files}.sqlite`);
const migrationsFolder = fileURLToPath(new URL("../migrations/sqlite", import.meta.url));

// Every test of a suite shares one file (each uses its own random agent ids), as applications do.
const shared = freshFile();
runConformanceSuite("SqliteStorageBackend (file)", { create: () => new SqliteStorageBackend({ path: shared }) });
runConformanceSuite("SqliteStorageBackend (:memory:)", {
  create: () => new SqliteStorageBackend({ path: ":memory:" }),
});

/** Opens `file` with a connection of the test's own, closed after `read`. */
function inspect<T>(file: string, read: (db: Database.Database) => T): T {
  const db = new Database(file, { readonly: true, fileMustExist: true });
  try {
    return read(db);
  } finally {
    db.close();
  }
}

function thrown(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  throw new Error("expected an error");
}

describe("SqliteStorageBackend", () => {
  it("writes what it returns into the tables: one row per session and per message, JSON text, append order", async () => {
    const file = freshFile();
    await using b = new SqliteStorageBackend({ path: file });
    const id = await b.createSession("agent", { cwd: "/work", n: 1 });
    const plain = await b.createSession("agent");
    await b.saveMessage(id, "user", "hello");
    await b.saveMessage(id, "assistant", [{ type: "text", text: "hi" }]);
    await b.saveMessage(id, "system", '{"a":1}');
    const session = await b.getSession(id);

    const rows = inspect(file, (db) => ({
      sessions: db.prepare("SELECT * FROM sessions ORDER BY id").all(),
      messages: db.prepare("SELECT session_id, role, content, created_at FROM messages ORDER BY id").all(),
    }));
    expect(rows.sessions).toEqual([
      {
        id,
        agent_id: "agent",
        cwd: "/work",
        metadata: '{"cwd":"/work","n":1}',
        created_at: session?.created_at,
        updated_at: session?.updated_at,
        message_count: 3,
        key_seq: 0,
      },
      expect.objectContaining({ id: plain, cwd: null, metadata: null, message_count: 0 }),
    ]);
    const messages = await b.loadMessages(id);
    expect(rows.messages).toEqual([
      { session_id: id, role: "user", content: '"hello"', created_at: messages[0]?.timestamp },
      {
        session_id: id,
        role: "assistant",
        content: '[{"type":"text","text":"hi"}]',
        created_at: messages[1]?.timestamp,
      },
      { session_id: id, role: "system", content: '"{\\"a\\":1}"', created_at: messages[2]?.timestamp },
    ]);
    expect(session?.updated_at).toBe(messages[2]?.timestamp);
  });

  it("writes a batch as rows with one timestamp, keeps message_count equal to the rows, and re-indexes cwd", async () => {
    const file = freshFile();
    await using b = new SqliteStorageBackend({ path: file });
    const id = await b.createSession("agent", { cwd: "/old" });
    const tool = { type: "tool_result", id: "t1", output: [1, 2] };
    expect(
      await b.saveMessages(id, [
        { role: "assistant", content: "calling" },
        { role: "tool", content: tool },
        { role: "user", content: "" },
      ]),
    ).toEqual({ length: 3 });
    expect(await b.saveMessages(id, [{ role: "user", content: "again" }])).toEqual({ length: 4 });
    const updated = await b.updateSession(id, { metadata: { cwd: "/new" } });
    const fork = await b.forkSession(id);
    const imported = "0190f000-0000-7000-8000-0000000000aa";
    await b.importSession({ ...updated, session_id: imported }, await b.loadMessages(id));

    const rows = inspect(file, (db) => ({
      batch: db.prepare("SELECT role, content, created_at FROM messages WHERE session_id = ? ORDER BY id").all(id),
      sessions: db
        .prepare(
          "SELECT s.id, s.cwd, s.message_count, (SELECT count(*) FROM messages m WHERE m.session_id = s.id) AS n " +
            "FROM sessions s ORDER BY s.id",
        )
        .all(),
    }));
    const [first, , , fourth] = rows.batch as Array<{ created_at: string }>;
    expect(rows.batch).toEqual([
      { role: "assistant", content: '"calling"', created_at: first?.created_at },
      { role: "tool", content: JSON.stringify(tool), created_at: first?.created_at },
      { role: "user", content: '""', created_at: first?.created_at },
      { role: "user", content: '"again"', created_at: fourth?.created_at },
    ]);
    expect(rows.sessions).toEqual(
      [id, fork, imported].sort().map((s) => ({ id: s, cwd: "/new", message_count: 4, n: 4 })),
    );
    expect(await b.listSessions("agent", { cwd: "/old" })).toEqual([]);
    expect((await b.listSessions("agent", { cwd: "/new" })).map((s) => s.session_id).sort()).toEqual(
      [id, fork, imported].sort(),
    );
  });

  it("counts messages from the session row: one row read, the messages table untouched", async () => {
    const db = new Database(":memory:");
    try {
      await using b = new SqliteStorageBackend({ database: db });
      const id = await b.createSession("agent");
      await b.saveMessages(id, [
        { role: "user", content: "a" },
        { role: "assistant", content: "b" },
      ]);
      expect(await b.countMessages(id)).toBe(2);
      // The count is the column, not a count(*) of the rows (which would still say 2).
      db.prepare("UPDATE sessions SET message_count = 42 WHERE id = ?").run(id);
      expect(await b.countMessages(id)).toBe(42);
      // An empty batch writes nothing and answers from the same column.
      expect(await b.saveMessages(id, [])).toEqual({ length: 42 });
      expect(db.prepare("SELECT count(*) FROM messages").pluck().get()).toBe(2);
    } finally {
      db.close();
    }
  });

  it("writes a batch all or nothing: a row failing midway leaves no message, no count and no time behind", async () => {
    const db = new Database(":memory:");
    try {
      await using b = new SqliteStorageBackend({ database: db });
      const id = await b.createSession("agent");
      await b.saveMessage(id, "user", "kept");
      const before = { session: await b.getSession(id), messages: await b.loadMessages(id) };
      // A failure the backend cannot foresee (a full disk, an I/O error) on the third row of the batch.
      db.exec(`CREATE TRIGGER fail_third BEFORE INSERT ON messages WHEN NEW.content = '"third"'
        BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
      const batch = ["first", "second", "third", "fourth"].map((content) => ({ role: "user" as const, content }));
      const error = await b.saveMessages(id, batch).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AgentixStorageError);
      expect((error as Error).message).toMatch(/injected failure/);
      expect(await b.getSession(id)).toEqual(before.session);
      expect(await b.loadMessages(id)).toEqual(before.messages);
      expect(await b.countMessages(id)).toBe(1);
      expect(db.prepare("SELECT count(*) FROM messages").pluck().get()).toBe(1);
      db.exec("DROP TRIGGER fail_third");
      expect(await b.saveMessages(id, batch)).toEqual({ length: 5 });
    } finally {
      db.close();
    }
  });

  it("forks and deletes in the tables: copied rows keep their timestamps, deleted ones are gone", async () => {
    const file = freshFile();
    await using b = new SqliteStorageBackend({ path: file });
    const id = await b.createSession("agent", { cwd: "/work" });
    for (const text of ["one", "two", "three"]) await b.saveMessage(id, "user", text);
    const fork = await b.forkSession(id);
    const count = (session: string) =>
      inspect(file, (db) => db.prepare("SELECT count(*) FROM messages WHERE session_id = ?").pluck().get(session));
    const messagesOf = (session: string) =>
      inspect(file, (db) =>
        db.prepare("SELECT role, content, created_at FROM messages WHERE session_id = ? ORDER BY id").all(session),
      );
    expect(messagesOf(fork)).toEqual(messagesOf(id));
    expect(inspect(file, (db) => db.prepare("SELECT cwd, metadata FROM sessions WHERE id = ?").get(fork))).toEqual({
      cwd: "/work",
      metadata: '{"cwd":"/work"}',
    });

    await b.deleteSession(id);
    expect(count(id)).toBe(0);
    expect(count(fork)).toBe(3);
    expect(inspect(file, (db) => db.prepare("SELECT count(*) FROM sessions WHERE id = ?").pluck().get(id))).toBe(0);
  });

  it("edits by position in the tables: kept rows untouched, positions dense from 0, message_count the length", async () => {
    const file = freshFile();
    await using b = new SqliteStorageBackend({ path: file });
    const id = await b.createSession("agent");
    await b.saveMessages(
      id,
      ["a", "b", "c", "d"].map((content) => ({ role: "user" as const, content })),
    );
    const rows = () =>
      inspect(file, (db) => ({
        messages: db.prepare("SELECT id, position, content FROM messages WHERE session_id = ? ORDER BY id").all(id),
        count: db.prepare("SELECT message_count FROM sessions WHERE id = ?").pluck().get(id),
      }));
    const [first, second] = rows().messages as Array<{ id: number }>;
    expect(await b.replaceMessages(id, 2, [{ role: "assistant", content: "x" }])).toEqual({ length: 3 });
    expect(await b.popMessage(id)).toMatchObject({ content: "x" });
    expect(await b.saveMessages(id, [{ role: "user", content: "y" }], { expectedLength: 2 })).toEqual({ length: 3 });
    expect(rows()).toEqual({
      count: 3,
      messages: [
        { id: first?.id, position: 0, content: '"a"' },
        { id: second?.id, position: 1, content: '"b"' },
        { id: expect.any(Number), position: 2, content: '"y"' },
      ],
    });
  });

  it("reads in position order, not in the order rows were written", async () => {
    const db = new Database(":memory:");
    try {
      await using b = new SqliteStorageBackend({ database: db });
      const id = await b.createSession("agent");
      await b.saveMessages(
        id,
        ["p0", "p1", "p2"].map((content) => ({ role: "user" as const, content })),
      );
      // Rows whose id order and position order disagree: no agentix write makes them, but no read may depend on that.
      db.prepare("UPDATE messages SET position = 2 - position WHERE session_id = ?").run(id);
      expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["p2", "p1", "p0"]);
      expect((await b.loadMessages(id, { last: 1 })).map((m) => m.content)).toEqual(["p0"]);
      expect((await b.loadMessages(id, { offset: 1, limit: 1 })).map((m) => m.content)).toEqual(["p1"]);
      expect((await b.popMessage(id))?.content).toBe("p0");
      const fork = await b.forkSession(id, { length: 1 });
      expect((await b.loadMessages(fork)).map((m) => m.content)).toEqual(["p2"]);
    } finally {
      db.close();
    }
  });

  it("edits all or nothing: a row failing midway leaves the messages, count, time and keys as they were", async () => {
    const db = new Database(":memory:");
    try {
      await using b = new SqliteStorageBackend({ database: db });
      const id = await b.createSession("agent");
      await b.saveMessages(
        id,
        ["a", "b", "c"].map((content) => ({ role: "user" as const, content })),
      );
      const before = { session: await b.getSession(id), messages: await b.loadMessages(id) };
      db.exec(`CREATE TRIGGER fail_bad BEFORE INSERT ON messages WHEN NEW.content = '"bad"'
        BEGIN SELECT RAISE(ABORT, 'injected failure'); END`);
      const batch = ["ok", "bad"].map((content) => ({ role: "user" as const, content }));
      for (const edit of [
        () => b.replaceMessages(id, 1, batch, { idempotencyKey: "r" }),
        () => b.saveMessages(id, batch, { expectedLength: 3, idempotencyKey: "s" }),
      ]) {
        const error = await edit().catch((e: unknown) => e);
        expect(error).toBeInstanceOf(AgentixStorageError);
        expect((error as Error).message).toMatch(/injected failure/);
        expect({ session: await b.getSession(id), messages: await b.loadMessages(id) }).toEqual(before);
        expect(await b.countMessages(id)).toBe(3);
      }
      expect(db.prepare("SELECT count(*) FROM idempotency_keys").pluck().get()).toBe(0);
      expect(db.prepare("SELECT key_seq FROM sessions").pluck().get()).toBe(0);
      db.exec("DROP TRIGGER fail_bad");
      expect(await b.replaceMessages(id, 1, batch, { idempotencyKey: "r" })).toEqual({ length: 3 });
    } finally {
      db.close();
    }
  });

  it("remembers keys as rows with their outcome, keeps the 1,000 newest per session, and drops them with it", async () => {
    const db = new Database(":memory:");
    db.pragma("foreign_keys = OFF"); // so that the explicit delete, not ON DELETE CASCADE, must take the keys
    try {
      await using b = new SqliteStorageBackend({ database: db });
      const [id, other] = [await b.createSession("agent"), await b.createSession("agent")];
      b.saveMessagesSync(other, [{ role: "user", content: "o" }], { idempotencyKey: "k0" });
      b.saveMessagesSync(id, [{ role: "user", content: "p" }], { idempotencyKey: "save" });
      const popped = b.popMessageSync(id, { idempotencyKey: "pop" });
      expect(db.prepare("SELECT * FROM idempotency_keys WHERE key = 'pop'").get()).toEqual({
        session_id: id,
        key: "pop",
        fingerprint: expect.any(String),
        seq: 2,
        length: 0,
        popped_role: "user",
        popped_content: '"p"',
        popped_at: popped?.timestamp,
      });
      for (let i = 0; i < 1048; i++) b.saveMessagesSync(id, [], { idempotencyKey: `k${i}` });
      const keys = db
        .prepare(
          "SELECT count(*) AS n, min(seq) AS oldest, max(seq) AS newest FROM idempotency_keys WHERE session_id = ?",
        )
        .get(id);
      expect(keys).toEqual({ n: 1000, oldest: 51, newest: 1050 });
      expect(db.prepare("SELECT key_seq FROM sessions WHERE id = ?").pluck().get(id)).toBe(1050);
      // The oldest key kept (seq 51: k48) still answers; a pruned one ("pop", seq 2) is a new write again.
      expect(db.prepare("SELECT key FROM idempotency_keys WHERE seq = 51").pluck().get()).toBe("k48");
      b.saveMessagesSync(id, [{ role: "user", content: "q" }]);
      expect(b.saveMessagesSync(id, [], { idempotencyKey: "k48" })).toEqual({ length: 0 });
      expect(b.popMessageSync(id, { idempotencyKey: "pop" })).toMatchObject({ content: "q" });
      expect(db.prepare("SELECT count(*) FROM idempotency_keys WHERE session_id = ?").pluck().get(other)).toBe(1);
      await b.deleteSession(id);
      expect(db.prepare("SELECT session_id FROM idempotency_keys").pluck().all()).toEqual([other]);
    } finally {
      db.close();
    }
  });

  it("forks a prefix in the tables: positions kept, message_count the copied count, no keys copied", async () => {
    const file = freshFile();
    await using b = new SqliteStorageBackend({ path: file });
    const id = await b.createSession("agent", { cwd: "/w" });
    const batch = ["a", "b", "c"].map((content) => ({ role: "user" as const, content }));
    await b.saveMessages(id, batch, { idempotencyKey: "k" });
    const fork = await b.forkSession(id, { length: 2, metadata: { cwd: "/f" } });
    const rows = inspect(file, (db) => ({
      session: db.prepare("SELECT cwd, metadata, message_count, key_seq FROM sessions WHERE id = ?").get(fork),
      messages: db.prepare("SELECT position, content FROM messages WHERE session_id = ? ORDER BY id").raw().all(fork),
      keys: db.prepare("SELECT count(*) FROM idempotency_keys WHERE session_id = ?").pluck().get(fork),
    }));
    expect(rows).toEqual({
      session: { cwd: "/f", metadata: '{"cwd":"/f"}', message_count: 2, key_seq: 0 },
      messages: [
        [0, '"a"'],
        [1, '"b"'],
      ],
      keys: 0,
    });
  });

  it("puts the file in WAL mode and creates its directory", async () => {
    const file = join(dir, "nested", "deeper", "agent.db");
    await using b = new SqliteStorageBackend({ path: file });
    await b.createSession("agent");
    expect(inspect(file, (db) => db.pragma("journal_mode", { simple: true }))).toBe("wal");
  });

  it("leaves a database it was given open, and uses it as it is", async () => {
    const db = new Database(":memory:");
    try {
      const b = new SqliteStorageBackend({ database: db });
      const id = await b.createSession("agent");
      await b.saveMessage(id, "user", "x");
      expect(db.prepare("SELECT count(*) FROM messages").pluck().get()).toBe(1);
      await b.close();
      expect(db.open).toBe(true);
      await expect(b.getSession(id)).rejects.toBeInstanceOf(BackendClosedError);
      // A second backend on the same connection finds the data (and the tables migrated already).
      await using again = new SqliteStorageBackend({ database: db });
      expect((await again.loadMessages(id)).map((m) => m.content)).toEqual(["x"]);
    } finally {
      db.close();
    }
  });

  it("deletes a session's messages on a database given with foreign keys off", async () => {
    const db = new Database(":memory:");
    db.pragma("foreign_keys = OFF");
    try {
      await using b = new SqliteStorageBackend({ database: db });
      const id = await b.createSession("agent");
      await b.saveMessage(id, "user", "x");
      await b.deleteSession(id);
      expect(db.prepare("SELECT count(*) FROM messages").pluck().get()).toBe(0);
    } finally {
      db.close();
    }
  });

  it("with migrate: false, fails at first use on a database without the tables, saying why, and creates nothing", async () => {
    const file = freshFile();
    const b = new SqliteStorageBackend({ path: file, migrate: false }); // no I/O yet: opened on first use
    const error = await b.createSession("agent").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect(String((error as Error).message)).toMatch(
      /no sessions and messages table and migrate is false.*migrate: true/,
    );
    expect(() => b.listSessionsSync("agent")).toThrow(/migrate is false/);
    await b.close();
    expect(inspect(file, (db) => db.prepare("SELECT name FROM sqlite_master").all())).toEqual([]);
  });

  it("with migrate: false, works on a database migrated before", async () => {
    const file = freshFile();
    const first = new SqliteStorageBackend({ path: file });
    const id = await first.createSession("agent");
    await first.close();
    await using b = new SqliteStorageBackend({ path: file, migrate: false });
    expect((await b.getSession(id))?.agent_id).toBe("agent");
  });

  it("keeps drizzle's bookkeeping: one row per migration, and drizzle's own migrate() finds nothing to do", async () => {
    const file = freshFile();
    const b = new SqliteStorageBackend({ path: file });
    const id = await b.createSession("agent");
    await b.close();
    const journal = JSON.parse(readFileSync(join(migrationsFolder, "meta/_journal.json"), "utf8")) as {
      entries: Array<{ when: number }>;
    };
    const db = new Database(file);
    try {
      const applied = () => db.prepare("SELECT created_at FROM __drizzle_migrations ORDER BY id").pluck().all();
      expect(applied()).toEqual(journal.entries.map((e) => e.when));
      migrate(drizzle({ client: db }), { migrationsFolder }); // would throw "table already exists" if it disagreed
      expect(applied()).toEqual(journal.entries.map((e) => e.when));
      expect(db.prepare("SELECT agent_id FROM sessions WHERE id = ?").pluck().get(id)).toBe("agent");
    } finally {
      db.close();
    }
  });

  it("waits busyTimeout ms for another connection's write lock, then fails with the driver error as cause", async () => {
    const file = freshFile();
    await using b = new SqliteStorageBackend({ path: file, busyTimeout: 200 });
    const id = b.createSessionSync("agent");
    const other = new Database(file);
    try {
      other.exec("BEGIN IMMEDIATE");
      const started = performance.now();
      const error = thrown(() => b.saveMessageSync(id, "user", "blocked"));
      expect(performance.now() - started).toBeGreaterThanOrEqual(180);
      expect(error).toBeInstanceOf(AgentixStorageError);
      expect((error as Error).message).toMatch(/saveMessage failed: database is locked/);
      expect(((error as Error).cause as { code?: string }).code).toBe("SQLITE_BUSY");
      other.exec("ROLLBACK");
      expect(b.loadMessagesSync(id)).toEqual([]);
      b.saveMessageSync(id, "user", "free");
      expect(b.loadMessagesSync(id).map((m) => m.content)).toEqual(["free"]);
    } finally {
      other.close();
    }
  });

  it("reports a file that is not a database as an AgentixStorageError, leaving the file alone", async () => {
    const file = freshFile();
    writeFileSync(file, "not a database, just text that is long enough to have a header ".repeat(4));
    const before = readFileSync(file);
    const b = new SqliteStorageBackend({ path: file });
    const error = await b.listSessions("agent").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect(((error as Error).cause as { code?: string }).code).toBe("SQLITE_NOTADB");
    await b.close();
    expect(readFileSync(file)).toEqual(before);
  });

  it("rejects unknown, missing, conflicting and mistyped options with a ValidationError", () => {
    const db = new Database(":memory:");
    const closed = new Database(":memory:");
    closed.close();
    const bad: unknown[] = [
      undefined,
      {},
      { path: "" },
      { path: 42 },
      { path: "x.db", database: db },
      { path: "x.db", busyTimeout: -1 },
      { path: "x.db", busyTimeout: 1.5 },
      { path: "x.db", migrate: "yes" },
      { path: "x.db", colour: "blue" },
      { database: {} },
      { database: closed },
      { database: db, busyTimeout: 100 },
    ];
    try {
      for (const options of bad) {
        expect(() => new SqliteStorageBackend(options as SqliteStorageOptions), JSON.stringify(options)).toThrow(
          ValidationError,
        );
      }
    } finally {
      db.close();
    }
  });

  describe("queries are served by the indexes, without a sort", () => {
    // Plans of the statements the backend really runs, caught with better-sqlite3's `verbose` hook.
    const planOf = async (
      run: (b: SqliteStorageBackend) => Promise<unknown>,
      table: string,
      kind: "select" | "delete" | "insert" = "select",
    ) => {
      const statements: string[] = [];
      const db = new Database(":memory:", { verbose: (s) => statements.push(String(s)) });
      try {
        const b = new SqliteStorageBackend({ database: db });
        await b.listSessions("warm-up"); // migrations and the first statements out of the way
        statements.length = 0;
        await run(b);
        // The last delete: creating a session deletes rows a crash may have left under its id first (sqlite-chunked.ts).
        const query = (kind === "delete" ? statements.findLast.bind(statements) : statements.find.bind(statements))(
          (s) =>
            kind === "select"
              ? s.startsWith(`select "`) && s.includes(`from "${table}"`)
              : kind === "delete"
                ? s.startsWith(`delete from "${table}"`)
                : s.startsWith(`insert into "${table}"`) && s.includes(" select "),
        );
        expect(query, `no query on ${table} among ${statements.join("\n")}`).toBeDefined();
        await b.close();
        return db
          .prepare(`EXPLAIN QUERY PLAN ${query}`)
          .all()
          .map((row) => (row as { detail: string }).detail)
          .join("\n");
      } finally {
        db.close();
      }
    };
    const before = { updated_at: "2030-01-01T00:00:00.000Z", session_id: "01900000-0000-7000-8000-000000000000" };

    it.each([
      ["listSessions", {}, "sessions_agent_updated_idx (agent_id=?)"],
      [
        "listSessions with limit and before",
        { limit: 10, before },
        "sessions_agent_updated_idx (agent_id=? AND (updated_at,id)<(?,?))",
      ],
      ["listSessions with cwd", { cwd: "/w" }, "sessions_agent_cwd_updated_idx (agent_id=? AND cwd=?)"],
      [
        "listSessions with cwd, limit and before",
        { cwd: "/w", limit: 10, before },
        "sessions_agent_cwd_updated_idx (agent_id=? AND cwd=? AND (updated_at,id)<(?,?))",
      ],
    ])("%s", async (_name, options, index) => {
      const plan = await planOf((b) => b.listSessions("agent", options), "sessions");
      expect(plan).toContain(`SEARCH sessions USING INDEX ${index}`);
      expect(plan).not.toContain("TEMP B-TREE");
    });

    // Scans by agent (export, copy --agent) page along (agent_id, id): a page costs O(page), however late.
    it.each([
      ["the first page", {}],
      ["a later page", { after: before.session_id }],
    ])("scanSessions by agent, %s, is one range of the (agent_id, id) index in id order", async (_name, options) => {
      const plan = await planOf((b) => b.scanSessions({ agentId: "agent", limit: 10, ...options }), "sessions");
      expect(plan).toContain("SEARCH sessions USING INDEX sessions_agent_id_idx (agent_id=?");
      expect(plan).not.toContain("TEMP B-TREE");
    });

    it("countMessages reads one sessions row by its key", async () => {
      const plan = await planOf(async (b) => {
        const id = await b.createSession("agent");
        await b.countMessages(id);
      }, "sessions");
      expect(plan).toMatch(/^SEARCH sessions USING INDEX sqlite_autoindex_sessions_1 \(id=\?\)$/);
    });

    // Reads go by position: the tail and a page, however deep, are one range of the (session_id, position) index.
    it.each([
      ["loadMessages with last", { last: 5 }],
      ["loadMessages with a deep offset and limit", { offset: 900, limit: 50 }],
      ["loadMessages with an offset only", { offset: 990 }],
      ["loadMessages of everything", {}],
    ])("%s reads one range of the position index", async (_name, options) => {
      const plan = await planOf(async (b) => {
        const id = await b.createSession("agent");
        await b.saveMessages(
          id,
          Array.from({ length: 1000 }, (_, i) => ({ role: "user" as const, content: `m${i}` })),
        );
        await b.loadMessages(id, options);
      }, "messages");
      expect(plan).toBe(
        "SEARCH messages USING INDEX messages_session_idx (session_id=? AND position>? AND position<?)",
      );
    });

    // Edits and forks touch only the positions they change or copy, found through the same index.
    const withTen = async (b: SqliteStorageBackend) => {
      const id = await b.createSession("agent");
      await b.saveMessages(
        id,
        Array.from({ length: 10 }, (_, i) => ({ role: "user" as const, content: `m${i}` })),
      );
      return id;
    };
    it.each([
      ["replaceMessages drops the suffix", (b, id) => b.replaceMessages(id, 4, []), "(session_id=? AND position>?)"],
      ["popMessage deletes the last row", (b, id) => b.popMessage(id), "(session_id=? AND position=?)"],
    ] as Array<[string, (b: SqliteStorageBackend, id: string) => Promise<unknown>, string]>)(
      "%s by the position index",
      async (_name, edit, constraint) => {
        const plan = await planOf(async (b) => edit(b, await withTen(b)), "messages", "delete");
        // Covering: a delete finds its rows from the index alone.
        expect(plan).toBe(`SEARCH messages USING COVERING INDEX messages_session_idx ${constraint}`);
      },
    );

    it("forkSession with length copies a prefix of the position index, in its order", async () => {
      const plan = await planOf(async (b) => b.forkSession(await withTen(b), { length: 3 }), "messages", "insert");
      expect(plan).toBe("SEARCH messages USING INDEX messages_session_idx (session_id=? AND position<?)");
    });

    it("an idempotency key is found by its primary key, and older keys are pruned along (session_id, seq)", async () => {
      const keyLookup = await planOf(async (b) => {
        await b.saveMessages(await withTen(b), [], { idempotencyKey: "k" });
      }, "idempotency_keys");
      expect(keyLookup).toBe(
        "SEARCH idempotency_keys USING INDEX sqlite_autoindex_idempotency_keys_1 (session_id=? AND key=?)",
      );
      const prune = await planOf(
        async (b) => {
          const id = await withTen(b);
          for (let i = 0; i <= 1000; i++) await b.saveMessages(id, [], { idempotencyKey: `k${i}` });
        },
        "idempotency_keys",
        "delete",
      );
      expect(prune).toBe(
        "SEARCH idempotency_keys USING COVERING INDEX idempotency_keys_session_seq_idx (session_id=? AND seq<?)",
      );
    });
  });
});

describe("SqliteStorageBackend.migrate", () => {
  it("applies what is pending and names it; then nothing; after close it refuses", async () => {
    const b = new SqliteStorageBackend({ path: join(dir, "explicit-migrate.db") });
    const tags = (
      JSON.parse(readFileSync(join(migrationsFolder, "meta", "_journal.json"), "utf8")) as {
        entries: Array<{ tag: string }>;
      }
    ).entries.map((e) => e.tag);
    expect(await b.migrate()).toEqual(tags);
    expect(b.migrateSync()).toEqual([]);
    const id = await b.createSession("after-migrate");
    expect((await b.getSession(id))?.agent_id).toBe("after-migrate");
    await b.close();
    await expect(b.migrate()).rejects.toBeInstanceOf(BackendClosedError);
  });

  it("with migrate: false, migrate() and migrateSync() still apply what is pending (the deploy step)", async () => {
    const tags = (
      JSON.parse(readFileSync(join(migrationsFolder, "meta", "_journal.json"), "utf8")) as {
        entries: Array<{ tag: string }>;
      }
    ).entries.map((e) => e.tag);
    await using a = new SqliteStorageBackend({ path: join(dir, "migrate-false-async.db"), migrate: false });
    expect(await a.migrate()).toEqual(tags);
    const id = await a.createSession("after-migrate");
    expect((await a.getSession(id))?.agent_id).toBe("after-migrate");
    await using b = new SqliteStorageBackend({ path: join(dir, "migrate-false-sync.db"), migrate: false });
    expect(b.migrateSync()).toEqual(tags);
    expect(b.migrateSync()).toEqual([]);
    expect(b.listSessionsSync("nobody")).toEqual([]);
  });
});
