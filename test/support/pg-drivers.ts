// The Postgres drivers the Postgres tests run on: postgres.js (a client passed in), node-postgres (a Drizzle db on a
// `pg` Pool) and PGlite (a Drizzle db on an in-process PGlite: no server). Each opens the backend's connection with
// a hook that records every query the driver is asked to send (so a test counts round trips at the driver, below
// Drizzle), and an `admin` connection of its own for the test's reads and writes, which the hook does not see.
import { PGlite } from "@electric-sql/pglite";
import { drizzle as nodePgDrizzle } from "drizzle-orm/node-postgres";
import { drizzle as pgliteDrizzle } from "drizzle-orm/pglite";
import pg from "pg";
import postgres from "postgres";
import type { PostgresStorageOptions } from "../../src/postgres.js";

/** A statement as the driver was asked to send it. */
export interface Sent {
  query: string;
  parameters: unknown[];
}

/** The test's own connection: rows as objects. */
export interface Admin {
  /** One statement, with `$n` parameters. */
  query(text: string, parameters?: unknown[]): Promise<Record<string, unknown>[]>;
  /** Several statements, no parameters. */
  exec(text: string): Promise<void>;
  /** `run` in a transaction that is rolled back afterwards; returns what `run` returned. */
  rolledBack<T>(run: (query: Admin["query"]) => Promise<T>): Promise<T>;
}

export interface DriverConnection {
  /** What to pass to PostgresStorageBackend besides the schema: `{ client }` or `{ db }`. */
  options: Exclude<PostgresStorageOptions, { url: string }>;
  /** Every statement the backend's connection sent since the last `splice`. */
  sent: Sent[];
  admin: Admin;
  close(): Promise<void>;
}

export interface PgDriver {
  name: "postgres.js" | "node-postgres" | "PGlite";
  /** Whether statements can run concurrently on several connections (PGlite is one connection: they queue). */
  concurrent: boolean;
  open(url: string | null): Promise<DriverConnection>;
}

class Rollback extends Error {}

const postgresJs: PgDriver = {
  name: "postgres.js",
  concurrent: true,
  async open(url) {
    const sent: Sent[] = [];
    const client = postgres(url as string, {
      onnotice: () => {},
      debug: (_connection, query, parameters) => sent.push({ query, parameters }),
    });
    const admin = postgres(url as string, { onnotice: () => {} });
    const query = async (text: string, parameters: unknown[] = []) =>
      (await admin.unsafe(text, parameters as never[])) as unknown as Record<string, unknown>[];
    return {
      options: { client },
      sent,
      admin: {
        query,
        exec: async (text) => void (await admin.unsafe(text)),
        rolledBack: (run) =>
          withRollback(
            (inside) =>
              admin.begin((tx) =>
                inside(async (t, p = []) => (await tx.unsafe(t, p as never[])) as unknown as Record<string, unknown>[]),
              ),
            run,
          ),
      },
      close: async () => {
        await Promise.all([client.end(), admin.end()]);
      },
    };
  },
};

/** Runs `run` inside `begin`'s transaction and rolls it back by throwing. */
async function withRollback<T>(
  begin: (inside: (query: Admin["query"]) => Promise<void>) => Promise<unknown>,
  run: (query: Admin["query"]) => Promise<T>,
): Promise<T> {
  let result: T | undefined;
  await begin(async (query) => {
    result = await run(query);
    throw new Rollback();
  }).catch((error: unknown) => {
    if (!(error instanceof Rollback)) throw error;
  });
  return result as T;
}

const nodePostgres: PgDriver = {
  name: "node-postgres",
  concurrent: true,
  async open(url) {
    const sent: Sent[] = [];
    const pool = new pg.Pool({ connectionString: url as string, max: 10 });
    // Every statement goes through the pool's query(): the backend's as query({ text, values, ... }), Drizzle's
    // (the migrations' check) as query(config, values).
    const query = pool.query.bind(pool) as (config: unknown, values?: unknown[]) => Promise<unknown>;
    pool.query = ((config: { text?: string; values?: unknown[] } | string, values?: unknown[]) => {
      sent.push(
        typeof config === "string"
          ? { query: config, parameters: values ?? [] }
          : { query: config.text as string, parameters: values ?? config.values ?? [] },
      );
      return query(config, values);
    }) as typeof pool.query;
    const admin = new pg.Pool({ connectionString: url as string, max: 4 });
    const adminQuery = async (text: string, parameters: unknown[] = []) => (await admin.query(text, parameters)).rows;
    return {
      options: { db: nodePgDrizzle({ client: pool }) },
      sent,
      admin: {
        query: adminQuery,
        exec: async (text) => void (await admin.query(text)),
        rolledBack: async (run) => {
          const client = await admin.connect();
          try {
            await client.query("begin");
            return await run(async (text, parameters = []) => (await client.query(text, parameters)).rows);
          } finally {
            await client.query("rollback");
            client.release();
          }
        },
      },
      close: async () => {
        await Promise.all([pool.end(), admin.end()]);
      },
    };
  },
};

const pglite: PgDriver = {
  name: "PGlite",
  concurrent: false,
  async open() {
    const sent: Sent[] = [];
    const client = await PGlite.create();
    // The admin connection is the same database (PGlite has one); only the backend's calls are recorded.
    const query = client.query.bind(client);
    const exec = client.exec.bind(client);
    const counted = new Proxy(client, {
      get(target, key) {
        if (key === "query")
          return (text: string, parameters?: unknown[], options?: unknown) => {
            sent.push({ query: text, parameters: parameters ?? [] });
            return query(text, parameters, options as never);
          };
        if (key === "exec")
          return (text: string, options?: unknown) => {
            sent.push({ query: text, parameters: [] });
            return exec(text, options as never);
          };
        const value = Reflect.get(target, key, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const db = pgliteDrizzle({ client: counted });
    const adminQuery = async (text: string, parameters: unknown[] = []) =>
      (await query<Record<string, unknown>>(text, parameters)).rows;
    return {
      options: { db },
      sent,
      admin: {
        query: adminQuery,
        exec: async (text) => void (await exec(text)),
        rolledBack: (run) =>
          withRollback(
            (inside) =>
              client.transaction((tx) =>
                inside(async (t, p = []) => (await tx.query<Record<string, unknown>>(t, p)).rows),
              ),
            run,
          ),
      },
      close: () => client.close(),
    };
  },
};

/** The drivers; the server ones only with a server (`url`), PGlite always. */
export function pgDrivers(url: string | null): PgDriver[] {
  return url ? [postgresJs, nodePostgres, pglite] : [pglite];
}
