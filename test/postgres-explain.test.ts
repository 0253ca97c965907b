// The listing and message statements are served by their indexes: EXPLAIN of the exact statements the backend
// sends (captured with the client's `debug` hook, parameters included). The messages table is deliberately skewed
// (one session of 200,000 messages, a hundred of 20), ANALYZEd: reads, edits and forks of the large session must
// touch the rows they return or change, not the session's or the table's, in custom plans and in generic plans
// (what a prepared statement may switch to, planned without knowing the session or the bounds).
import { randomUUID } from "node:crypto";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { ListOptions, LoadOptions, SessionRecord } from "../src/core/types.js";
import { PostgresStorageBackend } from "../src/postgres.js";

const url = inject("postgresUrl");
const schema = `agentix_test_${randomUUID().slice(0, 8)}`;
const BIG = 200_000;

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Index Cond"?: string;
  "Actual Rows"?: number;
  "Actual Loops"?: number;
  "Shared Hit Blocks"?: number;
  "Shared Read Blocks"?: number;
  Plans?: PlanNode[];
}
interface Statement {
  query: string;
  parameters: unknown[];
}

const flatten = (plan: PlanNode): PlanNode[] => [plan, ...(plan.Plans ?? []).flatMap(flatten)];
const sorts = (plan: PlanNode[]) => plan.filter((n) => n["Node Type"].includes("Sort")).map((n) => n["Node Type"]);
const indexes = (plan: PlanNode[]) => plan.flatMap((n) => (n["Index Name"] ? [n["Index Name"]] : []));
const SCANS = ["Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Bitmap Index Scan"];
/** The nodes that read the messages table (not the ones that write it). */
const messageScans = (plan: PlanNode[]) =>
  plan.filter(
    (n) =>
      SCANS.includes(n["Node Type"]) && (n["Relation Name"] === "messages" || n["Index Name"]?.startsWith("messages_")),
  );
const blocks = (n: PlanNode) => (n["Shared Hit Blocks"] ?? 0) + (n["Shared Read Blocks"] ?? 0);
const rowsRead = (n: PlanNode) => (n["Actual Rows"] ?? 0) * (n["Actual Loops"] ?? 1);

/** A parameter as an SQL literal, for EXECUTE (the statements' parameters are ids, numbers, text and null). */
const literal = (v: unknown) =>
  v === null || v === undefined
    ? "null"
    : typeof v === "number" || typeof v === "boolean"
      ? String(v)
      : `'${String(v).replaceAll("'", "''")}'`;

describe.skipIf(!url)("PostgresStorageBackend query plans", () => {
  let captured: Statement[] = [];
  let client: postgres.Sql;
  let b: PostgresStorageBackend;
  let session: string;
  let big: string;
  let small: string;
  let page: SessionRecord[];

  beforeAll(async () => {
    client = postgres(url as string, {
      onnotice: () => {},
      debug: (_connection, query, parameters) => captured.push({ query, parameters }),
    });
    b = new PostgresStorageBackend({ client, schema });
    session = await b.createSession("big", { cwd: "/a" });
    big = await b.createSession("skewed");
    const s = client(schema);
    // 4,000 sessions, 3,000 of them of one agent over three cwds.
    await client`
      insert into ${s}.sessions (id, agent_id, cwd, metadata, created_at, updated_at)
      select gen_random_uuid(), case when i <= 3000 then 'big' else 'agent-' || (i % 100) end,
             (array['/a', '/b', null])[i % 3 + 1], null, now() - interval '1 day', now() - (i % 500) * interval '1 second'
      from generate_series(1, 4000) i`;
    // Messages: 3,000 in `session`, 200,000 in `big`, 20 in each of 100 others.
    for (const [id, n] of [
      [session, 3000],
      [big, BIG],
    ] as const) {
      await client`
        insert into ${s}.messages (session_id, position, role, content, created_at)
        select ${id}, i, 'user', to_json('message ' || i)::text, now() from generate_series(0, ${n - 1}) i`;
      await client`update ${s}.sessions set message_count = ${n} where id = ${id}`;
    }
    await client`
      with others as (
        update ${s}.sessions set message_count = 20
        where id in (select id from ${s}.sessions where id not in (${session}, ${big}) order by id limit 100)
        returning id
      )
      insert into ${s}.messages (session_id, position, role, content, created_at)
      select id, i, 'user', '"x"', now() from others, generate_series(0, 19) i`;
    small = (await client`select id from ${s}.sessions where message_count = 20 limit 1`)[0]?.id as string;
    await client`analyze ${s}.sessions`;
    await client`analyze ${s}.messages`;
    page = await b.listSessions("big", { limit: 20 });
  });
  afterAll(async () => {
    await b?.close();
    await client?.unsafe(`drop schema if exists "${schema}" cascade`);
    await client?.end();
  });

  /** The one statement that `run` sends. */
  const statementOf = async (run: () => Promise<unknown>): Promise<Statement> => {
    captured = [];
    await run();
    const [statement, ...more] = captured;
    expect(more).toEqual([]);
    return statement as Statement;
  };

  /**
   * EXPLAIN of a statement in a transaction that is rolled back (with ANALYZE, an edit really runs): as the
   * backend sends it (a custom plan, for these parameters), or prepared and planned for any parameters.
   */
  const explain = async (
    { query, parameters }: Statement,
    options: { analyze?: boolean; generic?: boolean; sortOff?: boolean } = {},
  ): Promise<PlanNode[]> => {
    const how = options.analyze ? "analyze, buffers, format json" : "format json";
    let explained: Array<{ Plan: PlanNode }> | undefined;
    await client
      .begin(async (tx) => {
        if (options.sortOff) await tx`set local enable_sort = off`;
        let rows: postgres.RowList<postgres.Row[]>;
        if (options.generic) {
          await tx`set local plan_cache_mode = force_generic_plan`;
          await tx.unsafe(`prepare agentix_explained as ${query}`);
          rows = await tx.unsafe(`explain (${how}) execute agentix_explained(${parameters.map(literal).join(", ")})`);
          // Prepared statements belong to the connection, not to the transaction.
          await tx`deallocate agentix_explained`;
        } else {
          rows = await tx.unsafe(`explain (${how}) ${query}`, parameters as never[]);
        }
        explained = (rows[0] as unknown as { "QUERY PLAN": Array<{ Plan: PlanNode }> })["QUERY PLAN"];
        throw new Rollback();
      })
      .catch((error: unknown) => {
        if (!(error instanceof Rollback)) throw error;
      });
    const [top] = explained ?? [];
    if (!top) throw new Error("EXPLAIN returned no plan");
    return flatten(top.Plan);
  };
  class Rollback extends Error {}

  const plan = async (run: () => Promise<unknown>, sortOff = false) => explain(await statementOf(run), { sortOff });

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
    for (const options of [{}, { last: 10 }, { offset: 10, limit: 10 }]) {
      const nodes = await plan(() => b.loadMessages(session, options), true);
      expect(sorts(nodes), JSON.stringify(options)).toEqual([]);
      expect(indexes(nodes), JSON.stringify(options)).toContain("messages_session_idx");
    }
    expect(await b.loadMessages(session)).toHaveLength(3000);
  });

  /** Asserts that the messages are read by one range of (session_id, position), and returns that scan. */
  const rangeScan = (nodes: PlanNode[], label: string, generic: boolean): PlanNode => {
    const scans = messageScans(nodes);
    expect(
      scans.map((n) => [n["Node Type"], n["Index Name"]]),
      label,
    ).toEqual([["Index Scan", "messages_session_idx"]]);
    const [scan] = scans as [PlanNode];
    const cond = scan["Index Cond"] ?? "";
    expect(cond, label).toMatch(generic ? /session_id = \$1/ : /session_id = '[0-9a-f-]{36}'::uuid/);
    expect(cond, label).toMatch(/"position" >= .*"position" < /);
    expect(sorts(nodes), label).toEqual([]);
    return scan;
  };

  it("the tail and deep pages of a 200,000-message session read only the rows returned, custom plan or generic", async () => {
    const reads: Array<[string, LoadOptions, number]> = [
      [big, { last: 50 }, 50],
      [big, { offset: 150_000, limit: 100 }, 100],
      [big, { offset: BIG - 20 }, 20],
      [small, { last: 5 }, 5],
      [small, { offset: 10, limit: 100 }, 10],
    ];
    for (const [id, options, returned] of reads) {
      const statement = await statementOf(async () => {
        const loaded = await b.loadMessages(id, options);
        expect(loaded).toHaveLength(returned);
        if (id === big && "last" in options) expect(loaded.at(-1)?.content).toBe(`message ${BIG - 1}`);
        if (id === big && options.offset !== undefined) expect(loaded[0]?.content).toBe(`message ${options.offset}`);
      });
      for (const generic of [false, true]) {
        const label = `${JSON.stringify(options)} of ${id === big ? "the big" : "a small"} session, ${generic ? "generic" : "custom"} plan`;
        const nodes = await explain(statement, { analyze: true, generic });
        const scan = rangeScan(nodes, label, generic);
        expect(rowsRead(scan), label).toBe(returned);
        // A few index pages down to the range, and the heap pages of its rows (at worst one each), whatever the
        // size of the session or the table; and a few more for the session row.
        expect(blocks(scan), label).toBeLessThanOrEqual(4 + returned);
        expect(blocks(nodes[0] as PlanNode), label).toBeLessThanOrEqual(8 + returned);
      }
    }
  });

  it("edits and forks from a turn of the large session read and change only their rows, custom plan or generic", async () => {
    const say = (content: string) => ({ role: "user" as const, content });
    const length = await b.countMessages(big);
    // With the number of scans of messages each makes: pop reads the last message and deletes it; a replacement
    // deletes a range; an append with options reads no message at all.
    const edits: Array<[string, () => Promise<unknown>, number]> = [
      ["popMessage", () => b.popMessage(big), 2],
      ["replaceMessages", () => b.replaceMessages(big, length - 10, [say("r1"), say("r2")]), 1],
      [
        "replaceMessages (truncation)",
        () => b.replaceMessages(big, length - 12, [], { expectedLength: length - 8 }),
        1,
      ],
      ["saveMessages with options", () => b.saveMessages(big, [say("k")], { idempotencyKey: randomUUID() }), 0],
      ["popMessage with options", () => b.popMessage(big, { expectedLength: length - 11, idempotencyKey: "p" }), 2],
    ];
    for (const [label, edit, reads] of edits) {
      const statement = await statementOf(edit);
      for (const generic of [false, true]) {
        const nodes = await explain(statement, { analyze: true, generic });
        const scans = messageScans(nodes);
        const what = `${label}, ${generic ? "generic" : "custom"} plan`;
        expect(scans, what).toHaveLength(reads);
        for (const scan of scans) {
          expect([scan["Node Type"], scan["Index Name"]], what).toEqual(["Index Scan", "messages_session_idx"]);
          expect(rowsRead(scan), what).toBeLessThanOrEqual(10);
          expect(blocks(scan), what).toBeLessThanOrEqual(14);
        }
      }
    }
    for (const options of [{ length: 10 }, { length: 10, metadata: { cwd: "/fork" } }]) {
      let fork = "";
      const statement = await statementOf(async () => (fork = await b.forkSession(big, options)));
      expect(await b.countMessages(fork)).toBe(10);
      // Run again for a new id: the copy itself (the fork's own id is taken now).
      const other = randomUUID();
      const again = { ...statement, parameters: statement.parameters.map((p) => (p === fork ? other : p)) };
      for (const generic of [false, true]) {
        const what = `forkSession ${JSON.stringify(options)}, ${generic ? "generic" : "custom"} plan`;
        const nodes = await explain(again, { analyze: true, generic });
        const scans = messageScans(nodes);
        if (generic && scans[0]?.["Node Type"] === "Bitmap Heap Scan") {
          // Planned for any length, a bitmap of the index range (then a sort of the rows copied) may win on cost.
          expect(
            scans.map((n) => n["Node Type"]),
            what,
          ).toEqual(["Bitmap Heap Scan", "Bitmap Index Scan"]);
          expect(scans[1]?.["Index Name"], what).toBe("messages_session_idx");
        } else {
          expect(
            scans.map((n) => [n["Node Type"], n["Index Name"]]),
            what,
          ).toEqual([["Index Scan", "messages_session_idx"]]);
          expect(sorts(nodes), what).toEqual([]);
        }
        for (const scan of scans) expect(rowsRead(scan), what).toBe(10);
      }
    }
  });

  it("scans of one agent read each page along (agent_id, id): the last page reads only its rows, custom plan or generic", async () => {
    // "agent-1" has 10 of the 4,002 sessions, their ids spread over the table: pages of 3 in id order. Without an
    // index leading with agent_id, a page walks the primary key filtering out other agents' rows, and the last
    // (not full) walks it to the end of the table.
    const ids = (await client`select id from ${client(schema)}.sessions where agent_id = 'agent-1' order by id`).map(
      (r) => r.id as string,
    );
    expect(ids).toHaveLength(10);
    const pages: Array<[string, string | undefined, number]> = [
      ["first", undefined, 3],
      ["middle", ids[2], 3],
      ["last", ids[8], 1],
    ];
    for (const [which, after, returned] of pages) {
      const statement = await statementOf(async () => {
        const page = await b.scanSessions({ agentId: "agent-1", limit: 3, ...(after ? { after } : {}) });
        const from = after === undefined ? 0 : ids.indexOf(after) + 1;
        expect(page.map((p) => p.session_id)).toEqual(ids.slice(from, from + 3));
      });
      for (const generic of [false, true]) {
        const label = `${which} page, ${generic ? "generic" : "custom"} plan`;
        const nodes = await explain(statement, { analyze: true, generic });
        expect(indexes(nodes), label).toEqual(["sessions_agent_id_idx"]);
        const [scan] = nodes.filter((n) => n["Index Name"] === "sessions_agent_id_idx");
        // The page's rows (one more when the limit stops the scan there), never other rows of the table; a few
        // index pages and a heap page per row. The planner may fetch a few rows by bitmap and sort them: the page.
        expect(rowsRead(scan as PlanNode), label).toBeLessThanOrEqual(returned + 1);
        expect(blocks(nodes[0] as PlanNode), label).toBeLessThanOrEqual(6 + 2 * returned);
        for (const sort of nodes.filter((n) => n["Node Type"].includes("Sort")))
          expect(rowsRead(sort), label).toBeLessThanOrEqual(returned);
      }
    }
  });

  it("a whole fork reads its source along (session_id, position), unsorted, when sorting is priced out", async () => {
    const nodes = await plan(() => b.forkSession(session), true);
    expect(sorts(nodes)).toEqual([]);
    expect(messageScans(nodes).map((n) => n["Index Name"])).toEqual(["messages_session_idx"]);
  });
});
