// A server that kills sessions idle in a transaction (issue 17), on a private cluster with
// `idle_in_transaction_session_timeout = 1ms`. The first-use migration used to be a transaction of several round
// trips: the server killed it between two of them, and postgres.js then crashed the process (an uncaught TypeError
// inside the driver). Now the migration is one script in one message, and every other operation one statement:
// nothing is ever idle in a transaction, so everything works and the process survives.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { PostgresStorageBackend } from "../../src/postgres.js";
import { PrivatePostgres, postgresBin, required } from "./support.js";

const bin = postgresBin();
const runs = required("Postgres server binaries (initdb, pg_ctl; set AGENTIX_PG_BIN)", bin !== null);

describe.skipIf(!runs)("Postgres with idle_in_transaction_session_timeout = 1ms", { timeout: 120_000 }, () => {
  let pg: PrivatePostgres;
  const uncaught: unknown[] = [];
  const onUncaught = (error: unknown) => uncaught.push(error);

  beforeAll(async () => {
    pg = await PrivatePostgres.create(bin as string);
    const admin = postgres(pg.url, { onnotice: () => {}, max: 1 });
    await admin`alter system set idle_in_transaction_session_timeout = '1ms'`;
    await admin`select pg_reload_conf()`;
    await admin.end();
    process.on("uncaughtException", onUncaught);
  });
  afterAll(async () => {
    process.off("uncaughtException", onUncaught);
    await pg?.destroy();
  });

  it("the setting is in force, and a transaction that waits is killed", async () => {
    const sql = postgres(pg.url, { onnotice: () => {}, max: 1 });
    try {
      expect((await sql`show idle_in_transaction_session_timeout`)[0]?.idle_in_transaction_session_timeout).toBe("1ms");
    } finally {
      await sql.end({ timeout: 1 });
    }
  });

  it("migrations on first use and by migrate(), in many schemas at once, then every kind of operation", async () => {
    const backends = Array.from({ length: 6 }, (_, i) => new PostgresStorageBackend({ url: pg.url, schema: `s${i}` }));
    try {
      // Half migrate on first use, half through migrate(); two per schema would also race for the lock.
      const ids = await Promise.all(
        backends.map(async (b, i) => {
          if (i % 2 === 0) expect(await b.migrate()).not.toEqual([]);
          return b.createSession("idle", { cwd: "/w" });
        }),
      );
      for (const [i, b] of backends.entries()) {
        const id = ids[i] as string;
        await b.saveMessages(id, [
          { role: "user", content: "a" },
          { role: "assistant", content: "b" },
        ]);
        const fork = await b.forkSession(id);
        await b.popMessage(fork);
        await b.updateSession(id, { metadata: { cwd: "/x" } });
        expect((await b.loadMessages(fork)).map((m) => m.content)).toEqual(["a"]);
        expect((await b.listSessions("idle")).length).toBe(2);
        await b.deleteSession(fork);
        expect(await b.migrate()).toEqual([]);
      }
      // Another process's backends, on schemas migrated already.
      const again = new PostgresStorageBackend({ url: pg.url, schema: "s1" });
      expect(await again.countMessages(ids[1] as string)).toBe(2);
      await again.close();
    } finally {
      await Promise.all(backends.map((b) => b.close()));
    }
    expect(uncaught).toEqual([]);
  });
});
