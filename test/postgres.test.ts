import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { drizzle } from "drizzle-orm/postgres-js";
import postgres from "postgres";
import { afterAll, afterEach, beforeAll, describe, expect, inject, it, vi } from "vitest";
import { AgentixStorageError, BackendClosedError, ValidationError } from "../src/core/errors.js";
import { PostgresStorageBackend } from "../src/postgres.js";
import { runConformanceSuite } from "../src/testing/index.js";
import { createStorageBackend } from "../src/url.js";
import { type DriverConnection, pgDrivers } from "./support/pg-drivers.js";

const url = inject("postgresUrl");
const schema = `agentix_test_${randomUUID().slice(0, 8)}`;

describe.skipIf(!url)("PostgresStorageBackend", () => {
  const pgUrl = url as string;
  let admin: postgres.Sql;
  const opened: PostgresStorageBackend[] = [];
  const open = (options: ConstructorParameters<typeof PostgresStorageBackend>[0]) => {
    const backend = new PostgresStorageBackend(options);
    opened.push(backend);
    return backend;
  };

  beforeAll(() => {
    admin = postgres(pgUrl, { onnotice: () => {} });
  });
  afterEach(async () => {
    vi.useRealTimers();
    await Promise.all(opened.splice(0).map((b) => b.close()));
  });
  afterAll(async () => {
    await admin`drop schema if exists ${admin(schema)} cascade`;
    await admin.end();
  });

  runConformanceSuite("PostgresStorageBackend", { create: () => new PostgresStorageBackend({ url: pgUrl, schema }) });

  describe("options", () => {
    const rejected = (options: unknown): ValidationError => {
      try {
        new PostgresStorageBackend(options as never);
      } catch (error) {
        expect(error).toBeInstanceOf(ValidationError);
        return error as ValidationError;
      }
      throw new Error(`accepted ${JSON.stringify(options)}`);
    };
    const field = "PostgresStorageBackend options";

    it("needs exactly one of url, client and db", async () => {
      const client = postgres(pgUrl);
      const db = drizzle({ client });
      expect(rejected(undefined).message).toMatch(/either url, client or db/);
      expect(rejected({ schema }).message).toMatch(/either url, client or db/);
      expect(rejected({ url: pgUrl, client }).message).toMatch(/either url, client or db/);
      expect(rejected({ url: pgUrl, db }).message).toMatch(/either url, client or db/);
      expect(rejected({ client, db }).message).toMatch(/either url, client or db/);
      await client.end();
    });

    it.each([
      ["url", { url: "mysql://localhost/db" }],
      ["url", { url: 5 }],
      ["client", { client: {} }],
      ["client", { client: () => {} }],
      ["max", { url: "postgres://x/db", max: 0 }],
      ["max", { url: "postgres://x/db", max: 1.5 }],
      ["max", { client: postgres("postgres://x/db"), max: 2 }],
      ["max", { url: "pglite:memory:", max: 2 }],
      ["url", { url: "pglite" }],
      ["db", { db: {} }],
      ["db", { db: postgres("postgres://x/db") }],
      ["migrate", { url: "postgres://x/db", migrate: "yes" }],
      ["prepare", { url: "postgres://x/db", prepare: "false" }],
      ["prepare", { client: postgres("postgres://x/db"), prepare: false }],
      ["schema", { url: "postgres://x/db", schema: "" }],
      ["schema", { url: "postgres://x/db", schema: "pg_tenant" }],
      ["schema", { url: "postgres://x/db", schema: "a\u0000b" }],
      ["schema", { url: "postgres://x/db", schema: "\ud800" }],
      ["schema", { url: "postgres://x/db", schema: "x".repeat(64) }],
      ["schema", { url: "postgres://x/db", schema: "é".repeat(32) }], // 64 bytes: Postgres would truncate it
    ])("rejects a bad %s", (name, options) => {
      expect(rejected(options).field).toBe(`${field}.${name}`);
    });

    it("rejects unknown options and takes a 63-byte schema name", async () => {
      expect(rejected({ url: pgUrl, shema: "x" }).field).toBe(field);
      const b = open({ url: "postgres://x/db", schema: `${"é".repeat(31)}x`, max: 3, migrate: false });
      expect(b.closed).toBe(false);
    });
  });

  describe("connections", () => {
    const connections = async (name: string) =>
      Number((await admin`select count(*) from pg_stat_activity where application_name = ${name}`)[0]?.count);

    it("close() ends the pool it opened, and the sync twin's", async () => {
      const name = `agentix-test-${randomUUID().slice(0, 8)}`;
      const named = new URL(pgUrl);
      named.searchParams.set("application_name", name);
      const b = new PostgresStorageBackend({ url: named.href, schema, max: 3 });
      const id = await b.createSession("pool");
      await Promise.all(Array.from({ length: 6 }, () => b.getSession(id)));
      expect(b.getSessionSync(id)?.session_id).toBe(id);
      expect(await connections(name)).toBeGreaterThan(1);
      await b.close();
      for (let i = 0; i < 100 && (await connections(name)) > 0; i++) await new Promise((r) => setTimeout(r, 20));
      expect(await connections(name)).toBe(0);
    });

    it("never closes a client passed in, and its sync methods say why they cannot run", async () => {
      const client = postgres(pgUrl);
      try {
        const b = new PostgresStorageBackend({ client, schema });
        const id = await b.createSession("client");
        expect(() => b.getSessionSync(id)).toThrow(AgentixStorageError);
        expect(() => b.getSessionSync(id)).toThrow(/worker thread.*\{ url \}/);
        await b.close();
        expect((await client`select 1 as one`)[0]?.one).toBe(1);
      } finally {
        await client.end();
      }
    });

    it("reads rows by position, so a client with a column transform works the same", async () => {
      const client = postgres(pgUrl, { transform: postgres.camel });
      try {
        const b = new PostgresStorageBackend({ client, schema });
        const id = await b.createSession("camel", { cwd: "/c" });
        await b.saveMessage(id, "user", { some_key: 1 });
        expect(await b.getSession(id)).toMatchObject({ session_id: id, agent_id: "camel", metadata: { cwd: "/c" } });
        expect((await b.loadMessages(id))[0]?.content).toEqual({ some_key: 1 });
        expect((await b.listSessions("camel", { cwd: "/c" })).map((s) => s.session_id)).toContain(id);
        await b.close();
      } finally {
        await client.end();
      }
    });
  });
});

// The Postgres-specific checks of what is stored, on each driver: rows read back through the test's own connection.
describe.each(pgDrivers(url))("PostgresStorageBackend on $name: what is stored", (driver) => {
  const schema = `agentix_test_${randomUUID().slice(0, 8)}`;
  let connection: DriverConnection;
  const extra: DriverConnection[] = [];
  const opened: PostgresStorageBackend[] = [];
  const open = (on: DriverConnection = connection) => {
    const backend = new PostgresStorageBackend({ ...on.options, schema });
    opened.push(backend);
    return backend;
  };
  /** `n` backends, each on its own connection (pool) where the driver has several; PGlite's all share its one. */
  const several = async (n: number) => {
    const backends: PostgresStorageBackend[] = [];
    for (let i = 0; i < n; i++) {
      if (!driver.concurrent) {
        backends.push(open());
        continue;
      }
      const more = await driver.open(url);
      extra.push(more);
      backends.push(open(more));
    }
    return backends;
  };
  const query = (text: string, parameters: unknown[] = []) => connection.admin.query(text, parameters);
  const t = (name: string) => `"${schema}".${name}`;

  beforeAll(async () => {
    connection = await driver.open(url);
  });
  afterEach(async () => {
    vi.useRealTimers();
    await Promise.all(opened.splice(0).map((b) => b.close()));
    await Promise.all(extra.splice(0).map((c) => c.close()));
  });
  afterAll(async () => {
    await connection?.admin.exec(`drop schema if exists "${schema}" cascade`);
    await connection?.close();
  });

  it("content and metadata as JSON text, cwd apart, exact timestamps; messages go with their session", async () => {
    const b = open();
    const metadata = { cwd: "/w", n: 1 };
    const id = await b.createSession("stored", metadata);
    const bare = await b.createSession("stored", { cwd: 42 });
    await b.saveMessage(id, "assistant", '{"a":1}');
    await b.saveMessage(id, "user", { text: "\u0000\ud800", list: [] });
    const [session] = await query(
      `select cwd, metadata, created_at = $1::timestamptz as exact from ${t("sessions")} where id = $2`,
      [(await b.getSession(id))?.created_at, id],
    );
    expect(session).toEqual({ cwd: "/w", metadata: JSON.stringify(metadata), exact: true });
    const [other] = await query(`select cwd, metadata from ${t("sessions")} where id = $1`, [bare]);
    expect(other).toEqual({ cwd: null, metadata: '{"cwd":42}' });
    const loaded = await b.loadMessages(id);
    const rows = await query(
      `select role, content, to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as ts
       from ${t("messages")} where session_id = $1 order by id`,
      [id],
    );
    expect(rows.map((r) => [r.role, r.content, r.ts])).toEqual(
      loaded.map((m) => [m.role, JSON.stringify(m.content), m.timestamp]),
    );
    await b.deleteSession(id);
    expect((await query(`select count(*)::int as n from ${t("messages")} where session_id = $1`, [id]))[0]?.n).toBe(0);
    const empty = await b.createSession("stored", null);
    expect((await query(`select metadata from ${t("sessions")} where id = $1`, [empty]))[0]?.metadata).toBeNull();
  });

  it("message_count is the number of message rows after appends, batches, forks and imports; tool is a role", async () => {
    const b = open();
    const counts = async (id: string) =>
      (
        await query(
          `select s.message_count, (select count(*)::int from ${t("messages")} m where m.session_id = s.id) as n
           from ${t("sessions")} s where s.id = $1`,
          [id],
        )
      ).map((r) => [r.message_count, r.n]);
    const id = await b.createSession("counted");
    expect(await counts(id)).toEqual([[0, 0]]);
    await b.saveMessage(id, "tool", { result: 1 });
    const batch = Array.from({ length: 7 }, (_, i) => ({ role: "tool" as const, content: { i } }));
    expect(await b.saveMessages(id, batch)).toEqual({ length: 8 });
    const fork = await b.forkSession(id);
    await b.saveMessage(fork, "user", "only in the fork");
    const imported = randomUUID();
    const record = { ...(await b.getSession(id)), session_id: imported } as never;
    expect(await b.importSession(record, await b.loadMessages(id))).toBe(true);
    expect(await counts(id)).toEqual([[8, 8]]);
    expect(await counts(fork)).toEqual([[9, 9]]);
    expect(await counts(imported)).toEqual([[8, 8]]);
    const roles = await query(`select distinct role from ${t("messages")} where session_id = $1`, [id]);
    expect(roles.map((r) => r.role)).toEqual(["tool"]);
    expect(await b.countMessages(imported)).toBe(8);
  });

  it("positions are 0 … message_count-1 after appends, batches, edits, forks and imports", async () => {
    const b = open();
    const say = (content: string) => ({ role: "user" as const, content });
    const positions = async (id: string) =>
      (
        await query(
          `select s.message_count, array(select position from ${t("messages")} m
           where m.session_id = s.id order by m.id) as positions from ${t("sessions")} s where s.id = $1`,
          [id],
        )
      ).map((r) => [r.message_count, r.positions]);
    const dense = (n: number) => [[n, Array.from({ length: n }, (_, p) => p)]];
    const id = await b.createSession("positions");
    await b.saveMessage(id, "user", "a");
    await b.saveMessages(id, [say("b"), say("c"), say("d")]);
    expect(await positions(id)).toEqual(dense(4));
    await b.replaceMessages(id, 1, [say("x"), say("y"), say("z")]);
    await b.popMessage(id);
    await b.saveMessages(id, [say("e")], { expectedLength: 3, idempotencyKey: "e" });
    expect(await positions(id)).toEqual([[4, [0, 1, 2, 3]]]);
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["a", "x", "y", "e"]);
    const fork = await b.forkSession(id, { length: 3 });
    expect(await positions(fork)).toEqual(dense(3));
    const imported = randomUUID();
    const record = { ...(await b.getSession(id)), session_id: imported } as never;
    await b.importSession(record, await b.loadMessages(id));
    expect(await positions(imported)).toEqual(dense(4));
    await b.replaceMessages(id, 0, []);
    expect(await positions(id)).toEqual([[0, []]]);
    // The unique (session_id, position) index: two messages never share a position.
    await b.saveMessage(id, "user", "only");
    await expect(
      query(
        `insert into ${t("messages")} (session_id, position, role, content, created_at) values ($1, 0, 'user', '"twin"', now())`,
        [id],
      ),
    ).rejects.toThrow(/messages_session_idx/);
  });

  it("idempotency keys: a row each, the 1,000 newest kept per session, gone with the session", async () => {
    const b = open();
    const id = await b.createSession("keys");
    const other = await b.createSession("keys");
    await b.saveMessages(other, [{ role: "user", content: "o" }], { idempotencyKey: "k0" });
    for (let i = 0; i < 1005; i++)
      await b.saveMessages(id, [{ role: "user", content: `m${i}` }], { idempotencyKey: `k${i}` });
    const kept = async (session: string) =>
      (
        await query(
          `select count(*)::int as n, min(seq) as oldest, max(seq) as newest,
           (select key_seq from ${t("sessions")} where id = $1) as counter
           from ${t("idempotency_keys")} where session_id = $1`,
          [session],
        )
      )[0];
    expect(await kept(id)).toEqual({ n: 1000, oldest: 6, newest: 1005, counter: 1005 });
    expect(await kept(other)).toEqual({ n: 1, oldest: 1, newest: 1, counter: 1 });
    // The 1,000 newest are remembered: a retry of k5 (the oldest kept) writes nothing.
    expect(await b.saveMessages(id, [{ role: "user", content: "m5" }], { idempotencyKey: "k5" })).toEqual({
      length: 6,
    });
    expect(await b.countMessages(id)).toBe(1005);
    const [popped] = await query(
      `select popped_role, popped_content, popped_at from ${t("idempotency_keys")} where session_id = $1 and key = 'k5'`,
      [id],
    );
    expect(popped).toEqual({ popped_role: null, popped_content: null, popped_at: null });
    await b.popMessage(id, { idempotencyKey: "pop" });
    const [row] = await query(
      `select length, popped_role, popped_content from ${t("idempotency_keys")} where session_id = $1 and key = 'pop'`,
      [id],
    );
    expect(row).toEqual({ length: 1004, popped_role: "user", popped_content: '"m1004"' });
    await b.deleteSession(id);
    expect((await kept(id))?.n).toBe(0);
    expect((await kept(other))?.n).toBe(1);
  });

  it("a batch the server refuses part-way writes nothing: no message, count and updated_at unchanged", async () => {
    const b = open();
    const id = await b.createSession("refused");
    await b.saveMessage(id, "user", "before");
    const before = await b.getSession(id);
    // A trigger in this test's schema that refuses the third message of the batch, after two were inserted.
    const trigger = `refuse_${randomUUID().slice(0, 8)}`;
    await connection.admin.exec(`
      create function "${schema}".${trigger}() returns trigger language plpgsql as $$
      begin if new.content = '"refused"' then raise exception 'refused by the test'; end if; return new; end $$;
      create trigger ${trigger} before insert on "${schema}".messages for each row execute function "${schema}".${trigger}()`);
    try {
      const batch = ["a", "b", "refused", "d"].map((content) => ({ role: "user" as const, content }));
      const error = await b.saveMessages(id, batch).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AgentixStorageError);
      // The driver's own error, not Drizzle's wrapper (whose message holds the statement and its parameters).
      expect(((error as AgentixStorageError).cause as Error).message).toMatch(/^refused by the test/);
      expect((error as AgentixStorageError).message).not.toMatch(/"refused"|Failed query/);
    } finally {
      await connection.admin.exec(`drop function "${schema}".${trigger}() cascade`);
    }
    expect(await b.countMessages(id)).toBe(1);
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["before"]);
    expect(await b.getSession(id)).toEqual(before);
  });

  it("openSession of an existing session writes nothing: the row keeps its version (xmin)", async () => {
    const b = open();
    const id = randomUUID();
    await b.openSession("xmin", id, { k: 1 });
    const version = async () => (await query(`select xmin::text as x from ${t("sessions")} where id = $1`, [id]))[0]?.x;
    const first = await version();
    for (let i = 0; i < 3; i++) expect((await b.openSession("xmin", id, { k: 2 })).created).toBe(false);
    await b.openSession("another-agent", id).catch(() => {});
    await b.createSession("xmin", null, { sessionId: id }).catch(() => {});
    expect(await version()).toBe(first);
    await b.updateSession(id, { metadata: { cwd: "/moved" } });
    expect(await version()).not.toBe(first);
    expect((await query(`select cwd from ${t("sessions")} where id = $1`, [id]))[0]?.cwd).toBe("/moved");
  });

  it("16 openSession calls at once from four connections create the session once, and all get the same record", async () => {
    const pools = await several(4);
    // Every backend migrated and connected first, so that the calls below really start together.
    await Promise.all(pools.map((p) => Promise.all(Array.from({ length: 4 }, () => p.getSession(randomUUID())))));
    for (let round = 0; round < 5; round++) {
      const id = randomUUID();
      const opened = await Promise.all(
        Array.from({ length: 16 }, (_, i) => (pools[i % 4] as PostgresStorageBackend).openSession("race", id, { i })),
      );
      expect(opened.filter((o) => o.created)).toHaveLength(1);
      const created = opened.find((o) => o.created)?.session;
      for (const o of opened) expect(o.session).toEqual(created);
      expect((await query(`select count(*)::int as n from ${t("sessions")} where id = $1`, [id]))[0]?.n).toBe(1);
    }
  });

  it("concurrent appends from several connections, clocks ahead and behind: ids and timestamps agree", async () => {
    const writers = await several(4);
    const id = await (writers[0] as PostgresStorageBackend).createSession("race");
    await Promise.all(writers.map((w) => w.countMessages(id)));
    const start = Date.now();
    vi.useFakeTimers({ toFake: ["Date"] });
    // Each message is stamped when saveMessage is called: alternate clocks an hour apart, all in flight at once.
    const saves = Array.from({ length: 120 }, (_, i) => {
      vi.setSystemTime(start + (i % 3 === 0 ? -3_600_000 : i));
      return (writers[i % 4] as PostgresStorageBackend).saveMessage(id, "user", `m${i}`);
    });
    vi.useRealTimers();
    await Promise.all(saves);
    const rows = await query(
      `select to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as ts
       from ${t("messages")} where session_id = $1 order by id`,
      [id],
    );
    const stamps = rows.map((r) => r.ts as string);
    expect(stamps).toHaveLength(120);
    expect(stamps).toEqual([...stamps].sort());
    const loaded = await (writers[1] as PostgresStorageBackend).loadMessages(id);
    expect(loaded.map((m) => m.timestamp)).toEqual(stamps);
    expect((await (writers[2] as PostgresStorageBackend).getSession(id))?.updated_at).toBe(stamps.at(-1));
  });
});

// The whole conformance suite once on each of the other drivers, through a Drizzle db passed in.
describe.each(pgDrivers(url).filter((d) => d.name !== "postgres.js"))("PostgresStorageBackend on $name", (driver) => {
  const schema = `agentix_test_${randomUUID().slice(0, 8)}`;
  let connection: DriverConnection;
  beforeAll(async () => {
    connection = await driver.open(url);
  });
  afterAll(async () => {
    await connection?.admin.exec(`drop schema if exists "${schema}" cascade`);
    await connection?.close();
  });

  // No ...Sync tests: a db passed in cannot be shared with the worker thread (see the test below).
  runConformanceSuite(`PostgresStorageBackend on ${driver.name}`, {
    create: () => new PostgresStorageBackend({ ...connection.options, schema }),
    sync: false,
  });

  it("never closes the db passed in, and its sync methods say why they cannot run", async () => {
    const b = new PostgresStorageBackend({ ...connection.options, schema });
    const id = await b.createSession("db");
    expect(() => b.getSessionSync(id)).toThrow(AgentixStorageError);
    expect(() => b.getSessionSync(id)).toThrow(/worker thread.*client or db.*\{ url \}/);
    await b.close();
    await expect(b.getSession(id)).rejects.toBeInstanceOf(BackendClosedError);
    expect((await connection.admin.query("select 1 as one"))[0]?.one).toBe(1);
    const again = new PostgresStorageBackend({ ...connection.options, schema });
    expect((await again.getSession(id))?.agent_id).toBe("db");
    await again.close();
  });
});

describe("PostgresStorageBackend on a pglite: url", () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  it("pglite:memory: is a database of the backend's own, gone with it; its sync methods say why they cannot run", async () => {
    const b = await createStorageBackend("pglite:memory:");
    const id = await b.createSession("lite", { cwd: "/l" });
    await b.saveMessage(id, "user", "hello");
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["hello"]);
    expect(() => b.countMessagesSync(id)).toThrow(/PGlite database lives in this thread/);
    await b.close();
    const other = await createStorageBackend("pglite:?schema=tenant");
    expect(await other.getSession(id)).toBeNull();
    await other.close();
  });

  it("pglite:<dir> keeps the sessions in that directory across backends, in the schema of ?schema=", async () => {
    const dir = mkdtempSync(join(tmpdir(), "agentix-pglite-"));
    dirs.push(dir);
    const first = await createStorageBackend(`pglite:${dir}?schema=tenant`);
    const id = await first.createSession("lite");
    await first.saveMessages(id, [
      { role: "user", content: "a" },
      { role: "tool", content: { b: 1 } },
    ]);
    await first.close();
    const second = new PostgresStorageBackend({ url: `pglite:${dir}`, schema: "tenant" });
    expect((await second.loadMessages(id)).map((m) => m.content)).toEqual(["a", { b: 1 }]);
    expect(await second.migrate()).toEqual([]);
    await second.close();
    const elsewhere = new PostgresStorageBackend({ url: `pglite:${dir}` });
    expect(await elsewhere.getSession(id)).toBeNull();
    await elsewhere.close();
  });

  it("close() before the first call closes nothing and leaves nothing open", async () => {
    const b = new PostgresStorageBackend({ url: "pglite:memory:" });
    await b.close();
    await expect(b.getSession(randomUUID())).rejects.toBeInstanceOf(BackendClosedError);
  });
});
