// Every operation is one statement: counted on a client passed in, whose `debug` hook sees each query it sends.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { SessionNotFoundError } from "../src/core/errors.js";
import { PostgresStorageBackend } from "../src/postgres.js";

const url = inject("postgresUrl");
const schema = `agentix_test_${randomUUID().slice(0, 8)}`;

describe.skipIf(!url)("PostgresStorageBackend round trips", () => {
  const sent: Array<{ query: string; parameters: unknown[] }> = [];
  let client: postgres.Sql;
  let b: PostgresStorageBackend;

  /** The statements that `run` sends. */
  const statements = async (run: () => Promise<unknown>): Promise<typeof sent> => {
    sent.length = 0;
    await run();
    return sent.splice(0);
  };

  beforeAll(async () => {
    client = postgres(url as string, {
      onnotice: () => {},
      debug: (_connection, query, parameters) => sent.push({ query, parameters }),
    });
    b = new PostgresStorageBackend({ client, schema });
    // The first call applies the migrations (a transaction of several statements), once for this backend.
    const first = await statements(() => b.listSessions("warm-up"));
    expect(first.some((s) => /pg_advisory_xact_lock/.test(s.query))).toBe(true);
    expect(first.some((s) => /create table "sessions"/i.test(s.query))).toBe(true);
  });
  afterAll(async () => {
    await b?.close();
    await client?.unsafe(`drop schema if exists "${schema}" cascade`);
    await client?.end();
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

  it("saveMessage is one statement that appends and bumps updated_at, and none for a session that is gone", async () => {
    const id = await b.createSession(`rt-${randomUUID()}`);
    const [save] = await statements(() => b.saveMessage(id, "assistant", "hello"));
    expect(save?.query).toMatch(
      /update .*"sessions" set updated_at = greatest\(updated_at, \$\d\)[\s\S]*insert into .*"messages"/,
    );
    expect((await b.getSession(id))?.updated_at).toBe((await b.loadMessages(id))[0]?.timestamp);

    await b.deleteSession(id);
    let error: unknown;
    expect(await statements(() => b.saveMessage(id, "user", "late").catch((e: unknown) => (error = e)))).toHaveLength(
      1,
    );
    expect(error).toBeInstanceOf(SessionNotFoundError);
    expect(
      (await client`select count(*)::int as n from ${client(schema)}.messages where session_id = ${id}`)[0]?.n,
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
    const again = new PostgresStorageBackend({ client, schema });
    const first = await statements(() => again.getSession(randomUUID()));
    expect(first).toHaveLength(2);
    expect(first[0]?.query).toMatch(/__agentix_migrations/);
    expect(await statements(() => again.getSession(randomUUID()))).toHaveLength(1);
    const unchecked = new PostgresStorageBackend({ client, schema, migrate: false });
    expect(await statements(() => unchecked.getSession(randomUUID()))).toHaveLength(1);
    await Promise.all([again.close(), unchecked.close()]);
  });
});
