/**
 * How the Postgres backend reaches its database: its options checked, and the one place where it makes a client
 * (postgres.js from a `postgres://` url, PGlite from a `pglite:` url) or wraps the client or db passed in.
 * Internal to `agentix/postgres`, loaded once drizzle-orm is known to be installed.
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
import { entityKind, fillPlaceholders, is, type Logger, Placeholder, type Query } from "drizzle-orm";
import {
  PgDatabase,
  PgDialect,
  type PgPreparedQuery,
  type PgSession,
  PgTransaction,
  type PreparedQueryConfig,
} from "drizzle-orm/pg-core";
import { PostgresJsSession } from "drizzle-orm/postgres-js/session";
import type { Sql } from "postgres";
import { z } from "zod";
import { importDriver } from "./core/driver.js";
import type { AgentixStorageError } from "./core/errors.js";
import { expandHome } from "./core/paths.js";
import { driverError } from "./postgres-migrate.js";
import type { AnyPgDatabase } from "./postgres-statements.js";

/** What agentix/postgres needs besides a driver, for the missing-package message. */
const PACKAGES = ["drizzle-orm"];

// A driver only for what is given: postgres.js for a postgres:// url or a client, PGlite for a pglite: url
// (loaded then). A db passed in brings its own.
const postgresJs = await importDriver<{ default: typeof import("postgres") }>("postgres", "agentix/postgres", [
  "postgres",
  ...PACKAGES,
]).catch((error: unknown) => error as AgentixStorageError);

const SCHEMA_NAME = z
  .string()
  .min(1, "must not be empty")
  .refine((s) => s.isWellFormed() && !s.includes("\u0000"), "must be well-formed Unicode without NUL characters")
  // Postgres silently truncates longer names: two tenants would share one schema.
  .refine((s) => Buffer.byteLength(s) <= 63, "must be at most 63 bytes (UTF-8)")
  .refine((s) => !s.startsWith("pg_"), 'must not start with "pg_" (reserved by Postgres)');

const isClient = (v: unknown): v is Sql =>
  typeof v === "function" &&
  ["unsafe", "begin", "end"].every((k) => typeof (v as unknown as Record<string, unknown>)[k] === "function");

const PGLITE = /^pglite:/i;

/** Whether `url` names a PGlite database (`pglite:...`) rather than a server. */
export const isPglite = (url: string | undefined): boolean => url !== undefined && PGLITE.test(url);

/** The options of `PostgresStorageBackend`, checked. */
export const OPTIONS = z
  .strictObject({
    url: z
      .string()
      .regex(/^(postgres(ql)?:\/\/|pglite:)/i, "must be a postgres://, postgresql:// or pglite: URL")
      .optional(),
    client: z
      .custom<Sql>(isClient, "expected a client made by postgres() (not a transaction or reserved connection)")
      .optional(),
    db: z
      .custom<AnyPgDatabase>(
        (v) => is(v, PgDatabase) && !is(v, PgTransaction),
        "expected a Drizzle Postgres database, such as drizzle(pool) of drizzle-orm/node-postgres (not a transaction)",
      )
      .optional(),
    max: z.number().int().positive().optional(),
    prepare: z.boolean().optional(),
    schema: SCHEMA_NAME.optional(),
    migrate: z.boolean().optional(),
  })
  .superRefine((o, ctx) => {
    if ([o.url, o.client, o.db].filter((v) => v !== undefined).length !== 1)
      ctx.addIssue({ code: "custom", message: "give either url, client or db" });
    if (o.max !== undefined && (o.url === undefined || PGLITE.test(o.url)))
      ctx.addIssue({ code: "custom", path: ["max"], message: "sizes the pool opened from a postgres:// url only" });
    if (o.prepare !== undefined && (o.url === undefined || PGLITE.test(o.url)))
      ctx.addIssue({
        code: "custom",
        path: ["prepare"],
        message:
          "configures the pool opened from a postgres:// url only; make a client with postgres(url, { prepare }) instead",
      });
  });

/** A database the backend works through, and how to close it when the backend opened it. */
export interface Connection {
  db: AnyPgDatabase;
  close: (() => Promise<void>) | undefined;
}

/** What {@link connect} makes a connection of. */
export interface DriverOptions {
  url: string | undefined;
  client: Sql | undefined;
  db: AnyPgDatabase | undefined;
  max: number | undefined;
  prepare: boolean | undefined;
}

/** A database on a postgres.js client, without drizzle()'s changes to the client's own date parsers. */
function postgresJsDatabase(client: Sql): AnyPgDatabase {
  const dialect = new PgDialect();
  return new PgDatabase(dialect, new PostgresJsSession(client, dialect, undefined), undefined);
}

/**
 * The one place where the backend makes a client: from `url` (postgres.js, or PGlite for `pglite:`, which loads
 * asynchronously), or around a client or db passed in. Options of the driver go here.
 */
export function connect(o: DriverOptions): Connection | Promise<Connection> {
  if (o.db) return { db: o.db, close: undefined };
  if (o.url !== undefined && PGLITE.test(o.url)) return openPglite(o.url);
  if (postgresJs instanceof Error) throw postgresJs;
  const client =
    o.client ??
    postgresJs.default(o.url as string, {
      ...(o.max === undefined ? {} : { max: o.max }),
      ...(o.prepare === undefined ? {} : { prepare: o.prepare }),
      // With named statements, no pipelining (postgres.js's `max_pipeline`, 100 by default, missing from its
      // types): a statement's first run sends Parse/Describe/Flush without a Sync, and queued behind queries in
      // flight, a transaction pooler hands the server connection on at their ReadyForQuery while the describe
      // is still answered there. Replies then reach the wrong client: calls hung, one's failure was another's
      // (which postgres.js ran again: duplicated) and its success another's (lost). One query in flight per
      // connection keeps every exchange on one server connection; postgres.js then re-prepares a statement
      // the pooler lost (26000) by itself, which is safe, since the Bind failed before anything ran.
      ...(o.prepare === false ? {} : ({ max_pipeline: 0 } as object)),
      connection: { application_name: "agentix" },
      // postgres.js prints server notices to stdout by default; a library must not.
      onnotice: () => {},
    });
  return { db: postgresJsDatabase(client), close: o.client ? undefined : () => client.end({ timeout: 5 }) };
}

/** `pglite:memory:` (or `pglite:`) in memory; `pglite:<dir>`, `pglite:///abs/dir` in that directory (`~` expanded). */
async function openPglite(url: string): Promise<Connection> {
  const packages = ["@electric-sql/pglite", ...PACKAGES];
  const { PGlite } = await importDriver<typeof import("@electric-sql/pglite")>(
    "@electric-sql/pglite",
    "agentix/postgres with a pglite: url",
    packages,
  );
  const { drizzle } = await import("drizzle-orm/pglite");
  const rest = decodeURIComponent(url.slice("pglite:".length));
  const dir = rest === "" || rest === "memory:" ? undefined : expandHome(rest.replace(/^\/\/(?=\/)/, ""));
  const client: PGlite = await PGlite.create(dir);
  return { db: drizzle({ client }) as unknown as AnyPgDatabase, close: () => client.close() };
}

/** A statement ready to run: placeholder values in, the rows out as arrays; errors as the driver threw them. */
export type Statement = (values: Record<string, unknown>) => Promise<unknown[][]>;

/** What agentix uses of a node-postgres `Pool`, `PoolClient` or `Client`. */
interface NodePgClient {
  query(config: {
    name: string | undefined;
    text: string;
    values: unknown[];
    rowMode: "array";
    types: typeof NODE_PG_TYPES;
  }): Promise<{ rows: unknown[][] }>;
}

/**
 * How node-postgres parses agentix's columns: they are text (timestamps come as ISO text from `to_char`), int4
 * and bool only. Given with each query, so that type parsers a pool or the process set do not change them.
 */
const NODE_PG_TYPES = {
  getTypeParser: (oid: number): ((value: string) => unknown) =>
    oid === 23 ? Number : oid === 16 ? (value: string) => value === "t" : (value: string) => value,
};

/** A statement's placeholder without a value: a mistake in the backend, never sent (as `fillPlaceholders` would). */
function unfilled(name: string): never {
  throw new Error(`No value for placeholder "${name}" was provided`);
}

/** Whether Drizzle's `session` is of the class whose entity kind is `kind` (or a subclass), without importing it. */
function isSession(session: object, kind: string): boolean {
  for (let c = session.constructor as { [entityKind]?: string } | null; c; c = Object.getPrototypeOf(c)) {
    if (Object.hasOwn(c, entityKind) && c[entityKind] === kind) return true;
  }
  return false;
}

/**
 * `query` (rendered by Drizzle once per shape) ready to run under `name` (`undefined`: unnamed, never prepared).
 * On postgres.js and node-postgres the backend sends it on the session's client itself, as Drizzle's prepared
 * query would (the same call, the same options), but without Drizzle's layers around each call (tracing spans,
 * a cache lookup, three nested async functions: about 10 µs of client CPU per statement on node-postgres with 32
 * writers, more on a busy machine where each call starts with cold caches); the session's logger still sees every
 * statement. Every other driver (PGlite, Neon, ...) runs Drizzle's prepared query.
 */
export function prepareStatement(db: AnyPgDatabase, query: Query, name: string | undefined): Statement {
  const session = db._.session as PgSession & { client: unknown; logger: Logger };
  const { sql: text, params } = query;
  // The statements' parameters are all bare placeholders: their names in order, looked up without Drizzle's
  // per-parameter class checks; anything else (a value or an encoded parameter) goes through fillPlaceholders.
  const names = params.every((param) => is(param, Placeholder)) ? params.map((param) => param.name) : undefined;
  const logged = (values: Record<string, unknown>) => {
    const filled = names
      ? names.map((name) => (name in values ? values[name] : unfilled(name)))
      : fillPlaceholders(params, values);
    session.logger.logQuery(text, filled);
    return filled;
  };
  if (is(session, PostgresJsSession)) {
    const client = session.client as Sql;
    const options = { prepare: name !== undefined };
    return async (values) => (await client.unsafe(text, logged(values) as never[], options).values()) as unknown[][];
  }
  if (isSession(session, "NodePgSession")) {
    const client = session.client as NodePgClient;
    return async (values) => {
      const config = { name, text, values: logged(values), rowMode: "array", types: NODE_PG_TYPES } as const;
      return (await client.query(config)).rows;
    };
  }
  type Prepared = PgPreparedQuery<PreparedQueryConfig & { execute: unknown[][] }>;
  const prepared = session.prepareQuery(query, undefined, name, true, (rows) => rows) as Prepared;
  return (values) =>
    prepared.execute(values).catch((error: unknown) => {
      throw driverError(error);
    });
}
