// Several processes on one directory: the File backend's locks and atomic renames, tested for real.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { FileStorageBackend } from "../src/file.js";

const root = mkdtempSync(join(tmpdir(), "agentix-file-processes-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const fixture = fileURLToPath(new URL("./fixtures/file-writer.ts", import.meta.url));
const metaFixture = fileURLToPath(new URL("./fixtures/file-meta-killed.ts", import.meta.url));

interface Job {
  basePath: string;
  sessionId: string;
  writer: number;
  count: number;
  forkEvery: number;
  pad: number;
  batches?: number;
  open?: boolean;
  cas?: boolean;
}

interface Outcome {
  code: number | null;
  signal: string | null;
  forks: string[];
  lengths: number[];
  created: boolean;
  conflicts: number;
}

/** Starts a writer process; `ready` once it waits for the go file, `done` with what it reported. */
function writer(job: Job) {
  const child = spawn(process.execPath, ["--import", "tsx", fixture, JSON.stringify(job)], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  child.stdout.on("data", (chunk: Buffer) => {
    stdout += chunk.toString();
    if (stdout.startsWith("ready\n")) onReady();
  });
  child.stderr.on("data", (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const done = new Promise<Outcome>((resolve, reject) => {
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (code !== 0 && signal === null) reject(new Error(`writer ${job.writer} exited with ${code}: ${stderr}`));
      const last = stdout.trim().split("\n").at(-1) ?? "";
      const reported = last.startsWith("{") ? (JSON.parse(last) as Omit<Outcome, "code" | "signal">) : undefined;
      resolve({ code, signal, forks: [], lengths: [], created: false, conflicts: 0, ...reported });
    });
  });
  return { child, ready, done };
}

describe("FileStorageBackend with several processes", () => {
  it("loses no append and no fork, and keeps each writer's order", async () => {
    const basePath = join(root, "writers");
    const b = new FileStorageBackend({ basePath });
    const source = await b.createSession("agent", { cwd: "/shared" });
    const writers = 4;
    const count = 300;
    const forkEvery = 60;
    const jobs = Array.from({ length: writers }, (_, w) =>
      writer({ basePath, sessionId: source, writer: w, count, forkEvery, pad: 0 }),
    );
    await Promise.all(jobs.map((j) => j.ready));
    writeFileSync(`${basePath}.go`, "");
    const results = await Promise.all(jobs.map((j) => j.done));

    const messages = await b.loadMessages(source);
    const contents = messages.map((m) => m.content as { w: number; i: number });
    expect(messages).toHaveLength(writers * count);
    expect(new Set(contents.map((c) => `${c.w}:${c.i}`)).size).toBe(writers * count);
    for (let w = 0; w < writers; w++) {
      expect(contents.filter((c) => c.w === w).map((c) => c.i)).toEqual(Array.from({ length: count }, (_, i) => i));
    }
    // The writers really ran at once: their messages interleave.
    const switches = contents.filter((c, k) => k > 0 && c.w !== contents[k - 1]?.w).length;
    expect(switches).toBeGreaterThan(writers);
    for (let k = 1; k < messages.length; k++) {
      expect((messages[k]?.timestamp as string) >= (messages[k - 1]?.timestamp as string)).toBe(true);
    }
    expect((await b.getSession(source))?.updated_at).toBe(messages.at(-1)?.timestamp);

    // Every fork is a snapshot: a prefix of the source's log that holds the forking writer's own last append.
    const forks = results.flatMap((r, w) => r.forks.map((id, k) => ({ id, w, i: (k + 1) * forkEvery - 1 })));
    expect(forks).toHaveLength(writers * (count / forkEvery));
    for (const fork of forks) {
      const copied = await b.loadMessages(fork.id);
      expect(copied).toStrictEqual(messages.slice(0, copied.length));
      expect(copied.map((m) => m.content)).toContainEqual({ w: fork.w, i: fork.i, pad: "" });
      expect((await b.getSession(fork.id))?.metadata).toStrictEqual({ cwd: "/shared" });
    }
    expect(await b.listSessions("agent", { cwd: "/shared" })).toHaveLength(1 + forks.length);
    expect(readdirSync(join(basePath, "locks"))).toEqual([]);
    expect(readdirSync(join(basePath, "tmp"))).toEqual([]);
    await b.close();
  });

  it("appends batches from several processes: each contiguous, none lost, every returned length exact", async () => {
    const basePath = join(root, "batches");
    const b = new FileStorageBackend({ basePath });
    const sessionId = randomUUID(); // opened by all the writers at once: exactly one creates it
    const writers = 4;
    const count = 80;
    const batches = 4;
    const jobs = Array.from({ length: writers }, (_, w) =>
      writer({ basePath, sessionId, writer: w, count, forkEvery: 0, pad: w % 2 === 0 ? 0 : 3000, batches, open: true }),
    );
    await Promise.all(jobs.map((j) => j.ready));
    writeFileSync(`${basePath}.go`, "");
    const results = await Promise.all(jobs.map((j) => j.done));

    expect(results.filter((r) => r.created)).toHaveLength(1);
    const messages = await b.loadMessages(sessionId);
    const sizeOf = (w: number, i: number) => 1 + ((i + w) % batches);
    let total = 0;
    for (let w = 0; w < writers; w++) for (let i = 0; i < count; i++) total += sizeOf(w, i);
    expect(messages).toHaveLength(total);
    expect(await b.countMessages(sessionId)).toBe(total);
    // Each batch sits exactly where the length its append returned says: right before that length, whole, with
    // one timestamp. Together the batches cover the log, so none is lost and nothing else is there.
    const covered = new Set<number>();
    for (const [w, { lengths }] of results.entries()) {
      expect(lengths).toHaveLength(count);
      for (const [i, length] of lengths.entries()) {
        const size = sizeOf(w, i);
        const batch = messages.slice(length - size, length);
        expect(batch.map((m) => m.content)).toStrictEqual(
          Array.from({ length: size }, (_, k) => ({ w, i, k, pad: "x".repeat(w % 2 === 0 ? 0 : 3000) })),
        );
        expect(new Set(batch.map((m) => m.timestamp)).size).toBe(1);
        for (let p = length - size; p < length; p++) covered.add(p);
        if (i > 0) expect(length).toBeGreaterThan(lengths[i - 1] as number);
      }
    }
    expect(covered.size).toBe(total);
    // The writers really ran at once: their batches interleave.
    const contents = messages.map((m) => m.content as { w: number });
    expect(contents.filter((c, k) => k > 0 && c.w !== contents[k - 1]?.w).length).toBeGreaterThan(writers);
    for (let k = 1; k < messages.length; k++) {
      expect((messages[k]?.timestamp as string) >= (messages[k - 1]?.timestamp as string)).toBe(true);
    }
    expect((await b.getSession(sessionId))?.updated_at).toBe(messages.at(-1)?.timestamp);
    expect(await b.listSessions("agent", { cwd: "/shared" })).toHaveLength(1);
    expect(readdirSync(join(basePath, "locks"))).toEqual([]);
    expect(readdirSync(join(basePath, "tmp"))).toEqual([]);
    await b.close();
  });

  it("4 processes in compare-and-swap loops (expectedLength, retried on ConflictError) lose nothing", async () => {
    const basePath = join(root, "cas");
    const b = new FileStorageBackend({ basePath });
    const sessionId = await b.createSession("agent");
    const writers = 4;
    const count = 60;
    const jobs = Array.from({ length: writers }, (_, w) =>
      writer({ basePath, sessionId, writer: w, count, forkEvery: 0, pad: 0, cas: true }),
    );
    await Promise.all(jobs.map((j) => j.ready));
    writeFileSync(`${basePath}.go`, "");
    const results = await Promise.all(jobs.map((j) => j.done));

    const messages = await b.loadMessages(sessionId);
    expect(messages).toHaveLength(writers * count * 2);
    expect(await b.countMessages(sessionId)).toBe(messages.length);
    const contents = messages.map((m) => m.content as { w: number; i: number; k: number });
    // Each batch whole and where its returned length says; each writer's batches in its order.
    for (const [w, { lengths }] of results.entries()) {
      expect(lengths).toHaveLength(count);
      for (const [i, length] of lengths.entries()) {
        expect(contents.slice(length - 2, length)).toEqual([
          { w, i, k: 0 },
          { w, i, k: 1 },
        ]);
      }
      expect(contents.filter((c) => c.w === w && c.k === 0).map((c) => c.i)).toEqual(
        Array.from({ length: count }, (_, i) => i),
      );
    }
    expect(new Set(results.flatMap((r) => r.lengths)).size).toBe(writers * count);
    // They really raced: some compare-and-swaps failed and were retried.
    expect(results.reduce((sum, r) => sum + r.conflicts, 0)).toBeGreaterThan(0);
    expect(readdirSync(join(basePath, "locks"))).toEqual([]);
    await b.close();
  });

  it("survives a writer killed with SIGKILL in the middle of large appends", async () => {
    const basePath = join(root, "killed");
    const b = new FileStorageBackend({ basePath });
    const source = await b.createSession("agent");
    const log = join(basePath, "sessions", source, "messages.jsonl");
    const pad = 8 << 20;
    const job = writer({ basePath, sessionId: source, writer: 0, count: 1_000_000, forkEvery: 0, pad });
    await job.ready;
    writeFileSync(`${basePath}.go`, "");
    while (statSync(log).size < 5 * pad) await new Promise((resolve) => setTimeout(resolve, 5));
    job.child.kill("SIGKILL");
    expect((await job.done).signal).toBe("SIGKILL");

    const survived = await b.loadMessages(source);
    expect(survived.length).toBeGreaterThanOrEqual(4); // the fifth may be the line torn by the kill
    expect(survived.map((m) => (m.content as { i: number }).i)).toEqual(survived.map((_, i) => i));
    expect((await b.getSession(source))?.updated_at).toBe(survived.at(-1)?.timestamp);
    // Killed while holding the lock, it left the lock behind: it is taken over once stale (here: made stale).
    const lock = join(basePath, "locks", `${source}.lock`);
    if (existsSync(lock)) utimesSync(lock, new Date(0), new Date(0));
    await b.saveMessage(source, "user", "after the crash");
    const text = readFileSync(log, "utf8");
    expect(text.endsWith("\n")).toBe(true);
    const lines = text.slice(0, -1).split("\n");
    expect(lines).toHaveLength(survived.length + 1);
    expect(JSON.parse(lines.at(-1) as string).content).toBe("after the crash");
    expect((await b.loadMessages(source)).slice(0, -1)).toStrictEqual(survived);
    await b.close();
  });

  // An edit with metadata renames two files (src/file/session.ts): killed before each of the three renames, the
  // session comes back as all old or all new, and stays so through the edits after it.
  const killedAt = ["pending", "log", "plain"] as const;
  const ops = { save: ["a", "b", "new"], replace: ["a", "new"], pop: ["a"] } as const;
  describe.each(killedAt)("a writer killed with SIGKILL before the %s rename of an edit with metadata", (at) => {
    it.each(Object.keys(ops) as Array<keyof typeof ops>)("%s: no torn state, also after the next edits", async (op) => {
      const basePath = mkdtempSync(join(root, `meta-${at}-${op}-`));
      const b = new FileStorageBackend({ basePath });
      const id = await b.createSession("agent", { cwd: "/old", step: "old" });
      await b.saveMessages(id, [
        { role: "user", content: "a" },
        { role: "user", content: "b" },
      ]);
      const child = spawn(
        process.execPath,
        ["--import", "tsx", metaFixture, JSON.stringify({ basePath, sessionId: id, op, at })],
        {
          stdio: ["ignore", "pipe", "pipe"],
        },
      );
      let stderr = "";
      child.stderr.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      const signal = await new Promise((resolve) => child.on("exit", (_code, sig) => resolve(sig)));
      expect(signal, stderr).toBe("SIGKILL");

      const committed = at === "plain";
      const expected = committed ? ops[op] : ["a", "b"];
      const metadata = committed ? { cwd: "/new", step: "new" } : { cwd: "/old", step: "old" };
      const fresh = new FileStorageBackend({ basePath });
      expect((await fresh.loadMessages(id)).map((m) => m.content)).toEqual(expected);
      expect((await fresh.getSession(id))?.metadata).toStrictEqual(metadata);
      expect((await fresh.listSessions("agent", { cwd: metadata.cwd })).map((s) => s.session_id)).toEqual([id]);
      expect(await fresh.listSessions("agent", { cwd: committed ? "/old" : "/new" })).toEqual([]);

      // The killed writer's lock is taken over once stale (here: made stale).
      const lock = join(basePath, "locks", `${id}.lock`);
      if (existsSync(lock)) utimesSync(lock, new Date(0), new Date(0));
      // An append keeps the log's inode; a replace writes a new log: the pending record is settled before it.
      await fresh.saveMessage(id, "user", "after");
      expect((await fresh.getSession(id))?.metadata).toStrictEqual(metadata);
      await fresh.replaceMessages(id, 0, [{ role: "user", content: "replaced" }]);
      expect((await fresh.loadMessages(id)).map((m) => m.content)).toEqual(["replaced"]);
      expect((await fresh.getSession(id))?.metadata).toStrictEqual(metadata);
      expect(readFileSync(join(basePath, "sessions", id, "session.json"), "utf8")).not.toContain("commit_ino");
      await fresh.close();
      await b.close();
    });
  });
});
