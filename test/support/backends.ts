// The five backends, for the framework adapters' tests: each a factory of new backend instances over one store (so
// that a second instance, as in a second process, sees what the first wrote) and the clean-up of that store.
// Postgres and Redis come from the servers the global setup found (null: those tests are skipped, never under CI).
// A custom backend too: the MySQL example (examples/mysql), when a MySQL or MariaDB server answers (as in its own
// test: AGENTIX_TEST_MYSQL_URL, else mysql://root@127.0.0.1:3306/test).

import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import mysql from "mysql2/promise";
import postgres from "postgres";
import { MySqlStorageBackend } from "../../examples/mysql/src/mysql.js";
import type { StorageBackend } from "../../src/core/backend.js";
import { FileStorageBackend } from "../../src/file.js";
import { MemoryStorageBackend } from "../../src/memory.js";
import { PostgresStorageBackend } from "../../src/postgres.js";
import { RedisStorageBackend } from "../../src/redis.js";
import { SqliteStorageBackend } from "../../src/sqlite.js";

export interface BackendKind {
  name: string;
  /** A new backend instance over this kind's store; Memory: the one instance (its store is the instance). */
  open: () => StorageBackend;
  /** Whether two instances of `open` share the store (every kind but Memory). */
  shared: boolean;
  /** Removes the store (temp directory, schema, keys). */
  drop: () => Promise<void>;
}

export async function backendKinds(postgresUrl: string | null, redisUrl: string | null): Promise<BackendKind[]> {
  const dir = mkdtempSync(join(tmpdir(), "agentix-adapters-"));
  const memory = new MemoryStorageBackend();
  const kinds: BackendKind[] = [
    { name: "memory", open: () => memory, shared: false, drop: async () => {} },
    {
      name: "File",
      open: () => new FileStorageBackend({ basePath: join(dir, "file") }),
      shared: true,
      drop: async () => rmSync(join(dir, "file"), { recursive: true, force: true }),
    },
    {
      name: "SQLite",
      // One file, opened by one SQLite copy (better-sqlite3) only, as the rules of this repository want.
      open: () => new SqliteStorageBackend({ path: join(dir, "adapters.sqlite") }),
      shared: true,
      drop: async () => rmSync(dir, { recursive: true, force: true }),
    },
  ];
  if (postgresUrl) {
    const schema = `agentix_adapters_${randomUUID().slice(0, 8)}`;
    kinds.push({
      name: "Postgres",
      open: () => new PostgresStorageBackend({ url: postgresUrl, schema }),
      shared: true,
      drop: async () => {
        const admin = postgres(postgresUrl, { onnotice: () => {} });
        await admin`drop schema if exists ${admin(schema)} cascade`;
        await admin.end();
      },
    });
  }
  if (redisUrl) {
    const prefix = `agentix-adapters-${randomUUID().slice(0, 8)}`;
    kinds.push({
      name: "Redis",
      open: () => new RedisStorageBackend({ url: redisUrl, prefix }),
      shared: true,
      drop: async () => {
        const redis = new Redis(redisUrl);
        let cursor = "0";
        do {
          const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
          if (keys.length > 0) await redis.unlink(...keys);
          cursor = next;
        } while (cursor !== "0");
        await redis.quit();
      },
    });
  }
  const mysqlKind = await customMySql(`agentix_adapters_${randomUUID().slice(0, 8)}`);
  if (mysqlKind) kinds.push(mysqlKind);
  return kinds;
}

async function customMySql(database: string): Promise<BackendKind | null> {
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
    name: "MySQL (custom backend)",
    open: () => new MySqlStorageBackend({ url: url.toString() }),
    shared: true,
    drop: async () => {
      await admin.query(`drop database if exists \`${database}\``);
      await admin.end();
    },
  };
}
