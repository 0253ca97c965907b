// Streamed imports on Postgres (src/postgres-import.ts): the chunks are rows of `import_stages` while the import runs,
// invisible to every read; publishing moves them in one statement, and a failed or raced import leaves none.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { AgentixStorageError, SessionNotFoundError } from "../src/core/errors.js";
import type { MessageRecord, SessionRecord } from "../src/core/types.js";
import { PostgresStorageBackend } from "../src/postgres.js";

const url = inject("postgresUrl");
const pooled = inject("pgbouncerUrl");
const schema = `agentix_import_${randomUUID().slice(0, 8)}`;

function session(n: number): { record: SessionRecord; messages: MessageRecord[] } {
  const at = new Date(Date.UTC(2024, 0, 15)).toISOString();
  const messages: MessageRecord[] = Array.from({ length: n }, (_, i) => ({
    role: "user",
    content: { i, text: `m ${i} \u0000` },
    timestamp: at,
  }));
  return {
    record: {
      session_id: randomUUID(),
      agent_id: `import-${randomUUID()}`,
      created_at: at,
      updated_at: at,
      metadata: null,
    },
    messages,
  };
}

/** An async iterable of `messages` that waits at `pause` for `resume()` (and says so by `paused`). */
function gated(messages: MessageRecord[], pause: number, fail?: Error) {
  let resume = () => {};
  let paused = () => {};
  const reached = new Promise<void>((r) => (paused = r));
  const gate = new Promise<void>((r) => (resume = r));
  async function* run(): AsyncGenerator<MessageRecord> {
    for (const [i, m] of messages.entries()) {
      if (i === pause) {
        paused();
        await gate;
        if (fail) throw fail;
      }
      yield m;
    }
  }
  return { iterable: run(), reached, resume };
}

describe.skipIf(!url)("PostgresStorageBackend streamed import (staging table)", () => {
  let admin: postgres.Sql;
  let b: PostgresStorageBackend;
  const staged = async () =>
    Number((await admin.unsafe(`select count(*)::int as n from "${schema}".import_stages`))[0]?.n);

  beforeAll(async () => {
    admin = postgres(url as string, { onnotice: () => {} });
    b = new PostgresStorageBackend({ url: url as string, schema });
    await b.migrate();
  });
  afterAll(async () => {
    await b.close();
    await admin`drop schema if exists ${admin(schema)} cascade`;
    await admin.end();
  });

  it("stages chunks server-side, invisible to every read, and moves them all on publish", async () => {
    const { record, messages } = session(50);
    const gate = gated(messages, 35);
    const importing = b.importSession(record, gate.iterable, { batchSize: 10 });
    await gate.reached;
    // Three chunks of 10 are on the server (the fourth is still being gathered), and no read sees them.
    expect(await staged()).toBe(30);
    expect(await b.getSession(record.session_id)).toBeNull();
    expect(await b.listSessions(record.agent_id)).toEqual([]);
    expect(await b.scanSessions({ agentId: record.agent_id })).toEqual([]);
    await expect(b.loadMessages(record.session_id)).rejects.toBeInstanceOf(SessionNotFoundError);
    await expect(b.countMessages(record.session_id)).rejects.toBeInstanceOf(SessionNotFoundError);
    gate.resume();
    expect(await importing).toBe(true);
    expect(await staged()).toBe(0);
    expect(await b.loadMessages(record.session_id)).toStrictEqual(messages);
    expect(await b.countMessages(record.session_id)).toBe(50);
  });

  it("drops the staged rows when the iterable fails", async () => {
    const { record, messages } = session(40);
    const gate = gated(messages, 25, new Error("source broke"));
    const importing = b.importSession(record, gate.iterable, { batchSize: 10 }).catch((e: unknown) => e);
    await gate.reached;
    expect(await staged()).toBe(20);
    gate.resume();
    expect(await importing).toBeInstanceOf(AgentixStorageError);
    expect(await staged()).toBe(0);
    expect(await b.getSession(record.session_id)).toBeNull();
  });

  it("publishes nothing, and drops the staged rows, when the id was created meanwhile", async () => {
    const { record, messages } = session(30);
    const gate = gated(messages, 29);
    const importing = b.importSession(record, gate.iterable, { batchSize: 10 });
    await gate.reached;
    expect(await staged()).toBe(20);
    // A create of the same id, through another backend, while the import is between chunks.
    await admin.unsafe(
      `insert into "${schema}".sessions (id, agent_id, created_at, updated_at) values ($1, 'other', now(), now())`,
      [record.session_id],
    );
    gate.resume();
    expect(await importing).toBe(false);
    expect(await staged()).toBe(0);
    expect(
      await admin.unsafe(`select from "${schema}".messages where session_id = $1`, [record.session_id]),
    ).toHaveLength(0);
  });

  it("fails, writing nothing, when staged rows went missing (expired), and drops rows staged over a day ago", async () => {
    const { record, messages } = session(30);
    const gate = gated(messages, 25);
    const importing = b.importSession(record, gate.iterable, { batchSize: 10 }).catch((e: unknown) => e);
    await gate.reached;
    // Age this import's rows; the next import's begin drops them as a crashed import's.
    await admin.unsafe(`update "${schema}".import_stages set staged_at = now() - interval '25 hours'`);
    const other = session(3);
    expect(await b.importSession(other.record, other.messages.values())).toBe(true);
    expect(await staged()).toBe(0);
    gate.resume();
    const error = await importing;
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect((error as Error).message).toMatch(/not those sent/);
    expect(await b.getSession(record.session_id)).toBeNull();
    expect(await staged()).toBe(0);
  });

  it.skipIf(!pooled)(
    "streams through a transaction pooler (prepare: false): no connection held between chunks",
    async () => {
      const p = new PostgresStorageBackend({ url: pooled as string, schema, prepare: false });
      try {
        const { record, messages } = session(95);
        expect(await p.importSession(record, messages.values(), { batchSize: 10 })).toBe(true);
        expect(await p.loadMessages(record.session_id)).toStrictEqual(messages);
      } finally {
        await p.close();
      }
    },
  );
});
