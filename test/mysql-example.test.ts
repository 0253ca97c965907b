// The custom-backend example (examples/mysql) against a real MySQL or MariaDB server: the full conformance suite,
// what it wrote as seen from SQL, and its migrations against its schema. The server is AGENTIX_TEST_MYSQL_URL, else
// mysql://root@127.0.0.1:3306/test; without one the tests are skipped loudly, except under CI=true, where they fail.
// Every run works in its own database (agentix_test_...), dropped afterwards.
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { readMigrationFiles } from "drizzle-orm/migrator";
import { drizzle } from "drizzle-orm/mysql2";
import { migrate } from "drizzle-orm/mysql2/migrator";
import mysql, { type RowDataPacket } from "mysql2/promise";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import config from "../examples/mysql/drizzle.config.js";
import { MySqlStorageBackend, type MySqlStorageOptions } from "../examples/mysql/src/mysql.js";
import { scanQuery } from "../examples/mysql/src/statements.js";
import { AgentixStorageError, ConflictError, SessionNotFoundError, ValidationError } from "../src/core/errors.js";
import type { NewMessage, SessionRecord } from "../src/core/types.js";
import { runConformanceSuite } from "../src/testing/index.js";

const serverUrl = process.env.AGENTIX_TEST_MYSQL_URL ?? "mysql://root@127.0.0.1:3306/test";
const example = fileURLToPath(new URL("../examples/mysql/", import.meta.url));
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const say = (content: NewMessage["content"], role: NewMessage["role"] = "user"): NewMessage => ({ role, content });

/** The server's max_allowed_packet, or null when no server answers. */
async function probe(): Promise<number | null> {
  try {
    const c = await mysql.createConnection({ uri: serverUrl, connectTimeout: 3000 });
    const [[row]] = await c.query<RowDataPacket[]>("select @@max_allowed_packet as packet");
    await c.end();
    return Number(row?.packet);
  } catch (error) {
    const message = `no MySQL/MariaDB server at ${serverUrl} (${String(error)}): set AGENTIX_TEST_MYSQL_URL or start one`;
    if (process.env.CI === "true") throw new Error(`${message}. Under CI=true the MySQL example tests must run.`);
    console.warn(`\n!!! ${message}. The MySQL example tests are SKIPPED.\n`);
    return null;
  }
}

const maxPacket = await probe();
/** A database URL on the test server. */
const urlOf = (database: string) => {
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return url.toString();
};
const prefix = `agentix_test_${randomUUID().slice(0, 8)}`;
const database = `${prefix}_suite`;
const url = urlOf(database);

// A statement carries its parameters in one packet of at most max_allowed_packet bytes (16 MiB by default, and a
// session cannot raise it). The suite's large message is N MiB of text plus a NUL ("\u0000" in JSON, 6 bytes):
// the largest N that fits, at most 16. Raise max_allowed_packet on the server to store 16 MiB messages.
const largeMessageMiB = maxPacket === null ? 16 : Math.min(16, Math.floor((maxPacket - 64 * 1024) / MiB));
if (maxPacket !== null && largeMessageMiB < 16) {
  console.warn(
    `\n!!! max_allowed_packet is ${maxPacket} bytes: the MySQL example's large-message test uses ${largeMessageMiB} MiB, not 16.\n`,
  );
}

describe.skipIf(maxPacket === null)("MySqlStorageBackend (examples/mysql)", () => {
  let admin: mysql.Connection;
  const opened: MySqlStorageBackend[] = [];
  const open = (options: MySqlStorageOptions = { url }) => {
    const backend = new MySqlStorageBackend(options);
    opened.push(backend);
    return backend;
  };
  const select = async <T extends RowDataPacket>(sql: string, params: Array<string | number> = []) =>
    (await admin.query<T[]>(sql, params))[0];
  /** The session's message_count and the positions of its message rows, read with SQL. */
  const positions = async (sessionId: string, db = database) => {
    const [row] = await select(`select message_count as n from \`${db}\`.sessions where id = ?`, [sessionId]);
    const rows = await select(`select position from \`${db}\`.messages where session_id = ? order by position`, [
      sessionId,
    ]);
    return { count: Number(row?.n), positions: rows.map((r) => Number(r.position)) };
  };
  /** What a session with `n` messages has: its count, and positions 0 … n-1. */
  const numbered = (n: number) => ({ count: n, positions: Array.from({ length: n }, (_, i) => i) });

  beforeAll(async () => {
    admin = await mysql.createConnection({ uri: serverUrl });
    await admin.query(`create database \`${database}\``);
  });
  afterEach(async () => {
    await Promise.all(opened.splice(0).map((b) => b.close()));
  });
  afterAll(async () => {
    const [dbs] = await admin.query<RowDataPacket[]>("select schema_name as name from information_schema.schemata");
    for (const { name } of dbs) if (String(name).startsWith(prefix)) await admin.query(`drop database \`${name}\``);
    await admin.end();
  });

  runConformanceSuite("MySqlStorageBackend", { create: () => new MySqlStorageBackend({ url }), largeMessageMiB });

  describe("what is stored, read with SQL", () => {
    it("compares agent ids and cwds byte for byte: no case folding, no trailing-space padding", async () => {
      const b = open();
      const base = `agent-${randomUUID()}`;
      const variants = [base, `${base} `, base.toUpperCase(), `${base}\u00e9`, `${base}e\u0301`];
      const ids = [];
      for (const agent of variants) ids.push(await b.createSession(agent, { cwd: agent }));
      for (const [i, agent] of variants.entries()) {
        expect((await b.listSessions(agent)).map((s) => s.session_id)).toEqual([ids[i]]);
        expect((await b.listSessions(base, { cwd: agent })).map((s) => s.session_id)).toEqual(i === 0 ? [ids[0]] : []);
      }
      const [row] = await select(`select hex(agent_id) as hex from \`${database}\`.sessions where id = ?`, [
        ids[3] as string,
      ]);
      expect(row?.hex).toBe(
        Buffer.from(variants[3] as string)
          .toString("hex")
          .toUpperCase(),
      );
    });

    it("keeps content as JSON text with escapes, so lone surrogates and NUL fit in utf8mb4", async () => {
      const b = open();
      const id = await b.createSession(`agent-${randomUUID()}`);
      await b.saveMessage(id, "user", { text: "\ud800\u0000👩‍💻", n: 1 });
      const [row] = await select(
        `select content, json_valid(content) as valid from \`${database}\`.messages where session_id = ?`,
        [id],
      );
      expect(row?.content).toBe('{"text":"\\ud800\\u0000👩‍💻","n":1}');
      // MariaDB's JSON type is LONGTEXT with this check: it would refuse the escaped lone surrogate.
      expect(row?.valid).toBe(0);
    });

    it("clamps a clock that is behind in the same transaction as the append", async () => {
      const b = open();
      const id = await b.createSession(`agent-${randomUUID()}`);
      await admin.query(`update \`${database}\`.sessions set updated_at = '2999-01-01 00:00:00.000' where id = ?`, [
        id,
      ]);
      await b.saveMessage(id, "user", "from now, which is behind");
      const [message] = await b.loadMessages(id);
      expect(message?.timestamp).toBe("2999-01-01T00:00:00.000Z");
      expect((await b.getSession(id))?.updated_at).toBe("2999-01-01T00:00:00.000Z");
    });

    it("forks one session many times at once, also while it is appended to", async () => {
      const b = open();
      const agent = `agent-${randomUUID()}`;
      // Each round forks the newest session, whose messages end the index: under REPEATABLE READ, InnoDB's
      // next-key locks make these forks deadlock (see copySession).
      for (let round = 0; round < 5; round++) {
        const source = await b.createSession(agent);
        for (let i = 0; i < 10; i++) await b.saveMessage(source, "user", `m${i}`);
        const expected = await b.loadMessages(source);
        const forks = await Promise.all(Array.from({ length: 8 }, () => b.forkSession(source)));
        for (const fork of forks) expect(await b.loadMessages(fork)).toStrictEqual(expected);
      }
      const source = await b.createSession(agent);
      for (let i = 0; i < 10; i++) await b.saveMessage(source, "user", `m${i}`);
      const forks = await Promise.all([
        ...Array.from({ length: 6 }, () => b.forkSession(source)),
        ...Array.from({ length: 6 }, (_, i) => b.saveMessage(source, "assistant", `late${i}`).then(() => null)),
      ]);
      const all = await b.loadMessages(source);
      expect(all).toHaveLength(16);
      for (const fork of forks.filter((f) => f !== null)) {
        // A fork is the source as it was at one moment: a prefix of it.
        const copied = await b.loadMessages(fork);
        expect(copied.length).toBeGreaterThanOrEqual(10);
        expect(copied).toStrictEqual(all.slice(0, copied.length));
      }
    });

    it("a fork racing the deletion of its source copies every message or fails with SessionNotFoundError", async () => {
      const b = open();
      const agent = `agent-${randomUUID()}`;
      const outcomes = new Set<string>();
      for (let round = 0; round < 40; round++) {
        const source = await b.createSession(agent);
        for (let i = 0; i < 20; i++) await b.saveMessage(source, "user", `m${i}`);
        const [fork] = await Promise.allSettled([
          b.forkSession(source),
          sleep(round % 4).then(() => b.deleteSession(source)),
        ]);
        if (fork.status === "rejected") {
          expect(fork.reason).toBeInstanceOf(SessionNotFoundError);
          outcomes.add("not found");
        } else {
          expect(await b.loadMessages(fork.value)).toHaveLength(20);
          outcomes.add("copied");
        }
      }
      expect(outcomes.has("copied")).toBe(true);
    });

    it("fails cleanly on a message larger than max_allowed_packet: nothing written, the backend keeps working", async () => {
      const b = open();
      const id = await b.createSession(`agent-${randomUUID()}`);
      await b.saveMessage(id, "user", "before");
      const before = await b.getSession(id);
      const error = await b.saveMessage(id, "user", "x".repeat(maxPacket as number)).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AgentixStorageError);
      expect((error as Error).message).toMatch(/max_allowed_packet/);
      expect((error as Error).cause).toBeDefined();
      expect(await b.getSession(id)).toStrictEqual(before);
      await b.saveMessage(id, "user", "after");
      expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["before", "after"]);
    });
    it("scans one agent's sessions along (agent_id, id): no filesort, a page's rows", async () => {
      const b = open();
      const agent = `scan-${randomUUID()}`;
      const ids: string[] = [];
      for (let i = 0; i < 12; i++) ids.push(await b.createSession(i % 3 === 0 ? agent : `other-${randomUUID()}`));
      const mine = ids.filter((_, i) => i % 3 === 0).sort();
      expect((await b.scanSessions({ agentId: agent, limit: 3 })).map((s) => s.session_id)).toEqual(mine.slice(0, 3));
      await admin.query(`analyze table \`${database}\`.sessions`);
      const db = drizzle({ client: admin });
      for (const after of [null, mine[1] as string]) {
        const { sql, params } = scanQuery(db, after, 3, agent).toSQL();
        const [plan] = await admin
          .query<RowDataPacket[]>(`use \`${database}\``)
          .then(() => admin.query<RowDataPacket[]>(`explain ${sql}`, params as string[]));
        expect(plan.map((row) => row.key)).toEqual(["sessions_agent_id_idx"]);
        expect(String(plan[0]?.Extra)).not.toMatch(/filesort/);
      }
    });

    it("keeps message_count equal to the messages stored, through batches, forks and imports", async () => {
      const b = open();
      const id = await b.createSession(`agent-${randomUUID()}`);
      const stored = async (sessionId: string) => {
        const [row] = await select(
          `select s.message_count as kept, (select count(*) from \`${database}\`.messages m where m.session_id = s.id) as n
           from \`${database}\`.sessions s where s.id = ?`,
          [sessionId],
        );
        return [Number(row?.kept), Number(row?.n)];
      };
      expect(await stored(id)).toEqual([0, 0]);
      await b.saveMessage(id, "user", "one");
      const tool = { role: "tool" as const, content: { type: "tool_result", output: "42" } };
      expect(await b.saveMessages(id, [tool, { role: "assistant", content: "two" }])).toEqual({ length: 3 });
      expect(await stored(id)).toEqual([3, 3]);
      const [role] = await select(
        `select role from \`${database}\`.messages where session_id = ? order by id limit 1 offset 1`,
        [id],
      );
      expect(role?.role).toBe("tool");
      const fork = await b.forkSession(id);
      expect(await stored(fork)).toEqual([3, 3]);
      const record = { ...(await b.getSession(id)), session_id: randomUUID() } as SessionRecord;
      expect(await b.importSession(record, await b.loadMessages(id))).toBe(true);
      expect(await stored(record.session_id)).toEqual([3, 3]);
      expect(await b.countMessages(record.session_id)).toBe(3);
    });

    it("stores a batch larger than max_allowed_packet, as several INSERTs in one transaction", async () => {
      const b = open();
      const id = await b.createSession(`agent-${randomUUID()}`);
      const half = "y".repeat(Math.ceil((maxPacket as number) / 2) + 1024);
      const batch = [
        { role: "user" as const, content: `a${half}` },
        { role: "assistant" as const, content: `b${half}` },
      ];
      expect(await b.saveMessages(id, batch)).toEqual({ length: 2 });
      expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(batch.map((m) => m.content));
    });

    it("writes none of a batch whose last INSERT fails (a message over max_allowed_packet)", async () => {
      const b = open();
      const id = await b.createSession(`agent-${randomUUID()}`);
      await b.saveMessage(id, "user", "before");
      const before = await b.getSession(id);
      const batch = [
        { role: "user" as const, content: "small, in the first INSERT" },
        { role: "assistant" as const, content: "x".repeat(maxPacket as number) },
      ];
      const error = await b.saveMessages(id, batch).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AgentixStorageError);
      expect((error as Error).message).toMatch(/max_allowed_packet/);
      expect(await b.getSession(id)).toStrictEqual(before);
      expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["before"]);
      expect(await b.countMessages(id)).toBe(1);
    });

    it("numbers each session's messages 0, 1, 2, … through appends, edits, forks and imports", async () => {
      const b = open();
      const id = await b.createSession(`agent-${randomUUID()}`);
      await b.saveMessages(id, [say("a"), say("b"), say("c")]);
      await b.saveMessage(id, "assistant", "d");
      expect(await positions(id)).toEqual(numbered(4));
      await b.replaceMessages(id, 1, [say("x"), say("y"), say("z")]);
      expect(await positions(id)).toEqual(numbered(4));
      expect((await b.loadMessages(id, { offset: 1, limit: 2 })).map((m) => m.content)).toEqual(["x", "y"]);
      await b.popMessage(id);
      await b.saveMessages(id, [say("after the pop")], { expectedLength: 3 });
      expect(await positions(id)).toEqual(numbered(4));
      expect((await b.loadMessages(id, { last: 2 })).map((m) => m.content)).toEqual(["y", "after the pop"]);
      const fork = await b.forkSession(id, { length: 2 });
      expect(await positions(fork)).toEqual(numbered(2));
      await b.saveMessage(fork, "user", "in the fork");
      expect(await positions(fork)).toEqual(numbered(3));
      const record = { ...(await b.getSession(id)), session_id: randomUUID() } as SessionRecord;
      await b.importSession(record, await b.loadMessages(id));
      expect(await positions(record.session_id)).toEqual(numbered(4));
      await b.replaceMessages(id, 0, []);
      expect(await positions(id)).toEqual(numbered(0));
    });

    it("remembers a session's 1,000 newest idempotency keys in idempotency_keys, and forgets them with it", async () => {
      const b = open();
      const id = await b.createSession(`agent-${randomUUID()}`);
      const keys = `\`${database}\`.idempotency_keys`;
      // 1,000 keys remembered already, as 1,000 writes would have left them.
      const old = Array.from({ length: 1000 }, (_, i) => [id, i + 1, `old-${i + 1}`, "not a fingerprint", 0]);
      await admin.query(`insert into ${keys} (session_id, seq, idempotency_key, fingerprint, length) values ?`, [old]);
      expect(await b.saveMessages(id, [say("a")], { idempotencyKey: "new" })).toEqual({ length: 1 });
      const kept = await select(`select count(*) as n, min(seq) as oldest from ${keys} where session_id = ?`, [id]);
      expect(kept.map((r) => [Number(r.n), Number(r.oldest)])).toEqual([[1000, 2]]);
      const [newest] = await select(`select seq, length, popped from ${keys} where idempotency_key = 'new'`);
      expect({ ...newest }).toEqual({ seq: 1001, length: 1, popped: null });
      // old-2 is remembered (for another write: its fingerprint differs); old-1 is forgotten, so it writes.
      await expect(b.saveMessages(id, [say("b")], { idempotencyKey: "old-2" })).rejects.toBeInstanceOf(ConflictError);
      expect(await b.saveMessages(id, [say("b")], { idempotencyKey: "old-1" })).toEqual({ length: 2 });
      const popped = await b.popMessage(id, { idempotencyKey: "pop" });
      const [row] = await select(`select popped from ${keys} where session_id = ? and idempotency_key = 'pop'`, [id]);
      expect(JSON.parse(row?.popped)).toStrictEqual(popped);
      expect(await b.popMessage(id, { idempotencyKey: "pop" })).toStrictEqual(popped);
      expect(await b.countMessages(id)).toBe(1);
      await b.deleteSession(id);
      expect(await select(`select 1 from ${keys} where session_id = ?`, [id])).toEqual([]);
    });

    it("edits, appends and forks of neighbouring sessions at once neither deadlock nor leave a gap", async () => {
      const b = open({ url, connectionLimit: 16 });
      const agent = `agent-${randomUUID()}`;
      // Sessions made one after the other have neighbouring ids, so their messages neighbour in the index.
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) {
        const id = await b.createSession(agent);
        await b.saveMessages(
          id,
          Array.from({ length: 12 }, (_, j) => say(`m${j}`)),
        );
        ids.push(id);
      }
      const work = ids.flatMap((id) => [
        ...Array.from({ length: 4 }, () => b.popMessage(id)),
        ...Array.from({ length: 4 }, (_, i) => b.saveMessages(id, [say(`a${i}`), say(`b${i}`)])),
        ...Array.from({ length: 2 }, (_, i) => b.replaceMessages(id, 0, [say(`r${i}`)], { idempotencyKey: `r${i}` })),
        ...Array.from({ length: 3 }, () => b.forkSession(id)),
      ]);
      const outcomes = await Promise.allSettled(work);
      expect(outcomes.filter((o) => o.status === "rejected")).toEqual([]);
      const forks = outcomes.flatMap((o) => (o.status === "fulfilled" && typeof o.value === "string" ? [o.value] : []));
      for (const id of [...ids, ...forks]) {
        const { count } = await positions(id);
        expect(await positions(id)).toEqual(numbered(count));
      }
    });
  });

  describe("options", () => {
    const rejected = (options: unknown): ValidationError => {
      try {
        new MySqlStorageBackend(options as never);
      } catch (error) {
        expect(error).toBeInstanceOf(ValidationError);
        return error as ValidationError;
      }
      throw new Error(`accepted ${JSON.stringify(options)}`);
    };
    const field = "MySqlStorageBackend options";

    it("needs exactly one of url and pool, and rejects bad or unknown options", async () => {
      const pool = mysql.createPool(url);
      expect(rejected(undefined).message).toMatch(/either url or pool/);
      expect(rejected({ url, pool }).message).toMatch(/either url or pool/);
      expect(rejected({ url: "postgres://x/db" }).field).toBe(`${field}.url`);
      expect(rejected({ url: "mysql://127.0.0.1:3306" }).message).toMatch(/must name a database/);
      expect(rejected({ pool: {} }).field).toBe(`${field}.pool`);
      expect(rejected({ pool, connectionLimit: 2 }).field).toBe(`${field}.connectionLimit`);
      expect(rejected({ url, connectionLimit: 0 }).field).toBe(`${field}.connectionLimit`);
      expect(rejected({ url, migrate: "yes" }).field).toBe(`${field}.migrate`);
      expect(rejected({ url, lmit: 1 }).field).toBe(field);
      await pool.end();
    });

    it("works on a pool passed in, never closes it, and refuses the sync methods", async () => {
      const pool = mysql.createPool(url);
      const b = open({ pool });
      const id = await b.createSession(`agent-${randomUUID()}`);
      await b.close();
      const [[row]] = await pool.query<RowDataPacket[]>("select count(*) as n from sessions where id = ?", [id]);
      expect(row?.n).toBe(1);
      const c = open({ pool });
      expect(() => c.getSessionSync(id)).toThrow(/build the backend from \{ url \}/);
      await pool.end();
    });
  });

  describe("migrations", () => {
    it("backends starting at once on an empty database apply each migration exactly once", async () => {
      const fresh = `${prefix}_migrate`;
      await admin.query(`create database \`${fresh}\``);
      const starters = Array.from({ length: 6 }, () => open({ url: urlOf(fresh), connectionLimit: 2 }));
      const ids = await Promise.all(starters.map((b, i) => b.createSession(`starter-${i}`)));
      expect(new Set(ids).size).toBe(6);
      const journal = readMigrationFiles({ migrationsFolder: join(example, "migrations") });
      const applied = await select(`select hash, created_at from \`${fresh}\`.__agentix_migrations order by id`);
      expect(applied.map((r) => [r.hash, Number(r.created_at)])).toEqual(journal.map((m) => [m.hash, m.folderMillis]));
    });

    const kit = join(fileURLToPath(new URL("..", import.meta.url)), "node_modules", "drizzle-kit", "bin.cjs");
    const scratch = mkdtempSync(join(tmpdir(), "agentix-mysql-drift-"));
    afterAll(() => rmSync(scratch, { recursive: true, force: true }));

    /**
     * A new database as an earlier release left it: only the migrations `tags` applied, by drizzle's migrator as
     * the backend did. Returns its name and a connection to write rows into it as that release did.
     */
    async function databaseOf(release: string, tags: string[]): Promise<[string, mysql.Connection]> {
      const name = `${prefix}_${release}`;
      await admin.query(`create database \`${name}\``);
      const folder = join(scratch, release);
      cpSync(join(example, "migrations"), folder, { recursive: true });
      const journalFile = join(folder, "meta", "_journal.json");
      const journal = JSON.parse(readFileSync(journalFile, "utf8")) as { entries: Array<{ tag: string }> };
      journal.entries = journal.entries.filter((e) => tags.includes(e.tag));
      writeFileSync(journalFile, JSON.stringify(journal));
      const c = await mysql.createConnection({ uri: urlOf(name) });
      await migrate(drizzle(c), { migrationsFolder: folder, migrationsTable: "__agentix_migrations" });
      return [name, c];
    }
    const expectAllApplied = async (name: string) => {
      const applied = await select(`select hash from \`${name}\`.__agentix_migrations order by id`);
      const all = readMigrationFiles({ migrationsFolder: join(example, "migrations") });
      expect(applied.map((r) => r.hash)).toEqual(all.map((m) => m.hash));
    };

    it("upgrade a database of the first release in place: counts and positions backfilled, the tool role accepted", async () => {
      const [v1, c] = await databaseOf("v1", ["0000_init"]);
      const [full, empty] = [randomUUID(), randomUUID()];
      for (const id of [full, empty]) {
        await c.query(
          "insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at) values (?, 'old-agent', null, null, ?, ?)",
          [id, "2024-01-15 14:30:00.123", "2024-01-15 14:30:00.125"],
        );
      }
      for (const [i, role] of ["system", "user", "assistant"].entries()) {
        await c.query("insert into messages (session_id, role, content, created_at) values (?, ?, ?, ?)", [
          full,
          role,
          JSON.stringify(`m${i}`),
          `2024-01-15 14:30:00.12${3 + i}`,
        ]);
      }
      await c.end();

      const b = open({ url: urlOf(v1) });
      expect(await b.countMessages(full)).toBe(3);
      expect(await b.countMessages(empty)).toBe(0);
      expect(await positions(full, v1)).toEqual(numbered(3));
      expect(await b.saveMessages(full, [{ role: "tool", content: { result: 1 } }])).toEqual({ length: 4 });
      expect(await b.saveMessages(empty, [{ role: "tool", content: "t" }])).toEqual({ length: 1 });
      const messages = await b.loadMessages(full);
      expect(messages.map((m) => [m.role, m.content])).toEqual([
        ["system", "m0"],
        ["user", "m1"],
        ["assistant", "m2"],
        ["tool", { result: 1 }],
      ]);
      expect(messages[0]?.timestamp).toBe("2024-01-15T14:30:00.123Z");
      expect(await positions(full, v1)).toEqual(numbered(4));
      await expectAllApplied(v1);
    });

    it("upgrade a database of the previous release (v2 part 1) in place: positions backfilled per session", async () => {
      const [previous, c] = await databaseOf("v2_part1", ["0000_init", "0001_v2_tool_role_message_count"]);
      // Two sessions whose messages were appended in turns, so that their rows interleave in id order, and one
      // without messages; message_count kept as that release did.
      const [a, z, empty] = [randomUUID(), randomUUID(), randomUUID()];
      for (const [id, count] of [
        [a, 3],
        [z, 2],
        [empty, 0],
      ] as const) {
        await c.query(
          `insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at, message_count)
           values (?, 'old-agent', '/w', '{"cwd":"/w"}', '2025-03-01 10:00:00.000', '2025-03-01 10:00:00.009', ?)`,
          [id, count],
        );
      }
      const appended: Array<[string, string, string]> = [
        [a, "user", "a0"],
        [z, "user", "z0"],
        [a, "tool", "a1"],
        [z, "assistant", "z1"],
        [a, "assistant", "a2"],
      ];
      for (const [i, [id, role, content]] of appended.entries()) {
        await c.query("insert into messages (session_id, role, content, created_at) values (?, ?, ?, ?)", [
          id,
          role,
          JSON.stringify(content),
          `2025-03-01 10:00:00.00${5 + i}`,
        ]);
      }
      await c.end();

      const b = open({ url: urlOf(previous) });
      const contents = async (id: string, range?: { offset?: number; limit?: number }) =>
        (await b.loadMessages(id, range)).map((m) => m.content);
      expect(await contents(a)).toEqual(["a0", "a1", "a2"]);
      expect(await positions(a, previous)).toEqual(numbered(3));
      expect(await positions(z, previous)).toEqual(numbered(2));
      expect(await positions(empty, previous)).toEqual(numbered(0));
      expect(await contents(a, { offset: 1, limit: 1 })).toEqual(["a1"]);
      expect(await contents(z, { offset: 1 })).toEqual(["z1"]);
      // Edits, keys and forks from a turn on the rows the previous release wrote.
      const popped = await b.popMessage(a, { idempotencyKey: "pop", expectedLength: 3 });
      expect(popped).toStrictEqual({ role: "assistant", content: "a2", timestamp: "2025-03-01T10:00:00.009Z" });
      expect(await b.popMessage(a, { idempotencyKey: "pop", expectedLength: 3 })).toStrictEqual(popped);
      expect(await b.replaceMessages(z, 1, [say("z1'")])).toEqual({ length: 2 });
      expect(await b.saveMessages(empty, [say("e0")], { expectedLength: 0 })).toEqual({ length: 1 });
      const fork = await b.forkSession(a, { length: 1 });
      expect(await contents(fork)).toEqual(["a0"]);
      expect(await contents(z)).toEqual(["z0", "z1'"]);
      for (const [id, n] of [
        [a, 2],
        [z, 2],
        [empty, 1],
        [fork, 1],
      ] as const) {
        expect(await positions(id, previous)).toEqual(numbered(n));
      }
      expect((await b.listSessions("old-agent", { cwd: "/w" })).map((s) => s.session_id).sort()).toEqual(
        [a, z, empty, fork].sort(),
      );
      await expectAllApplied(previous);
    });

    /** `drizzle-kit generate` with the example's config, into `out`; returns what it printed. */
    async function generate(out: string): Promise<string> {
      const { stdout, stderr } = await promisify(execFile)(
        process.execPath,
        // The config's own values, but another output folder (drizzle-kit wants it relative).
        [
          kit,
          "generate",
          `--dialect=${config.dialect}`,
          `--schema=${config.schema}`,
          `--out=${relative(example, out)}`,
        ],
        { cwd: example, timeout: 60_000 },
      );
      if (/error/i.test(stdout + stderr)) throw new Error(`drizzle-kit generate failed:\n${stdout}${stderr}`);
      return stdout;
    }
    const files = (folder: string) =>
      Object.fromEntries(
        readdirSync(folder, { recursive: true, withFileTypes: true })
          .filter((e) => e.isFile())
          .map((e) => [relative(folder, join(e.parentPath, e.name)), readFileSync(join(e.parentPath, e.name), "utf8")]),
      );

    it("match the schema: drizzle-kit generate finds nothing to add", { timeout: 120_000 }, async () => {
      const committed = join(example, config.out as string);
      const out = join(scratch, "committed");
      cpSync(committed, out, { recursive: true });
      expect(await generate(out)).toMatch(/No schema changes, nothing to migrate/);
      expect(files(out)).toEqual(files(committed));
    });

    it("would catch drift: a snapshot without an index gets a migration creating it", {
      timeout: 120_000,
    }, async () => {
      const out = join(scratch, "drifted");
      const committed = files(join(example, "migrations"));
      cpSync(join(example, "migrations"), out, { recursive: true });
      // drizzle-kit compares the schema with the newest snapshot.
      const newest = Object.keys(committed)
        .filter((name) => name.endsWith("_snapshot.json"))
        .sort()
        .at(-1);
      const snapshot = join(out, newest as string);
      const meta = JSON.parse(readFileSync(snapshot, "utf8")) as { tables: { messages: { indexes: object } } };
      meta.tables.messages.indexes = {};
      writeFileSync(snapshot, JSON.stringify(meta, null, 2));
      await generate(out);
      const added = Object.entries(files(out)).filter(([name]) => name.endsWith(".sql") && !(name in committed));
      expect(added).toHaveLength(1);
      expect(added[0]?.[1]).toMatch(/ADD CONSTRAINT `messages_session_position_idx` UNIQUE\(`session_id`,`position`\)/);
    });
  });
});
