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
