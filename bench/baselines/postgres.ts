// The Postgres baselines: the workloads written by hand against postgres.js and against node-postgres (`pg`), the
// fastest correct way we found with each, on the backend's own tables (a fresh schema migrated once by the backend).
// One prepared statement per operation. The agentix side runs on the same driver: a postgres.js client passed in,
// or a Drizzle db on a `pg` Pool.
import { randomBytes } from "node:crypto";
import { drizzle } from "drizzle-orm/node-postgres";
import pg from "pg";
import postgres, { type Sql } from "postgres";
import { uuidv7 } from "uuidv7";
import { cwdOf } from "../../src/core/records.js";
import type {
  MessageContent,
  MessageRecord,
  NewMessage,
  Role,
  SessionCursor,
  SessionRecord,
} from "../../src/core/types.js";
import { PostgresStorageBackend } from "../../src/postgres.js";
import { packageVersion } from "../machine.js";
import { agentixSubject, type BenchTarget, type Namespace, type Side, type Subject } from "../workloads.js";

/** Both sides get the same pool: postgres.js's default size. */
const POOL = 10;
const iso = (column: string) => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

type Row = string[];
type Statements = ReturnType<typeof statements>;

/** How a baseline sends a prepared statement (named by its key in {@link statements}) with one driver. */
export interface RawDriver {
  /** The rows, as arrays, and how many rows the statement wrote or returned. */
  run(name: keyof Statements, params: unknown[]): Promise<{ rows: Row[]; count: number }>;
  /** Every row of `iterate`, `batchSize` at a time. */
  batches(sessionId: string, batchSize: number): AsyncIterable<Row[]>;
}

/** postgres.js: `unsafe(text, params, { prepare: true })`, a server-side cursor to iterate. */
export function postgresJsDriver(sql: Sql, q: Statements): RawDriver {
  return {
    async run(name, params) {
      const result = await sql.unsafe(q[name], params as never[], { prepare: true }).values();
      return { rows: result as unknown as Row[], count: result.count };
    },
    batches: (sessionId, batchSize) =>
      sql.unsafe(q.iterate, [sessionId], { prepare: true }).values().cursor(batchSize) as AsyncIterable<Row[]>,
  };
}

/** node-postgres: named statements (`{ name, text, values, rowMode: "array" }`); pages along the index to iterate. */
function nodePgDriver(pool: pg.Pool, q: Statements, schema: string): RawDriver {
  const names = new Map(Object.keys(q).map((name) => [name, `raw_${schema}_${name}`]));
  const run: RawDriver["run"] = async (name, params) => {
    const result = await pool.query({ name: names.get(name), text: q[name], values: params, rowMode: "array" });
    return { rows: result.rows as Row[], count: result.rowCount ?? 0 };
  };
  return {
    run,
    async *batches(sessionId, batchSize) {
      for (let from = 0; ; from += batchSize) {
        const { rows } = await run("iteratePage", [sessionId, from, from + batchSize]);
        if (rows.length > 0) yield rows;
        if (rows.length < batchSize) return;
      }
    },
  };
}

export class RawPostgres implements Subject {
  readonly #driver: RawDriver;

  constructor(driver: RawDriver) {
    this.#driver = driver;
  }

  async saveMessage(sessionId: string, role: Role, content: MessageContent): Promise<void> {
    const params = [sessionId, new Date().toISOString(), role, JSON.stringify(content)];
    const result = await this.#driver.run("append", params);
    if (result.count !== 1) throw new Error(`session not found: ${sessionId}`);
  }

  async loadMessages(sessionId: string, last?: number): Promise<MessageRecord[]> {
    const { rows } = await (last === undefined
      ? this.#driver.run("load", [sessionId])
      : this.#driver.run("loadLast", [sessionId, last]));
    if (rows.length === 0) throw new Error(`session not found: ${sessionId}`);
    const messages = messagesOf(rows);
    return last === undefined ? messages : messages.reverse();
  }

  async saveMessages(sessionId: string, messages: NewMessage[], expectedLength?: number): Promise<number | null> {
    const batch = JSON.stringify(messages.map((m) => [m.role, JSON.stringify(m.content)]));
    const params = [sessionId, new Date().toISOString(), batch, messages.length, expectedLength ?? null];
    const [row] = (await this.#driver.run("appendBatch", params)).rows as unknown as [[number | null, boolean]];
    if (row?.[1] !== true) throw new Error(`session not found: ${sessionId}`);
    return row[0];
  }

  async countMessages(sessionId: string): Promise<number> {
    const [row] = (await this.#driver.run("count", [sessionId])).rows as unknown as [[number]];
    if (row === undefined) throw new Error(`session not found: ${sessionId}`);
    return row[0];
  }

  async loadPage(sessionId: string, offset: number, limit: number): Promise<MessageRecord[]> {
    const params = [sessionId, offset, offset + limit];
    const { rows } = await this.#driver.run("loadPage", params);
    if (rows.length === 0) throw new Error(`session not found: ${sessionId}`);
    return messagesOf(rows);
  }

  /** postgres.js: a server-side cursor, one statement and one snapshot; node-postgres: pages along the index. */
  async *iterateMessages(sessionId: string, batchSize: number): AsyncIterable<MessageRecord> {
    for await (const rows of this.#driver.batches(sessionId, batchSize)) yield* messagesOf(rows);
  }

  async listSessions(agentId: string, limit: number, before?: SessionCursor): Promise<SessionRecord[]> {
    const { rows } = await (before
      ? this.#driver.run("listBefore", [agentId, before.updated_at, before.session_id, limit])
      : this.#driver.run("list", [agentId, limit]));
    return rows.map(([session_id, agent_id, created_at, updated_at, metadata]) => ({
      session_id: session_id as string,
      agent_id: agent_id as string,
      created_at: created_at as string,
      updated_at: updated_at as string,
      metadata: metadata === null ? null : JSON.parse(metadata as string),
    }));
  }

  async forkSession(sessionId: string): Promise<string> {
    const id = uuidv7();
    const params = [sessionId, id, new Date().toISOString()];
    const [row] = (await this.#driver.run("fork", params)).rows as unknown as boolean[][];
    if (row?.[0] !== true) throw new Error(`session not found: ${sessionId}`);
    return id;
  }
}

/** Rows of role, content, timestamp; the one row of nulls of a session without messages is none. */
function messagesOf(rows: Row[]): MessageRecord[] {
  const messages: MessageRecord[] = [];
  for (const [role, content, timestamp] of rows) {
    if (role !== null)
      messages.push({ role: role as Role, content: JSON.parse(content as string), timestamp: timestamp as string });
  }
  return messages;
}

export function statements(s: string) {
  const columns = `id, agent_id, ${iso("created_at")}, ${iso("updated_at")}, metadata`;
  // NULLS LAST, as the index is declared: `desc` alone means NULLS FIRST, which the index cannot serve.
  const order = "order by updated_at desc nulls last, id desc nulls last";
  return {
    // The UPDATE locks the session row, so concurrent appends to one session serialise, and returns its newest
    // version: the message takes the position after the count it read there. GREATEST is the clamp.
    append: `with session as (
        update ${s}.sessions set updated_at = greatest(updated_at, $2), message_count = message_count + 1
        where id = $1 returning id, updated_at, message_count
      )
      insert into ${s}.messages (session_id, position, role, content, created_at)
      select id, message_count - 1, $3, $4, updated_at from session`,
    // A batch ($3: [[role, content JSON], ...]) numbered in its order after the count; with $5, only when the count
    // is $5 (compare-and-swap: the UPDATE's WHERE sees the row's newest version). One row: the new count (null on a
    // conflict) and whether the session exists.
    appendBatch: `with session as (
        update ${s}.sessions set updated_at = greatest(updated_at, $2), message_count = message_count + $4::int
        where id = $1 and ($5::int is null or message_count = $5::int) returning id, updated_at, message_count
      ), appended as (
        insert into ${s}.messages (session_id, position, role, content, created_at)
        select session.id, session.message_count - $4::int + m.ordinality - 1, m.value->>0, m.value->>1, session.updated_at
        from session, json_array_elements($3::text::json) with ordinality m
      )
      select (select message_count from session), exists (select from ${s}.sessions where id = $1)`,
    count: `select message_count from ${s}.sessions where id = $1`,
    // Faster than a plain `select ... from messages where session_id = $1 order by id` here (measured: the
    // lateral subquery always walks the (session_id, id) index), and it tells "no session" from "no messages".
    load: `select m.role, m.content, ${iso("m.created_at")} from ${s}.sessions s left join lateral (
        select role, content, created_at from ${s}.messages where session_id = s.id order by position
      ) m on true where s.id = $1`,
    loadLast: `select m.role, m.content, ${iso("m.created_at")} from ${s}.sessions s left join lateral (
        select role, content, created_at from ${s}.messages where session_id = s.id order by position desc limit $2
      ) m on true where s.id = $1`,
    loadPage: `select m.role, m.content, ${iso("m.created_at")} from ${s}.sessions s left join lateral (
        select role, content, created_at from ${s}.messages
        where session_id = s.id and position >= $2 and position < $3 order by position
      ) m on true where s.id = $1`,
    iterate: `select role, content, ${iso("created_at")} from ${s}.messages where session_id = $1 order by position`,
    iteratePage: `select role, content, ${iso("created_at")} from ${s}.messages
        where session_id = $1 and position >= $2 and position < $3 order by position`,
    list: `select ${columns} from ${s}.sessions where agent_id = $1 ${order} limit $2`,
    listBefore: `select ${columns} from ${s}.sessions where agent_id = $1 and (updated_at, id) < ($2, $3) ${order} limit $4`,
    // One statement is one transaction: the session row (its count) and its messages with their positions are
    // copied on the server, along (session_id, position).
    fork: `with fork as (
        insert into ${s}.sessions (id, agent_id, cwd, metadata, created_at, updated_at, message_count)
        select $2, agent_id, cwd, metadata, $3, $3, message_count from ${s}.sessions where id = $1
        returning id
      ), copied as (
        insert into ${s}.messages (session_id, position, role, content, created_at)
        select fork.id, m.position, m.role, m.content, m.created_at
        from fork, ${s}.messages m where m.session_id = $1 order by m.position
      )
      select exists (select from fork)`,
  };
}

/**
 * The Postgres target on postgres.js (`"postgres"`) or on node-postgres (`"pg"`). `floor` makes the floor side's
 * subject (bench/baselines/floor-postgres.ts, which builds on this module), on postgres.js only.
 */
export function postgresTarget(
  url: string,
  floor: ((client: Sql, schema: string) => Subject) | undefined,
  driver: "postgres" | "pg" = "postgres",
): BenchTarget {
  const root = postgres(url, { max: 2, onnotice: () => {} });
  return {
    name: driver,
    floor: floor !== undefined && driver === "postgres",
    async probe() {
      try {
        await root`select 1`;
        return null;
      } catch (error) {
        return `no Postgres at ${url}: ${(error as Error).message}`;
      }
    },
    async versions() {
      const [row] = await root`show server_version`;
      return driver === "pg"
        ? { Postgres: String(row?.server_version), pg: packageVersion("pg") }
        : { Postgres: String(row?.server_version), "postgres.js": packageVersion("postgres") };
    },
    async open(side: Side, count = false): Promise<Namespace> {
      const schema = `agentix_bench_${randomBytes(5).toString("hex")}`;
      // The backend's migration, run once, makes the tables of both sides.
      const admin = new PostgresStorageBackend({ url, schema, max: 4 });
      await admin.listSessions("migrate");
      const wire = { roundTrips: 0, commands: 0 };
      const sent = () => {
        wire.roundTrips++;
        wire.commands++;
      };
      const quoted = `"${schema}"`;
      const q = statements(quoted);
      let backend: PostgresStorageBackend | undefined;
      let raw: Subject | undefined;
      let end: () => Promise<unknown>;
      let store: Namespace["store"];
      if (driver === "pg") {
        const pool = new pg.Pool({ connectionString: url, max: POOL });
        // Every statement goes through the pool's query() (Drizzle's and the baseline's): one round trip each.
        const query = pool.query.bind(pool) as (...args: unknown[]) => Promise<unknown>;
        if (count)
          pool.query = ((...args: unknown[]) => {
            sent();
            return query(...args);
          }) as typeof pool.query;
        if (side === "agentix") backend = new PostgresStorageBackend({ db: drizzle({ client: pool }), schema });
        else raw = new RawPostgres(nodePgDriver(pool, q, schema.slice(-10)));
        end = () => pool.end();
      } else {
        // `debug` is called once for every statement sent; only when counting: with it set, postgres.js captures a
        // stack trace (new Error()) for every query and every fragment of a tagged template, tens of µs each.
        const client = postgres(url, { max: POOL, onnotice: () => {}, ...(count ? { debug: sent } : {}) });
        if (side === "agentix") backend = new PostgresStorageBackend({ client, schema });
        else if (side === "floor" && floor) raw = floor(client, schema);
        else raw = new RawPostgres(postgresJsDriver(client, q));
        store = { postgres: client, schema };
        end = () => client.end({ timeout: 5 });
      }
      return {
        subject: backend ? agentixSubject(backend) : (raw as Subject),
        ...(backend ? { backend } : {}),
        admin,
        ...(count ? { wire } : {}),
        ...(store ? { store } : {}),
        async seedSessions(records: SessionRecord[]) {
          const rows = records.map((r) => ({
            id: r.session_id,
            agent_id: r.agent_id,
            cwd: cwdOf(r.metadata),
            metadata: r.metadata === null ? null : JSON.stringify(r.metadata),
            created_at: r.created_at,
            updated_at: r.updated_at,
          }));
          await root.unsafe(
            `insert into ${quoted}.sessions (id, agent_id, cwd, metadata, created_at, updated_at)
             select * from json_to_recordset($1::text::json)
               as r(id uuid, agent_id text, cwd text, metadata text, created_at timestamptz, updated_at timestamptz)`,
            [JSON.stringify(rows)],
          );
        },
        async settle() {
          // Fresh statistics on both sides, so that autovacuum does not change a plan in the middle of a run.
          await root.unsafe(`analyze ${quoted}.sessions, ${quoted}.messages`);
        },
        async drop() {
          await backend?.close();
          await end();
          await admin.close();
          await root.unsafe(`drop schema if exists ${quoted} cascade`);
        },
      };
    },
    close: () => root.end({ timeout: 5 }),
  };
}
