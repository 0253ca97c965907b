// The listing and message queries are served by their indexes: EXPLAIN of the exact statements the backend sends
// (captured with the client's `debug` hook, parameters included), on a few thousand rows.
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { ListOptions, SessionRecord } from "../src/core/types.js";
import { PostgresStorageBackend } from "../src/postgres.js";

const url = inject("postgresUrl");
const schema = `agentix_test_${randomUUID().slice(0, 8)}`;

interface PlanNode {
  "Node Type": string;
  "Index Name"?: string;
  Plans?: PlanNode[];
}

const flatten = (plan: PlanNode): PlanNode[] => [plan, ...(plan.Plans ?? []).flatMap(flatten)];
const sorts = (plan: PlanNode[]) => plan.filter((n) => n["Node Type"].includes("Sort")).map((n) => n["Node Type"]);
const indexes = (plan: PlanNode[]) => plan.flatMap((n) => (n["Index Name"] ? [n["Index Name"]] : []));

describe.skipIf(!url)("PostgresStorageBackend query plans", () => {
  let captured: Array<{ query: string; parameters: unknown[] }> = [];
  let client: postgres.Sql;
  let b: PostgresStorageBackend;
  let session: string;
  let page: SessionRecord[];

  beforeAll(async () => {
    client = postgres(url as string, {
      onnotice: () => {},
      debug: (_connection, query, parameters) => captured.push({ query, parameters }),
    });
    b = new PostgresStorageBackend({ client, schema });
    session = await b.createSession("big", { cwd: "/a" });
    const s = client(schema);
    // 4,000 sessions, 3,000 of them of one agent over three cwds; 5,000 messages, 3,000 of them in `session`.
    await client`
      insert into ${s}.sessions (id, agent_id, cwd, metadata, created_at, updated_at)
      select gen_random_uuid(), case when i <= 3000 then 'big' else 'agent-' || (i % 100) end,
             (array['/a', '/b', null])[i % 3 + 1], null, now() - interval '1 day', now() - (i % 500) * interval '1 second'
      from generate_series(1, 4000) i`;
    await client`
      insert into ${s}.messages (session_id, role, content, created_at)
      select ${session}, 'user', '"x"', now() from generate_series(1, 3000)`;
    await client`
      insert into ${s}.messages (session_id, role, content, created_at)
      select id, 'user', '"x"', now() from (select id from ${s}.sessions where id <> ${session} limit 100) x, generate_series(1, 20)`;
    await client`analyze ${s}.sessions`;
    await client`analyze ${s}.messages`;
    page = await b.listSessions("big", { limit: 20 });
  });
  afterAll(async () => {
    await b?.close();
    await client?.unsafe(`drop schema if exists "${schema}" cascade`);
    await client?.end();
  });

  /** The plan of the one statement that `run` sends; with `sortOff`, as planned when any sort-free plan wins. */
  const plan = async (run: () => Promise<unknown>, sortOff = false): Promise<PlanNode[]> => {
    captured = [];
    await run();
    const [statement, ...more] = captured;
    expect(more).toEqual([]);
    const rows = await client.begin(async (tx) => {
      if (sortOff) await tx`set local enable_sort = off`;
      return tx.unsafe(`explain (format json) ${statement?.query}`, statement?.parameters as never[]);
    });
    const [explained] = (rows[0] as unknown as { "QUERY PLAN": Array<{ Plan: PlanNode }> })["QUERY PLAN"];
    return flatten((explained as { Plan: PlanNode }).Plan);
  };

  const listings = (): Array<[ListOptions, string]> => {
    const before = page.at(-1) as SessionRecord;
    return [
      [{ limit: 20 }, "sessions_agent_updated_idx"],
      [{ limit: 20, before }, "sessions_agent_updated_idx"],
      [{ cwd: "/a", limit: 20 }, "sessions_agent_cwd_updated_idx"],
      [{ cwd: "/a", limit: 20, before }, "sessions_agent_cwd_updated_idx"],
    ];
  };

  it("pages of a large agent's listing are read along the index, never sorted", async () => {
    for (const [options, index] of listings()) {
      const nodes = await plan(() => b.listSessions("big", options));
      expect(sorts(nodes), JSON.stringify(options)).toEqual([]);
      expect(indexes(nodes), JSON.stringify(options)).toEqual([index]);
    }
  });

  it("loadMessages with `last` reads the newest messages backwards along (session_id, id), never sorted", async () => {
    const nodes = await plan(() => b.loadMessages(session, { last: 10 }));
    expect(sorts(nodes)).toEqual([]);
    expect(nodes.find((n) => n["Index Name"] === "messages_session_idx")?.["Node Type"]).toBe("Index Scan");
    expect(await b.loadMessages(session, { last: 10 })).toHaveLength(10);
  });

  // Reading everything, the planner may prefer a bitmap scan and a sort of a small result: its choice by cost.
  // With sorting priced out, a plan without a sort exists only if the index order is exactly the query's order
  // (NULLS LAST included), which is what these check.
  it("whole listings and whole sessions can always be read in index order", async () => {
    for (const [options, index] of [
      ...listings(),
      [{}, "sessions_agent_updated_idx"],
      [{ cwd: "/b" }, "sessions_agent_cwd_updated_idx"],
    ] as const) {
      const nodes = await plan(() => b.listSessions("big", options), true);
      expect(sorts(nodes), JSON.stringify(options)).toEqual([]);
      expect(indexes(nodes), JSON.stringify(options)).toEqual([index]);
    }
    for (const options of [{}, { last: 10 }]) {
      const nodes = await plan(() => b.loadMessages(session, options), true);
      expect(sorts(nodes), JSON.stringify(options)).toEqual([]);
      expect(indexes(nodes), JSON.stringify(options)).toContain("messages_session_idx");
    }
    expect(await b.loadMessages(session)).toHaveLength(3000);
  });
});
