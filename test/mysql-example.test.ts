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
import { AgentixStorageError, SessionNotFoundError, ValidationError } from "../src/core/errors.js";
import type { SessionRecord } from "../src/core/types.js";
import { runConformanceSuite } from "../src/testing/index.js";

const serverUrl = process.env.AGENTIX_TEST_MYSQL_URL ?? "mysql://root@127.0.0.1:3306/test";
const example = fileURLToPath(new URL("../examples/mysql/", import.meta.url));
const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

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

    it("upgrade a database of the first release in place: counts backfilled, the tool role accepted", async () => {
      const v1 = `${prefix}_upgrade`;
      await admin.query(`create database \`${v1}\``);
      // The database as the first release left it: only 0000_init applied (by drizzle's migrator, as the backend
      // did), and rows written with its columns.
      const folder = join(scratch, "v1");
      cpSync(join(example, "migrations"), folder, { recursive: true });
      const journalFile = join(folder, "meta", "_journal.json");
      const journal = JSON.parse(readFileSync(journalFile, "utf8")) as { entries: Array<{ tag: string }> };
      journal.entries = journal.entries.filter((e) => e.tag === "0000_init");
      writeFileSync(journalFile, JSON.stringify(journal));
      const c = await mysql.createConnection({ uri: urlOf(v1) });
      await migrate(drizzle(c), { migrationsFolder: folder, migrationsTable: "__agentix_migrations" });
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
      const applied = await select(`select hash from \`${v1}\`.__agentix_migrations order by id`);
      const all = readMigrationFiles({ migrationsFolder: join(example, "migrations") });
      expect(applied.map((r) => r.hash)).toEqual(all.map((m) => m.hash));
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
      expect(added[0]?.[1]).toMatch(/CREATE INDEX `messages_session_idx`/);
    });
  });
});
