// The scale rows (issues 17 and 19), opt-in: `npm run bench -- --workloads scale`. One store per backend holds
// 111,000 sessions of three agents of 1,000, 10,000 and 100,000 sessions, interleaved in id order and in time, and
// the rows time, through agentix's public API:
// - listings: the first page of 50 (`listSessions(agent, { limit: 50 })`) and the page at half depth (`before`);
// - exports: every session of the 10k and of the 100k agent read by `scanSessions({ agentId })` in pages of 200,
//   as `agentix export --agent` reads them (src/cli/shared.ts `scanAll`): when a page costs O(page), the 100k
//   export takes 10× the 10k one (a page as long); a page that sorts or walks the agent's sessions makes it 100×.
// The floor, where the store lets a plain statement read the same data (Postgres on postgres.js, SQLite): the
// indexed listing select, and the keyset select `… where agent_id = $1 and id > $2 order by id limit 200`.
// Seeding 111,000 sessions goes through each backend's bulk path (bench/baselines/*: `seedSessions`), untimed.

import * as fs from "node:fs";
import { uuidv7 } from "uuidv7";
import { scanAll } from "../src/cli/shared.js";
import type { StorageBackend } from "../src/core/backend.js";
import { compareSessions } from "../src/core/records.js";
import type { SessionRecord } from "../src/core/types.js";
import { FloorPostgres } from "./baselines/floor-postgres.js";
import { RawSqlite } from "./baselines/sqlite.js";
import type { Figure, Result } from "./report.js";
import {
  agentixSubject,
  type BenchTarget,
  checkPage,
  type MetricSpec,
  median,
  type Namespace,
  type Side,
  type Subject,
} from "./workloads.js";

/** Sessions per agent of the listing rows, and of the export rows. */
export const LIST_SIZES = [1000, 10_000, 100_000] as const;
export const EXPORT_SIZES = [10_000, 100_000] as const;
/** The page of a listing, and of an export (`agentix export` reads 200 at a time). */
export const LIST_PAGE = 50;
export const EXPORT_PAGE = 200;

export const sizeName = (n: number) => `${n / 1000}k`;
const agentOf = (n: number) => `scale-${sizeName(n)}`;

/** The metrics, in report order: what `--workloads scale` adds to the report. */
export const SCALE_METRICS: MetricSpec[] = [
  ...LIST_SIZES.map((n): MetricSpec => ({ name: `scale_list_${sizeName(n)}`, unit: "ms" })),
  ...LIST_SIZES.map((n): MetricSpec => ({ name: `scale_list_mid_${sizeName(n)}`, unit: "ms" })),
  { name: "scale_export_10k", unit: "ms", extra: ["per_page"] },
  // The target: a page of the 100k export costs at most twice a page of the 10k one (O(page), not O(agent)).
  { name: "scale_export_100k", unit: "ms", extra: ["per_page", "page_vs_10k"] },
];

/** What run.ts needs to know of the rows: their name (for `--workloads`) and repetitions. */
export const scaleRows = { name: "scale", reps: { full: 4, quick: 2 } };

/**
 * The agents' sessions, interleaved: of every 111 sessions in id order, 100 are the 100k agent's, 10 the 10k
 * agent's and 1 the 1k agent's. `updated_at` is `created_at` plus a jitter (so that the listing order is not the
 * id order), and sessions 3 and 4 of every five of an agent share theirs (a tie, which the session id breaks).
 */
export function scaleSessions(): SessionRecord[] {
  const total = LIST_SIZES.reduce((a, b) => a + b, 0);
  const start = Date.now() - 60 * 86_400_000;
  const byAgent = new Map<string, SessionRecord[]>();
  const records: SessionRecord[] = [];
  for (let i = 0; i < total; i++) {
    const k = i % 111;
    const agent = agentOf(k === 0 ? 1000 : k % 11 === 1 ? 10_000 : 100_000);
    const mine = byAgent.get(agent) ?? [];
    byAgent.set(agent, mine);
    const created = start + i * 1000;
    const record = {
      session_id: uuidv7(),
      agent_id: agent,
      created_at: new Date(created).toISOString(),
      updated_at: new Date(created + ((i * 7919) % 97) * 100).toISOString(),
      metadata: { cwd: `/work/project-${mine.length % 4}`, title: `session ${mine.length} of ${agent}` },
    };
    // The tie: the later of the two times (never before either session's created_at).
    const partner = mine.at(-1);
    if (mine.length % 5 === 4 && partner) partner.updated_at = record.updated_at;
    mine.push(record);
    records.push(record);
  }
  return records;
}

/** What a side reads the store with: agentix, or the floor on the same store. */
interface Reader {
  side: Side;
  subject: Subject;
  /** Every session of the agent, in id order, in pages of {@link EXPORT_PAGE}. */
  scan(agentId: string): AsyncIterable<SessionRecord> | Iterable<SessionRecord>;
  close(): void | Promise<void>;
}

function agentixReader(backend: StorageBackend): Reader {
  return { side: "agentix", subject: agentixSubject(backend), scan: (agent) => scanAll(backend, agent), close() {} };
}

/** The floor of the store under the namespace, when a plain statement can read it. */
function floorReader(store: Namespace["store"]): Reader | undefined {
  if (store && "postgres" in store) {
    const { postgres: sql, schema } = store;
    const iso = (c: string) => `to_char(${c} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;
    const columns = `id, agent_id, ${iso("created_at")}, ${iso("updated_at")}, metadata`;
    const first = `select ${columns} from "${schema}".sessions where agent_id = $1 order by id limit $2`;
    const next = `select ${columns} from "${schema}".sessions where agent_id = $1 and id > $2 order by id limit $3`;
    return {
      side: "floor",
      subject: new FloorPostgres(sql, schema),
      async *scan(agent) {
        for (let after: string | undefined; ; ) {
          const rows = (await sql
            .unsafe(
              after === undefined ? first : next,
              after === undefined ? [agent, EXPORT_PAGE] : [agent, after, EXPORT_PAGE],
              {
                prepare: true,
              },
            )
            .values()) as unknown as Array<Array<string | null>>;
          for (const row of rows) yield sessionOf(row);
          if (rows.length < EXPORT_PAGE) return;
          after = rows.at(-1)?.[0] as string;
        }
      },
      close() {},
    };
  }
  if (store && "sqlite" in store) {
    const raw = new RawSqlite(store.sqlite);
    const columns = "id, agent_id, created_at, updated_at, metadata";
    const page = raw.db
      .prepare<[string, string, number], Array<string | null>>(
        `select ${columns} from sessions where agent_id = ? and id > ? order by id limit ?`,
      )
      .raw();
    return {
      side: "floor",
      subject: raw,
      *scan(agent) {
        for (let after = ""; ; ) {
          const rows = page.all(agent, after, EXPORT_PAGE);
          for (const row of rows) yield sessionOf(row);
          if (rows.length < EXPORT_PAGE) return;
          after = rows.at(-1)?.[0] as string;
        }
      },
      close() {
        raw.db.close();
      },
    };
  }
  return undefined;
}

function sessionOf([session_id, agent_id, created_at, updated_at, metadata]: Array<string | null>): SessionRecord {
  return {
    session_id: session_id as string,
    agent_id: agent_id as string,
    created_at: created_at as string,
    updated_at: updated_at as string,
    metadata: metadata == null ? null : JSON.parse(metadata),
  };
}

/** Each agent's sessions in listing order and in id order. */
interface Expected {
  listed: Map<number, SessionRecord[]>;
  ids: Map<number, string[]>;
}

function expectedOf(records: SessionRecord[]): Expected {
  const listed = new Map<number, SessionRecord[]>();
  const ids = new Map<number, string[]>();
  for (const n of LIST_SIZES) {
    const mine = records.filter((r) => r.agent_id === agentOf(n));
    if (mine.length !== n) throw new Error(`scale: ${mine.length} sessions of ${agentOf(n)}, expected ${n}`);
    listed.set(n, [...mine].sort(compareSessions));
    ids.set(
      n,
      mine.map((r) => r.session_id),
    );
  }
  return { listed, ids };
}

async function timedMedian(n: number, run: () => Promise<unknown> | unknown, check: (value: never) => void) {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const start = performance.now();
    const value = await run();
    times.push(performance.now() - start);
    check(value as never);
  }
  return median(times);
}

/** The whole export of an agent: its time, the sessions checked (all of them once, in id order) as they come. */
async function exportAgent(reader: Reader, n: number, ids: string[]): Promise<number> {
  const start = performance.now();
  let i = 0;
  for await (const record of reader.scan(agentOf(n))) {
    if (record.session_id !== ids[i]) {
      throw new Error(`scale: export of ${agentOf(n)} (${reader.side}): session ${i} is ${record.session_id}`);
    }
    i++;
  }
  const ms = performance.now() - start;
  if (i !== n) throw new Error(`scale: export of ${agentOf(n)} (${reader.side}) read ${i} sessions, expected ${n}`);
  return ms;
}

/** One repetition of every row on one side. */
async function repetition(reader: Reader, expected: Expected): Promise<Record<string, number>> {
  const sample: Record<string, number> = {};
  for (const n of LIST_SIZES) {
    const listed = expected.listed.get(n) as SessionRecord[];
    const agent = agentOf(n);
    sample[`scale_list_${sizeName(n)}`] = await timedMedian(
      5,
      () => reader.subject.listSessions(agent, LIST_PAGE),
      (page: SessionRecord[]) => checkPage(page, listed.slice(0, LIST_PAGE), `${agent} first page`),
    );
    // The page at half depth, after the previous page's last record, as a caller passes it.
    const mid = Math.floor(n / 2);
    const cursor = { ...(listed[mid - 1] as SessionRecord) };
    sample[`scale_list_mid_${sizeName(n)}`] = await timedMedian(
      5,
      () => reader.subject.listSessions(agent, LIST_PAGE, cursor),
      (page: SessionRecord[]) => checkPage(page, listed.slice(mid, mid + LIST_PAGE), `${agent} page at ${mid}`),
    );
  }
  for (const n of EXPORT_SIZES) {
    // The short exports as the median of three, so that a moment of a busy machine weighs less on the comparison.
    const times = [];
    for (let i = 0; i < (n < 100_000 ? 3 : 1); i++)
      times.push(await exportAgent(reader, n, expected.ids.get(n) as string[]));
    const ms = median(times);
    sample[`scale_export_${sizeName(n)}`] = ms;
    sample[`per_page_${sizeName(n)}`] = ms / Math.ceil(n / EXPORT_PAGE);
  }
  return sample;
}

/**
 * Where the File and SQLite stores of the rows live: /dev/shm (a tmpfs) when there is one. Creating and removing
 * 111,000 session directories on this machine's shared disk took 1 and 10 minutes; what the rows time reads files
 * from the page cache either way.
 */
function memoryDir(): string | undefined {
  try {
    fs.accessSync("/dev/shm", fs.constants.W_OK);
    return "/dev/shm";
  } catch {
    return undefined;
  }
}

export interface ScaleEnv {
  open(target: BenchTarget, side: Side, parent?: string): Promise<Namespace>;
  drop(ns: Namespace): Promise<void>;
  log(message: string): void;
}

/**
 * The scale rows on one backend: one store seeded, then agentix and the floor (where there is one) timed in
 * alternation, repetition by repetition, on that same store.
 */
export async function runScale(target: BenchTarget, env: ScaleEnv, reps: number): Promise<Result[]> {
  let ns: Namespace | undefined;
  const readers: Reader[] = [];
  try {
    ns = await env.open(target, "agentix", memoryDir());
    const records = scaleSessions();
    const seeding = performance.now();
    await ns.seedSessions(records);
    await ns.settle?.();
    env.log(
      `  ${target.name} scale: ${records.length} sessions seeded in ${((performance.now() - seeding) / 1000).toFixed(1)} s`,
    );
    const expected = expectedOf(records);
    readers.push(agentixReader(ns.backend as StorageBackend));
    const floor = floorReader(ns.store);
    if (floor) readers.push(floor);
    // Untimed first calls: statements prepared, and what a backend builds on first use (File's listing file,
    // Redis's id-ordered set of an agent) built.
    const warming = performance.now();
    for (const reader of readers) await repetition(reader, expected);
    env.log(`  ${target.name} scale: warmed in ${((performance.now() - warming) / 1000).toFixed(1)} s`);
    const samples = new Map<Side, Array<Record<string, number>>>(readers.map((r) => [r.side, []]));
    for (let rep = 0; rep < reps; rep++) {
      const order = rep % 2 === 0 ? readers : [...readers].reverse();
      for (const reader of order) samples.get(reader.side)?.push(await repetition(reader, expected));
      env.log(
        `  ${target.name} scale: repetition ${rep + 1} of ${reps} at ${((performance.now() - warming) / 1000).toFixed(1)} s`,
      );
    }
    for (const side of samples.values()) {
      for (const s of side) s.page_vs_10k = (s.per_page_100k as number) / (s.per_page_10k as number);
    }
    return SCALE_METRICS.map((m) => result(target, m, samples));
  } catch (error) {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    env.log(`  ${target.name} scale FAILED: ${message}`);
    return SCALE_METRICS.map((m) => ({ backend: target.name, metric: m.name, unit: m.unit, error: message }));
  } finally {
    for (const reader of readers) await reader.close();
    const dropping = performance.now();
    if (ns) await env.drop(ns);
    env.log(`  ${target.name} scale: dropped in ${((performance.now() - dropping) / 1000).toFixed(1)} s`);
  }
}

function result(target: BenchTarget, m: MetricSpec, samples: Map<Side, Array<Record<string, number>>>): Result {
  const size = m.name.slice(m.name.lastIndexOf("_") + 1);
  const figure = (side: Side): Figure | undefined => {
    const of = samples.get(side);
    if (!of) return undefined;
    const values = of.map((s) => s[m.name] as number);
    const f: Figure = { median: median(values), samples: values };
    if (m.extra) {
      f.extra = Object.fromEntries(
        m.extra.map((e) => [e, median(of.map((s) => s[e === "per_page" ? `per_page_${size}` : e] as number))]),
      );
    }
    return f;
  };
  const agentix = figure("agentix") as Figure;
  const floor = figure("floor");
  const out: Result = { backend: target.name, metric: m.name, unit: m.unit, agentix };
  if (floor) {
    out.floor = floor;
    out.floorRatio = pairedRatio(agentix.samples, floor.samples);
  }
  return out;
}

/** agentix ÷ floor over pairs of repetitions (each side first once in a pair), as run.ts pairs its sides. */
function pairedRatio(agentix: number[], floor: number[]): number {
  const ratios: number[] = [];
  for (let rep = 0; rep + 1 < agentix.length; rep += 2) {
    ratios.push(
      ((agentix[rep] as number) + (agentix[rep + 1] as number)) / ((floor[rep] as number) + (floor[rep + 1] as number)),
    );
  }
  return median(ratios);
}
