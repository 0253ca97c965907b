// The report of `npm run bench:peers`: a table per server (stores side by side) and a text bar chart, written to
// stdout and, between its own markers, into docs/benchmarks.md.
import { writeFileSync } from "node:fs";
import type { Machine } from "../machine.js";

export interface PeerResult {
  backend: "postgres" | "redis";
  workload: string;
  unit: "msg/s" | "ms";
  store: string;
  /** A write workload: which "best write" row it counts in. */
  writes?: "one writer" | "32 writers";
  median?: number;
  samples?: number[];
  /** This process's CPU time per message, µs (write workloads). */
  cpu?: number;
  /** Whether every repetition read its messages back in the order they were written. */
  ordered?: boolean;
  error?: string;
}

export interface PeerReport {
  startedAt: string;
  quick: boolean;
  reps: number;
  durationSeconds: number;
  machine: Machine;
  /** Per store, the packages it runs on. */
  versions: Record<string, string>;
  results: PeerResult[];
  skipped: Array<{ backend: string; store: string; reason: string }>;
}

const NAMES = { postgres: "Postgres", redis: "Redis" };
const group = (n: number) => Math.round(n).toLocaleString("en-US");
const show = (r: PeerResult) =>
  r.error
    ? "failed"
    : r.median === undefined
      ? "—"
      : r.unit === "ms"
        ? `${r.median < 10 ? r.median.toFixed(2) : r.median.toFixed(1)} ms`
        : `${group(r.median)} msg/s`;

/** Higher is better whatever the unit. */
const speed = (r: PeerResult) => (r.median === undefined ? 0 : r.unit === "ms" ? 1 / r.median : r.median);
/** The other libraries' stores, and the raw drivers written the plain way (no session record, no index). */
const isLibrary = (store: string) => store.startsWith("LangChain") || store.startsWith("Mastra");
const isDriver = (store: string) => store.startsWith("node-");

function table(report: PeerReport, backend: "postgres" | "redis"): string {
  const rows = report.results.filter((r) => r.backend === backend);
  const stores = [...new Set(rows.map((r) => r.store))];
  const workloads = [...new Set(rows.map((r) => r.workload))];
  const lines = [
    `| ${NAMES[backend]} | ${stores.join(" | ")} | agentix ÷ best library | agentix ÷ raw driver |`,
    `|---|${stores.map(() => "--:").join("|")}|--:|--:|`,
  ];
  for (const w of workloads) {
    const here = rows.filter((r) => r.workload === w);
    const cells = stores.map((s) => {
      const r = here.find((x) => x.store === s);
      if (!r) return "—";
      const cpu = r.cpu === undefined ? "" : ` (CPU ${Math.round(r.cpu)} µs/msg)`;
      return `${show(r)}${cpu}${r.ordered === false ? " †" : ""}`;
    });
    const agentix = Math.max(0, ...here.filter((r) => r.store.startsWith("agentix")).map(speed));
    const ratio = (which: (store: string) => boolean) => {
      const best = Math.max(0, ...here.filter((r) => which(r.store) && !r.error).map(speed));
      return agentix > 0 && best > 0 ? `${(agentix / best).toFixed(2)}×` : "—";
    };
    lines.push(`| ${w} | ${cells.join(" | ")} | ${ratio(isLibrary)} | ${ratio(isDriver)} |`);
  }
  // Each store's fastest way to write messages (single appends or its batch call), per message: what an agent
  // saving its turns would get from it.
  for (const writes of ["one writer", "32 writers"] as const) {
    const best = (store: string) =>
      Math.max(0, ...rows.filter((r) => r.store === store && r.writes === writes && !r.error).map(speed));
    const cells = stores.map((s) => (best(s) > 0 ? `**${group(best(s))} msg/s**` : "—"));
    const agentix = Math.max(0, ...stores.filter((s) => s.startsWith("agentix")).map(best));
    const ratio = (which: (store: string) => boolean) => {
      const peer = Math.max(0, ...stores.filter(which).map(best));
      return agentix > 0 && peer > 0 ? `**${(agentix / peer).toFixed(2)}×**` : "—";
    };
    lines.push(
      `| **best write per message, ${writes}** | ${cells.join(" | ")} | ${ratio(isLibrary)} | ${ratio(isDriver)} |`,
    );
  }
  return lines.join("\n");
}

/** Per workload, one bar per store, scaled to the fastest (higher is better; times drawn as their inverse). */
function bars(report: PeerReport, backend: "postgres" | "redis"): string {
  const rows = report.results.filter((r) => r.backend === backend && !r.error);
  const width = Math.max(...rows.map((r) => r.store.length));
  const out: string[] = [];
  for (const w of [...new Set(rows.map((r) => r.workload))]) {
    const here = rows.filter((r) => r.workload === w);
    const top = Math.max(...here.map(speed));
    out.push(`${NAMES[backend]} · ${w}${here[0]?.unit === "ms" ? " (bar: speed, 1 ÷ time)" : ""}`);
    for (const r of here) {
      const n = top > 0 ? Math.max(1, Math.round((speed(r) / top) * 40)) : 0;
      out.push(`  ${r.store.padEnd(width)} ${"█".repeat(n).padEnd(40)} ${show(r)}`);
    }
    out.push("");
  }
  return out.join("\n").trimEnd();
}

export function peersMarkdown(report: PeerReport): string {
  const backends = [...new Set(report.results.map((r) => r.backend))];
  const parts: string[] = [];
  for (const b of backends) parts.push(table(report, b), "");
  parts.push(
    "† the store read the messages back in another order than they were written, in at least one repetition.",
    "*agentix ÷ best library*: the faster of the agentix rows ÷ the faster of LangChain and Mastra, as a speed",
    "(above 1: agentix ahead); *÷ raw driver*: the same against node-postgres or node-redis written the plain way,",
    "which keep no session record and no index. *Best write per message*: each store's faster way of writing messages",
    "(single appends, or its batch call for a turn of 10: agentix `saveMessages`, LangChain `addMessages`, Mastra",
    "`saveMessages`, one multi-row INSERT or RPUSH), in messages per second.",
    "",
    "```text",
    ...backends.map((b) => `${bars(report, b)}\n`),
    "```",
  );
  for (const s of report.skipped) parts.push("", `Skipped ${s.backend} ${s.store}: ${s.reason}`);
  return parts.join("\n").trimEnd();
}

function machineLines(report: PeerReport): string {
  const m = report.machine;
  return [
    `- CPU: ${m.cpu}, ${m.cores} cores; Node ${m.node}; servers on the same machine (loopback).`,
    `- Packages: ${Object.entries(m.versions)
      .map(([k, v]) => `${k}: ${v}`)
      .join("; ")}.`,
    `- Load average (1 min): ${m.load.start} at the start, ${m.load.end} at the end.`,
    `- Run: ${report.startedAt}, ${report.quick ? "`--quick`" : "full"}, ${Math.round(report.durationSeconds)} s; ` +
      `medians of ${report.reps} repetitions per store, the stores interleaved.`,
  ].join("\n");
}

const START = "<!-- peers:start -->";
const END = "<!-- peers:end -->";

export function writePeerDocs(report: PeerReport, path: string, current: string): void {
  const generated = [
    START,
    "<!-- Generated by `npm run bench:peers`: edits between these markers are overwritten. -->",
    "",
    peersMarkdown(report),
    "",
    "Measured on:",
    "",
    machineLines(report),
    END,
  ].join("\n");
  const from = current.indexOf(START);
  const to = current.indexOf(END);
  const next =
    from === -1 || to === -1
      ? `${current.trimEnd()}\n\n## Peers\n\n${generated}\n`
      : current.slice(0, from) + generated + current.slice(to + END.length);
  writeFileSync(path, next);
}
