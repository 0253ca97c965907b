// `npx tsx bench/drizzle-layer.ts`: the CPU the Drizzle layer adds per statement, on postgres.js and node-postgres:
// one statement (a session's message count) sent N times through the backend's way (a Drizzle prepared query,
// placeholders filled, rows as arrays) and N times raw on the same client, in alternating rounds; the difference
// of this process's CPU time per statement.
import { randomBytes } from "node:crypto";
import { drizzle as nodePg } from "drizzle-orm/node-postgres";
import { PgDatabase, PgDialect, type PgPreparedQuery, type PreparedQueryConfig } from "drizzle-orm/pg-core";
import { PostgresJsSession } from "drizzle-orm/postgres-js/session";
import pg from "pg";
import postgres from "postgres";
import { PostgresStorageBackend } from "../src/postgres.js";
import { readLength } from "../src/postgres-statements.js";
import { pgTables } from "../src/schema/pg.js";

const url = process.env.AGENTIX_BENCH_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const N = Number(process.env.N ?? 3000);
const schema = `agentix_layer_${randomBytes(4).toString("hex")}`;
const setup = new PostgresStorageBackend({ url, schema, max: 1 });
const id = await setup.createSession("layer");

async function cpu(run: () => Promise<unknown>): Promise<number> {
  const start = process.cpuUsage();
  for (let i = 0; i < N; i++) await run();
  const used = process.cpuUsage(start);
  return (used.user + used.system) / N;
}

async function measure(name: string, drizzled: () => Promise<unknown>, raw: () => Promise<unknown>) {
  for (let i = 0; i < 300; i++) await Promise.all([drizzled(), raw()]);
  const d: number[] = [];
  const r: number[] = [];
  for (let round = 0; round < 6; round++) {
    if (round % 2 === 0) {
      d.push(await cpu(drizzled));
      r.push(await cpu(raw));
    } else {
      r.push(await cpu(raw));
      d.push(await cpu(drizzled));
    }
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  console.log(
    `${name}: Drizzle ${median(d).toFixed(1)} µs/op, raw ${median(r).toFixed(1)} µs/op, Drizzle layer ${(median(d) - median(r)).toFixed(1)} µs/op`,
  );
}

type Prepared = PgPreparedQuery<PreparedQueryConfig & { execute: unknown[][] }>;
const tables = pgTables(schema);
const text = (db: PgDatabase<never>) => new PgDialect().sqlToQuery(readLength(db as never, tables).getSQL());

// postgres.js
const client = postgres(url, { max: 1, onnotice: () => {} });
const dialect = new PgDialect();
const pjs = new PgDatabase(dialect, new PostgresJsSession(client, dialect, undefined), undefined);
const q1 = text(pjs as never);
const p1 = pjs._.session.prepareQuery(q1, undefined, "agentix_layer", true, (rows) => rows) as Prepared;
await measure(
  "postgres.js",
  () => p1.execute({ id }),
  () => client.unsafe(q1.sql, [id], { prepare: true }).values(),
);
await client.end();

// node-postgres
const pool = new pg.Pool({ connectionString: url, max: 1 });
const npg = nodePg({ client: pool });
const q2 = text(npg as never);
const p2 = npg._.session.prepareQuery(q2, undefined, "agentix_layer", true, (rows) => rows) as Prepared;
await measure(
  "node-postgres",
  () => p2.execute({ id }),
  () => pool.query({ name: "raw_layer", text: q2.sql, values: [id], rowMode: "array" }),
);
await pool.end();
await setup.close();
const admin = postgres(url, { onnotice: () => {} });
await admin.unsafe(`drop schema "${schema}" cascade`);
await admin.end();
