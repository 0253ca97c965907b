// Migrations and tenant schemas: applied once under an advisory lock, everything inside the schema (foreign keys
// included), schema names taken as data, tenants invisible to each other.
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { readMigrationFiles } from "drizzle-orm/migrator";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentixStorageError, SessionNotFoundError } from "../src/core/errors.js";
import { PostgresStorageBackend } from "../src/postgres.js";

const url = inject("postgresUrl");
const prefix = `agentix_test_${randomUUID().slice(0, 8)}`;
const journal = readMigrationFiles({
  migrationsFolder: fileURLToPath(new URL("../migrations/postgres", import.meta.url)),
});

describe.skipIf(!url)("PostgresStorageBackend migrations and schemas", () => {
  const pgUrl = url as string;
  let admin: postgres.Sql;
  const backends: PostgresStorageBackend[] = [];
  const open = (options: ConstructorParameters<typeof PostgresStorageBackend>[0]) => {
    const backend = new PostgresStorageBackend(options);
    backends.push(backend);
    return backend;
  };
  /** A fresh schema name of this file, dropped afterwards. */
  const fresh = (label = "") => `${prefix}_${label}${randomUUID().slice(0, 8)}`;
  const relations = async (schema: string) =>
    (
      await admin`select c.relname, c.relkind from pg_class c join pg_namespace n on n.oid = c.relnamespace
                  where n.nspname = ${schema} order by c.relname`
    ).map((r) => `${r.relname}:${r.relkind}`);

  beforeAll(() => {
    admin = postgres(pgUrl, { onnotice: () => {} });
  });

  it("migrate() applies what is pending and names it; then nothing; after close it refuses", async () => {
    const b = open({ url: pgUrl, schema: fresh("explicit") });
    expect(await b.migrate()).toEqual(journal.map(() => expect.stringMatching(/^\d{4}_/)));
    expect((await b.migrate()).length).toBe(0);
    const id = await b.createSession("after-migrate");
    expect((await b.getSession(id))?.agent_id).toBe("after-migrate");
    await b.close();
    await expect(b.migrate()).rejects.toMatchObject({ name: "BackendClosedError" });
  });
  afterAll(async () => {
    await Promise.all(backends.map((b) => b.close()));
    const schemas = await admin`select nspname from pg_namespace where starts_with(nspname, ${prefix})`;
    for (const { nspname } of schemas)
      await admin.unsafe(`drop schema "${String(nspname).replaceAll('"', '""')}" cascade`);
    await admin.end();
  });

  it("many backends starting at once on a fresh schema migrate it exactly once", async () => {
    const schema = fresh();
    const starters = Array.from({ length: 8 }, () => open({ url: pgUrl, schema, max: 2 }));
    const ids = await Promise.all(starters.map((b, i) => b.createSession(`starter-${i}`)));
    expect(new Set(ids).size).toBe(8);
    const rows =
      await admin`select hash, created_at::float8 as created_at from ${admin(schema)}.__agentix_migrations order by id`;
    // drizzle's bookkeeping: one row per journal entry, with its hash and time.
    expect(rows.map((r) => [r.hash, r.created_at])).toEqual(journal.map((m) => [m.hash, m.folderMillis]));
    for (const b of starters) expect(await b.getSession(ids[0] as string)).not.toBeNull();
  });

  it("creates everything in the schema, and the foreign key points at that schema's sessions", async () => {
    const schema = fresh();
    const b = open({ url: pgUrl, schema });
    await b.listSessions("anyone");
    expect(await relations(schema)).toEqual([
      "__agentix_migrations:r",
      "__agentix_migrations_id_seq:S",
      "__agentix_migrations_pkey:i",
      "idempotency_keys:r",
      "idempotency_keys_pkey:i",
      "idempotency_keys_session_seq_idx:i",
      "import_stages:r",
      "import_stages_pkey:i",
      "import_stages_staged_idx:i",
      "messages:r",
      "messages_id_seq:S",
      "messages_pkey:i",
      "messages_session_idx:i",
      "sessions:r",
      "sessions_agent_cwd_updated_idx:i",
      "sessions_agent_id_idx:i",
      "sessions_agent_updated_idx:i",
      "sessions_pkey:i",
    ]);
    for (const table of ["messages", "idempotency_keys"]) {
      const [fk] = await admin`
        select n.nspname, c.relname from pg_constraint k
        join pg_class c on c.oid = k.confrelid join pg_namespace n on n.oid = c.relnamespace
        where k.contype = 'f' and k.conrelid = ${`"${schema}"."${table}"`}::regclass`;
      expect(fk, table).toEqual({ nspname: schema, relname: "sessions" });
    }
    // Reads, edits and forks go along this one: unique, so two messages never share a position.
    const [index] = await admin`
      select indisunique, pg_get_indexdef(indexrelid) as def from pg_index
      where indexrelid = ${`"${schema}"."messages_session_idx"`}::regclass`;
    expect(index?.indisunique).toBe(true);
    expect(index?.def).toMatch(/\(session_id, "?position"?\)$/);
  });

  it("two schemas of one database never see each other's sessions", async () => {
    const a = open({ url: pgUrl, schema: fresh("a") });
    const b = open({ url: pgUrl, schema: fresh("b") });
    const agent = `tenant-${randomUUID()}`;
    const id = await a.createSession(agent, { cwd: "/t" });
    await a.saveMessage(id, "user", "for a only");
    expect(await b.getSession(id)).toBeNull();
    expect(await b.listSessions(agent)).toEqual([]);
    expect(await b.listSessions(agent, { cwd: "/t" })).toEqual([]);
    expect(await b.scanSessions()).toEqual([]);
    await expect(b.loadMessages(id)).rejects.toBeInstanceOf(SessionNotFoundError);
    await expect(b.saveMessage(id, "user", "x")).rejects.toBeInstanceOf(SessionNotFoundError);
    await expect(b.forkSession(id)).rejects.toBeInstanceOf(SessionNotFoundError);
    await b.deleteSession(id);
    // The same id may exist in both, independently.
    const record = (await a.getSession(id)) as NonNullable<Awaited<ReturnType<typeof a.getSession>>>;
    expect(await b.importSession(record, [])).toBe(true);
    await b.saveMessage(id, "assistant", "for b only");
    expect((await a.loadMessages(id)).map((m) => m.content)).toEqual(["for a only"]);
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["for b only"]);
  });

  it("takes a schema name as data: quotes, dots, case and SQL are part of the name", async () => {
    const names = ['Q"uote"; drop table sessions; --', "dot.ted", "Case", "case", "$1 'x'", "Ünï cödé"].map((n) =>
      fresh(n),
    );
    const ids = new Map<string, string>();
    for (const schema of names)
      ids.set(schema, await open({ url: pgUrl, schema }).createSession("named", { cwd: schema }));
    const created = await admin`select nspname from pg_namespace where nspname in ${admin(names)}`;
    expect(created.map((r) => r.nspname).sort()).toEqual([...names].sort());
    for (const schema of names) {
      const listed = await open({ url: pgUrl, schema }).listSessions("named");
      expect(listed.map((s) => [s.session_id, s.metadata?.cwd])).toEqual([[ids.get(schema), schema]]);
    }
  });

  it("upgrades in place a schema migrated by the previous release (0000, 0001), with its sessions and messages numbered", async () => {
    const previous = journal.slice(0, 2);
    expect(journal.length).toBeGreaterThan(previous.length);
    // A tenant schema whose name needs quoting: the upgrade's statements are rewritten into it too.
    const schema = fresh('Up"grade.');
    const q = `"${schema.replaceAll('"', '""')}"`;
    // What the previous release's backend did: its migrations in the schema, and drizzle's bookkeeping.
    await admin.begin(async (tx) => {
      await tx.unsafe(`create schema ${q}`);
      await tx.unsafe(`set local search_path to ${q}`);
      await tx.unsafe(
        `create table ${q}."__agentix_migrations" (id serial primary key, hash text not null, created_at bigint)`,
      );
      for (const migration of previous) {
        for (const statement of migration.sql) await tx.unsafe(statement.replaceAll('"public".', `${q}.`));
        await tx.unsafe(`insert into ${q}."__agentix_migrations" (hash, created_at) values ($1, $2)`, [
          migration.hash,
          migration.folderMillis,
        ]);
      }
    });
    const sessions = [randomUUID(), randomUUID(), randomUUID()];
    const sizes = [3, 0, 5];
    const roles = ["user", "assistant", "system"];
    for (const [i, id] of sessions.entries()) {
      await admin.unsafe(
        `insert into ${q}.sessions (id, agent_id, cwd, metadata, created_at, updated_at)
         values ($1, 'old', '/old', '{"cwd":"/old"}', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:0${i}.000Z')`,
        [id],
      );
    }
    // Appended in turns, as concurrent writers would have: each session's ids are not contiguous.
    for (let n = 0; n < Math.max(...sizes); n++) {
      for (const [i, id] of sessions.entries()) {
        if (n >= (sizes[i] as number)) continue;
        await admin.unsafe(
          `insert into ${q}.messages (session_id, role, content, created_at) values ($1, $2, $3, '2026-01-01T00:00:00.000Z')`,
          [id, roles[n % 3] as string, JSON.stringify(`old ${n}`)],
        );
      }
    }
    // The old schema refuses the new role, so the upgrade is what lets it in.
    await expect(
      admin.unsafe(
        `insert into ${q}.messages (session_id, role, content, created_at) values ($1, 'tool', '"x"', now())`,
        [sessions[0] as string],
      ),
    ).rejects.toThrow(/messages_role_check/);

    const b = open({ url: pgUrl, schema });
    expect(await Promise.all(sessions.map((id) => b.countMessages(id)))).toEqual(sizes);
    const applied = await admin.unsafe(`select created_at::float8 as at from ${q}."__agentix_migrations" order by id`);
    expect(applied.map((r) => r.at)).toEqual(journal.map((m) => m.folderMillis));
    expect((await b.loadMessages(sessions[2] as string)).map((m) => [m.role, m.content])).toEqual(
      Array.from({ length: 5 }, (_, n) => [roles[n % 3], `old ${n}`]),
    );
    // Numbered in place: each session's messages 0 … n-1 in their append (id) order, unique and not null.
    const numbered = await admin.unsafe(
      `select session_id, array_agg(position order by id) as positions, array_agg(content order by id) as contents
       from ${q}.messages group by session_id`,
    );
    expect(numbered).toHaveLength(2);
    for (const row of numbered) {
      const n = sizes[sessions.indexOf(row.session_id as (typeof sessions)[number])] as number;
      expect(row.positions).toEqual(Array.from({ length: n }, (_, p) => p));
      expect(row.contents).toEqual(Array.from({ length: n }, (_, p) => JSON.stringify(`old ${p}`)));
    }
    const [column] = await admin.unsafe(
      `select is_nullable from information_schema.columns
       where table_schema = $1 and table_name = 'messages' and column_name = 'position'`,
      [schema],
    );
    expect(column?.is_nullable).toBe("NO");
    expect((await b.listSessions("old", { cwd: "/old" })).map((s) => s.session_id)).toEqual([...sessions].reverse());
    expect(await b.saveMessages(sessions[0] as string, [{ role: "tool", content: { result: "ok" } }])).toEqual({
      length: 4,
    });
    await b.saveMessage(sessions[1] as string, "tool", "first");
    expect(await b.countMessages(sessions[1] as string)).toBe(1);
    expect((await b.loadMessages(sessions[0] as string, { last: 1 }))[0]).toMatchObject({
      role: "tool",
      content: { result: "ok" },
    });
    // Pages, tails, edits and forks work on the migrated rows.
    const old = sessions[2] as string;
    expect((await b.loadMessages(old, { offset: 1, limit: 2 })).map((m) => m.content)).toEqual(["old 1", "old 2"]);
    expect((await b.loadMessages(old, { last: 2 })).map((m) => m.content)).toEqual(["old 3", "old 4"]);
    expect(await b.popMessage(old, { expectedLength: 5, idempotencyKey: "upgrade" })).toMatchObject({
      role: "assistant",
      content: "old 4",
    });
    expect(await b.replaceMessages(old, 2, [{ role: "tool", content: "new 2" }])).toEqual({ length: 3 });
    const branch = await b.forkSession(old, { length: 2 });
    expect((await b.loadMessages(branch)).map((m) => m.content)).toEqual(["old 0", "old 1"]);
    expect((await b.loadMessages(old)).map((m) => m.content)).toEqual(["old 0", "old 1", "new 2"]);
    expect(await b.countMessages(old)).toBe(3);
    // A second backend finds the schema up to date and migrates nothing.
    expect(await open({ url: pgUrl, schema }).migrate()).toEqual([]);
  });

  it("upgrades a schema of the release before streamed imports (0000 … 0004), which then streams an import", async () => {
    const previous = journal.filter((m) => journal.indexOf(m) < 5);
    expect(journal.length).toBe(6);
    const schema = fresh();
    const q = `"${schema}"`;
    await admin.begin(async (tx) => {
      await tx.unsafe(`create schema ${q}`);
      await tx.unsafe(`set local search_path to ${q}`);
      await tx.unsafe(
        `create table ${q}."__agentix_migrations" (id serial primary key, hash text not null, created_at bigint)`,
      );
      for (const migration of previous) {
        for (const statement of migration.sql) await tx.unsafe(statement.replaceAll('"public".', `${q}.`));
        await tx.unsafe(`insert into ${q}."__agentix_migrations" (hash, created_at) values ($1, $2)`, [
          migration.hash,
          migration.folderMillis,
        ]);
      }
    });
    const old = randomUUID();
    await admin.unsafe(
      `insert into ${q}.sessions (id, agent_id, created_at, updated_at, message_count)
       values ($1, 'old', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z', 0)`,
      [old],
    );
    const [before] = await admin`select to_regclass(${`${schema}.import_stages`}) as t`;
    expect(before?.t).toBeNull();
    const b = open({ url: pgUrl, schema });
    const at = "2026-01-02T00:00:00.000Z";
    const messages = Array.from({ length: 25 }, (_, i) => ({
      role: "user" as const,
      content: `m ${i}`,
      timestamp: at,
    }));
    const record = { session_id: randomUUID(), agent_id: "old", created_at: at, updated_at: at, metadata: null };
    expect(await b.importSession(record, messages.values(), { batchSize: 10 })).toBe(true);
    expect(await b.loadMessages(record.session_id)).toStrictEqual(messages);
    expect(await b.countMessages(old)).toBe(0);
    const applied = await admin.unsafe(`select created_at::float8 as at from ${q}."__agentix_migrations" order by id`);
    expect(applied.map((r) => r.at)).toEqual(journal.map((m) => m.folderMillis));
    expect(await admin.unsafe(`select from ${q}.import_stages`)).toHaveLength(0);
  });

  it("with migrate: false, creates nothing and fails clearly on a schema that was never migrated", async () => {
    const schema = fresh();
    const b = open({ url: pgUrl, schema, migrate: false });
    const error = await b.createSession("nobody").catch((e: unknown) => e);
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect((error as Error).message).toMatch(/does not exist/);
    expect((await admin`select count(*)::int as n from pg_namespace where nspname = ${schema}`)[0]?.n).toBe(0);
    await open({ url: pgUrl, schema }).listSessions("migrator");
    expect(await b.createSession("somebody")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("needs no database privilege on an existing schema, and retries a migration that failed", async (ctx) => {
    const [me] = await admin`select rolsuper or rolcreaterole as can from pg_roles where rolname = current_user`;
    if (!me?.can) ctx.skip();
    const role = `${prefix}_role_${randomUUID().slice(0, 8)}`;
    const [{ db }] = (await admin`select current_database() as db`) as unknown as [{ db: string }];
    const as = new URL(pgUrl);
    as.username = role;
    as.password = "agentix-test";
    await admin.unsafe(`create role "${role}" login password 'agentix-test'`);
    try {
      // An existing schema the role may use, but no CREATE on the database: must work.
      const owned = fresh("owned");
      await admin.unsafe(`create schema "${owned}" authorization "${role}"`);
      expect(await open({ url: as.href, schema: owned }).createSession("limited")).toMatch(/^[0-9a-f-]{36}$/);
      // A schema it would have to create: fails, then works once the privilege is granted.
      const b = open({ url: as.href, schema: fresh("granted") });
      await expect(b.listSessions("x")).rejects.toThrow(/permission denied/);
      await admin.unsafe(`grant create on database "${db}" to "${role}"`);
      expect(await b.listSessions("x")).toEqual([]);
    } finally {
      await Promise.all(backends.splice(0).map((b) => b.close()));
      await admin.unsafe(`revoke all on database "${db}" from "${role}"`);
      for (const { nspname } of await admin`select nspname from pg_namespace where nspowner = ${role}::regrole`) {
        await admin.unsafe(`drop schema "${nspname}" cascade`);
      }
      await admin.unsafe(`drop role "${role}"`);
    }
  });

  it("through a node-postgres db, the migration is one message: sessions that kill an idle transaction at 1 ms", async () => {
    // A transaction of several round trips waits for the client between them, and the server ends such sessions.
    const pool = new pg.Pool({ connectionString: pgUrl, max: 4, options: "-c idle_in_transaction_session_timeout=1" });
    const errors: unknown[] = [];
    pool.on("error", (error) => errors.push(error));
    try {
      const schemas = [fresh("idle"), fresh("idle"), fresh("idle")];
      const tenants = schemas.map((schema) => open({ db: drizzle({ client: pool }), schema }));
      const applied = await Promise.all(tenants.map((b) => b.migrate()));
      for (const tags of applied) expect(tags).toEqual(journal.map(() => expect.stringMatching(/^\d{4}_/)));
      for (const b of tenants) expect(await b.countMessages(await b.createSession("idle"))).toBe(0);
      const [row] = (await pool.query("show idle_in_transaction_session_timeout")).rows;
      expect(row?.idle_in_transaction_session_timeout).toBe("1ms");
    } finally {
      await pool.end();
    }
    expect(errors).toEqual([]);
  });
});
