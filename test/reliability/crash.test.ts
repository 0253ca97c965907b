// Writer processes killed with SIGKILL in the middle of appends and forks, many times over, on the File and
// SQLite backends. After each kill: every session is readable, every acknowledged message is there in order
// (at most the one append in flight may also have landed), every acknowledged fork is whole, and an
// unacknowledged fork is either absent or whole. Then writers killed inside the write of batches of several MiB
// (saveMessages): every acknowledged batch is there whole, the one in flight is whole or absent, never in part,
// the counts are exact, and so after the next append, which repairs the File log. test/file-processes.test.ts and test/sqlite-multiprocess.test.ts
// cover concurrent writers and one kill; this covers the kill landing anywhere, in a loop. Last, File writers
// killed in loops of keyed replaceMessages and popMessage: the history is always the one before or after an edit,
// and the keyed retry of the edit in flight applies it at most once.
import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";
import { once } from "node:events";
import {
  closeSync,
  existsSync,
  fstatSync,
  openSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  utimesSync,
} from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { StorageBackend } from "../../src/core/backend.js";
import { FileStorageBackend } from "../../src/file.js";
import { SqliteStorageBackend } from "../../src/sqlite.js";
import { FULL, figure, scaled, sleep, tempDir } from "./support.js";

const root = fileURLToPath(new URL("../..", import.meta.url));
const script = fileURLToPath(new URL("./fixtures/crash-writer.ts", import.meta.url));
const dir = tempDir("crash");

/**
 * How a writer is started: the fixture bundled once with esbuild (which tsx runs on), so that each of the many
 * writers starts in about 0.15 s of CPU instead of 0.6 s through tsx's loader; through tsx if esbuild is missing.
 * The bundle goes to node_modules/.cache, from where its packages resolve as from the project.
 */
let writerArgs = ["--import", "tsx", script];
let bundle: string | undefined;
beforeAll(async () => {
  try {
    const { build } = await import("esbuild");
    const outfile = join(root, "node_modules", ".cache", "agentix-reliability", `crash-writer-${process.pid}.mjs`);
    await build({
      entryPoints: [script],
      outfile,
      bundle: true,
      packages: "external",
      platform: "node",
      format: "esm",
    });
    bundle = outfile;
    writerArgs = [outfile];
  } catch (error) {
    console.warn(`crash writers run through tsx (slower): ${error}`);
  }
});
afterAll(async () => {
  // A test that failed may have left the next writer waiting: it goes before its directory does.
  for (const writer of live) writer.child.kill("SIGKILL");
  await Promise.all([...live].map((writer) => writer.closed));
  rmSync(dir, { recursive: true, force: true });
  if (bundle) {
    rmSync(bundle, { force: true });
    if (readdirSync(dirname(bundle)).length === 0) rmdirSync(dirname(bundle)); // unless another run's is there
  }
});

const KILLS = scaled(12, 120);
/** Rounds per source session: a new one then, so that no log grows without bound over a long run. */
const ROUNDS_PER_SOURCE = 8;
const PADS = [16, 4096, 65_536, 524_288];

type Kind = "file" | "sqlite";
interface Content {
  round: number;
  i: number;
  pad: string;
}
interface BatchContent extends Content {
  k: number;
}

/** Writers not yet ended. */
const live = new Set<Writer>();

/** A writer process and the lines it has printed. */
class Writer {
  readonly child: ChildProcessWithoutNullStreams;
  readonly lines: string[] = [];
  #partial = "";
  #stderr = "";
  #changed: () => void = () => {};
  /** Registered at the start, so that an exit before the kill is not missed. */
  readonly closed: Promise<unknown>;

  constructor(job: {
    kind: Kind;
    location: string;
    sessionId: string;
    round: number;
    pad: number;
    fork: boolean;
    batch?: number;
    edit?: boolean;
  }) {
    this.child = spawn(process.execPath, [...writerArgs, JSON.stringify(job)], { cwd: root });
    live.add(this);
    this.closed = once(this.child, "close").finally(() => live.delete(this));
    this.child.stdout.on("data", (chunk: Buffer) => {
      const text = this.#partial + chunk.toString();
      const lines = text.split("\n");
      this.#partial = lines.pop() ?? "";
      this.lines.push(...lines);
      this.#changed();
    });
    this.child.stderr.on("data", (chunk: Buffer) => {
      this.#stderr += chunk.toString();
    });
    this.child.on("exit", () => this.#changed());
  }

  /** Resolves once a printed line matches; fails if the writer exits first or stays silent for 30 s. */
  async until(pattern: RegExp): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (!this.lines.some((line) => pattern.test(line))) {
      const state = `lines ${JSON.stringify(this.lines.slice(-3))}, stderr ${this.#stderr}`;
      if (this.child.exitCode !== null || this.child.signalCode !== null) {
        throw new Error(`writer exited (${this.child.exitCode ?? this.child.signalCode}) before ${pattern}: ${state}`);
      }
      if (Date.now() > deadline) throw new Error(`writer silent for 30 s, waiting for ${pattern}: ${state}`);
      await new Promise<void>((resolve) => {
        this.#changed = resolve;
        setTimeout(resolve, 1000);
      });
    }
  }

  go(): void {
    this.child.stdin.write("go\n");
  }

  /** SIGKILL, then every line it wrote before dying is read ("close" comes after its stdout ends). */
  async kill(): Promise<void> {
    this.child.kill("SIGKILL");
    await this.closed;
    // A writer that ended on its own met an error: a failed append or fork is a finding, not noise.
    if (this.child.signalCode !== "SIGKILL") {
      throw new Error(`writer exited with ${this.child.exitCode} before the kill: ${this.#stderr}`);
    }
  }
}

interface Source {
  id: string;
  /** What its log must hold, in order. */
  expected: Content[];
}

const key = (c: Content) => `${c.round}:${c.i}`;

function open(kind: Kind, location: string): StorageBackend {
  return kind === "file"
    ? new FileStorageBackend({ basePath: location })
    : new SqliteStorageBackend({ path: location });
}

describe.each<Kind>(["file", "sqlite"])("%s: writers killed with SIGKILL", (kind) => {
  it(`loses nothing acknowledged over ${KILLS} kills in the middle of appends and forks`, {
    timeout: 600_000,
  }, async () => {
    const location = kind === "file" ? join(dir, "file") : join(dir, "crash.db");
    const b = open(kind, location);
    const stats = {
      kills: 0,
      midAppend: 0,
      midFork: 0,
      acked: 0,
      unackedLanded: 0,
      forksAcked: 0,
      forksLanded: 0,
      locksLeft: 0,
    };
    const sources: Source[] = [];
    const start = async (round: number) => {
      if (round % ROUNDS_PER_SOURCE === 0) {
        sources.push({ id: await b.createSession("crash", { cwd: "/crash" }), expected: [] });
      }
      const source = sources.at(-1) as Source;
      const fork = round % 2 === 1;
      const pad = (PADS[Math.floor(round / 2) % PADS.length] as number) >> (fork ? 3 : 0);
      return { source, pad, writer: new Writer({ kind, location, sessionId: source.id, round, pad, fork }) };
    };

    let next = await start(0);
    for (let round = 0; round < KILLS; round++) {
      const { source, pad, writer } = next;
      await writer.until(/^ready$/);
      writer.go();
      // The next writer loads while this one runs and is checked.
      if (round + 1 < KILLS) next = await start(round + 1);
      await writer.until(/^ack /);
      await sleep(Math.random() * 30);
      await writer.kill();
      stats.kills++;

      const lock = join(location, "locks", `${source.id}.lock`);
      if (kind === "file" && existsSync(lock)) {
        // Left by the killed writer, and taken over once stale (10 s): aged here rather than waited for.
        utimesSync(lock, new Date(0), new Date(0));
        stats.locksLeft++;
      }

      const last = writer.lines.at(-1) ?? "";
      const inFlight = last.split(" ")[0];
      const acked = writer.lines.filter((l) => l.startsWith("ack ")).length;
      stats.acked += acked;
      if (inFlight === "save") stats.midAppend++;
      if (inFlight === "fork") stats.midFork++;

      // The source: what was there before, untouched, then this writer's messages 0..n-1 in order, whole.
      const stored = (await b.loadMessages(source.id)).map((m) => m.content as unknown as Content);
      expect(stored.slice(0, source.expected.length).map(key)).toEqual(source.expected.map(key));
      const mine = stored.slice(source.expected.length);
      expect(mine.map(key)).toEqual(mine.map((_, i) => `${round}:${i}`));
      expect(mine.every((c) => c.pad.length === pad)).toBe(true);
      const unacked = mine.length - acked;
      expect(unacked).toBeGreaterThanOrEqual(0); // nothing acknowledged is lost
      expect(unacked).toBeLessThanOrEqual(inFlight === "save" ? 1 : 0); // only the append in flight may land
      stats.unackedLanded += unacked;
      source.expected.push(...mine);
      const [newest] = await b.loadMessages(source.id, { last: 1 });
      expect((await b.getSession(source.id))?.updated_at).toBe(newest?.timestamp);

      // Forks: each acknowledged one is whole (the source up to the append before it); at most the one in flight
      // also landed, and then whole too. Nothing else is listed.
      const forks = new Map<string, number>();
      for (const line of writer.lines.filter((l) => l.startsWith("forked "))) {
        const [, id, i] = line.split(" ");
        forks.set(id as string, Number(i));
      }
      stats.forksAcked += forks.size;
      const listed = (await b.listSessions("crash")).map((s) => s.session_id);
      const copies = listed.filter((id) => !sources.some((s) => s.id === id));
      for (const id of forks.keys()) expect(copies).toContain(id);
      const landed = copies.filter((id) => !forks.has(id));
      expect(landed.length).toBeLessThanOrEqual(inFlight === "fork" ? 1 : 0);
      stats.forksLanded += landed.length;
      for (const id of landed) forks.set(id, Number(last.split(" ")[1]));
      for (const [id, i] of forks) {
        const upTo = source.expected.findIndex((c) => c.round === round && c.i === i) + 1;
        const copy = (await b.loadMessages(id)).map((m) => key(m.content as unknown as Content));
        expect(copy).toEqual(source.expected.slice(0, upTo).map(key));
        expect((await b.getSession(id))?.metadata).toEqual({ cwd: "/crash" });
        await b.deleteSession(id);
      }
    }

    // Every source, old ones included, still reads back whole; and the store still takes writes.
    for (const source of sources) {
      expect((await b.loadMessages(source.id)).map((m) => key(m.content as unknown as Content))).toEqual(
        source.expected.map(key),
      );
    }
    const lastSource = (sources.at(-1) as Source).id;
    await b.saveMessage(lastSource, "assistant", "after the kills");
    expect((await b.loadMessages(lastSource, { last: 1 }))[0]?.content).toBe("after the kills");
    await b.close();

    if (kind === "sqlite") {
      const db = new Database(location, { readonly: true });
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
      db.close();
    } else {
      // A kill in the middle of a fork leaves its half-built copy in tmp/ (never visible; swept after an hour)
      // and may leave its agent index entry without a session (skipped by readers).
      const agents = join(location, "agents");
      const entries = readdirSync(agents).flatMap((agent) => readdirSync(join(agents, agent)));
      figure(`${kind} crash leftovers`, {
        tmp: readdirSync(join(location, "tmp")).length,
        indexEntriesWithoutSession: entries.filter((id) => !existsSync(join(location, "sessions", id))).length,
      });
    }
    figure(`${kind} crash`, stats);
    expect(stats.midAppend + stats.midFork).toBeGreaterThan(0); // the kills did land in the middle of writes
  });
});

/** Batches of about 6 MiB (a write long enough for a kill to land inside), as few large messages or many small. */
const BATCHES = [
  { size: 2, pad: 3 << 20 },
  { size: 48, pad: 128 << 10 },
  { size: 768, pad: 8 << 10 },
];
const BATCH_KILLS = scaled(4, 60);

/**
 * The end of a File log's committed part, as src/file/log.ts documents the format (computed here on its own):
 * just after the last "\n" not preceded by a space.
 */
function committedEnd(log: Buffer): number {
  for (let i = log.lastIndexOf(0x0a); i !== -1; i = i > 0 ? log.lastIndexOf(0x0a, i - 1) : -1) {
    if (i === 0 || log[i - 1] !== 0x20) return i + 1;
  }
  return 0;
}

describe.each<Kind>(["file", "sqlite"])("%s: writers killed in the middle of large batches", (kind) => {
  it(`shows every acknowledged batch whole and no batch in part, over ${BATCH_KILLS} kills`, {
    timeout: 600_000,
  }, async () => {
    const location = kind === "file" ? join(dir, "batch-file") : join(dir, "batch-crash.db");
    const b = open(kind, location);
    const stats = { kills: 0, inFlight: 0, acked: 0, unackedLanded: 0, tornOnDisk: 0, tornWithWholeLines: 0 };
    const start = async (round: number) => {
      // A session per round: what was there before (one message) must stay untouched.
      const id = await b.createSession("batch-crash");
      await b.saveMessage(id, "user", { round, i: -1, k: 0, pad: "" });
      const shape = BATCHES[round % BATCHES.length] as { size: number; pad: number };
      const job = { kind, location, sessionId: id, round, pad: shape.pad, fork: false, batch: shape.size };
      return { id, shape, writer: new Writer(job) };
    };

    let next = await start(0);
    for (let round = 0; round < BATCH_KILLS; round++) {
      const { id, shape, writer } = next;
      await writer.until(/^ready$/);
      writer.go();
      await writer.until(/^ack /);
      if (kind === "file") {
        // Killed as soon as the log passes a random point of the next two batches: most often inside a write.
        const log = openSync(join(location, "sessions", id, "messages.jsonl"), "r");
        const target = fstatSync(log).size + Math.random() * 2 * shape.size * shape.pad;
        const deadline = Date.now() + 20_000;
        while (fstatSync(log).size < target && Date.now() < deadline) {}
        closeSync(log);
      } else {
        await sleep(Math.random() * 40);
      }
      await writer.kill();
      stats.kills++;
      if (round + 1 < BATCH_KILLS) next = await start(round + 1);

      const last = writer.lines.at(-1) ?? "";
      const inFlight = last.startsWith("save ");
      const acks = writer.lines.filter((l) => l.startsWith("ack ")).map((l) => l.split(" ").map(Number));
      stats.acked += acks.length;
      if (inFlight) stats.inFlight++;
      if (kind === "file") {
        const raw = readFileSync(join(location, "sessions", id, "messages.jsonl"));
        const end = committedEnd(raw);
        if (end < raw.length) stats.tornOnDisk++;
        if (raw.subarray(end).includes(0x0a)) stats.tornWithWholeLines++; // whole lines of a partial batch
        const lock = join(location, "locks", `${id}.lock`);
        if (existsSync(lock)) utimesSync(lock, new Date(0), new Date(0)); // left by the kill: made stale
      }

      // The message from before, then batches 0..n-1, each whole (all `size` messages, one timestamp).
      const check = async (extra: number) => {
        const stored = await b.loadMessages(id);
        expect(stored[0]?.content).toEqual({ round, i: -1, k: 0, pad: "" });
        const mine = stored.slice(1, stored.length - extra);
        expect(mine.length % shape.size).toBe(0); // never part of a batch
        const n = mine.length / shape.size;
        for (let i = 0; i < n; i++) {
          const batch = mine.slice(i * shape.size, (i + 1) * shape.size);
          const keys = batch.map((m) => m.content as unknown as BatchContent);
          expect(keys.map((c) => `${c.round}:${c.i}:${c.k}`)).toEqual(batch.map((_, k) => `${round}:${i}:${k}`));
          expect(keys.every((c) => c.pad.length === shape.pad)).toBe(true);
          expect(new Set(batch.map((m) => m.timestamp)).size).toBe(1);
        }
        expect(await b.countMessages(id)).toBe(stored.length);
        return n;
      };
      const n = await check(0);
      expect(n).toBeGreaterThanOrEqual(acks.length); // nothing acknowledged is lost
      expect(n).toBeLessThanOrEqual(acks.length + (inFlight ? 1 : 0)); // only the batch in flight may land
      stats.unackedLanded += n - acks.length;
      for (const [, i, length] of acks) expect(length).toBe(1 + ((i as number) + 1) * shape.size);

      // The next append (which cuts a partial batch off the File log) changes none of it.
      const { length } = await b.saveMessages(id, [{ role: "assistant", content: "after the kill" }]);
      expect(length).toBe(1 + n * shape.size + 1);
      expect(await check(1)).toBe(n);
      expect((await b.loadMessages(id, { last: 1 }))[0]?.content).toBe("after the kill");
      if (kind === "file") {
        const raw = readFileSync(join(location, "sessions", id, "messages.jsonl"));
        expect(committedEnd(raw)).toBe(raw.length);
      }
      await b.deleteSession(id);
    }
    await b.close();
    figure(`${kind} batch crash`, stats);
    expect(stats.acked).toBeGreaterThan(0);
    // Under RELIABILITY_FULL, some kills did leave a partial batch of whole lines on disk (what the framing is for).
    if (FULL && kind === "file") expect(stats.tornWithWholeLines).toBeGreaterThan(0);
  });
});

interface EditContent {
  round: number;
  i: number;
  k: number;
  pad: string;
}
const EDIT_KILLS = scaled(8, 80);
const EDIT_PADS = [4096, 65_536, 262_144];

/** The history after edit `i` (see crash-writer.ts): an even one replaces the last message by two, an odd one pops. */
function applyEdit(history: string[], round: number, i: number): string[] {
  return i % 2 === 0 ? [...history.slice(0, -1), `${round}:${i}:0`, `${round}:${i}:1`] : history.slice(0, -1);
}

describe("file: writers killed in the middle of replaceMessages and popMessage loops", () => {
  it(`shows the history before or after each edit, never in between, and applies a keyed retry once, over ${EDIT_KILLS} kills`, {
    timeout: 600_000,
  }, async () => {
    const location = join(dir, "edit-file");
    const b = new FileStorageBackend({ basePath: location });
    const stats = { kills: 0, acked: 0, inFlight: 0, inFlightLanded: 0, retriesApplied: 0 };
    const keyOf = (c: EditContent) => `${c.round}:${c.i}:${c.k}`;
    const history = async (id: string) =>
      (await b.loadMessages(id)).map((m) => keyOf(m.content as unknown as EditContent));
    const start = async (round: number) => {
      // A session per round: eight messages of a few KiB to 256 KiB, so that a rewrite takes a while.
      const pad = EDIT_PADS[round % EDIT_PADS.length] as number;
      const id = await b.createSession("edit-crash");
      const base = Array.from({ length: 8 }, (_, k) => ({
        role: "user" as const,
        content: { round, i: -1, k, pad: "x".repeat(pad) },
      }));
      await b.saveMessages(id, base);
      const job = { kind: "file" as const, location, sessionId: id, round, pad, fork: false, edit: true };
      return { id, pad, initial: base.map((m) => keyOf(m.content)), writer: new Writer(job) };
    };

    let next = await start(0);
    for (let round = 0; round < EDIT_KILLS; round++) {
      const { id, pad, initial, writer } = next;
      await writer.until(/^ready$/);
      writer.go();
      await writer.until(/^ack /);
      await sleep(Math.random() * 40);
      await writer.kill();
      stats.kills++;
      if (round + 1 < EDIT_KILLS) next = await start(round + 1);
      const lock = join(location, "locks", `${id}.lock`);
      if (existsSync(lock)) utimesSync(lock, new Date(0), new Date(0)); // left by the kill: made stale

      const acks = writer.lines.filter((l) => l.startsWith("ack ")).map((l) => l.split(" ").map(Number));
      const inFlight = (writer.lines.at(-1) ?? "").startsWith("edit ");
      stats.acked += acks.length;
      let before = initial;
      for (const [, i, length] of acks) {
        before = applyEdit(before, round, i as number);
        expect(before).toHaveLength(length as number);
      }
      const step = acks.length;
      const after = applyEdit(before, round, step);
      const stored = await history(id);
      // Before the edit in flight, or (only if one was in flight) after it: never a state in between.
      if (!inFlight || stored.length !== after.length || stored.join() !== after.join()) {
        expect(stored).toEqual(before);
      } else {
        stats.inFlightLanded++;
      }
      expect(await b.countMessages(id)).toBe(stored.length);
      const contents = (await b.loadMessages(id)).map((m) => m.content as unknown as EditContent);
      expect(contents.every((c) => c.pad.length === pad)).toBe(true);

      // The keyed retry of the next edit (the one in flight, if any): applied exactly once, then replayed.
      const idempotencyKey = `${round}:${step}`;
      const retry = async () => {
        if (step % 2 === 0) {
          const messages = [0, 1].map((k) => ({
            role: "user" as const,
            content: { round, i: step, k, pad: "x".repeat(pad) },
          }));
          return (await b.replaceMessages(id, before.length - 1, messages, { idempotencyKey })).length;
        }
        const popped = await b.popMessage(id, { idempotencyKey });
        expect(keyOf(popped?.content as unknown as EditContent)).toBe(before.at(-1));
        return after.length;
      };
      expect(await retry()).toBe(after.length);
      if (stored.join() === before.join()) stats.retriesApplied++;
      expect(await history(id)).toEqual(after);
      expect(await retry()).toBe(after.length);
      expect(await history(id)).toEqual(after);
      expect(await b.countMessages(id)).toBe(after.length);
      if (inFlight) stats.inFlight++;
      await b.deleteSession(id);
    }
    await b.close();
    figure("file edit crash", stats);
    expect(stats.acked).toBeGreaterThan(0);
  });
});
