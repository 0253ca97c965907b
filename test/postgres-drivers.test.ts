// How the Postgres backend runs its statements on each driver (src/postgres-driver.ts): on postgres.js and
// node-postgres it calls the session's client itself, past Drizzle's per-call layers, and must keep what a Drizzle db
// promises: its logger sees every statement, with its parameters. On node-postgres it also parses its own columns,
// so that the type parsers a process sets for its own queries (pg.types.setTypeParser) change nothing it returns.
import { randomUUID } from "node:crypto";
import { PGlite } from "@electric-sql/pglite";
import { type Logger, type SQL, sql } from "drizzle-orm";
import { drizzle as nodePgDrizzle } from "drizzle-orm/node-postgres";
import { drizzle as pgliteDrizzle } from "drizzle-orm/pglite";
import { drizzle as postgresJsDrizzle } from "drizzle-orm/postgres-js";
import pg from "pg";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type PostgresDatabase, PostgresStorageBackend } from "../src/postgres.js";

const url = inject("postgresUrl");

/** A Drizzle logger that keeps what it is given. */
function recorder(): Logger & { logged: Array<{ query: string; params: unknown[] }> } {
  const logged: Array<{ query: string; params: unknown[] }> = [];
  return { logged, logQuery: (query, params) => void logged.push({ query, params }) };
}

interface Driver {
  name: string;
  open(logger: Logger): Promise<{ db: PostgresDatabase; close: () => Promise<void> }>;
}

const drivers: Driver[] = [
  {
    name: "PGlite",
    async open(logger) {
      const client = await PGlite.create();
      return { db: pgliteDrizzle({ client, logger }), close: () => client.close() };
    },
  },
  ...(url
    ? [
        {
          name: "postgres.js",
          async open(logger: Logger) {
            const client = postgres(url, { onnotice: () => {} });
            return { db: postgresJsDrizzle({ client, logger }), close: () => client.end() };
          },
        },
        {
          name: "node-postgres",
          async open(logger: Logger) {
            const pool = new pg.Pool({ connectionString: url, max: 4 });
            return { db: nodePgDrizzle({ client: pool, logger }), close: () => pool.end() };
          },
        },
      ]
    : []),
];

describe.each(drivers)("PostgresStorageBackend on a Drizzle db of $name", (driver) => {
  const schema = `agentix_drivers_${randomUUID().slice(0, 8)}`;
  const logger = recorder();
  let connection: Awaited<ReturnType<Driver["open"]>>;
  let backend: PostgresStorageBackend;
  beforeAll(async () => {
    connection = await driver.open(logger);
    backend = new PostgresStorageBackend({ db: connection.db, schema });
    await backend.migrate();
  });
  afterAll(async () => {
    await backend?.close();
    await (connection?.db as unknown as { execute(q: SQL): Promise<unknown> })?.execute(
      sql.raw(`drop schema if exists "${schema}" cascade`),
    );
    await connection?.close();
  });

  it("its logger sees every statement the backend sends, with the parameters sent", async () => {
    const id = await backend.createSession("logged");
    logger.logged.length = 0;
    await backend.saveMessage(id, "user", { text: "logged-content" });
    await backend.saveMessages(id, [
      { role: "assistant", content: "a" },
      { role: "tool", content: "b" },
    ]);
    expect(await backend.countMessages(id)).toBe(3);
    expect(logger.logged.map((l) => l.query)).toEqual([
      expect.stringMatching(/update .*"sessions"[\s\S]*insert into .*"messages"/),
      expect.stringMatching(/update .*"sessions"[\s\S]*json_array_elements/),
      expect.stringMatching(/select .*"message_count".* from .*"sessions"/),
    ]);
    expect(logger.logged[0]?.params).toEqual(expect.arrayContaining([id, "user", '{"text":"logged-content"}']));
    expect(logger.logged[2]?.params).toEqual([id]);
  });
});

describe.skipIf(!url)("PostgresStorageBackend on node-postgres, with the process's own type parsers", () => {
  const schema = `agentix_drivers_${randomUUID().slice(0, 8)}`;
  const { types } = pg;
  const builtins = [types.builtins.INT4, types.builtins.BOOL, types.builtins.TEXT, types.builtins.UUID];
  const saved = builtins.map((oid) => types.getTypeParser(oid, "text"));
  let pool: pg.Pool;
  let backend: PostgresStorageBackend;
  beforeAll(() => {
    // What an application may set for its own queries, process-wide.
    for (const oid of builtins) types.setTypeParser(oid, "text", (value: string) => `app:${value}`);
    pool = new pg.Pool({ connectionString: url as string, max: 4 });
    backend = new PostgresStorageBackend({ db: nodePgDrizzle({ client: pool }), schema });
  });
  afterAll(async () => {
    builtins.forEach((oid, i) => {
      types.setTypeParser(oid, "text", saved[i] as (value: string) => unknown);
    });
    await backend?.close();
    await pool?.query(`drop schema if exists "${schema}" cascade`);
    await pool?.end();
  });

  it("counts, lengths, records, messages and fork outcomes read the same", async () => {
    const id = await backend.createSession("typed", { cwd: "/t" });
    await backend.saveMessage(id, "user", "one");
    expect((await backend.saveMessages(id, [{ role: "assistant", content: { n: 2 } }])).length).toBe(2);
    expect(await backend.countMessages(id)).toBe(2);
    const session = await backend.getSession(id);
    expect(session).toMatchObject({ session_id: id, agent_id: "typed", metadata: { cwd: "/t" } });
    expect((await backend.loadMessages(id)).map((m) => [m.role, m.content])).toEqual([
      ["user", "one"],
      ["assistant", { n: 2 }],
    ]);
    const fork = await backend.forkSession(id, { length: 1 });
    expect(await backend.countMessages(fork)).toBe(1);
    await expect(backend.forkSession(id, { sessionId: fork })).rejects.toThrow(/exists/);
    expect(await backend.createSession("typed", null, { sessionId: randomUUID() })).toMatch(/^[0-9a-f-]{36}$/);
    expect(await backend.openSession("typed", id)).toMatchObject({ created: false, session: { session_id: id } });
  });
});
