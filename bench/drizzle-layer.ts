// `npx tsx bench/drizzle-layer.ts`: the CPU each layer adds per statement, on postgres.js and node-postgres. One
// statement (a session's message count), rendered by Drizzle, is sent N times through a Drizzle prepared query
// (placeholders filled, rows as arrays), N times the backend's way (prepareStatement of src/postgres-driver.ts: the
// same call on the session's client, without Drizzle's per-call layers) and N times raw on the same client, in
// rounds of alternating order; the differences of this process's CPU time per statement.
import { randomBytes } from "node:crypto";
import { drizzle as nodePg } from "drizzle-orm/node-postgres";
import { PgDatabase, PgDialect, type PgPreparedQuery, type PreparedQueryConfig } from "drizzle-orm/pg-core";
import { PostgresJsSession } from "drizzle-orm/postgres-js/session";
import pg from "pg";
import postgres from "postgres";
import { PostgresStorageBackend } from "../src/postgres.js";
import { prepareStatement } from "../src/postgres-driver.js";
import { type AnyPgDatabase, readLength } from "../src/postgres-statements.js";
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

type Way = "drizzle" | "backend" | "raw";

async function measure(name: string, ways: Record<Way, () => Promise<unknown>>) {
  for (let i = 0; i < 300; i++) await Promise.all([ways.drizzle(), ways.backend(), ways.raw()]);
  const samples: Record<Way, number[]> = { drizzle: [], backend: [], raw: [] };
  const order: Way[] = ["drizzle", "backend", "raw"];
  for (let round = 0; round < 6; round++) {
    for (const way of round % 2 === 0 ? order : [...order].reverse()) samples[way].push(await cpu(ways[way]));
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
  const [d, b, r] = order.map((way) => median(samples[way])) as [number, number, number];
  console.log(
    `${name}: Drizzle prepared query ${d.toFixed(1)} µs/op, the backend's ${b.toFixed(1)}, raw ${r.toFixed(1)}; ` +
      `layer over raw: Drizzle's ${(d - r).toFixed(1)} µs/op, the backend's ${(b - r).toFixed(1)}`,
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
const b1 = prepareStatement(pjs as unknown as AnyPgDatabase, q1, "agentix_layer");
await measure("postgres.js", {
  drizzle: () => p1.execute({ id }),
  backend: () => b1({ id }),
  raw: () => client.unsafe(q1.sql, [id], { prepare: true }).values(),
});
await client.end();

// node-postgres
const pool = new pg.Pool({ connectionString: url, max: 1 });
const npg = nodePg({ client: pool });
const q2 = text(npg as never);
const p2 = npg._.session.prepareQuery(q2, undefined, "agentix_layer", true, (rows) => rows) as Prepared;
const b2 = prepareStatement(npg as unknown as AnyPgDatabase, q2, "agentix_layer");
await measure("node-postgres", {
  drizzle: () => p2.execute({ id }),
  backend: () => b2({ id }),
  raw: () => pool.query({ name: "raw_layer", text: q2.sql, values: [id], rowMode: "array" }),
});
await pool.end();
await setup.close();
const admin = postgres(url, { onnotice: () => {} });
await admin.unsafe(`drop schema "${schema}" cascade`);
await admin.end();
