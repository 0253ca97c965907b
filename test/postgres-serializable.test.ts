// The Postgres backend on a database whose default isolation is SERIALIZABLE (issue 17): a private database on the
// test server (`ALTER DATABASE ... SET default_transaction_isolation`, never the server's own configuration).
// Serialization failures and deadlocks of its single-statement operations are retried (src/postgres-retry.ts), so
// none reaches the caller: the whole conformance suite passes, and so do 32 concurrent writers on shared sessions.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { PostgresStorageBackend } from "../src/postgres.js";
import { runConformanceSuite } from "../src/testing/index.js";
import { expectStoredAsAcknowledged, runWriters } from "./support/writers.js";

const server = inject("postgresUrl");
const database = `agentix_serializable_${randomUUID().slice(0, 8)}`;
const url = (() => {
  if (!server) return "";
  const u = new URL(server);
  u.pathname = `/${database}`;
  return u.href;
})();

describe.skipIf(!server)("PostgresStorageBackend, default_transaction_isolation = serializable", () => {
  let admin: postgres.Sql;

  beforeAll(async () => {
    admin = postgres(server as string, { onnotice: () => {}, max: 1 });
    await admin.unsafe(`create database "${database}"`);
    await admin.unsafe(`alter database "${database}" set default_transaction_isolation = serializable`);
  });
  afterAll(async () => {
    await admin.unsafe(`drop database if exists "${database}" with (force)`);
    await admin.end();
  });

  it("the database really is serializable by default", async () => {
    const sql = postgres(url, { max: 1 });
    try {
      expect((await sql`show transaction_isolation`)[0]?.transaction_isolation).toBe("serializable");
    } finally {
      await sql.end();
    }
  });

  runConformanceSuite("PostgresStorageBackend (serializable)", {
    create: () => new PostgresStorageBackend({ url, schema: "suite" }),
  });

  it("32 writers appending and forking on 8 shared sessions: no failure surfaces, everything stored once", async () => {
    const storage = new PostgresStorageBackend({ url, schema: "writers", max: 16 });
    const sql = postgres(url, { max: 1 });
    try {
      const sessions = await Promise.all(Array.from({ length: 8 }, (_, i) => storage.createSession("ser", { i })));
      const run = await runWriters(storage, sessions, { writers: 32, ops: 20 });
      expect(run.failures).toEqual([]);
      expect(run.pending).toBe(0);
      await expectStoredAsAcknowledged(run, async (id) =>
        (await sql`select content from writers.messages where session_id = ${id} order by position`).map(
          (r) => JSON.parse(r.content as string) as string,
        ),
      );
    } finally {
      await storage.close();
      await sql.end();
    }
  });
});
