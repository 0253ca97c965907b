/**
 * How the Postgres backend reaches its database: its options checked, and the one place where it makes a client
 * (postgres.js from a `postgres://` url, PGlite from a `pglite:` url) or wraps the client or db passed in.
 * Internal to `agentix/postgres`, loaded once drizzle-orm is known to be installed.
 * @module
 */
import type { PGlite } from "@electric-sql/pglite";
import { is } from "drizzle-orm";
import { PgDatabase, PgDialect, PgTransaction } from "drizzle-orm/pg-core";
import { PostgresJsSession } from "drizzle-orm/postgres-js/session";
import type { Sql } from "postgres";
import { z } from "zod";
import { importDriver } from "./core/driver.js";
import type { AgentixStorageError } from "./core/errors.js";
import { expandHome } from "./core/paths.js";
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
