// The backends the framework adapters' tests run on: the five, and a custom one (the MySQL example,
// examples/mysql, when a MySQL or MariaDB server answers: AGENTIX_TEST_MYSQL_URL, else mysql://root@127.0.0.1:3306/test,
// as in its own test). Each `open()` is a new backend instance on the test file's own store (the same directory,
// file, schema, key prefix or database), so that a test can stop one instance and resume on another, as a second
// process would. Memory has no store beyond its instance: its `open()` returns the one instance. Postgres and Redis
// come from the servers the global setup found (not available: those tests are skipped, never under CI=true).
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import mysql from "mysql2/promise";
import postgres from "postgres";
import { inject } from "vitest";
import { MySqlStorageBackend } from "../../examples/mysql/src/mysql.js";
import type { StorageBackend } from "../../src/core/backend.js";
import { FileStorageBackend } from "../../src/file.js";
import { MemoryStorageBackend } from "../../src/memory.js";
import { PostgresStorageBackend } from "../../src/postgres.js";
import { RedisStorageBackend } from "../../src/redis.js";
import { SqliteStorageBackend } from "../../src/sqlite.js";

export interface AdapterBackend {
  name: "memory" | "file" | "sqlite" | "postgres" | "redis" | "mysql (custom backend)";
  /**
   * Whether the backend's server is there (Postgres, Redis: the global setup fails the run under CI=true if not;
   * MySQL: test/mysql-example.test.ts does).
   */
  available: boolean;
  /** A new backend instance on this test file's store (Memory: its one instance). Closed by `closeOpened`/`cleanUp`. */
  open(): StorageBackend;
  /** Whether two instances share the store (every backend but Memory). */
  shared: boolean;
}

export interface AdapterBackends {
  backends: AdapterBackend[];
  /** Closes the instances opened so far but Memory's (an `afterEach`: Postgres connections are a shared budget). */
  closeOpened: () => Promise<void>;
  /** Closes every instance and removes the stores (an `afterAll`). */
  cleanUp: () => Promise<void>;
}

/** The backends on stores of their own, named after `tag`. */
export async function adapterBackends(tag: string): Promise<AdapterBackends> {
  const pgUrl = inject("postgresUrl");
  const redisUrl = inject("redisUrl");
  const id = `${tag}_${randomUUID().slice(0, 8)}`;
  const dir = mkdtempSync(join(tmpdir(), `agentix-${tag}-`));
  const mysqlStore = await mysqlDatabase(`agentix_test_${id}`);
  const opened: StorageBackend[] = [];
  const track = <T extends StorageBackend>(backend: T): T => {
    opened.push(backend);
    return backend;
  };
  let memory: MemoryStorageBackend | undefined;
  const backends: AdapterBackend[] = [
    { name: "memory", available: true, shared: false, open: () => (memory ??= track(new MemoryStorageBackend())) },
    {
      name: "file",
      available: true,
      shared: true,
      open: () => track(new FileStorageBackend({ basePath: join(dir, "file") })),
    },
    {
      name: "sqlite",
      available: true,
      shared: true,
      // One file, opened by one SQLite copy (better-sqlite3) only, as the rules of this repository want.
      open: () => track(new SqliteStorageBackend({ path: join(dir, "db.sqlite") })),
    },
    {
      name: "postgres",
      available: pgUrl !== null,
      shared: true,
      open: () => track(new PostgresStorageBackend({ url: pgUrl as string, schema: `agentix_test_${id}`, max: 4 })),
    },
    {
      name: "redis",
      available: redisUrl !== null,
      shared: true,
      open: () => track(new RedisStorageBackend({ url: redisUrl as string, prefix: `agentix-test-${id}` })),
    },
    {
      name: "mysql (custom backend)",
      available: mysqlStore !== null,
      shared: true,
      open: () => track(new MySqlStorageBackend({ url: mysqlStore?.url as string })),
    },
  ];
  const closeOpened = async () => {
    const open = opened.splice(0).filter((b) => b !== memory);
    if (memory) opened.push(memory);
    await Promise.all(open.map((b) => b.close()));
  };
  const cleanUp = async () => {
    await Promise.all(opened.splice(0).map((b) => b.close()));
    rmSync(dir, { recursive: true, force: true });
    if (pgUrl) {
      const sql = postgres(pgUrl, { onnotice: () => {} });
      await sql`drop schema if exists ${sql(`agentix_test_${id}`)} cascade`;
      await sql.end();
    }
    if (redisUrl) await dropPrefix(redisUrl, `agentix-test-${id}`);
    await mysqlStore?.drop();
  };
  return { backends, closeOpened, cleanUp };
}

/** Deletes every key of a prefix: SCAN (never KEYS) with the glob characters escaped, then UNLINK. */
export async function dropPrefix(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url);
  const pattern = `${prefix.replace(/[*?[\]\\]/g, "\\$&")}:*`;
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== "0");
  await redis.quit();
}

/** A database of its own on the MySQL server, or `null` when none answers. */
async function mysqlDatabase(database: string): Promise<{ url: string; drop: () => Promise<void> } | null> {
  const serverUrl = process.env.AGENTIX_TEST_MYSQL_URL ?? "mysql://root@127.0.0.1:3306/test";
  let admin: mysql.Connection;
  try {
    admin = await mysql.createConnection({ uri: serverUrl, connectTimeout: 3000 });
  } catch {
    return null; // test/mysql-example.test.ts says so loudly (and fails under CI=true)
  }
  await admin.query(`create database \`${database}\``);
  const url = new URL(serverUrl);
  url.pathname = `/${database}`;
  return {
    url: url.toString(),
    drop: async () => {
      await admin.query(`drop database if exists \`${database}\``);
      await admin.end();
    },
  };
}

/**
 * Waits until the clock is past `iso` (a record's `updated_at`, a message's `timestamp`), so that the next write
 * is stamped later: two writes in one millisecond tie, and listings break ties by session id.
 */
export async function pastMillisecond(iso: string): Promise<void> {
  while (Date.now() <= Date.parse(iso)) await new Promise((resolve) => setTimeout(resolve, 1));
}
