// The report: a markdown table (stdout and docs/benchmarks.md), the targets of issue 8 and an SVG bar chart of
// the ratios, drawn by hand.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import type { Machine } from "./machine.js";
import { EXPORT_PAGE, EXPORT_SIZES, LIST_PAGE, LIST_SIZES, sizeName } from "./scale.js";
import { type BackendName, type Scale, TURN, type Unit } from "./workloads.js";

export interface Figure {
  median: number;
  samples: number[];
  /**
   * Medians of the figures shown beside the main one: p50 and p99 latency (ms), CPU time per operation (µs); for a
   * turn's cost, the per-message throughput gain (×) and the times of a turn and of one append (ms); the time a
   * memory figure's operation took (`ms`, `ms_load`), conflicts per second, a time ÷ the small tail's.
   */
  extra?: Record<string, number>;
}

export interface Result {
  backend: BackendName;
  metric: string;
  unit: Unit;
  agentix?: Figure;
  /** The mirror baseline: agentix's own statements and scripts written by hand. */
  raw?: Figure;
  /** The floor baseline: the least correct work (Postgres and Redis; elsewhere the mirror is the floor). */
  floor?: Figure;
  /** agentix ÷ raw of the metric itself (ops/s or ms), from pairs of repetitions (see `pairedRatio` in run.ts). */
  ratio?: number;
  /** agentix ÷ floor, likewise: the headline ratio, which the ratio targets apply to. */
  floorRatio?: number;
  /** Set when the workload failed or its check did: no figure is kept then. */
  error?: string;
}

export type Target =
  | { kind: "ratio"; atLeast: number } // throughput: agentix ÷ floor (the mirror where there is no floor)
  | { kind: "ratio"; atMost: number } // time: agentix ÷ floor
  | { kind: "absolute"; atLeast: number } // ops/s of agentix
  | { kind: "absolute"; atMost: number } // ms or MB of agentix, or a turn's cost (×) on the agentix side
  | { kind: "extra"; extra: string; atMost: number; of: string }; // a figure beside agentix's: `extra` ≤ atMost

export interface RoundTrips {
  backend: BackendName;
  op: string;
  agentix: { roundTrips: number; commands: number };
  raw?: { roundTrips: number; commands: number };
  /** What issue 8 expects of agentix: one round trip per operation (a fork is one statement, one transaction). */
  expected: number;
}

export interface Report {
  startedAt: string;
  quick: boolean;
  scale: Scale;
  durationSeconds: number;
  machine: Machine;
  reps: Record<string, number>;
  results: Result[];
  roundTrips: RoundTrips[];
  skipped: Array<{ backend: BackendName; reason: string }>;
}

const rel = (atLeast: number): Target => ({ kind: "ratio", atLeast });
const relTime = (atMost: number): Target => ({ kind: "ratio", atMost });
const server = {
  append_seq: rel(0.9),
  append_conc: rel(0.9),
  // A turn of 10 as one batch: ≥ 0.9× the raw batch, and at most 1.5× one append (so ≥ 6.7× the messages/s).
  turn_seq: rel(0.9),
  turn_conc: rel(0.9),
  turn_cost: { kind: "absolute", atMost: 1.5 } as Target,
  load: relTime(1.25),
  load_last: relTime(1.25),
};
/**
 * Issue 14, on every backend: iterating a big session grows the RSS by at most 64 MB, and its tail and a deep
 * page each take at most twice the tail of a 1,000-message session (measured in the same repetition).
 */
const large: Record<string, Target> = {
  iterate_rss: { kind: "absolute", atMost: 64 },
  tail_big: { kind: "extra", extra: "vs_small", atMost: 2, of: "the small tail" },
  page_deep: { kind: "extra", extra: "page_vs_small", atMost: 2, of: "the small tail" },
};

/**
 * The scale rows (bench/scale.ts), on every backend: a page of the 100k agent's export costs at most twice a page of
 * the 10k agent's (O(page); a page that sorts or walks the agent's sessions makes it 10×). File (issue 19): the first
 * page of 50 under 50 ms at 10,000 sessions per agent and under 500 ms at 100,000.
 */
const scaled: Record<string, Target> = {
  scale_export_100k: { kind: "extra", extra: "page_vs_10k", atMost: 2, of: "a page of the 10k export" },
};

/** The targets of issues 8, 14, 17 and 19. */
export const TARGETS: Record<BackendName, Record<string, Target>> = {
  postgres: { ...server, list: relTime(1.5), list_deep: relTime(1.5), fork: relTime(1.25), ...large, ...scaled },
  pg: { ...server, list: relTime(1.5), list_deep: relTime(1.5), fork: relTime(1.25), ...large, ...scaled },
  redis: { ...server, list: relTime(1.5), list_deep: relTime(1.5), fork: relTime(1.25), ...large, ...scaled },
  sqlite: {
    append_seq: rel(0.8),
    append_conc: rel(0.8),
    turn_seq: rel(0.9),
    turn_conc: rel(0.9),
    load: relTime(1.25),
    load_last: relTime(1.25),
    ...large,
    ...scaled,
  },
  file: {
    append_seq: { kind: "absolute", atLeast: 5000 },
    load: { kind: "absolute", atMost: 50 },
    ...large,
    ...scaled,
    scale_list_10k: { kind: "absolute", atMost: 50 },
    scale_list_100k: { kind: "absolute", atMost: 500 },
  },
};

/** agentix ÷ the floor, or ÷ the mirror on a backend whose mirror is its floor: the headline ratio. */
export function headline(r: Result): number | undefined {
  return r.floorRatio ?? r.ratio;
}

/** How fast agentix is next to the floor, higher is better whatever the unit: what the chart draws. */
export function speed(r: Result): number | undefined {
  const x = headline(r);
  // A memory growth next to the raw driver's (a few MB, often nearly 0) is no speed; a turn's cost is within one side.
  if (x === undefined || r.unit === "×" || r.unit === "MB") return undefined;
  return r.unit === "ops/s" ? x : 1 / x;
}

export function met(r: Result): boolean | undefined {
  const target = TARGETS[r.backend][r.metric];
  if (!target || r.error) return r.error ? false : undefined;
  const value =
    target.kind === "ratio"
      ? headline(r)
      : target.kind === "extra"
        ? r.agentix?.extra?.[target.extra]
        : r.agentix?.median;
  if (value === undefined || Number.isNaN(value)) return undefined;
  if ("atLeast" in target) return value >= target.atLeast;
  // "Within 1.25×", "at most 1.5× one append" and "at most 64 MB" include their bound; "under 50 ms" does not.
  return target.kind === "absolute" && r.unit === "ms" ? value < target.atMost : value <= target.atMost;
}

/** The target as a speed (the chart's unit), when it is a ratio. */
function speedTarget(r: Result): number | undefined {
  const target = TARGETS[r.backend][r.metric];
  if (target?.kind !== "ratio") return undefined;
  return "atLeast" in target ? target.atLeast : 1 / target.atMost;
}

function describeTarget(target: Target | undefined, unit: string): string {
  if (!target) return "—";
  if (target.kind === "extra") return `≤ ${target.atMost}× ${target.of}`;
  if (target.kind === "ratio" || unit === "×") {
    return "atLeast" in target ? `≥ ${target.atLeast}×` : `≤ ${target.atMost}×`;
  }
  if ("atLeast" in target) return `≥ ${group(target.atLeast)} ${unit}`;
  return `${unit === "ms" ? "<" : "≤"} ${target.atMost} ${unit}`;
}

/** What each metric measured, at the run's scale. */
function label(metric: string, scale: Scale): string {
  const labels: Record<string, string> = {
    append_seq: `append, sequential (${group(scale.appendSeq)})`,
    append_conc: `append, ${scale.writers} writers × ${group(scale.appendsPerWriter)}`,
    turn_seq: `turn of ${TURN} (\`saveMessages\`), sequential (${group(scale.turns)}), msg/s`,
    turn_cost: `turn of ${TURN} ÷ one append, sequential`,
    turn_conc: `turn of ${TURN}, ${scale.writers} writers × ${group(scale.turnsPerWriter)}, msg/s`,
    turn_conc_cost: `turn of ${TURN} ÷ one append, ${scale.writers} writers`,
    load: `load ${group(scale.loadSize)} messages`,
    load_last: "load newest 50",
    list: `list newest ${scale.pageSize}`,
    list_deep: `list page ${scale.deepPage} (\`before\`)`,
    fork: `fork ${group(scale.forkSize)} messages`,
    iterate_rss: `iterateMessages of ${group(scale.bigSize)}: peak RSS growth`,
    load_rss: `loadMessages of ${group(scale.bigSize)}: peak RSS growth`,
    tail_small: `newest 50 of ${group(scale.smallSize)}`,
    tail_big: `newest 50 of ${group(scale.bigSize)}`,
    page_deep: `100 at offset ${group(scale.deepOffset)} of ${group(scale.bigSize)}`,
    page_small: `100 at offset ${group(scale.smallSize * (scale.deepOffset / scale.bigSize))} of ${group(scale.smallSize)}`,
    cas_loop: `compare-and-swap appends, ${scale.casWriters} writers × ${group(scale.casAppendsPerWriter)}, one session`,
    append_shared: `append, ${scale.casWriters} writers × ${group(scale.casAppendsPerWriter)}, one session`,
    ...Object.fromEntries(
      LIST_SIZES.flatMap((n) => [
        [`scale_list_${sizeName(n)}`, `list newest ${LIST_PAGE}, agent of ${group(n)} sessions`],
        [`scale_list_mid_${sizeName(n)}`, `list ${LIST_PAGE} at half depth (\`before\`), agent of ${group(n)}`],
      ]),
    ),
    ...Object.fromEntries(
      EXPORT_SIZES.map((n) => [
        `scale_export_${sizeName(n)}`,
        `export an agent of ${group(n)} sessions (\`scanSessions\` by ${EXPORT_PAGE})`,
      ]),
    ),
  };
  return labels[metric] ?? metric;
}

const NAMES: Record<BackendName, string> = {
  postgres: "Postgres",
  pg: "Postgres (node-postgres)",
  redis: "Redis",
  sqlite: "SQLite",
  file: "File",
};

function group(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

function figure(value: number, unit: Unit): string {
  if (unit === "ops/s") return `${group(value)} ops/s`;
  if (unit === "×") return `${value.toFixed(2)}×`;
  if (unit === "MB") return `${value.toFixed(1)} MB`;
  return `${value < 10 ? value.toFixed(2) : value.toFixed(1)} ms`;
}

function cell(f: Figure | undefined, unit: Unit): string {
  if (!f) return "—";
  const extra: string[] = [];
  if (f.extra?.gain !== undefined) extra.push(`${f.extra.gain.toFixed(1)}× the messages/s of single appends`);
  if (f.extra?.turn !== undefined) extra.push(`a turn ${f.extra.turn.toFixed(2)} ms`);
  if (f.extra?.append !== undefined) extra.push(`an append ${f.extra.append.toFixed(2)} ms`);
  if (f.extra?.p50 !== undefined) extra.push(`p50 ${f.extra.p50.toFixed(2)} ms`);
  if (f.extra?.p99 !== undefined) extra.push(`p99 ${f.extra.p99.toFixed(2)} ms`);
  if (f.extra?.cpu !== undefined) extra.push(`CPU ${Math.round(f.extra.cpu)} µs/op`);
  for (const key of ["ms", "ms_load"]) {
    const ms = f.extra?.[key];
    if (ms !== undefined) extra.push(`in ${(ms / 1000).toFixed(2)} s`);
  }
  if (f.extra?.conflicts !== undefined) extra.push(`${group(f.extra.conflicts)} conflicts/s`);
  for (const key of ["vs_small", "page_vs_small"]) {
    const x = f.extra?.[key];
    if (x !== undefined) extra.push(`${x.toFixed(2)}× the small tail`);
  }
  if (f.extra?.vs_small_page !== undefined) extra.push(`${f.extra.vs_small_page.toFixed(2)}× the small page`);
  if (f.extra?.per_page !== undefined) extra.push(`${f.extra.per_page.toFixed(2)} ms a page`);
  if (f.extra?.page_vs_10k !== undefined) extra.push(`${f.extra.page_vs_10k.toFixed(2)}× a page of the 10k export`);
  return figure(f.median, unit) + (extra.length > 0 ? ` (${extra.join(", ")})` : "");
}

export function resultsTable(report: Report): string {
  const lines = [
    "| backend | workload | agentix | floor | **agentix ÷ floor** | mirror | agentix ÷ mirror | target | |",
    "|---|---|--:|--:|--:|--:|--:|:-:|:-:|",
  ];
  const times = (x: number | undefined) => (x === undefined || Number.isNaN(x) ? "—" : `${x.toFixed(2)}×`);
  for (const r of report.results) {
    const ok = met(r);
    const status = r.error ? `**failed**: ${r.error}` : ok === undefined ? "" : ok ? "✓ met" : "✗ **missed**";
    // Without a floor of its own, the backend's mirror is its floor (already the least work): shown once.
    // The scale rows have no mirror (one store, agentix and the floor where a plain statement can read it).
    const floor = r.floor ? cell(r.floor, r.unit) : r.error || !r.raw ? "—" : "= mirror";
    const x = headline(r);
    lines.push(
      `| ${NAMES[r.backend]} | ${label(r.metric, report.scale)} | ${cell(r.agentix, r.unit)} | ${floor} | ` +
        `${x === undefined ? "—" : `**${times(x)}**`} | ${cell(r.raw, r.unit)} | ${times(r.ratio)} | ` +
        `${describeTarget(TARGETS[r.backend][r.metric], r.unit)} | ${status} |`,
    );
  }
  return lines.join("\n");
}

export function roundTripTable(report: Report): string {
  if (report.roundTrips.length === 0) return "";
  const backends = [...new Set(report.roundTrips.map((r) => r.backend))];
  const ops = [...new Set(report.roundTrips.map((r) => r.op))];
  const head = backends.map((b) => `${NAMES[b]} agentix | ${NAMES[b]} raw`).join(" | ");
  const lines = [`| operation | expected | ${head} |`, `|---|--:|${backends.map(() => "--:|--:").join("|")}|`];
  const show = (w: { roundTrips: number; commands: number } | undefined) =>
    w === undefined
      ? "—"
      : w.commands === w.roundTrips
        ? `${w.roundTrips}`
        : `${w.roundTrips} (${w.commands} commands)`;
  for (const op of ops) {
    let expected = 1;
    const cells = backends.map((b) => {
      const row = report.roundTrips.find((r) => r.backend === b && r.op === op);
      expected = row?.expected ?? expected;
      const off = row && row.agentix.roundTrips !== row.expected ? " ✗" : "";
      return `${show(row?.agentix)}${off} | ${show(row?.raw)}`;
    });
    lines.push(`| \`${op}\` | ${expected} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

export function machineLines(report: Report): string {
  const m = report.machine;
  const versions = Object.entries(m.versions)
    .map(([k, v]) => `${k} ${v}`)
    .join(", ");
  // The load at the start is other work; at the end it includes the bench's own client and servers.
  const busy = m.load.start > m.cores / 2;
  return [
    `- CPU: ${m.cpu}, ${m.cores} cores; RAM ${m.memoryGiB} GiB; ${m.os}`,
    `- Node ${m.node}; ${versions}`,
    `- Servers on the same machine (loopback), client and server sharing the cores.`,
    `- Load average (1 min): ${m.load.start} at the start, ${m.load.end} at the end (the bench's own work included)` +
      (busy ? " — **the machine was busy with other work when the run began: figures are noisy**." : "."),
    `- Run: ${report.startedAt}, ${report.quick ? "`--quick`" : "full"}, ${Math.round(report.durationSeconds)} s; ` +
      `medians of ${Object.entries(report.reps)
        .map(([w, n]) => `${n} (${w})`)
        .join(", ")} repetitions.`,
  ].join("\n");
}

/** A horizontal bar per result: agentix's speed next to raw (1 = as fast), the target marked on it. */
export function chart(report: Report): string {
  const rows = report.results.filter((r) => speed(r) !== undefined);
  const rowLabel = (r: Result) => `${NAMES[r.backend]} · ${label(r.metric, report.scale).replaceAll("`", "")}`;
  // About 6.5 px per character at font-size 12.
  const labelWidth = Math.max(...rows.map((r) => rowLabel(r).length)) * 6.5 + 16;
  const plot = 480;
  const rowHeight = 22;
  const top = 56;
  const groupGap = 14;
  const max = Math.max(1.5, Math.ceil(Math.max(...rows.map((r) => speed(r) as number)) * 4) / 4);
  const x = (v: number) => labelWidth + (Math.min(v, max) / max) * plot;
  const backends = [...new Set(rows.map((r) => r.backend))];
  const height = top + rows.length * rowHeight + backends.length * groupGap + 40;
  const width = labelWidth + plot + 290;
  const parts: string[] = [];
  const text = (px: number, py: number, s: string, attrs = "") =>
    parts.push(`<text x="${px.toFixed(1)}" y="${py.toFixed(1)}"${attrs}>${escapeXml(s)}</text>`);

  text(12, 22, "agentix speed relative to the floor baseline (1 = as fast; higher is better)", ' font-weight="bold"');
  text(12, 40, "green: target met · red: missed · grey: no target · black tick: the target as a ratio", ' fill="#555"');
  for (let v = 0; v <= max + 1e-9; v += 0.25) {
    const gx = x(v);
    const strong = Math.abs(v - 1) < 1e-9;
    parts.push(
      `<line x1="${gx.toFixed(1)}" y1="${top - 4}" x2="${gx.toFixed(1)}" y2="${height - 30}" stroke="${strong ? "#333" : "#ddd"}"${strong ? ' stroke-dasharray="4 3"' : ""}/>`,
    );
    if (Math.abs(v * 2 - Math.round(v * 2)) < 1e-9) text(gx, height - 14, `${v}×`, ' text-anchor="middle" fill="#555"');
  }
  let y = top;
  for (const backend of backends) {
    for (const r of rows.filter((row) => row.backend === backend)) {
      const s = speed(r) as number;
      const ok = met(r);
      const color = ok === undefined ? "#90a4ae" : ok ? "#2e7d32" : "#c62828";
      text(labelWidth - 8, y + 14, rowLabel(r), ' text-anchor="end"');
      parts.push(
        `<rect x="${labelWidth}" y="${y + 3}" width="${(x(s) - labelWidth).toFixed(1)}" height="${rowHeight - 6}" fill="${color}"/>`,
      );
      // In a column of their own, right of the plot, so that no value sits on a target tick.
      const target = TARGETS[r.backend][r.metric];
      const absolute =
        target?.kind === "absolute" && r.agentix
          ? ` (${figure(r.agentix.median, r.unit)}; target ${describeTarget(target, r.unit)})`
          : "";
      text(labelWidth + plot + 12, y + 15, `${s.toFixed(2)}×${absolute}`, ' fill="#333"');
      const t = speedTarget(r);
      if (t !== undefined) {
        parts.push(
          `<line x1="${x(t).toFixed(1)}" y1="${y + 1}" x2="${x(t).toFixed(1)}" y2="${y + rowHeight - 1}" stroke="#000" stroke-width="2"/>`,
        );
      }
      y += rowHeight;
    }
    y += groupGap;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, sans-serif" font-size="12">`,
    "<title>agentix speed relative to the floor baseline, per backend and workload</title>",
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...parts,
    "</svg>",
    "",
  ].join("\n");
}

function escapeXml(s: string): string {
  return s.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;");
}

export function markdown(report: Report): string {
  const trips = roundTripTable(report);
  return [
    resultsTable(report),
    "",
    ...(trips
      ? ["Round trips per operation (after warm-up; Postgres: statements sent, Redis: request batches):", "", trips, ""]
      : []),
    ...report.skipped.map((s) => `Skipped ${NAMES[s.backend]}: ${s.reason}`),
  ]
    .join("\n")
    .trimEnd();
}

const START = "<!-- bench:start -->";
const END = "<!-- bench:end -->";

/** The head of a docs page written from scratch; the real one is written by hand around the markers. */
const INTRO = "# Benchmarks\n\nWritten by `npm run bench`: agentix next to a raw driver baseline, per backend.\n\n";

/** Replaces the generated part of docs/benchmarks.md, keeping whatever was written by hand around it. */
export function writeDocs(report: Report, docsPath: string, svgPath: string, svgName: string): void {
  writeFileSync(svgPath, chart(report));
  const generated = [
    START,
    "<!-- Generated by `npm run bench`: edits between these markers are overwritten. -->",
    "",
    `![agentix speed relative to the floor baseline](${svgName})`,
    "",
    markdown(report),
    "",
    "Measured on:",
    "",
    machineLines(report),
    END,
  ].join("\n");
  const current = existsSync(docsPath) ? readFileSync(docsPath, "utf8") : `${INTRO}${START}\n${END}\n`;
  const from = current.indexOf(START);
  const to = current.indexOf(END);
  const next =
    from === -1 || to === -1
      ? `${current.trimEnd()}\n\n${generated}\n`
      : current.slice(0, from) + generated + current.slice(to + END.length);
  writeFileSync(docsPath, next);
}
