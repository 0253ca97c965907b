import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Command } from "commander";
import type { Cluster, Redis } from "ioredis";
import { expandHome } from "../core/paths.js";
import type { FileStorageBackend } from "../file.js";
import { openCluster } from "../redis-cluster.js";
import { checkServer, isClusterUrl } from "../redis-server.js";
import { createEmbeddedBackend, storagePath, storageScheme } from "../url.js";
import { checkFileStore } from "./doctor/file.js";
import { checkPostgresStore, type PgQuery } from "./doctor/postgres.js";
import { checkRedisStore } from "./doctor/redis.js";
import { type Finding, formatFindings } from "./doctor/report.js";
import { checkSqliteStore } from "./doctor/sqlite.js";
import { CliError, redact, selectStorage } from "./shared.js";

/**
 * `agentix doctor [--repair]`: checks a store and prints what it found; with `--repair`, repairs what is safe to
 * repair, never deleting data (File: damaged lines and files quarantined next to their session, the index rebuilt,
 * stale locks and temp files removed; Postgres: orphan rows moved to a quarantine table, counts, positions and index
 * columns fixed; Redis: orphan message lists renamed aside, index entries rebuilt or dropped, dead fork temp keys
 * removed). Idempotent. Exit code 1 while problems are left.
 */
export function doctorCommand(): Command {
  return new Command("doctor")
    .description(
      "check a store for damage and, with --repair, repair it without deleting data. " +
        "File: every session's files and the agent index (--repair quarantines damaged lines and files next to " +
        "their session, rebuilds the index, removes stale locks and temporary files). " +
        "SQLite: integrity_check and foreign_key_check (reported only). " +
        "Postgres/PGlite (?schema=; read only without --repair, never migrates): migrations applied, constraints in place, per " +
        "session message_count = its rows, positions 0..n-1, updated_at not older than its newest message, cwd = " +
        "metadata.cwd, key_seq not behind its keys, rows whose session is gone (--repair fixes the counts, " +
        "positions and columns, moves orphan rows to the table agentix_quarantine). " +
        "Redis (?prefix=, standalone or redis+cluster://, every master scanned): each session hash against its " +
        "index entries and newest message, every index entry against its session, message lists and other " +
        "per-session keys without their session hash, fork temp keys and op bitmaps without expiry (--repair " +
        "rebuilds or drops index entries, renames orphan message lists to {prefix}:quarantine:<time>:<key>, " +
        "removes orphan bookkeeping keys and dead fork temp keys)",
    )
    .option("--repair", "repair what can be repaired safely")
    .action(async (options: { repair?: boolean }, command: Command) => {
      const url = selectStorage(command);
      const scheme = storageScheme(url);
      const repair = options.repair === true;
      let findings: Finding[];
      let store: string;
      if (scheme === "file") {
        const backend = createEmbeddedBackend(url) as FileStorageBackend;
        store = `File store ${backend.basePath}`;
        await backend.close();
        findings = checkFileStore(backend.basePath, repair);
      } else if (scheme === "sqlite") {
        const rest = url.slice("sqlite:".length);
        const path = rest.startsWith("//") ? fileURLToPath(`file:${rest}`) : expandHome(rest);
        store = `SQLite store ${path}`;
        findings = checkSqliteStore(path);
      } else if (scheme === "memory") {
        process.stdout.write("memory: nothing to check (it lives in this process only)\n");
        return;
      } else if (scheme === "postgres" || scheme === "pglite") {
        const schema = new URLSearchParams(url.split(/\?(.*)/s)[1] ?? "").get("schema") ?? "public";
        store = `Postgres schema ${schema} at ${redact(url.split("?")[0] as string)}`;
        findings = await withPostgres(url, scheme, (db) => checkPostgresStore(db, schema, repair));
      } else {
        const { url: base, prefix } = redisTarget(url);
        store = `Redis prefix ${prefix} at ${redact(base)}`;
        findings = await withRedis(base, (client) => checkRedisStore(client, prefix, repair));
      }
      process.stdout.write(`${formatFindings(findings, store, repair).join("\n")}\n`);
      if (findings.some((f) => f.repaired === undefined)) process.exitCode = 1;
    });
}

/** Runs `check` on a connection of its own to the Postgres server or PGlite directory of `url` (never creating one). */
async function withPostgres<T>(url: string, scheme: "postgres" | "pglite", check: (db: PgQuery) => Promise<T>) {
  if (scheme === "pglite") {
    const dir = storagePath(url);
    if (dir === undefined) throw new CliError("pglite in memory: nothing to check (it lives in this process only)");
    if (!existsSync(join(dir, "PG_VERSION"))) throw new CliError(`no PGlite database at ${dir}`);
    const { PGlite } = await import("@electric-sql/pglite").catch((error: unknown) => {
      throw new CliError("agentix doctor on pglite: needs @electric-sql/pglite (npm install @electric-sql/pglite)", {
        cause: error,
      });
    });
    const db = await PGlite.create(dir);
    try {
      return await check({
        query: async (text, params) => (await db.query<Record<string, unknown>>(text, params)).rows,
      });
    } finally {
      await db.close();
    }
  }
  const parsed = new URL(url);
  for (const agentixParam of ["schema", "prepare"]) parsed.searchParams.delete(agentixParam);
  const { default: postgres } = await import("postgres").catch((error: unknown) => {
    throw new CliError("agentix doctor on postgres: needs postgres (npm install postgres)", { cause: error });
  });
  // prepare: false, so that the doctor works behind a transaction pooler too.
  const sql = postgres(parsed.href, { max: 1, prepare: false, onnotice: () => {} });
  try {
    return await check({
      query: async (text, params) =>
        (await sql.unsafe(text, (params ?? []) as never[])) as unknown as Record<string, unknown>[],
    });
  } finally {
    await sql.end({ timeout: 1 });
  }
}

/** The server part and the key prefix of a Redis storage URL (`?prefix=`, default `agentix`). */
function redisTarget(url: string): { url: string; prefix: string } {
  const at = url.indexOf("?");
  if (at === -1) return { url, prefix: "agentix" };
  const params = new URLSearchParams(url.slice(at + 1));
  const prefix = params.get("prefix") ?? "agentix";
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(prefix))
    throw new CliError(`prefix must be 1-128 letters, digits, '_', '-' or '.', not ${JSON.stringify(prefix)}`);
  params.delete("prefix");
  const rest = params.toString();
  return { url: url.slice(0, at) + (rest === "" ? "" : `?${rest}`), prefix };
}

/** Runs `check` on a connection of its own (a Cluster client for `redis+cluster://`). */
async function withRedis<T>(url: string, check: (client: Redis | Cluster) => Promise<T>): Promise<T> {
  const ioredis = await import("ioredis").catch((error: unknown) => {
    throw new CliError("agentix doctor on redis: needs ioredis (npm install ioredis)", { cause: error });
  });
  const options = { connectTimeout: 2_000, maxRetriesPerRequest: 3 };
  const client = isClusterUrl(url)
    ? openCluster(ioredis.Cluster, url, options)
    : new ioredis.Redis(url, { ...options, lazyConnect: true });
  let lastError: unknown;
  client.on("error", (error: unknown) => {
    lastError = error;
  });
  try {
    await client.connect();
    // As the backend does: a cluster node through redis:// (only its own slots' keys) or an unselected database
    // would be checked as if it were the store.
    if (!isClusterUrl(url)) await checkServer(client as Redis, () => lastError);
    return await check(client);
  } finally {
    client.disconnect();
  }
}
