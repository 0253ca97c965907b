// The Postgres backend behind a real transaction pooler (issue 17): a private PgBouncer in transaction mode, started
// by test/support/global-setup.ts in front of the test server, with at most 8 server connections. With
// `prepare: false` (`?prepare=false`) everything works, the whole conformance suite and 32 concurrent writers.
// With the default (named prepared statements, which the pooler cannot route), calls fail loudly with a typed error
// or do not return, but nothing acknowledged is lost or duplicated.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentixStorageError } from "../src/core/errors.js";
import { PostgresStorageBackend } from "../src/postgres.js";
import { runConformanceSuite } from "../src/testing/index.js";
import { createStorageBackend } from "../src/url.js";
import { expectStoredAsAcknowledged, runWriters } from "./support/writers.js";

const direct = inject("postgresUrl");
const pooled = inject("pgbouncerUrl");
const schema = `agentix_pooler_${randomUUID().slice(0, 8)}`;

describe.skipIf(!direct || !pooled)("PostgresStorageBackend behind PgBouncer (transaction mode)", () => {
  let admin: postgres.Sql;
  const read = async (id: string) =>
    (await admin.unsafe(`select content from "${schema}".messages where session_id = $1 order by position`, [id])).map(
      (r) => JSON.parse(r.content as string) as string,
    );
  const sessionsOf = async (storage: PostgresStorageBackend | Awaited<ReturnType<typeof createStorageBackend>>) =>
    Promise.all(Array.from({ length: 8 }, (_, i) => storage.createSession("pooled", { i })));

  beforeAll(async () => {
    admin = postgres(direct as string, { onnotice: () => {} });
    // Migrated directly, so that the default-prepare test below starts from a ready schema.
    const setup = new PostgresStorageBackend({ url: direct as string, schema });
    await setup.migrate();
    await setup.close();
  });
  afterAll(async () => {
    await admin`drop schema if exists ${admin(schema)} cascade`;
    await admin.end();
  });

  runConformanceSuite("PostgresStorageBackend through PgBouncer, prepare: false", {
    create: () => new PostgresStorageBackend({ url: pooled as string, schema, prepare: false }),
  });

  it("?prepare=false: 32 writers appending and forking through the pooler, no failure, everything stored once", async () => {
    const url = new URL(pooled as string);
    url.searchParams.set("schema", schema);
    url.searchParams.set("prepare", "false");
    const storage = await createStorageBackend(url.href);
    try {
      const sessions = await sessionsOf(storage);
      const run = await runWriters(storage, sessions, { writers: 32, ops: 25 });
      expect(run.failures).toEqual([]);
      expect(run.pending).toBe(0);
      expect(run.forks.length).toBe(32 * 5);
      await expectStoredAsAcknowledged(run, read);
    } finally {
      await storage.close();
    }
  });

  it("default (prepared statements) through the pooler: typed failures, nothing acknowledged lost or duplicated", async () => {
    const storage = new PostgresStorageBackend({ url: pooled as string, schema, max: 10 });
    const sessions = await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const setup = new PostgresStorageBackend({ url: direct as string, schema, migrate: false });
        try {
          return await setup.createSession("pooled-default", { i });
        } finally {
          await setup.close();
        }
      }),
    );
    try {
      const run = await runWriters(storage, sessions, { writers: 32, ops: 10, deadlineMs: 3_000 });
      for (const failure of run.failures) expect(failure).toBeInstanceOf(AgentixStorageError);
      // Before the fix (src/postgres.ts, max_pipeline), most calls hung here: their replies went to other clients.
      expect(run.pending).toBe(0);
      console.log(
        `[pooler] default prepare: ${[...run.acked.values()].flat().length} appended, ${run.forks.length} forks, ` +
          `${run.failures.length} failed, ${run.pending} pending`,
      );
      await expectStoredAsAcknowledged(run, read);
    } finally {
      await storage.close();
    }
  });
});
