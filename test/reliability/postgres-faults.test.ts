// Postgres crashes under load, on a private cluster (initdb in a temp directory, a free loopback port; never
// the shared server): `pg_ctl stop -m immediate` in the middle of appends and of a large fork, then a restart
// with WAL recovery. In-flight calls reject with an AgentixStorageError carrying the driver's error; nothing
// acknowledged is lost; no half-written fork or message is visible; the same backend object carries on.
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentixStorageError, SessionNotFoundError } from "../../src/core/errors.js";
import { PostgresStorageBackend } from "../../src/postgres.js";
import {
  eventually,
  figure,
  PrivatePostgres,
  postgresBin,
  ReplyLosingProxy,
  required,
  scaled,
  sleep,
} from "./support.js";

const bin = postgresBin();
const runs = required("Postgres server binaries (initdb, pg_ctl; set AGENTIX_PG_BIN)", bin !== null);

const WRITERS = 16;
const ACKED_BEFORE_CRASH = scaled(400, 5_000);
const FORK_MESSAGES = scaled(100_000, 1_000_000);

/** The driver error an AgentixStorageError carries, checked to be there. */
function causeOf(error: unknown): Error & { code?: string } {
  expect(error).toBeInstanceOf(AgentixStorageError);
  expect(error).not.toBeInstanceOf(SessionNotFoundError);
  const cause = (error as AgentixStorageError).cause;
  expect(cause).toBeInstanceOf(Error);
  return cause as Error & { code?: string };
}

describe.skipIf(!runs)("Postgres crashes on a private server", { timeout: 180_000 }, () => {
  let pg: PrivatePostgres;
  let admin: postgres.Sql;
  const count = async (query: string, ...params: string[]) =>
    Number((await admin.unsafe(query, params))[0]?.n ?? Number.NaN);

  beforeAll(async () => {
    pg = await PrivatePostgres.create(bin as string);
    admin = postgres(pg.url, { onnotice: () => {}, max: 1 });
  });
  afterAll(async () => {
    await admin?.end({ timeout: 1 });
    await pg?.destroy();
  });

  it("immediate shutdown in the middle of appends: in-flight calls reject with the cause, nothing acknowledged is lost, the same backend carries on", async () => {
    const b = new PostgresStorageBackend({ url: pg.url, schema: "appends", max: 8 });
    const sessions = await Promise.all(Array.from({ length: WRITERS }, (_, w) => b.createSession("writer", { w })));
    // The sync twin (a pool of its own on a worker thread) is opened before the crash too.
    expect(b.getSessionSync(sessions[0] as string)?.session_id).toBe(sessions[0]);
    const acked: number[][] = sessions.map(() => []);
    const failures: unknown[] = [];
    const writers = sessions.map(async (id, w) => {
      for (let i = 0; ; i++) {
        try {
          await b.saveMessage(id, "user", { w, i, text: `message ${i} of writer ${w}` });
        } catch (error) {
          failures.push(error);
          return;
        }
        acked[w]?.push(i);
      }
    });
    await eventually(() => acked.flat().length >= ACKED_BEFORE_CRASH, 60_000);
    await pg.stop("immediate");
    await Promise.all(writers);

    // Every writer's call in flight failed, as an AgentixStorageError with the driver's error as cause.
    expect(failures).toHaveLength(WRITERS);
    const codes = new Set(failures.map((f) => causeOf(f).code ?? causeOf(f).name));
    // A call made while the server is down fails at once too (no hang), and so does the sync twin's.
    const down = await b.getSession(sessions[0] as string).catch((error: unknown) => error);
    expect(causeOf(down).code).toBe("ECONNREFUSED");
    expect(() => b.loadMessagesSync(sessions[0] as string)).toThrow(AgentixStorageError);

    await pg.start();
    let landed = 0;
    for (const [w, id] of sessions.entries()) {
      // Whole messages only, in order: everything acknowledged, and at most the one that was in flight.
      const stored = (await b.loadMessages(id)).map((m) => m.content as { w: number; i: number; text: string });
      const mine = acked[w] as number[];
      expect(stored.map((c) => c.i)).toEqual(stored.map((_, i) => i));
      expect(stored.length - mine.length).toBeGreaterThanOrEqual(0);
      expect(stored.length - mine.length).toBeLessThanOrEqual(1);
      expect(stored.every((c) => c.w === w && c.text === `message ${c.i} of writer ${w}`)).toBe(true);
      landed += stored.length - mine.length;
      // The count moves with the rows, in the same statement: a crash never leaves one without the other.
      expect(await b.countMessages(id)).toBe(stored.length);
      expect((await b.getSession(id))?.updated_at).toBe((await b.loadMessages(id, { last: 1 }))[0]?.timestamp);
    }
    // The same object (and its sync twin) carries on.
    await Promise.all(sessions.map((id) => b.saveMessage(id, "assistant", "after the restart")));
    expect(b.loadMessagesSync(sessions[0] as string, { last: 1 })[0]?.content).toBe("after the restart");
    figure("postgres crash mid-appends", {
      acked: acked.flat().length,
      inFlightFailed: failures.length,
      inFlightLanded: landed,
      causes: [...codes],
      lost: 0,
    });
    await b.close();
  });

  it("immediate shutdown in the middle of a large fork: it rejects, no half-copied fork is visible, the next fork is whole", async () => {
    const b = new PostgresStorageBackend({ url: pg.url, schema: "forks" });
    const source = await b.createSession("forker", { cwd: "/big" });
    await b.saveMessage(source, "user", "first");
    // The source is filled in SQL: what is tested is the fork, not the filling.
    await admin.unsafe(
      `insert into forks.messages (session_id, position, role, content, created_at)
       select $1, i, 'user', to_json('message ' || i || ' ' || repeat('x', 200))::text, s.updated_at
       from generate_series(1, ${FORK_MESSAGES}) i, forks.sessions s where s.id = $1`,
      [source],
    );
    const total = FORK_MESSAGES + 1;
    await admin.unsafe("update forks.sessions set message_count = $2 where id = $1", [source, total]);

    let settled = false;
    const outcome = b.forkSession(source).then(
      () => {
        settled = true;
        return null;
      },
      (error: unknown) => {
        settled = true;
        return error;
      },
    );
    // Crash once the copy has been running for a while (it takes seconds at this size).
    const copying = () =>
      count(
        "select count(*)::int as n from pg_stat_activity where state = 'active' and pid <> pg_backend_pid() and query ilike '%insert into%messages%select%'",
      );
    expect(await eventually(async () => (await copying()) === 1, 30_000)).toBe(true);
    await sleep(200);
    expect(settled).toBe(false);
    await pg.stop("immediate");
    const cause = causeOf(await outcome);

    await pg.start();
    // Nothing of the fork: one session, the source's messages only.
    expect((await b.listSessions("forker")).map((s) => s.session_id)).toEqual([source]);
    expect(await count("select count(*)::int as n from forks.sessions")).toBe(1);
    expect(await count("select count(*)::int as n from forks.messages where session_id <> $1", source)).toBe(0);
    expect(await count("select count(*)::int as n from forks.messages where session_id = $1", source)).toBe(total);

    // The same backend forks it whole now.
    const copy = await b.forkSession(source);
    const messages = await b.loadMessages(copy, { last: 2 });
    expect(messages.map((m) => m.content)).toEqual([
      `message ${FORK_MESSAGES - 1} ${"x".repeat(200)}`,
      `message ${FORK_MESSAGES} ${"x".repeat(200)}`,
    ]);
    expect(await count("select count(*)::int as n from forks.messages where session_id = $1", copy)).toBe(total);
    expect(await b.countMessages(copy)).toBe(total);
    figure("postgres crash mid-fork", { messages: total, cause: cause.code ?? cause.name, halfForksVisible: 0 });
    await b.close();
  });

  it("immediate shutdown in the middle of edits: each edit is whole or absent, positions stay 0 … count-1, keys and their counter agree", async () => {
    const b = new PostgresStorageBackend({ url: pg.url, schema: "edits", max: 8 });
    const sessions = await Promise.all(Array.from({ length: 4 }, (_, w) => b.createSession("editor", { w })));
    const say = (content: string) => ({ role: "user" as const, content });
    let done = 0;
    // Per session two writers: one replaces the last two messages with three (keyed), one pops (compare-and-swap).
    const failures: unknown[] = [];
    const writers = sessions.flatMap((id, w) => [
      (async () => {
        for (let i = 0; ; i++) {
          try {
            const length = await b.countMessages(id);
            const batch = [say(`${w}.${i}.a`), say(`${w}.${i}.b`), say(`${w}.${i}.c`)];
            await b
              .replaceMessages(id, Math.max(0, length - 2), batch, { expectedLength: length, idempotencyKey: `r${i}` })
              .catch((error: unknown) => {
                if ((error as Error).name !== "ConflictError") throw error;
              });
            done++;
          } catch (error) {
            failures.push(error);
            return;
          }
        }
      })(),
      (async () => {
        for (;;) {
          try {
            const length = await b.countMessages(id);
            await b.popMessage(id, { expectedLength: length }).catch((error: unknown) => {
              if ((error as Error).name !== "ConflictError") throw error;
            });
            done++;
          } catch (error) {
            failures.push(error);
            return;
          }
        }
      })(),
    ]);
    await eventually(() => done >= 400, 60_000);
    await pg.stop("immediate");
    await Promise.all(writers);
    await pg.start();
    expect(failures).toHaveLength(writers.length);
    for (const failure of failures) causeOf(failure);

    for (const [w, id] of sessions.entries()) {
      const [row] = await admin.unsafe(
        `select s.message_count, coalesce(array_agg(m.position order by m.position) filter (where m.position is not null), '{}') as positions
         from edits.sessions s left join edits.messages m on m.session_id = s.id where s.id = $1 group by s.message_count`,
        [id],
      );
      const count = row?.message_count as number;
      expect(row?.positions).toEqual(Array.from({ length: count }, (_, p) => p));
      const messages = await b.loadMessages(id);
      expect(messages).toHaveLength(count);
      // Every replacement's three messages arrive together: what is left is whole batches, minus popped tails.
      const contents = messages.map((m) => m.content as string);
      expect(contents.every((c) => c.startsWith(`${w}.`))).toBe(true);
      // The key counter moves with the keys, in the same statement (fewer than 1,000 here: none pruned).
      const [keys] = await admin.unsafe(
        `select s.key_seq, (select count(*)::int from edits.idempotency_keys k where k.session_id = s.id) as n,
                (select max(seq) from edits.idempotency_keys k where k.session_id = s.id) as newest
         from edits.sessions s where s.id = $1`,
        [id],
      );
      expect(keys?.n).toBeGreaterThan(0);
      expect([keys?.n, keys?.newest]).toEqual([keys?.key_seq, keys?.key_seq]);
    }
    // The same object carries on: edits and pops on every session.
    for (const id of sessions) {
      const length = await b.countMessages(id);
      expect(await b.replaceMessages(id, 0, [say("after")], { expectedLength: length })).toEqual({ length: 1 });
      expect(await b.popMessage(id)).toMatchObject({ content: "after" });
    }
    figure("postgres crash mid-edits", { editsBeforeCrash: done, inFlightFailed: failures.length, brokenSessions: 0 });
    await b.close();
  });

  it("a connection lost after Postgres committed a keyed edit but before its reply: the retry with the key writes nothing", async () => {
    const proxy = await ReplyLosingProxy.listen(pg.port);
    const b = new PostgresStorageBackend({
      url: `postgres://postgres@127.0.0.1:${proxy.port}/postgres`,
      schema: "keyed",
      max: 1,
    });
    try {
      const id = await b.createSession("lossy");
      await b.saveMessages(id, [
        { role: "user", content: "before" },
        { role: "assistant", content: "to replace" },
      ]);
      const write = (session = id) =>
        b.replaceMessages(
          session,
          1,
          [
            { role: "assistant", content: "replaced" },
            { role: "user", content: "next" },
          ],
          {
            expectedLength: 2,
            idempotencyKey: "turn-7",
          },
        );
      // The statement prepared on the connection first, as it would be in a running process (else postgres.js
      // waits for the reply to its Parse before it sends the rest).
      const warm = await b.createSession("lossy");
      await b.saveMessages(warm, [
        { role: "user", content: "w" },
        { role: "user", content: "w" },
      ]);
      await write(warm);
      proxy.swallowReplies();
      const first = write().then(
        () => null,
        (e: unknown) => e,
      );
      const stored = () => count("select count(*)::int as n from keyed.idempotency_keys where session_id = $1", id);
      expect(await eventually(async () => (await stored()) === 1)).toBe(true);
      proxy.cut();
      causeOf(await first);
      // The caller cannot know whether it was applied: the retry with the same key answers as the first would
      // have (no ConflictError from expectedLength, though the length is 3 now), and writes nothing.
      expect(await write()).toEqual({ length: 3 });
      expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["before", "replaced", "next"]);
    } finally {
      await b.close();
      await proxy.close();
    }
  });

  it("a connection lost after Postgres committed an append but before its reply: the call rejects, the append is stored once", async () => {
    const proxy = await ReplyLosingProxy.listen(pg.port);
    const b = new PostgresStorageBackend({
      url: `postgres://postgres@127.0.0.1:${proxy.port}/postgres`,
      schema: "replies",
    });
    try {
      const id = await b.createSession("lossy");
      await b.saveMessage(id, "user", "before");
      proxy.swallowReplies();
      const saved = b.saveMessage(id, "user", "reply lost").then(
        () => null,
        (e: unknown) => e,
      );
      const stored = () => count("select count(*)::int as n from replies.messages where session_id = $1", id);
      expect(await eventually(async () => (await stored()) === 2)).toBe(true);
      proxy.cut();
      // The outcome is unknown to the caller: postgres.js does not resend, so the call fails and nothing is doubled.
      causeOf(await saved);
      await b.saveMessage(id, "user", "after");
      expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["before", "reply lost", "after"]);
    } finally {
      await b.close();
      await proxy.close();
    }
  });
});
