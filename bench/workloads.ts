// The workloads of `npm run bench`, written once against `Subject`: what both an agentix backend and its raw
// baseline implement. Each workload seeds its data (untimed, through an agentix backend on the same namespace),
// times its repetitions and checks what was written (counts and order) before its figures are kept.

import { readFileSync, writeFileSync } from "node:fs";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { Sql } from "postgres";
import { uuidv7 } from "uuidv7";
import type { StorageBackend } from "../src/core/backend.js";
import { ConflictError } from "../src/core/errors.js";
import { compareSessions } from "../src/core/records.js";
import type {
  JsonObject,
  MessageContent,
  MessageRecord,
  NewMessage,
  Role,
  SessionCursor,
  SessionRecord,
} from "../src/core/types.js";

/** What a workload times: an agentix backend or a raw baseline. Sync baselines may return plain values. */
export interface Subject {
  saveMessage(sessionId: string, role: Role, content: MessageContent): Promise<void> | void;
  loadMessages(sessionId: string, last?: number): Promise<MessageRecord[]> | MessageRecord[];
  listSessions(agentId: string, limit: number, before?: SessionCursor): Promise<SessionRecord[]> | SessionRecord[];
  forkSession(sessionId: string): Promise<string> | string;
  /** The session's number of messages (contract v2). */
  countMessages(sessionId: string): Promise<number> | number;
  /**
   * Appends all of `messages` as one batch (agentix: `saveMessages`; raw: the driver's best batch), only when the session has exactly `expectedLength` messages if that is given: the new
   * length, or `null` when the length differed (a conflict; nothing written).
   */
  saveMessages(
    sessionId: string,
    messages: NewMessage[],
    expectedLength?: number,
  ): Promise<number | null> | number | null;
  /** Positions `offset … offset + limit - 1`, oldest first. */
  loadPage(sessionId: string, offset: number, limit: number): Promise<MessageRecord[]> | MessageRecord[];
  /** Every message in order, streamed: the driver's best way to read a session without holding all of it. */
  iterateMessages(sessionId: string, batchSize: number): AsyncIterable<MessageRecord> | Iterable<MessageRecord>;
}

/** The public API of an agentix backend, as a subject. */
export function agentixSubject(backend: StorageBackend): Subject {
  return {
    saveMessage: (id, role, content) => backend.saveMessage(id, role, content),
    loadMessages: (id, last) => backend.loadMessages(id, last === undefined ? undefined : { last }),
    listSessions: (agent, limit, before) => backend.listSessions(agent, before ? { limit, before } : { limit }),
    forkSession: (id) => backend.forkSession(id),
    countMessages: (id) => backend.countMessages(id),
    async saveMessages(id, messages, expectedLength) {
      try {
        return (await backend.saveMessages(id, messages, expectedLength === undefined ? undefined : { expectedLength }))
          .length;
      } catch (error) {
        if (error instanceof ConflictError) return null;
        throw error;
      }
    },
    loadPage: (id, offset, limit) => backend.loadMessages(id, { offset, limit }),
    iterateMessages: (id, batchSize) => backend.iterateMessages(id, { batchSize }),
  };
}

/** Round trips (statements on Postgres, request batches on Redis) and commands a subject's client has sent so far. */
export interface WireCounter {
  roundTrips: number;
  commands: number;
}

/** One fresh namespace (schema, key prefix, file or directory), dropped after its workload. */
export interface Namespace {
  subject: Subject;
  /** The agentix backend behind `subject`, on the agentix side only. */
  backend?: StorageBackend;
  /** An agentix backend of its own on the same namespace: seeds the data and checks what the subject wrote. */
  admin: StorageBackend;
  /** What the subject's client sent (Postgres, Redis), when the namespace was opened to count it. */
  wire?: WireCounter;
  /** Writes many sessions (no messages) the fastest way the store allows: a bulk insert, or pipelined imports. */
  seedSessions(records: SessionRecord[]): Promise<void>;
  /** Redis: the server, for another connection's PINGs (the stall workload, bench/stall.ts). */
  pingTarget?: { host: string; port: number };
  /**
   * The store under the namespace (Postgres on postgres.js, SQLite), for floor statements on the very data that the
   * agentix side reads (bench/scale.ts, which seeds one store for both).
   */
  store?: { postgres: Sql; schema: string } | { sqlite: string };
  /** Called once the data is seeded: statistics refreshed where the store keeps them. */
  settle?(): Promise<void>;
  drop(): Promise<void>;
}

export type BackendName = "postgres" | "pg" | "redis" | "sqlite" | "file";

export interface BenchTarget {
  name: BackendName;
  /** Whether a floor baseline of its own exists; without one, the mirror is the floor (it is already the least). */
  floor: boolean;
  /** Why the backend cannot be measured here (no server), or `null`. */
  probe(): Promise<string | null>;
  /** Server and driver versions, for the report. */
  versions(): Promise<Record<string, string>>;
  /**
   * A fresh namespace for `side`; with `count`, one whose client counts what it sends (which costs CPU). `parent`:
   * where a File or SQLite store makes its directory (default: the temp dir).
   */
  open(side: Side, count?: boolean, parent?: string): Promise<Namespace>;
  close(): Promise<void>;
}

/** agentix, the mirror baseline (agentix's own statements by hand), and the floor (the least correct work). */
export type Side = "agentix" | "raw" | "floor";

/** How big each workload is: the sizes, or smaller ones for `--quick`. */
export interface Scale {
  appendSeq: number;
  writers: number;
  appendsPerWriter: number;
  loadSize: number;
  agents: number;
  sessionsPerAgent: number;
  pageSize: number;
  /** Which page the deep listing reads (1 is the first). */
  deepPage: number;
  forkSize: number;
  /** Turns of `TURN` messages per repetition, one after another. */
  turns: number;
  /** Turns per writer, `writers` at once. */
  turnsPerWriter: number;
  /** The big session of iterate_rss and deep_page (issue 14). */
  bigSize: number;
  /** Where deep_page reads its page of 100 in the big session. */
  deepOffset: number;
  /** The small session deep_page compares with. */
  smallSize: number;
  /** cas_loop: writers on one session, and the appends each makes. */
  casWriters: number;
  casAppendsPerWriter: number;
}

export const FULL: Scale = {
  appendSeq: 2000,
  writers: 32,
  appendsPerWriter: 200,
  loadSize: 10_000,
  agents: 10,
  sessionsPerAgent: 1000,
  pageSize: 50,
  deepPage: 10,
  forkSize: 10_000,
  turns: 200,
  turnsPerWriter: 20,
  bigSize: 1_000_000,
  deepOffset: 900_000,
  smallSize: 1000,
  casWriters: 8,
  casAppendsPerWriter: 200,
};

export const QUICK: Scale = {
  ...FULL,
  appendSeq: 500,
  writers: 32,
  appendsPerWriter: 25,
  agents: 4,
  sessionsPerAgent: 500,
  turns: 50,
  turnsPerWriter: 5,
  bigSize: 100_000,
  deepOffset: 90_000,
  casAppendsPerWriter: 25,
};

/** One repetition's figures, by metric name. */
export type Sample = Record<string, number>;

export interface RunContext<S> {
  subject: Subject;
  admin: StorageBackend;
  state: S;
  scale: Scale;
  rep: number;
}

export interface Workload<S = unknown> {
  name: string;
  /** The figures one repetition yields, in report order. */
  metrics: MetricSpec[];
  /** Repetitions per side: even, so that each side goes first as often as second (see run.ts). */
  reps: { full: number; quick: number };
  seed(ns: Namespace, scale: Scale, reps: number): Promise<S>;
  /** Untimed calls before the first repetition: statements prepared, scripts loaded, code warmed. */
  warm(ctx: RunContext<S>): Promise<void>;
  run(ctx: RunContext<S>): Promise<Sample>;
  /** Throws when what the subject wrote is wrong. */
  check(ctx: RunContext<S>): Promise<void>;
}

/** `ops/s`: higher is better; `ms` and `MB` (memory growth): lower is better. */
export type Unit = "ops/s" | "ms" | "×" | "MB";

export interface MetricSpec {
  name: string;
  /**
   * `ops/s`: higher is better; `ms`: lower is better; `×`: a ratio within one side (a turn's cost in single
   * appends), lower is better, with no agentix ÷ raw ratio.
   */
  unit: Unit;
  /** Figures shown beside the main one (latency percentiles), not compared. */
  extra?: string[];
}

// ---- data ----

const WORDS =
  "the agent reads the file, plans a change, runs the tests and reports back to the user with a short summary of " +
  "what it changed and why; then it waits for the next instruction while the session keeps every message in order ";

/** Message content of about 200 bytes of JSON; `seq` tells its place in the session, for the order checks. */
export function content(seq: number): JsonObject {
  const from = (seq * 7) % 64;
  return { type: "text", text: WORDS.slice(from, from + 160), seq };
}

export function role(seq: number): Role {
  return seq % 2 === 0 ? "user" : "assistant";
}

/** Messages in a turn: what an agent saves after each model call. */
export const TURN = 10;

/** A turn's roles: the user's message, then the assistant's tool calls and the tools' results, then its answer. */
export function turnRole(seq: number): Role {
  const at = seq % TURN;
  return at === 0 ? "user" : at % 2 === 1 ? "assistant" : "tool";
}

/** The `n`th turn of a session: messages `n × TURN` to `(n + 1) × TURN - 1`. */
export function turn(n: number): NewMessage[] {
  return Array.from({ length: TURN }, (_, i) => ({ role: turnRole(n * TURN + i), content: content(n * TURN + i) }));
}

/** `n` messages with increasing timestamps ending before now, as an import takes them. */
export function history(n: number): MessageRecord[] {
  const start = Date.now() - 86_400_000;
  return Array.from({ length: n }, (_, i) => ({
    role: role(i),
    content: content(i),
    timestamp: new Date(start + i * 5).toISOString(),
  }));
}

/** Imports a session with `messages`, for the load and fork workloads. */
async function importHistory(admin: StorageBackend, agentId: string, messages: MessageRecord[]): Promise<string> {
  const at = messages.at(-1)?.timestamp ?? new Date().toISOString();
  const id = uuidv7();
  const record = { session_id: id, agent_id: agentId, created_at: at, updated_at: at, metadata: { cwd: "/bench" } };
  if (!(await admin.importSession(record, messages))) throw new Error(`import of ${id} refused`);
  return id;
}

/** Other sessions beside the measured one, so that no table holds a single session. */
async function neighbours(admin: StorageBackend, count: number, size: number): Promise<void> {
  for (let i = 0; i < count; i++) await importHistory(admin, `neighbour-${i % 3}`, history(size));
}

/** `agents × perAgent` sessions with distinct and equal (tie) `updated_at` values, interleaved by agent. */
export function sessionSet(agents: number, perAgent: number): SessionRecord[] {
  const start = Date.now() - 30 * 86_400_000;
  const records: SessionRecord[] = [];
  for (let i = 0; i < perAgent; i++) {
    for (let a = 0; a < agents; a++) {
      const created = start + (i * agents + a) * 1000;
      // Sessions 3 and 4 of every five of an agent share their updated_at: the session_id breaks the tie.
      const offset = i % 5 === 3 ? agents * 1000 + 200 : i % 5 === 4 ? 200 : 500 + ((i * 7919) % 97) * 10;
      records.push({
        session_id: uuidv7(),
        agent_id: `agent-${a}`,
        created_at: new Date(created).toISOString(),
        updated_at: new Date(created + offset).toISOString(),
        metadata: { cwd: `/work/project-${i % 4}`, title: `session ${i} of agent ${a}` },
      });
    }
  }
  return records;
}

// ---- checks ----

class CheckError extends Error {
  override name = "CheckError";
}

function expect(ok: boolean, message: string): asserts ok {
  if (!ok) throw new CheckError(message);
}

/** Exactly `n` messages with `seq` from `first` on, each with exactly its three keys, timestamps never decreasing. */
export function checkMessages(
  messages: MessageRecord[],
  n: number,
  first: number,
  what: string,
  roleOf: (seq: number) => Role = role,
): void {
  expect(messages.length === n, `${what}: ${messages.length} messages, expected ${n}`);
  messages.forEach((m, i) => {
    const seq = (m.content as JsonObject).seq;
    expect(seq === first + i, `${what}: message ${i} has seq ${String(seq)}, expected ${first + i} (order)`);
    expect(m.role === roleOf(first + i), `${what}: message ${i} has role ${m.role}`);
    expect(Object.keys(m).join() === "role,content,timestamp", `${what}: message ${i} has keys ${Object.keys(m)}`);
    const previous = messages[i - 1];
    expect(!previous || previous.timestamp <= m.timestamp, `${what}: timestamps decrease at message ${i}`);
  });
}

/** A session's messages as written by `n` appends, and `updated_at` equal to the newest timestamp. */
async function checkAppended(
  admin: StorageBackend,
  sessionId: string,
  n: number,
  roleOf: (seq: number) => Role = role,
): Promise<void> {
  const messages = await admin.loadMessages(sessionId);
  checkMessages(messages, n, 0, `session ${sessionId}`, roleOf);
  const session = await admin.getSession(sessionId);
  expect(session?.updated_at === messages.at(-1)?.timestamp, `session ${sessionId}: updated_at is not the newest`);
}

// ---- timing ----

export function median(values: number[]): number {
  return quantile(values, 0.5);
}

/** The `q` quantile, interpolated between the nearest ranks. */
export function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const at = (sorted.length - 1) * q;
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return (sorted[lo] as number) + ((sorted[hi] as number) - (sorted[lo] as number)) * (at - lo);
}

/** This process's CPU time (user + system) per operation since `since`, in µs: the client's share of the work. */
function cpuPerOp(since: NodeJS.CpuUsage, ops: number): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / ops;
}

/** The median of `n` calls' times, in ms: one repetition of an operation too quick to time once. */
async function medianOf<T>(n: number, run: () => Promise<T> | T, check: (value: T) => void): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const [ms, value] = await timed(run);
    check(value);
    times.push(ms);
  }
  return median(times);
}

async function timed<T>(run: () => Promise<T> | T): Promise<[ms: number, value: T]> {
  const start = performance.now();
  const value = await run();
  return [performance.now() - start, value];
}

// ---- the workloads ----

interface AppendState {
  sessions: string[];
  warm: string;
}

const appendSeq: Workload<AppendState> = {
  name: "append_seq",
  metrics: [{ name: "append_seq", unit: "ops/s", extra: ["p50", "p99", "cpu"] }],
  reps: { full: 12, quick: 6 },
  async seed(ns, _scale, reps) {
    const sessions: string[] = [];
    for (let i = 0; i < reps; i++) sessions.push(await ns.admin.createSession("appender", { cwd: "/bench" }));
    return { sessions, warm: await ns.admin.createSession("appender", { cwd: "/bench" }) };
  },
  async warm({ subject, state }) {
    for (let i = 0; i < 200; i++) await subject.saveMessage(state.warm, role(i), content(i));
  },
  async run({ subject, state, scale, rep }) {
    const id = state.sessions[rep] as string;
    const latencies: number[] = [];
    const cpu = process.cpuUsage();
    const start = performance.now();
    for (let i = 0; i < scale.appendSeq; i++) {
      const t = performance.now();
      await subject.saveMessage(id, role(i), content(i));
      latencies.push(performance.now() - t);
    }
    const total = performance.now() - start;
    return {
      append_seq: (scale.appendSeq / total) * 1000,
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      cpu: cpuPerOp(cpu, scale.appendSeq),
    };
  },
  async check({ admin, state, scale }) {
    for (const id of state.sessions) await checkAppended(admin, id, scale.appendSeq);
  },
};

const appendConc: Workload<{ sessions: string[][]; warm: string[] }> = {
  name: "append_conc",
  metrics: [{ name: "append_conc", unit: "ops/s", extra: ["cpu"] }],
  reps: { full: 12, quick: 6 },
  async seed(ns, scale, reps) {
    const batch = () =>
      Promise.all(Array.from({ length: scale.writers }, () => ns.admin.createSession("writer", { cwd: "/bench" })));
    const sessions: string[][] = [];
    for (let i = 0; i < reps; i++) sessions.push(await batch());
    return { sessions, warm: await batch() };
  },
  async warm({ subject, state }) {
    await Promise.all(
      state.warm.map(async (id) => {
        for (let i = 0; i < 20; i++) await subject.saveMessage(id, role(i), content(i));
      }),
    );
  },
  async run({ subject, state, scale, rep }) {
    const cpu = process.cpuUsage();
    const [ms] = await timed(() =>
      Promise.all(
        (state.sessions[rep] as string[]).map(async (id) => {
          for (let i = 0; i < scale.appendsPerWriter; i++) await subject.saveMessage(id, role(i), content(i));
        }),
      ),
    );
    const ops = scale.writers * scale.appendsPerWriter;
    return { append_conc: (ops / ms) * 1000, cpu: cpuPerOp(cpu, ops) };
  },
  async check({ admin, state, scale }) {
    for (const ids of state.sessions) for (const id of ids) await checkAppended(admin, id, scale.appendsPerWriter);
  },
};

// A turn of `TURN` messages saved as one batch (`saveMessages`), against the same turn saved as `TURN` single
// appends on the same side: the batch's figure is compared with the raw baseline's batch, and its cost with the
// single appends' (the issue's "a turn costs at most 1.5× one append"). Batch and singles alternate which goes
// first, repetition by repetition, each on a fresh session.

interface TurnState {
  batch: string[][];
  single: string[][];
  warm: string[];
}

/** Sessions for `reps` repetitions of `writers` batch writers and as many single-append writers. */
async function seedTurns(ns: Namespace, writers: number, reps: number): Promise<TurnState> {
  const group = () =>
    Promise.all(Array.from({ length: writers }, () => ns.admin.createSession("turns", { cwd: "/bench" })));
  const state: TurnState = { batch: [], single: [], warm: await group() };
  for (let i = 0; i < reps; i++) {
    state.batch.push(await group());
    state.single.push(await group());
  }
  return state;
}

/** Every writer's `turns` turns: as batches, or message by message; the latency of each turn when `latencies`. */
async function writeTurns(
  subject: Subject,
  ids: string[],
  turns: NewMessage[][],
  asBatch: boolean,
  latencies?: number[],
): Promise<number> {
  const [ms] = await timed(() =>
    Promise.all(
      ids.map(async (id) => {
        for (const messages of turns) {
          const t = performance.now();
          if (asBatch) await subject.saveMessages(id, messages);
          else for (const m of messages) await subject.saveMessage(id, m.role, m.content);
          latencies?.push(performance.now() - t);
        }
      }),
    ),
  );
  return ms;
}

/** Batch and singles, in the order of the repetition; the batch's CPU time per message. */
async function turnRun(
  subject: Subject,
  batch: string[],
  single: string[],
  count: number,
  rep: number,
  latencies?: number[],
): Promise<{ batchMs: number; singleMs: number; cpu: number }> {
  const turns = Array.from({ length: count }, (_, n) => turn(n));
  let batchMs = 0;
  let singleMs = 0;
  let cpu = 0;
  const runBatch = async () => {
    const since = process.cpuUsage();
    batchMs = await writeTurns(subject, batch, turns, true, latencies);
    cpu = cpuPerOp(since, batch.length * count * TURN);
  };
  const runSingle = async () => {
    singleMs = await writeTurns(subject, single, turns, false);
  };
  if (rep % 2 === 0) {
    await runBatch();
    await runSingle();
  } else {
    await runSingle();
    await runBatch();
  }
  return { batchMs, singleMs, cpu };
}

/** The cost of a turn as a batch, in single appends: `TURN` × batch time ÷ singles time (same messages). */
function turnCost(batchMs: number, singleMs: number): { cost: number; gain: number } {
  return { cost: (TURN * batchMs) / singleMs, gain: singleMs / batchMs };
}

async function checkTurns(admin: StorageBackend, state: TurnState, turns: number): Promise<void> {
  for (const ids of [...state.batch, ...state.single]) {
    for (const id of ids) await checkAppended(admin, id, turns * TURN, turnRole);
  }
}

const turnSeq: Workload<TurnState> = {
  name: "turn_seq",
  metrics: [
    { name: "turn_seq", unit: "ops/s", extra: ["p50", "p99", "cpu"] },
    { name: "turn_cost", unit: "×", extra: ["gain", "turn", "append"] },
  ],
  reps: { full: 12, quick: 6 },
  seed: (ns, _scale, reps) => seedTurns(ns, 1, reps),
  async warm({ subject, state }) {
    const turns = Array.from({ length: 20 }, (_, n) => turn(n));
    const [id] = state.warm as [string];
    for (const messages of turns) await subject.saveMessages(id, messages);
    for (const messages of turns) for (const m of messages) await subject.saveMessage(id, m.role, m.content);
  },
  async run({ subject, state, scale, rep }) {
    const latencies: number[] = [];
    const batch = state.batch[rep] as string[];
    const single = state.single[rep] as string[];
    const { batchMs, singleMs, cpu } = await turnRun(subject, batch, single, scale.turns, rep, latencies);
    const { cost, gain } = turnCost(batchMs, singleMs);
    return {
      turn_seq: ((scale.turns * TURN) / batchMs) * 1000,
      p50: quantile(latencies, 0.5),
      p99: quantile(latencies, 0.99),
      cpu,
      turn_cost: cost,
      gain,
      turn: batchMs / scale.turns,
      append: singleMs / (scale.turns * TURN),
    };
  },
  check: ({ admin, state, scale }) => checkTurns(admin, state, scale.turns),
};

const turnConc: Workload<TurnState> = {
  name: "turn_conc",
  metrics: [
    { name: "turn_conc", unit: "ops/s", extra: ["cpu"] },
    { name: "turn_conc_cost", unit: "×", extra: ["gain"] },
  ],
  reps: { full: 12, quick: 6 },
  seed: (ns, scale, reps) => seedTurns(ns, scale.writers, reps),
  async warm({ subject, state }) {
    const turns = Array.from({ length: 2 }, (_, n) => turn(n));
    await writeTurns(subject, state.warm, turns, true);
    await writeTurns(subject, state.warm, turns, false);
  },
  async run({ subject, state, scale, rep }) {
    const batch = state.batch[rep] as string[];
    const single = state.single[rep] as string[];
    const { batchMs, singleMs, cpu } = await turnRun(subject, batch, single, scale.turnsPerWriter, rep);
    const { cost, gain } = turnCost(batchMs, singleMs);
    const messages = scale.writers * scale.turnsPerWriter * TURN;
    return { turn_conc: (messages / batchMs) * 1000, cpu, turn_conc_cost: cost, gain };
  },
  check: ({ admin, state, scale }) => checkTurns(admin, state, scale.turnsPerWriter),
};

const LAST = 50;

const load: Workload<{ id: string }> = {
  name: "load",
  metrics: [
    { name: "load", unit: "ms" },
    { name: "load_last", unit: "ms" },
  ],
  reps: { full: 22, quick: 8 },
  async seed(ns, scale) {
    await neighbours(ns.admin, 3, 2000);
    return { id: await importHistory(ns.admin, "loader", history(scale.loadSize)) };
  },
  async warm({ subject, state }) {
    for (let i = 0; i < 3; i++) {
      await subject.loadMessages(state.id);
      await subject.loadMessages(state.id, LAST);
    }
  },
  async run({ subject, state, scale }) {
    const [ms, all] = await timed(() => subject.loadMessages(state.id));
    checkMessages(all, scale.loadSize, 0, "load");
    // The newest 50 are quick to read: the median of five calls makes one repetition.
    const last = await medianOf(
      5,
      () => subject.loadMessages(state.id, LAST),
      (messages) => checkMessages(messages, LAST, scale.loadSize - LAST, "load_last"),
    );
    return { load: ms, load_last: last };
  },
  async check() {},
};

interface ListState {
  agent: string;
  /** The agent's sessions in listing order. */
  expected: SessionRecord[];
}

const list: Workload<ListState> = {
  name: "list",
  metrics: [
    { name: "list", unit: "ms" },
    { name: "list_deep", unit: "ms" },
  ],
  reps: { full: 22, quick: 8 },
  async seed(ns, scale) {
    const records = sessionSet(scale.agents, scale.sessionsPerAgent);
    await ns.seedSessions(records);
    const agent = "agent-3";
    const expected = records.filter((r) => r.agent_id === agent).sort(compareSessions);
    return { agent, expected };
  },
  async warm({ subject, state, scale }) {
    const cursor = state.expected[scale.pageSize * (scale.deepPage - 1) - 1] as SessionRecord;
    for (let i = 0; i < 5; i++) {
      await subject.listSessions(state.agent, scale.pageSize);
      await subject.listSessions(state.agent, scale.pageSize, cursor);
    }
  },
  async run({ subject, state, scale }) {
    const { agent, expected } = state;
    const size = scale.pageSize;
    // Each figure is the median of five calls; the pages are checked every time.
    const first = await medianOf(
      5,
      () => subject.listSessions(agent, size),
      (page) => checkPage(page, expected.slice(0, size), "list"),
    );
    // The cursor is the previous page's last record, as a caller passes it.
    const deep = size * (scale.deepPage - 1);
    const cursor = { ...(expected[deep - 1] as SessionRecord) };
    const later = await medianOf(
      5,
      () => subject.listSessions(agent, size, cursor),
      (page) => checkPage(page, expected.slice(deep, deep + size), `list page ${scale.deepPage}`),
    );
    return { list: first, list_deep: later };
  },
  async check({ admin, state }) {
    // Everything was seeded as it should be: the whole listing through the backend, in order.
    checkPage(await admin.listSessions(state.agent), state.expected, "full listing");
  },
};

export function checkPage(page: SessionRecord[], expected: SessionRecord[], what: string): void {
  expect(page.length === expected.length, `${what}: ${page.length} sessions, expected ${expected.length}`);
  page.forEach((record, i) => {
    const want = expected[i] as SessionRecord;
    expect(record.session_id === want.session_id, `${what}: record ${i} is ${record.session_id} (order)`);
    expect(record.updated_at === want.updated_at, `${what}: record ${i} has updated_at ${record.updated_at}`);
    expect(JSON.stringify(record.metadata) === JSON.stringify(want.metadata), `${what}: record ${i} metadata`);
  });
}

const fork: Workload<{ id: string; forks: string[] }> = {
  name: "fork",
  metrics: [{ name: "fork", unit: "ms" }],
  reps: { full: 16, quick: 6 },
  async seed(ns, scale) {
    await neighbours(ns.admin, 3, 2000);
    return { id: await importHistory(ns.admin, "forker", history(scale.forkSize)), forks: [] };
  },
  async warm({ subject, admin, state }) {
    await admin.deleteSession(await subject.forkSession(state.id));
  },
  async run({ subject, admin, state, scale }) {
    const [ms, id] = await timed(() => subject.forkSession(state.id));
    const source = await admin.getSession(state.id);
    const copy = await admin.getSession(id);
    expect(copy?.agent_id === source?.agent_id, "fork: agent_id differs");
    expect(JSON.stringify(copy?.metadata) === JSON.stringify(source?.metadata), "fork: metadata differs");
    checkMessages(await admin.loadMessages(id), scale.forkSize, 0, "fork");
    // Deleted again (untimed), so that every repetition forks into tables of the same size.
    await admin.deleteSession(id);
    return { fork: ms };
  },
  async check({ admin, state, scale }) {
    checkMessages(await admin.loadMessages(state.id), scale.forkSize, 0, "fork source");
  },
};

// ---- issue 14: large sessions and compare-and-swap ----

/** How many messages each `saveMessages` call of a big session's seed carries. */
const SEED_BATCH = 5000;

/** A session of `size` messages (seq 0 … size - 1), written by `saveMessages` in large batches: untimed seeding. */
export async function bigSession(admin: StorageBackend, agentId: string, size: number): Promise<string> {
  const id = await admin.createSession(agentId, { cwd: "/bench" });
  for (let from = 0; from < size; from += SEED_BATCH) {
    const batch = Array.from({ length: Math.min(SEED_BATCH, size - from) }, (_, i) => ({
      role: role(from + i),
      content: content(from + i),
    }));
    await admin.saveMessages(id, batch);
  }
  return id;
}

/** A full garbage collection, when the runtime lets us ask for one (`--expose-gc`, or the flag set at runtime). */
const gc: (() => void) | undefined = (() => {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed) return exposed;
  try {
    setFlagsFromString("--expose-gc");
    return runInNewContext("gc") as () => void;
  } catch {
    return undefined;
  }
})();

/** This process's peak RSS since the last reset (Linux: VmHWM, reset by writing 5 to clear_refs), in bytes. */
function highWaterMark(): number | undefined {
  try {
    const kb = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "latin1"))?.[1];
    return kb === undefined ? undefined : Number(kb) * 1024;
  } catch {
    return undefined;
  }
}

function resetHighWaterMark(): void {
  try {
    writeFileSync("/proc/self/clear_refs", "5");
  } catch {
    // Not Linux, or not allowed: the timer's samples are all there is.
  }
}

/**
 * The peak growth of the RSS while `run` runs, in MB, and how long it took (ms): garbage collected first, then
 * the RSS sampled on a 5 ms timer, by `run` itself through `sample` (a synchronous driver never lets the timer
 * fire), and, on Linux, by the kernel's own high-water mark, which also sees the peak inside a synchronous call.
 */
async function rssGrowth<T>(
  run: (sample: () => void) => Promise<T> | T,
): Promise<{ mb: number; ms: number; value: T }> {
  gc?.();
  gc?.();
  const base = process.memoryUsage.rss();
  resetHighWaterMark();
  let peak = base;
  const sample = () => {
    const rss = process.memoryUsage.rss();
    if (rss > peak) peak = rss;
  };
  const timer = setInterval(sample, 5);
  const start = performance.now();
  try {
    const value = await run(sample);
    const ms = performance.now() - start;
    sample();
    const hwm = highWaterMark();
    if (hwm !== undefined && hwm > peak) peak = hwm;
    return { mb: Math.max(0, peak - base) / 2 ** 20, ms, value };
  } finally {
    clearInterval(timer);
  }
}

/** Consumes an iteration, checking every message's place (seq, role, keys, timestamps) without keeping any. */
async function drain(
  messages: AsyncIterable<MessageRecord> | Iterable<MessageRecord>,
  sample: () => void,
  what: string,
): Promise<number> {
  let n = 0;
  let previous = "";
  for await (const m of messages) {
    const seq = (m.content as JsonObject).seq;
    if (seq !== n || m.role !== role(n) || m.timestamp < previous) {
      throw new CheckError(`${what}: message ${n} has seq ${String(seq)}, role ${m.role}, timestamp ${m.timestamp}`);
    }
    previous = m.timestamp;
    if (++n % 1000 === 0) sample();
  }
  return n;
}

const ITERATE_BATCH = 1000;

const iterateRss: Workload<{ id: string }> = {
  name: "iterate_rss",
  metrics: [
    { name: "iterate_rss", unit: "MB", extra: ["ms"] },
    { name: "load_rss", unit: "MB", extra: ["ms_load"] },
  ],
  reps: { full: 4, quick: 2 },
  async seed(ns, scale) {
    return { id: await bigSession(ns.admin, "big", scale.bigSize) };
  },
  async warm({ subject, state }) {
    await subject.loadPage(state.id, 0, ITERATE_BATCH);
    let n = 0;
    for await (const _ of subject.iterateMessages(state.id, ITERATE_BATCH)) if (++n >= 3 * ITERATE_BATCH) break;
  },
  async run({ subject, state, scale }) {
    // The iteration first: the full load's garbage is then collected before the next repetition's iteration.
    const iterated = await rssGrowth((sample) =>
      drain(subject.iterateMessages(state.id, ITERATE_BATCH), sample, "iterate"),
    );
    expect(iterated.value === scale.bigSize, `iterate: ${iterated.value} messages, expected ${scale.bigSize}`);
    const loaded = await rssGrowth(async () => (await subject.loadMessages(state.id)).length);
    expect(loaded.value === scale.bigSize, `load: ${loaded.value} messages, expected ${scale.bigSize}`);
    return { iterate_rss: iterated.mb, load_rss: loaded.mb, ms: iterated.ms, ms_load: loaded.ms };
  },
  async check({ admin, state, scale }) {
    expect((await admin.countMessages(state.id)) === scale.bigSize, "iterate_rss: the big session's count");
  },
};

const PAGE = 100;

const deepPage: Workload<{ big: string; small: string }> = {
  name: "deep_page",
  metrics: [
    { name: "tail_small", unit: "ms" },
    // The targets: each within 2× of the small session's tail, in the same repetition.
    { name: "tail_big", unit: "ms", extra: ["vs_small"] },
    { name: "page_deep", unit: "ms", extra: ["page_vs_small", "vs_small_page"] },
    // No target: the page of 100 at 90% of the small session, to tell the cost of depth from that of 100 rows.
    { name: "page_small", unit: "ms" },
  ],
  reps: { full: 16, quick: 6 },
  async seed(ns, scale) {
    const small = await bigSession(ns.admin, "small", scale.smallSize);
    return { big: await bigSession(ns.admin, "big", scale.bigSize), small };
  },
  async warm({ subject, state, scale }) {
    for (let i = 0; i < 5; i++) {
      await subject.loadMessages(state.small, LAST);
      await subject.loadMessages(state.big, LAST);
      await subject.loadPage(state.big, scale.deepOffset, PAGE);
      await subject.loadPage(state.small, Math.round(scale.smallSize * (scale.deepOffset / scale.bigSize)), PAGE);
    }
  },
  async run({ subject, state, scale }) {
    const { big, small } = state;
    const tailSmall = await medianOf(
      5,
      () => subject.loadMessages(small, LAST),
      (messages) => checkMessages(messages, LAST, scale.smallSize - LAST, "tail_small"),
    );
    const tailBig = await medianOf(
      5,
      () => subject.loadMessages(big, LAST),
      (messages) => checkMessages(messages, LAST, scale.bigSize - LAST, "tail_big"),
    );
    const pageDeep = await medianOf(
      5,
      () => subject.loadPage(big, scale.deepOffset, PAGE),
      (messages) => checkMessages(messages, PAGE, scale.deepOffset, "page_deep"),
    );
    const smallOffset = Math.round(scale.smallSize * (scale.deepOffset / scale.bigSize));
    const pageSmall = await medianOf(
      5,
      () => subject.loadPage(small, smallOffset, PAGE),
      (messages) => checkMessages(messages, PAGE, smallOffset, "page_small"),
    );
    return {
      tail_small: tailSmall,
      tail_big: tailBig,
      page_deep: pageDeep,
      page_small: pageSmall,
      vs_small: tailBig / tailSmall,
      page_vs_small: pageDeep / tailSmall,
      vs_small_page: pageDeep / pageSmall,
    };
  },
  async check() {},
};

interface CasState {
  /** Per repetition: the session of the compare-and-swap loops and the one of the plain appends. */
  sessions: Array<{ cas: string; plain: string }>;
  warm: string;
}

/** A writer's messages: seq `writer * perWriter + i`, so that the check can tell whose each one is and its order. */
async function casWriter(subject: Subject, id: string, writer: number, perWriter: number): Promise<number> {
  let conflicts = 0;
  for (let i = 0; i < perWriter; i++) {
    const seq = writer * perWriter + i;
    const message = [{ role: role(seq), content: content(seq) }];
    for (;;) {
      const length = await subject.countMessages(id);
      if ((await subject.saveMessages(id, message, length)) !== null) break;
      conflicts++;
    }
  }
  return conflicts;
}

/** Every writer's messages once each, in that writer's order; positions dense; updated_at the newest timestamp. */
async function checkShared(admin: StorageBackend, id: string, writers: number, perWriter: number): Promise<void> {
  const messages = await admin.loadMessages(id);
  const what = `shared session ${id}`;
  expect(
    messages.length === writers * perWriter,
    `${what}: ${messages.length} messages, expected ${writers * perWriter}`,
  );
  expect((await admin.countMessages(id)) === messages.length, `${what}: count differs from the messages`);
  const next = new Array<number>(writers).fill(0);
  messages.forEach((m, i) => {
    const seq = (m.content as JsonObject).seq as number;
    const writer = Math.floor(seq / perWriter);
    expect(seq % perWriter === next[writer], `${what}: writer ${writer}'s message ${seq} out of order at ${i}`);
    next[writer] = (next[writer] as number) + 1;
    expect(m.role === role(seq), `${what}: message ${i} has role ${m.role}`);
    const previous = messages[i - 1];
    expect(!previous || previous.timestamp <= m.timestamp, `${what}: timestamps decrease at message ${i}`);
  });
  const session = await admin.getSession(id);
  expect(session?.updated_at === messages.at(-1)?.timestamp, `${what}: updated_at is not the newest`);
}

const casLoop: Workload<CasState> = {
  name: "cas_loop",
  metrics: [
    { name: "cas_loop", unit: "ops/s", extra: ["conflicts"] },
    { name: "append_shared", unit: "ops/s" },
  ],
  reps: { full: 12, quick: 6 },
  async seed(ns, _scale, reps) {
    const create = () => ns.admin.createSession("cas", { cwd: "/bench" });
    const sessions: CasState["sessions"] = [];
    for (let i = 0; i < reps; i++) sessions.push({ cas: await create(), plain: await create() });
    return { sessions, warm: await create() };
  },
  async warm({ subject, state, scale }) {
    await Promise.all(Array.from({ length: scale.casWriters }, (_, w) => casWriter(subject, state.warm, w, 5)));
    for (let i = 0; i < 20; i++) await subject.saveMessage(state.warm, role(i), content(i));
  },
  async run({ subject, state, scale, rep }) {
    const { cas, plain } = state.sessions[rep] as CasState["sessions"][number];
    const writers = scale.casWriters;
    const per = scale.casAppendsPerWriter;
    const [casMs, conflicts] = await timed(() =>
      Promise.all(Array.from({ length: writers }, (_, w) => casWriter(subject, cas, w, per))),
    );
    const [plainMs] = await timed(() =>
      Promise.all(
        Array.from({ length: writers }, async (_, w) => {
          for (let i = 0; i < per; i++) await subject.saveMessage(plain, role(w * per + i), content(w * per + i));
        }),
      ),
    );
    const ops = writers * per;
    const conflicted = conflicts.reduce((a, b) => a + b, 0);
    return {
      cas_loop: (ops / casMs) * 1000,
      conflicts: (conflicted / casMs) * 1000,
      append_shared: (ops / plainMs) * 1000,
    };
  },
  async check({ admin, state, scale }) {
    for (const { cas, plain } of state.sessions) {
      await checkShared(admin, cas, scale.casWriters, scale.casAppendsPerWriter);
      await checkShared(admin, plain, scale.casWriters, scale.casAppendsPerWriter);
    }
  },
};

export const WORKLOADS = [
  appendSeq,
  appendConc,
  turnSeq,
  turnConc,
  load,
  list,
  fork,
  iterateRss,
  deepPage,
  casLoop,
] as Workload[];
