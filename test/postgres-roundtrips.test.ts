// Every operation is one statement: counted at the driver of a client or db passed in (postgres.js's `debug` hook,
// the `pg` Pool's and PGlite's query methods), on each driver.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { SessionNotFoundError } from "../src/core/errors.js";
import { fingerprint } from "../src/core/validation.js";
import { PostgresStorageBackend } from "../src/postgres.js";
import { type DriverConnection, pgDrivers, type Sent } from "./support/pg-drivers.js";

const url = inject("postgresUrl");

describe.each(pgDrivers(url))("PostgresStorageBackend round trips on $name", (driver) => {
  const schema = `agentix_test_${randomUUID().slice(0, 8)}`;
  let sent: Sent[] = [];
  let connection: DriverConnection;
  let b: PostgresStorageBackend;

  /** The statements that `run` sends. */
  const statements = async (run: () => Promise<unknown>): Promise<typeof sent> => {
    sent.length = 0;
    await run();
    return sent.splice(0);
  };

  beforeAll(async () => {
    connection = await driver.open(url);
    sent = connection.sent;
    b = new PostgresStorageBackend({ ...connection.options, schema });
    // The first call checks the migrations and applies them (a transaction of several statements, on its own
    // connection with node-postgres and PGlite, where the hook does not see it), once for this backend.
    const first = await statements(() => b.listSessions("warm-up"));
    expect(first.some((s) => /__agentix_migrations/.test(s.query))).toBe(true);
    if (driver.name === "postgres.js") {
      expect(first.some((s) => /pg_advisory_xact_lock/.test(s.query))).toBe(true);
      expect(first.some((s) => /create table "sessions"/i.test(s.query))).toBe(true);
    }
    expect(await statements(() => b.listSessions("warm-up"))).toHaveLength(1);
  });
  afterAll(async () => {
    await b?.close();
    await connection?.admin.exec(`drop schema if exists "${schema}" cascade`);
    await connection?.close();
  });

  it("one statement for each operation, also the first time it is prepared", async () => {
    const agent = `rt-${randomUUID()}`;
    let id = "";
    expect(await statements(async () => (id = await b.createSession(agent, { cwd: "/rt" })))).toHaveLength(1);
    for (let i = 0; i < 3; i++) {
      expect(await statements(() => b.saveMessage(id, "user", `m${i}`))).toHaveLength(1);
    }
    expect(await statements(() => b.getSession(id))).toHaveLength(1);
    expect(await statements(() => b.listSessions(agent))).toHaveLength(1);
    expect(await statements(() => b.listSessions(agent, { cwd: "/rt", limit: 5 }))).toHaveLength(1);
    const [first] = await b.listSessions(agent);
    expect(await statements(() => b.listSessions(agent, { before: first as never }))).toHaveLength(1);
    expect(await statements(() => b.loadMessages(id))).toHaveLength(1);
    expect(await statements(() => b.loadMessages(id, { last: 2 }))).toHaveLength(1);
    expect(await statements(() => b.scanSessions({ agentId: agent, limit: 2 }))).toHaveLength(1);
    let fork = "";
    expect(await statements(async () => (fork = await b.forkSession(id)))).toHaveLength(1);
    expect(await statements(() => b.deleteSession(fork))).toHaveLength(1);
    const record = { ...(await b.getSession(id)), session_id: randomUUID() } as never;
    expect(await statements(() => b.importSession(record, []))).toHaveLength(1);
  });

  it("one statement for each v2 operation: openSession (created or not), createSession with an id, updateSession, saveMessages, countMessages", async () => {
    const agent = `rt-${randomUUID()}`;
    const id = randomUUID();
    let opened: Awaited<ReturnType<typeof b.openSession>> | undefined;
    expect(await statements(async () => (opened = await b.openSession(agent, id, { cwd: "/v2" })))).toHaveLength(1);
    expect(opened?.created).toBe(true);
    expect(await statements(async () => (opened = await b.openSession(agent, id, { cwd: "/other" })))).toHaveLength(1);
    expect(opened).toMatchObject({ created: false, session: { session_id: id, metadata: { cwd: "/v2" } } });
    const other = await statements(() => b.openSession(`${agent}-other`, id).catch((e: unknown) => e));
    expect(other).toHaveLength(1);

    const chosen = randomUUID();
    expect(await statements(() => b.createSession(agent, null, { sessionId: chosen }))).toHaveLength(1);
    expect(await statements(() => b.createSession(agent, null, { sessionId: chosen }).catch(() => {}))).toHaveLength(1);
    expect(await statements(() => b.updateSession(id, { metadata: { cwd: "/moved" } }))).toHaveLength(1);
    expect(await statements(() => b.updateSession(randomUUID(), { metadata: null }).catch(() => {}))).toHaveLength(1);

    const batch = Array.from({ length: 10 }, (_, i) => ({ role: "tool" as const, content: { i } }));
    const [save, ...more] = await statements(() => b.saveMessages(id, batch));
    expect(more).toEqual([]);
    // The batch travels as one parameter, not one per message.
    expect(save?.parameters.length).toBeLessThan(batch.length);
    expect(await statements(() => b.saveMessages(id, []))).toHaveLength(1);
    expect(await statements(() => b.countMessages(id))).toHaveLength(1);
    expect(await b.countMessages(id)).toBe(10);
  });

  it("one statement for each part-2 operation: pages, edits, compare-and-swap, keys, forks with options, counts", async () => {
    const agent = `rt-${randomUUID()}`;
    const id = await b.createSession(agent);
    const say = (content: string) => ({ role: "user" as const, content });
    await b.saveMessages(
      id,
      Array.from({ length: 10 }, (_, i) => say(`m${i}`)),
    );
    const one = async (run: () => Promise<unknown>) => expect(await statements(run)).toHaveLength(1);
    await one(() => b.loadMessages(id, { offset: 2, limit: 3 }));
    await one(() => b.loadMessages(id, { offset: 8 }));
    await one(() => b.loadMessages(id, { last: 4 }));
    await one(() => b.countMessages(id));
    await one(() => b.replaceMessages(id, 8, [say("r")]));
    await one(() => b.replaceMessages(id, 9, []));
    await one(() => b.popMessage(id));
    await one(() => b.popMessage(id, { expectedLength: 8, idempotencyKey: "pop" }));
    await one(() => b.popMessage(id, { expectedLength: 8, idempotencyKey: "pop" })); // replayed
    await one(() => b.saveMessages(id, [say("a")], { expectedLength: 7 }));
    await one(() => b.saveMessages(id, [say("b")], { expectedLength: 8, idempotencyKey: "save" }));
    await one(() => b.saveMessages(id, [say("b")], { expectedLength: 8, idempotencyKey: "save" })); // replayed
    await one(() => b.saveMessages(id, [say("c")], { expectedLength: 1 }).catch(() => {})); // conflict
    await one(() => b.replaceMessages(id, 99, []).catch(() => {})); // out of range
    await one(() => b.popMessage(randomUUID()).catch(() => {})); // not found
    await one(() => b.forkSession(id, { length: 3 }));
    await one(() => b.forkSession(id, { length: 2, sessionId: randomUUID(), metadata: { cwd: "/fork" } }));
    await one(() => b.forkSession(id, { length: 99 }).catch(() => {}));
    await one(() => b.forkSession(id, { sessionId: id }).catch(() => {}));
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual([
      ...Array.from({ length: 7 }, (_, i) => `m${i}`),
      "a",
      "b",
    ]);
  });

  it("one statement for each write with metadata, written or not; the writes without it never touch the metadata", async () => {
    const agent = `rt-${randomUUID()}`;
    const id = await b.createSession(agent, { cwd: "/start" });
    const say = (content: string) => ({ role: "user" as const, content });
    const one = async (run: () => Promise<unknown>) => {
      const [statement, ...more] = await statements(run);
      expect(more).toEqual([]);
      return statement?.query ?? "";
    };
    await one(() => b.saveMessages(id, [say("a"), say("b")], { metadata: { cwd: "/a" } }));
    await one(() => b.saveMessages(id, [], { metadata: { n: 1 } }));
    await one(() => b.replaceMessages(id, 1, [say("r")], { expectedLength: 2, metadata: { cwd: "/r" } }));
    await one(() => b.replaceMessages(id, 2, [], { metadata: null }));
    await one(() => b.popMessage(id, { idempotencyKey: "pop", metadata: { cwd: "/p" } }));
    await one(() => b.popMessage(id, { idempotencyKey: "pop", metadata: { cwd: "/p" } })); // replayed
    await one(() => b.saveMessages(id, [say("c")], { expectedLength: 9, metadata: { cwd: "/x" } }).catch(() => {}));
    await one(() => b.popMessage(randomUUID(), { metadata: { cwd: "/x" } }).catch(() => {})); // not found
    expect(await b.getSession(id)).toMatchObject({ metadata: { cwd: "/p" } });
    expect((await b.listSessions(agent, { cwd: "/p" })).map((s) => s.session_id)).toEqual([id]);
    const plain = await one(() => b.saveMessages(id, [say("d")], { expectedLength: 1 }));
    expect(plain).not.toMatch(/"metadata"/);
    expect(await one(() => b.saveMessages(id, [say("e")], { metadata: { cwd: "/e" } }))).toMatch(/"metadata" =/);
  });

  // A statement waiting for another writer's lock: only with several connections (PGlite has one, and queues).
  if (driver.concurrent) {
    /**
     * Runs `call` while a rival transaction holds the session row after `prepare` (what another writer's statement
     * does), commits the rival once `call`'s statement waits for the lock, and returns what `call` sent.
     */
    const racing = async (prepare: (tx: postgres.TransactionSql) => Promise<unknown>, call: () => Promise<unknown>) => {
      const rival = postgres(url as string, { onnotice: () => {}, max: 2 });
      try {
        let calling: Promise<unknown> | undefined;
        await rival.begin(async (tx) => {
          await prepare(tx);
          sent.length = 0;
          calling = call();
          let waiting = false;
          for (let i = 0; i < 400 && !waiting; i++) {
            const [row] = await rival`select count(*)::int as n from pg_stat_activity
              where wait_event_type = 'Lock' and position(${`"${schema}"."sessions"`} in query) > 0`;
            waiting = row?.n === 1;
            if (!waiting) await new Promise((r) => setTimeout(r, 10));
          }
          expect(waiting).toBe(true);
        });
        return { result: await calling, sent: sent.splice(0) };
      } finally {
        await rival.end();
      }
    };

    it("an edit that waited for another writer of the session, with a snapshot lacking its messages, runs again", async () => {
      // The statement's snapshot lacks the rival's message: it writes nothing and is run again (with a new snapshot).
      const id = await b.createSession(`rt-${randomUUID()}`);
      await b.saveMessages(id, [
        { role: "user", content: "m0" },
        { role: "user", content: "m1" },
      ]);
      const { result, sent: queries } = await racing(
        async (tx) => {
          await tx`update ${tx(schema)}.sessions set message_count = 3 where id = ${id}`;
          await tx`insert into ${tx(schema)}.messages (session_id, position, role, content, created_at)
                 values (${id}, 2, 'assistant', '"rival"', now())`;
        },
        () => b.popMessage(id),
      );
      expect(result).toMatchObject({ role: "assistant", content: "rival" });
      expect(queries).toHaveLength(2);
      expect(queries[1]?.query).toBe(queries[0]?.query);
      expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["m0", "m1"]);
      expect(await b.countMessages(id)).toBe(2);
    });

    it("a keyed write racing another call with the same key runs again and answers as that call did, writing nothing", async () => {
      // The rival remembers the key after the statement's snapshot: remembering it again fails the statement whole.
      const id = await b.createSession(`rt-${randomUUID()}`);
      const batch = [{ role: "user" as const, content: "once" }];
      // The rival's write, as the backend would make it for this very call (same fingerprint).
      const key = fingerprint("saveMessages", [null], batch as never);
      const { result, sent: queries } = await racing(
        async (tx) => {
          await tx`update ${tx(schema)}.sessions set message_count = 1, key_seq = 1 where id = ${id}`;
          await tx`insert into ${tx(schema)}.messages (session_id, position, role, content, created_at)
                 values (${id}, 0, 'user', '"once"', now())`;
          await tx`insert into ${tx(schema)}.idempotency_keys (session_id, key, fingerprint, seq, length)
                 values (${id}, 'k', ${key}, 1, 1)`;
        },
        () => b.saveMessages(id, batch, { idempotencyKey: "k" }),
      );
      expect(result).toEqual({ length: 1 });
      expect(queries).toHaveLength(2);
      expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["once"]);
    });

    it("openSession racing a transaction that stores the id and commits after the statement began: the existing record, from the statement run again", async () => {
      // Deterministic: the rival's insert is uncommitted when openSession's statement starts, so ON CONFLICT waits
      // for it, and the row it then conflicts with is not in that statement's snapshot.
      const rival = postgres(url as string, { onnotice: () => {}, max: 2 });
      try {
        const agent = `rt-${randomUUID()}`;
        const id = randomUUID();
        let opening: ReturnType<typeof b.openSession> | undefined;
        await rival.begin(async (tx) => {
          await tx`insert into ${tx(schema)}.sessions (id, agent_id, metadata, created_at, updated_at)
                   values (${id}, ${agent}, '{"by":"rival"}', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z')`;
          sent.length = 0;
          opening = b.openSession(agent, id, { by: "me" });
          // Committed only once openSession's statement waits for this transaction's row.
          let waiting = false;
          for (let i = 0; i < 400 && !waiting; i++) {
            const [row] = await rival`select count(*)::int as n from pg_stat_activity
              where wait_event_type = 'Lock' and position(${`"${schema}"."sessions"`} in query) > 0`;
            waiting = row?.n === 1;
            if (!waiting) await new Promise((r) => setTimeout(r, 10));
          }
          expect(waiting).toBe(true);
        });
        const opened = await opening;
        const sentWhileRacing = sent.splice(0);
        expect(opened).toEqual({
          created: false,
          session: {
            session_id: id,
            agent_id: agent,
            created_at: "2026-01-01T00:00:00.000Z",
            updated_at: "2026-01-01T00:00:00.000Z",
            metadata: { by: "rival" },
          },
        });
        // The same statement twice: the second, with a new snapshot, sees the row.
        expect(sentWhileRacing).toHaveLength(2);
        expect(sentWhileRacing[1]?.query).toBe(sentWhileRacing[0]?.query);
      } finally {
        await rival.end();
      }
    });
  }

  it("saveMessage is one statement that appends and bumps updated_at, and none for a session that is gone", async () => {
    const id = await b.createSession(`rt-${randomUUID()}`);
    const [save] = await statements(() => b.saveMessage(id, "assistant", "hello"));
    expect(save?.query).toMatch(
      /update .*"sessions" set "updated_at" = greatest\("updated_at", \$\d\)[\s\S]*insert into .*"messages"/,
    );
    expect((await b.getSession(id))?.updated_at).toBe((await b.loadMessages(id))[0]?.timestamp);

    await b.deleteSession(id);
    let error: unknown;
    expect(await statements(() => b.saveMessage(id, "user", "late").catch((e: unknown) => (error = e)))).toHaveLength(
      1,
    );
    expect(error).toBeInstanceOf(SessionNotFoundError);
    expect(
      (
        await connection.admin.query(`select count(*)::int as n from "${schema}".messages where session_id = $1`, [id])
      )[0]?.n,
    ).toBe(0);
    expect(await statements(() => b.loadMessages(id).catch(() => {}))).toHaveLength(1);
  });

  it("forkSession copies on the server: the messages are never sent as parameters", async () => {
    const id = await b.createSession(`rt-${randomUUID()}`, { k: "meta-secret" });
    const contents = Array.from({ length: 50 }, (_, i) => `content-secret-${i}`);
    for (const content of contents) await b.saveMessage(id, "user", content);
    let fork = "";
    const [copy, ...more] = await statements(async () => (fork = await b.forkSession(id)));
    expect(more).toEqual([]);
    expect(copy?.query).toMatch(/insert into .*"messages"[\s\S]*select/);
    expect(JSON.stringify(copy?.parameters)).not.toMatch(/secret/);
    expect((await b.loadMessages(fork)).map((m) => m.content)).toEqual(contents);
  });

  it("a new backend on a migrated schema checks it with one query, once", async () => {
    const again = new PostgresStorageBackend({ ...connection.options, schema });
    const first = await statements(() => again.getSession(randomUUID()));
    expect(first).toHaveLength(2);
    expect(first.some((s) => /__agentix_migrations/.test(s.query))).toBe(true);
    expect(await statements(() => again.getSession(randomUUID()))).toHaveLength(1);
    const unchecked = new PostgresStorageBackend({ ...connection.options, schema, migrate: false });
    expect(await statements(() => unchecked.getSession(randomUUID()))).toHaveLength(1);
    await Promise.all([again.close(), unchecked.close()]);
  });
});
