// `npm run bench:peers [-- --quick] [-- --docs]`: agentix next to its peers — LangChain JS's Postgres and Redis chat
// histories, Mastra's Postgres store, the raw drivers — on the same workloads and servers, in one process, the
// stores interleaved repetition by repetition. Installs bench/peers/ (its own lock file) when it is not installed;
// a peer that fails to install or load is skipped with its reason, and the others still run.
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { loadAverage, machine } from "../machine.js";
import { median, turn } from "../workloads.js";
import { type PeerReport, type PeerResult, peersMarkdown, writePeerDocs } from "./report.js";
import {
  agentixPostgres,
  agentixRedis,
  langChainPostgres,
  langChainRedis,
  mastraPostgres,
  type PeerStore,
  rawNodeRedis,
  rawPg,
} from "./stores.js";

const args = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    docs: { type: "boolean", default: false },
    "no-install": { type: "boolean", default: false },
    only: { type: "string" },
  },
}).values;
const quick = args.quick;
const log = (message: string) => process.stderr.write(`${message}\n`);
const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/** `npm ci` of bench/peers when it is not installed, or was installed from another lock file (a stamp says which). */
function ensureInstalled(): void {
  const stamp = here("node_modules/.agentix-lock-sha256");
  const lock = createHash("sha256")
    .update(readFileSync(here("package-lock.json")))
    .digest("hex");
  if (existsSync(stamp) && readFileSync(stamp, "utf8") === lock) return;
  if (args["no-install"]) return;
  log("installing bench/peers (npm ci, once per lock file) ...");
  const npm = process.platform === "win32" ? "npm.cmd" : "npm";
  const result = spawnSync(npm, ["ci", "--no-audit", "--no-fund", "--loglevel=error"], {
    cwd: here("."),
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (result.status === 0) writeFileSync(stamp, lock);
  else log(`npm ci in bench/peers failed (${result.status ?? result.error}): the peers that cannot load are skipped`);
}

const postgresUrl =
  process.env.AGENTIX_BENCH_POSTGRES_URL ??
  process.env.AGENTIX_TEST_POSTGRES_URL ??
  "postgres://postgres@127.0.0.1:5432/test";
const redisUrl = process.env.AGENTIX_BENCH_REDIS_URL ?? process.env.AGENTIX_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

const GROUPS: Record<"postgres" | "redis", Array<[string, () => Promise<PeerStore>]>> = {
  postgres: [
    ["agentix", () => agentixPostgres(postgresUrl, "agentix")],
    ["floor", () => agentixPostgres(postgresUrl, "floor")],
    ["LangChain", () => langChainPostgres(postgresUrl)],
    ["Mastra", () => mastraPostgres(postgresUrl)],
    ["node-postgres", () => rawPg(postgresUrl)],
  ],
  redis: [
    ["agentix", () => agentixRedis(redisUrl, "agentix")],
    ["agentix, auto-pipelining", () => agentixRedis(redisUrl, "autopipelining")],
    ["floor", () => agentixRedis(redisUrl, "floor")],
    ["LangChain", () => langChainRedis(redisUrl)],
    ["node-redis", () => rawNodeRedis(redisUrl)],
  ],
};

const WRITERS = 32;
const scale = quick
  ? { appendSeq: 300, perWriter: 20, turns: 30, turnsPerWriter: 3, loadSize: 10_000, sessions: 1000, reps: 4 }
  : { appendSeq: 1000, perWriter: 60, turns: 100, turnsPerWriter: 10, loadSize: 10_000, sessions: 1000, reps: 8 };

/** One repetition of one workload on one store: its figure, CPU µs per message, and the check's verdict. */
interface Sample {
  value: number;
  cpu?: number;
  ordered: boolean;
}

interface PeerWorkload {
  name: string;
  unit: "msg/s" | "ms";
  /** Which "best write" row of the report the workload counts in: one writer, or many. */
  writes?: "one writer" | "32 writers";
  /** Only on stores that have the operation (a listing). */
  applies?(store: PeerStore): boolean;
  prepare?(store: PeerStore): Promise<unknown>;
  run(store: PeerStore, prepared: unknown): Promise<Sample>;
}

function expect(ok: boolean, message: string): asserts ok {
  if (!ok) throw new Error(message);
}

/** All `n` seqs there, each once; whether in order (a peer without an ordering guarantee may not keep it). */
function checkSeqs(seqs: number[], n: number, what: string, perWriter = n): boolean {
  expect(seqs.length === n, `${what}: ${seqs.length} messages, expected ${n}`);
  expect(new Set(seqs).size === n, `${what}: duplicate messages`);
  return seqs.every((s, i) => s === i % perWriter);
}

const message = (seq: number) => ({
  role: (seq % 2 === 0 ? "user" : "assistant") as "user" | "assistant",
  content: { type: "text", text: "the agent reads the file, plans a change and runs the tests", seq },
});

async function timedCpu(ops: number, run: () => Promise<unknown>): Promise<{ ms: number; cpu: number }> {
  const cpu = process.cpuUsage();
  const start = performance.now();
  await run();
  const ms = performance.now() - start;
  const used = process.cpuUsage(cpu);
  return { ms, cpu: (used.user + used.system) / ops };
}

const WORKLOADS: PeerWorkload[] = [
  {
    name: `append, sequential (${scale.appendSeq})`,
    unit: "msg/s",
    writes: "one writer",
    async run(store) {
      const id = await store.createSession();
      const { ms, cpu } = await timedCpu(scale.appendSeq, async () => {
        for (let i = 0; i < scale.appendSeq; i++) await store.append(id, message(i));
      });
      const ordered = checkSeqs(await store.load(id), scale.appendSeq, store.name);
      return { value: (scale.appendSeq / ms) * 1000, cpu, ordered };
    },
  },
  {
    name: `append, ${WRITERS} writers × ${scale.perWriter}`,
    unit: "msg/s",
    writes: "32 writers",
    async run(store) {
      const ids = await Promise.all(Array.from({ length: WRITERS }, () => store.createSession()));
      const n = WRITERS * scale.perWriter;
      const { ms, cpu } = await timedCpu(n, () =>
        Promise.all(
          ids.map(async (id) => {
            for (let i = 0; i < scale.perWriter; i++) await store.append(id, message(i));
          }),
        ),
      );
      let ordered = true;
      for (const id of ids) ordered = checkSeqs(await store.load(id), scale.perWriter, store.name) && ordered;
      return { value: (n / ms) * 1000, cpu, ordered };
    },
  },
  {
    name: `turn of 10 as one batch, sequential (${scale.turns})`,
    unit: "msg/s",
    writes: "one writer",
    async run(store) {
      const id = await store.createSession();
      const n = scale.turns * 10;
      const { ms, cpu } = await timedCpu(n, async () => {
        for (let t = 0; t < scale.turns; t++) await store.appendTurn(id, turn(t));
      });
      const ordered = checkSeqs(await store.load(id), n, store.name);
      return { value: (n / ms) * 1000, cpu, ordered };
    },
  },
  {
    name: `turn of 10 as one batch, ${WRITERS} writers × ${scale.turnsPerWriter}`,
    unit: "msg/s",
    writes: "32 writers",
    async run(store) {
      const ids = await Promise.all(Array.from({ length: WRITERS }, () => store.createSession()));
      const per = scale.turnsPerWriter * 10;
      const { ms, cpu } = await timedCpu(WRITERS * per, () =>
        Promise.all(
          ids.map(async (id) => {
            for (let t = 0; t < scale.turnsPerWriter; t++) await store.appendTurn(id, turn(t));
          }),
        ),
      );
      let ordered = true;
      for (const id of ids) ordered = checkSeqs(await store.load(id), per, store.name) && ordered;
      return { value: ((WRITERS * per) / ms) * 1000, cpu, ordered };
    },
  },
  {
    name: `load ${scale.loadSize.toLocaleString("en-US")} messages`,
    unit: "ms",
    prepare: (store) => store.seed(scale.loadSize),
    async run(store, id) {
      const start = performance.now();
      const seqs = await store.load(id as string);
      const ms = performance.now() - start;
      return { value: ms, ordered: checkSeqs(seqs, scale.loadSize, store.name) };
    },
  },
  {
    name: `list newest 50 of ${scale.sessions.toLocaleString("en-US")} sessions`,
    unit: "ms",
    applies: (store) => store.list !== undefined,
    prepare: async (store) => {
      await store.seedList?.(scale.sessions);
      for (let i = 0; i < 5; i++) await store.list?.(50);
    },
    async run(store) {
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const start = performance.now();
        const n = await store.list?.(50);
        times.push(performance.now() - start);
        expect(n === 50, `${store.name}: listed ${n}, expected 50`);
      }
      return { value: median(times), ordered: true };
    },
  },
];

/** Untimed: every store's code paths warmed, statements prepared and scripts loaded. */
async function warm(store: PeerStore): Promise<void> {
  const id = await store.createSession();
  for (let i = 0; i < 50; i++) await store.append(id, message(i));
  for (let t = 0; t < 5; t++) await store.appendTurn(id, turn(t));
  await store.load(id);
}

async function runGroup(backend: "postgres" | "redis", report: PeerReport): Promise<void> {
  const stores: PeerStore[] = [];
  for (const [name, open] of GROUPS[backend]) {
    try {
      const store = await open();
      await warm(store);
      stores.push(store);
      report.versions[`${backend}: ${store.name}`] = store.version;
    } catch (error) {
      const reason = error instanceof Error ? error.message.split("\n")[0] : String(error);
      log(`SKIPPED ${backend} ${name}: ${reason}`);
      report.skipped.push({ backend, store: name, reason: reason ?? "" });
    }
  }
  try {
    for (const workload of WORKLOADS) {
      const t = performance.now();
      const on = stores.filter((s) => workload.applies?.(s) ?? true);
      const prepared = new Map<PeerStore, unknown>();
      const samples = new Map<PeerStore, Sample[]>(on.map((s) => [s, []]));
      const failed = new Map<PeerStore, string>();
      for (const store of on) {
        try {
          prepared.set(store, await workload.prepare?.(store));
        } catch (error) {
          failed.set(store, (error as Error).message);
        }
      }
      for (let rep = 0; rep < scale.reps; rep++) {
        // Each store goes first as often as the others: the order rotates, and flips every other repetition.
        const rotated = on.map((_, i) => on[(i + rep) % on.length] as PeerStore);
        for (const store of rep % 2 === 0 ? rotated : rotated.reverse()) {
          if (failed.has(store)) continue;
          try {
            samples.get(store)?.push(await workload.run(store, prepared.get(store)));
          } catch (error) {
            failed.set(store, (error as Error).message);
          }
        }
      }
      for (const store of on) {
        const list = samples.get(store) ?? [];
        const error = failed.get(store);
        const result: PeerResult = { backend, workload: workload.name, unit: workload.unit, store: store.name };
        if (workload.writes) result.writes = workload.writes;
        if (error !== undefined) {
          result.error = error;
          log(`  ${backend} ${store.name} ${workload.name} FAILED: ${error}`);
        } else {
          result.median = median(list.map((s) => s.value));
          result.samples = list.map((s) => s.value);
          const cpu = list.flatMap((s) => (s.cpu === undefined ? [] : [s.cpu]));
          if (cpu.length > 0) result.cpu = median(cpu);
          result.ordered = list.every((s) => s.ordered);
        }
        report.results.push(result);
      }
      log(`  ${backend} ${workload.name}: ${((performance.now() - t) / 1000).toFixed(1)} s`);
    }
  } finally {
    for (const store of stores) await store.close().catch((error: unknown) => log(`  close failed: ${error}`));
  }
}

async function main(): Promise<number> {
  ensureInstalled();
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const loadAtStart = loadAverage();
  log(`agentix bench:peers (${quick ? "quick" : "full"}), load average ${loadAtStart}`);
  const report: PeerReport = {
    startedAt,
    quick,
    reps: scale.reps,
    durationSeconds: 0,
    machine: machine({}, loadAtStart),
    versions: {},
    results: [],
    skipped: [],
  };
  const groups = (args.only?.split(",") ?? ["postgres", "redis"]) as Array<"postgres" | "redis">;
  for (const backend of groups) await runGroup(backend, report);
  report.durationSeconds = (performance.now() - started) / 1000;
  report.machine = machine(report.versions, loadAtStart);
  console.log(peersMarkdown(report));
  mkdirSync(here("../results"), { recursive: true });
  const file = here(`../results/peers-${startedAt.replaceAll(":", "-")}${quick ? "-quick" : ""}.json`);
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);
  log(`results: ${file}`);
  if (args.docs || (!quick && report.skipped.length === 0)) {
    const docs = here("../../docs/benchmarks.md");
    writePeerDocs(report, docs, existsSync(docs) ? readFileSync(docs, "utf8") : "# Benchmarks\n");
    log("docs: docs/benchmarks.md (peers)");
  }
  log(`${Math.round(report.durationSeconds)} s`);
  return report.results.some((r) => r.error) ? 1 : 0;
}

process.exitCode = await main();
