// `npm run bench [-- --quick] [-- --only postgres,redis]`: every workload on every backend and its raw baseline,
// interleaved repetition by repetition, each workload on fresh namespaces that are dropped afterwards.
// stdout: the markdown table. bench/results/: the JSON of the run. docs/benchmarks.md + .svg: after a full run.
import { mkdirSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { fileTarget } from "./baselines/file.js";
import { FloorPostgres } from "./baselines/floor-postgres.js";
import { FloorRedis } from "./baselines/floor-redis.js";
import { postgresTarget } from "./baselines/postgres.js";
import { redisTarget } from "./baselines/redis.js";
import { sqliteTarget } from "./baselines/sqlite.js";
import { loadAverage, machine } from "./machine.js";
import { type Figure, markdown, met, type Report, type Result, type RoundTrips, writeDocs } from "./report.js";
import { runScale, scaleRows } from "./scale.js";
import { stall } from "./stall.js";
import {
  type BackendName,
  type BenchTarget,
  FULL,
  history,
  median,
  type Namespace,
  QUICK,
  type RunContext,
  type Sample,
  type Scale,
  type Side,
  turn,
  WORKLOADS,
  type Workload,
} from "./workloads.js";

const USAGE = `Usage: npm run bench -- [options]

  --quick              smaller workloads and fewer repetitions (under a minute)
  --only <names>       comma-separated backends: postgres,pg,redis,sqlite,file (pg: Postgres on node-postgres)
  --workloads <names>  comma-separated workloads (default: all): ${WORKLOADS.map((w) => w.name).join(",")}
                       (\`all\`: every one of these, e.g. --workloads all,scale);
                       opt-in (Redis only): stall (another client's worst PING during a load, iterate, fork, delete)
                       opt-in: scale (listings at 1k/10k/100k sessions per agent, export of a 10k and a 100k agent;
                       seeds 111,000 sessions per backend: about 6 minutes for the five)
  --docs / --no-docs   write docs/benchmarks.md and .svg (default: after a complete full run, all workloads)

Servers: AGENTIX_BENCH_POSTGRES_URL / AGENTIX_BENCH_REDIS_URL, else AGENTIX_TEST_*_URL, else the local default ports.`;

const args = (() => {
  try {
    return parseArgs({
      options: {
        quick: { type: "boolean", default: false },
        only: { type: "string" },
        workloads: { type: "string" },
        docs: { type: "boolean" },
        "no-docs": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
})();
if (args.help) {
  console.log(USAGE);
  process.exit(0);
}

const postgresUrl =
  process.env.AGENTIX_BENCH_POSTGRES_URL ??
  process.env.AGENTIX_TEST_POSTGRES_URL ??
  "postgres://postgres@127.0.0.1:5432/test";
const redisUrl = process.env.AGENTIX_BENCH_REDIS_URL ?? process.env.AGENTIX_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";
const ALL: Record<BackendName, () => BenchTarget> = {
  postgres: () => postgresTarget(postgresUrl, (client, schema) => new FloorPostgres(client, schema)),
  pg: () => postgresTarget(postgresUrl, undefined, "pg"),
  redis: () => redisTarget(redisUrl, (client, prefix) => new FloorRedis(client, prefix)),
  sqlite: () => sqliteTarget(),
  file: () => fileTarget(),
};
const names = (args.only?.split(",").map((s) => s.trim()) ?? Object.keys(ALL)) as BackendName[];
for (const name of names) {
  if (!(name in ALL)) {
    console.error(`unknown backend "${name}"\n\n${USAGE}`);
    process.exit(2);
  }
}

// `all` stands for the default workloads, so that `--workloads all,scale` runs them and an opt-in one.
const selected = args.workloads
  ?.split(",")
  .map((s) => s.trim())
  .flatMap((s) => (s === "all" ? WORKLOADS.map((w) => w.name) : [s]));
// Opt-in workloads (named in --workloads only): the stall row seeds a million messages, on Redis only; the scale rows
// 111,000 sessions per backend, with a runner of their own (bench/scale.ts).
const OPT_IN = [stall as Workload, scaleRows];
for (const name of selected ?? []) {
  if (![...WORKLOADS, ...OPT_IN].some((w) => w.name === name)) {
    console.error(`unknown workload "${name}"\n\n${USAGE}`);
    process.exit(2);
  }
}
const workloads: Array<Workload | typeof scaleRows> = selected
  ? [...WORKLOADS, ...OPT_IN].filter((w) => selected.includes(w.name))
  : WORKLOADS;

const quick = args.quick;
const scale: Scale = quick ? QUICK : FULL;
const log = (message: string) => process.stderr.write(`${message}\n`);

/** Namespaces open right now: dropped on Ctrl-C too, so that an interrupted run leaves no schema, key or file behind. */
const open = new Set<Namespace>();
process.once("SIGINT", () => {
  log("interrupted: dropping the namespaces in use");
  void Promise.allSettled([...open].map((ns) => ns.drop())).then(() => process.exit(130));
});

async function openNamespace(target: BenchTarget, side: Side, count = false, parent?: string): Promise<Namespace> {
  const ns = await target.open(side, count, parent);
  open.add(ns);
  return ns;
}

async function dropNamespace(ns: Namespace): Promise<void> {
  open.delete(ns);
  await ns.drop().catch((error: unknown) => log(`  drop failed: ${error}`));
}

/**
 * One workload on one backend: every side (agentix, the mirror baseline, the floor where the backend has one of its
 * own) seeded, warmed, then timed in alternation, then checked.
 */
async function runWorkload(target: BenchTarget, workload: Workload): Promise<Result[]> {
  const reps = quick ? workload.reps.quick : workload.reps.full;
  const sides: Side[] = target.floor ? ["agentix", "raw", "floor"] : ["agentix", "raw"];
  const opened: Partial<Record<Side, Namespace>> = {};
  const contexts: Partial<Record<Side, RunContext<unknown>>> = {};
  const samples: Record<Side, Sample[]> = { agentix: [], raw: [], floor: [] };
  try {
    for (const side of sides) {
      const ns = await openNamespace(target, side);
      opened[side] = ns;
      const state = await workload.seed(ns, scale, reps);
      await ns.settle?.();
      contexts[side] = { subject: ns.subject, admin: ns.admin, state, scale, rep: 0 };
    }
    const context = (side: Side) => contexts[side] as RunContext<unknown>;
    for (const side of sides) await workload.warm(context(side));
    for (let rep = 0; rep < reps; rep++) {
      // The order flips every repetition (A R F, F R A, ...): going first or last measurably changes some figures,
      // and every two repetitions each pair of sides has gone in both orders.
      const order = rep % 2 === 0 ? sides : [...sides].reverse();
      for (const side of order) {
        context(side).rep = rep;
        samples[side].push(await workload.run(context(side)));
      }
    }
    for (const side of sides) await workload.check(context(side));
  } catch (error) {
    const message = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    log(`  ${target.name} ${workload.name} FAILED: ${message}`);
    return workload.metrics.map((m) => ({ backend: target.name, metric: m.name, unit: m.unit, error: message }));
  } finally {
    for (const ns of Object.values(opened)) await dropNamespace(ns);
  }
  const summarise = (side: Side, name: string, extra: string[] | undefined): Figure => {
    const values = samples[side].map((s) => s[name] as number);
    const figure: Figure = { median: median(values), samples: values };
    if (extra)
      figure.extra = Object.fromEntries(extra.map((e) => [e, median(samples[side].map((s) => s[e] as number))]));
    return figure;
  };
  // A turn's cost is already a ratio within each side: agentix ÷ raw of it would read as a speed, and is not one.
  const ratios = (m: { name: string; unit: string }) =>
    m.unit === "×"
      ? {}
      : {
          ratio: pairedRatio(samples, "raw", m.name),
          ...(target.floor ? { floorRatio: pairedRatio(samples, "floor", m.name) } : {}),
        };
  return workload.metrics.map((m) => ({
    backend: target.name,
    metric: m.name,
    unit: m.unit,
    agentix: summarise("agentix", m.name, m.extra),
    raw: summarise("raw", m.name, m.extra),
    ...(target.floor ? { floor: summarise("floor", m.name, m.extra) } : {}),
    ...ratios(m),
  }));
}

/**
 * agentix ÷ a baseline as the median over pairs of repetitions, each pair holding one repetition in which agentix
 * went before the baseline and one in which it went after: the effect of the order cancels out within a pair, and
 * the noise of a machine busy for a moment weighs on both sides of the pair alike.
 */
function pairedRatio(samples: Record<Side, Sample[]>, baseline: Side, metric: string): number {
  const value = (side: Side, rep: number) => samples[side][rep]?.[metric] ?? Number.NaN;
  const ratios: number[] = [];
  for (let rep = 0; rep + 1 < samples.agentix.length; rep += 2) {
    ratios.push(
      (value("agentix", rep) + value("agentix", rep + 1)) / (value(baseline, rep) + value(baseline, rep + 1)),
    );
  }
  return median(ratios);
}

/** Round trips of each operation on both sides, counted on the second call (the first prepares and loads scripts). */
async function countRoundTrips(target: BenchTarget): Promise<RoundTrips[]> {
  const agentix = await openNamespace(target, "agentix", true);
  const raw = await openNamespace(target, "raw", true);
  try {
    const seeded = async (ns: Namespace) => {
      const messages = history(100);
      const at = messages.at(-1)?.timestamp as string;
      const id = (await ns.admin.createSession("round-trips", { cwd: "/rt" })) as string;
      const imported = {
        session_id: crypto.randomUUID(),
        agent_id: "round-trips",
        created_at: at,
        updated_at: at,
        metadata: null,
      };
      await ns.admin.importSession(imported, messages);
      const [, second] = await ns.admin.listSessions("round-trips");
      return { id, loaded: imported.session_id, cursor: second as NonNullable<typeof second> };
    };
    const a = await seeded(agentix);
    const r = await seeded(raw);
    const count = async (ns: Namespace, op: () => unknown) => {
      await op();
      const wire = ns.wire as NonNullable<Namespace["wire"]>;
      const before = { ...wire };
      await op();
      return { roundTrips: wire.roundTrips - before.roundTrips, commands: wire.commands - before.commands };
    };
    const b = agentix.backend as NonNullable<Namespace["backend"]>;
    const doomed = [await b.createSession("round-trips"), await b.createSession("round-trips")];
    const s = raw.subject;
    const ten = turn(0);
    const rows: Array<[string, () => unknown, (() => unknown) | undefined]> = [
      ["createSession", () => b.createSession("round-trips", { cwd: "/rt" }), undefined],
      ["getSession", () => b.getSession(a.id), undefined],
      ["saveMessage", () => b.saveMessage(a.id, "user", "hello"), () => s.saveMessage(r.id, "user", "hello")],
      [`saveMessages (${ten.length})`, () => b.saveMessages(a.id, ten), () => s.saveMessages(r.id, ten)],
      ["loadMessages", () => b.loadMessages(a.loaded), () => s.loadMessages(r.loaded)],
      ["loadMessages { last: 50 }", () => b.loadMessages(a.loaded, { last: 50 }), () => s.loadMessages(r.loaded, 50)],
      [
        "listSessions { limit: 50 }",
        () => b.listSessions("round-trips", { limit: 50 }),
        () => s.listSessions("round-trips", 50),
      ],
      [
        "listSessions { before }",
        () => b.listSessions("round-trips", { limit: 50, before: a.cursor }),
        () => s.listSessions("round-trips", 50, r.cursor),
      ],
      ["forkSession", () => b.forkSession(a.loaded), () => s.forkSession(r.loaded)],
      ["deleteSession", () => b.deleteSession(doomed.pop() as string), undefined],
    ];
    const result: RoundTrips[] = [];
    for (const [op, mine, theirs] of rows) {
      const row: RoundTrips = { backend: target.name, op, agentix: await count(agentix, mine), expected: 1 };
      if (theirs) row.raw = await count(raw, theirs);
      result.push(row);
    }
    return result;
  } finally {
    await dropNamespace(agentix);
    await dropNamespace(raw);
  }
}

async function main(): Promise<number> {
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const loadAtStart = loadAverage();
  log(`agentix bench (${quick ? "quick" : "full"}), load average ${loadAtStart}`);
  const results: Result[] = [];
  const roundTrips: RoundTrips[] = [];
  const skipped: Report["skipped"] = [];
  const versions: Record<string, string> = {};
  for (const name of names) {
    const target = ALL[name]();
    try {
      const reason = await target.probe();
      if (reason) {
        log(`SKIPPED ${name}: ${reason}`);
        skipped.push({ backend: name, reason });
        continue;
      }
      Object.assign(versions, await target.versions());
      for (const workload of workloads) {
        if (workload === stall && name !== "redis") continue;
        const t = performance.now();
        if (workload === scaleRows) {
          const env = {
            open: (t: BenchTarget, side: Side, parent?: string) => openNamespace(t, side, false, parent),
            drop: dropNamespace,
            log,
          };
          results.push(...(await runScale(target, env, quick ? scaleRows.reps.quick : scaleRows.reps.full)));
        } else results.push(...(await runWorkload(target, workload as Workload)));
        log(`  ${name} ${workload.name}: ${((performance.now() - t) / 1000).toFixed(1)} s`);
      }
      if (name === "postgres" || name === "pg" || name === "redis") roundTrips.push(...(await countRoundTrips(target)));
    } finally {
      await target.close();
    }
  }
  const report: Report = {
    startedAt,
    quick,
    scale,
    durationSeconds: (performance.now() - started) / 1000,
    machine: machine(versions, loadAtStart),
    reps: Object.fromEntries(workloads.map((w) => [w.name, quick ? w.reps.quick : w.reps.full])),
    results,
    roundTrips,
    skipped,
  };
  console.log(markdown(report));

  const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
  mkdirSync(here("results"), { recursive: true });
  const file = here(`results/${startedAt.replaceAll(":", "-")}${quick ? "-quick" : ""}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  log(`results: ${file}`);

  const failed = results.filter((r) => r.error);
  const complete =
    !quick &&
    skipped.length === 0 &&
    failed.length === 0 &&
    names.length === Object.keys(ALL).length &&
    WORKLOADS.every((w) => workloads.includes(w));
  if (args["no-docs"] !== true && (args.docs === true || complete)) {
    mkdirSync(here("../docs"), { recursive: true });
    writeDocs(report, here("../docs/benchmarks.md"), here("../docs/benchmarks.svg"), "benchmarks.svg");
    log("docs: docs/benchmarks.md, docs/benchmarks.svg");
  }
  const missed = results.filter((r) => met(r) === false && !r.error);
  log(`${failed.length} failed, ${missed.length} targets missed; ${Math.round(report.durationSeconds)} s`);
  return failed.length > 0 ? 1 : 0;
}

process.exitCode = await main();
