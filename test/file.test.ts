import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, sep } from "node:path";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { AgentixStorageError, SessionNotFoundError, ValidationError } from "../src/core/errors.js";
import { bytesRead } from "../src/file/io.js";
import { writeCount } from "../src/file/log.js";
import { FileStorageBackend } from "../src/file.js";
import { runConformanceSuite } from "../src/testing/index.js";

const root = mkdtempSync(join(tmpdir(), "agentix-file-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
afterEach(() => {
  vi.useRealTimers();
});
const fresh = () => mkdtempSync(join(root, "base-"));
const freeze = (iso: string) => vi.useFakeTimers({ toFake: ["Date"], now: new Date(iso) });

runConformanceSuite("FileStorageBackend", { create: () => new FileStorageBackend({ basePath: fresh() }) });
runConformanceSuite("FileStorageBackend (fsync)", {
  create: () => new FileStorageBackend({ basePath: fresh(), fsync: true }),
});

/** Every file and directory under `dir`, as paths relative to it with "/" separators. */
function walk(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).map((p) => p.split(sep).join("/"));
}

const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";
const AGENT = "[a-z0-9_-]{1,48}\\.[0-9a-f]{64}";
const LAYOUT = new RegExp(
  `^(sessions|agents|locks|tmp|sessions/${UUID}|sessions/${UUID}/(session\\.json|messages\\.jsonl|messages\\.count|keys\\.jsonl)|agents/${AGENT}|agents/${AGENT}/(${UUID}|index\\.slots))$`,
);

describe("FileStorageBackend options", () => {
  it("rejects unknown and mistyped options", () => {
    expect(() => new FileStorageBackend({ basePath: 1 } as never)).toThrow(ValidationError);
    expect(() => new FileStorageBackend({ basePath: "" })).toThrow(ValidationError);
    expect(() => new FileStorageBackend({ fsync: "yes" } as never)).toThrow(ValidationError);
    expect(() => new FileStorageBackend({ path: "/tmp/x" } as never)).toThrow(/FileStorageBackend options/);
  });

  it("stores under $HOME/.agentix/projects by default, and expands ~ in basePath", async () => {
    const home = fresh();
    const saved = process.env.HOME;
    process.env.HOME = home;
    try {
      const b = new FileStorageBackend();
      expect(b.basePath).toBe(join(home, ".agentix", "projects"));
      const id = await b.createSession("agent");
      expect(existsSync(join(home, ".agentix", "projects", "sessions", id, "session.json"))).toBe(true);
      expect(new FileStorageBackend({ basePath: "~/elsewhere" }).basePath).toBe(join(home, "elsewhere"));
      await b.close();
    } finally {
      process.env.HOME = saved;
    }
  });
});

describe("FileStorageBackend layout", () => {
  it("writes a session.json, a JSONL log with one message per line and an index entry per agent", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("My Agent", { cwd: "/work" });
    await b.saveMessage(id, "user", "hello\nworld");
    await b.saveMessage(id, "assistant", { parts: [1] });
    const record = await b.getSession(id);
    const stored = JSON.parse(readFileSync(join(base, "sessions", id, "session.json"), "utf8"));
    expect(stored).toStrictEqual({ ...record, updated_at: record?.created_at });
    const lines = readFileSync(join(base, "sessions", id, "messages.jsonl"), "utf8").split("\n");
    expect(lines).toHaveLength(3);
    expect(lines.at(-1)).toBe("");
    expect(lines.slice(0, 2).map((l) => JSON.parse(l))).toStrictEqual(await b.loadMessages(id));
    const agents = readdirSync(join(base, "agents"));
    expect(agents).toEqual([expect.stringMatching(/^my_agent\.[0-9a-f]{64}$/)]);
    expect(readdirSync(join(base, "agents", agents[0] as string)).sort()).toEqual([id, "index.slots"]);
    for (const path of walk(base)) expect(path).toMatch(LAYOUT);
    expect(readdirSync(join(base, "locks"))).toEqual([]);
    expect(readdirSync(join(base, "tmp"))).toEqual([]);
    await b.deleteSession(id);
    expect(walk(base).sort()).toEqual([
      "agents",
      `agents/${agents[0]}`,
      `agents/${agents[0]}/index.slots`,
      "locks",
      "sessions",
      "tmp",
    ]);
    await b.close();
  });

  it("reads nothing and creates nothing until the first write", async () => {
    const base = join(fresh(), "not-yet");
    const b = new FileStorageBackend({ basePath: base });
    expect(await b.listSessions("a")).toEqual([]);
    expect(await b.scanSessions()).toEqual([]);
    expect(await b.getSession("00000000-0000-7000-8000-000000000000")).toBeNull();
    await b.deleteSession("00000000-0000-7000-8000-000000000000");
    await expect(b.saveMessage("00000000-0000-7000-8000-000000000000", "user", "x")).rejects.toThrow(
      SessionNotFoundError,
    );
    expect(existsSync(base)).toBe(false);
    await b.close();
  });

  it("shares one directory between backends (as between processes)", async () => {
    const base = fresh();
    const a = new FileStorageBackend({ basePath: base });
    const b = new FileStorageBackend({ basePath: base });
    const id = a.createSessionSync("shared", { cwd: "/x" });
    b.saveMessageSync(id, "user", "from b");
    a.saveMessageSync(id, "assistant", "from a");
    expect(b.loadMessagesSync(id).map((m) => m.content)).toEqual(["from b", "from a"]);
    expect(b.listSessionsSync("shared", { cwd: "/x" })).toStrictEqual(a.listSessionsSync("shared"));
    b.deleteSessionSync(id);
    expect(a.getSessionSync(id)).toBeNull();
    a.closeSync();
    b.closeSync();
  });
});

describe("FileStorageBackend keeps every path inside its base directory", () => {
  const hostile = [
    "..",
    ".",
    "../../../etc/passwd",
    "/",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "C:\\Windows",
    "~",
    "%2e%2e%2f",
    ".hidden",
    "con",
    "nul.txt",
    "Agent",
    "agent",
    "a".repeat(256),
    "€".repeat(256),
    "👩‍💻".repeat(51),
    "\ud83d\ude80".repeat(128),
    ".".repeat(256),
    "/".repeat(256),
  ];

  it("stores hostile and 256-character agent ids under short, distinct, safe names", async () => {
    const parent = fresh();
    const base = join(parent, "base");
    const b = new FileStorageBackend({ basePath: base });
    const ids = new Map<string, string>();
    for (const agent of hostile) {
      const id = await b.createSession(agent, { cwd: agent });
      await b.saveMessage(id, "user", agent);
      ids.set(agent, id);
    }
    for (const agent of hostile) {
      const listed = await b.listSessions(agent, { cwd: agent });
      expect(listed.map((s) => [s.session_id, s.agent_id])).toEqual([[ids.get(agent), agent]]);
      expect((await b.scanSessions({ agentId: agent })).map((s) => s.session_id)).toEqual([ids.get(agent)]);
    }
    expect(readdirSync(parent)).toEqual(["base"]);
    expect(readdirSync(join(base, "agents"))).toHaveLength(hostile.length);
    for (const path of walk(base)) {
      expect(path).toMatch(LAYOUT);
      for (const name of path.split("/")) expect(Buffer.byteLength(name)).toBeLessThanOrEqual(255);
    }
    await b.close();
  });

  it("never resolves a session id that is a path", async () => {
    const parent = fresh();
    const base = join(parent, "base");
    const b = new FileStorageBackend({ basePath: base });
    const real = await b.createSession("agent");
    // A session directory one level up, where "../<id>" would lead if ids were paths.
    mkdirSync(join(base, "sessions", "x"), { recursive: true });
    writeFileSync(join(base, "outside.json"), "{}");
    for (const id of [`../${real}`, `x/../${real}`, `../sessions/${real}`, "../outside.json", "..", `${real}/..`]) {
      expect(await b.getSession(id)).toBeNull();
      await expect(b.saveMessage(id, "user", "x")).rejects.toThrow(SessionNotFoundError);
      await expect(b.loadMessages(id)).rejects.toThrow(SessionNotFoundError);
      await expect(b.forkSession(id)).rejects.toThrow(SessionNotFoundError);
      await b.deleteSession(id);
    }
    expect(readdirSync(parent)).toEqual(["base"]);
    expect(readFileSync(join(base, "outside.json"), "utf8")).toBe("{}");
    expect(await b.getSession(real)).not.toBeNull();
    await b.close();
  });
});

describe("FileStorageBackend crash safety", () => {
  async function sessionWithTornLine() {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    freeze("2035-01-01T00:00:01.000Z");
    await b.saveMessage(id, "user", "one");
    freeze("2035-01-01T00:00:02.000Z");
    await b.saveMessage(id, "assistant", "two");
    const log = join(base, "sessions", id, "messages.jsonl");
    // What a writer killed in the middle of its append leaves: half a line, no "\n".
    const line = JSON.stringify({ role: "user", content: "x".repeat(100_000), timestamp: "2035-01-01T00:00:09.000Z" });
    appendFileSync(log, line.slice(0, line.length / 2));
    return { base, b, id, log };
  }

  it("ignores a torn last line on every read", async () => {
    const { base, b, id } = await sessionWithTornLine();
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["one", "two"]);
    expect((await b.loadMessages(id, { last: 1 })).map((m) => m.content)).toEqual(["two"]);
    expect((await b.loadMessages(id, { last: 5 })).map((m) => m.content)).toEqual(["one", "two"]);
    expect((await b.getSession(id))?.updated_at).toBe("2035-01-01T00:00:02.000Z");
    expect((await b.listSessions("agent"))[0]?.updated_at).toBe("2035-01-01T00:00:02.000Z");
    freeze("2035-01-01T00:00:03.000Z");
    const fork = await b.forkSession(id);
    expect((await b.loadMessages(fork)).map((m) => m.content)).toEqual(["one", "two"]);
    expect(readFileSync(join(base, "sessions", fork, "messages.jsonl"), "utf8").endsWith("}\n")).toBe(true);
    expect((await b.getSession(fork))?.updated_at).toBe("2035-01-01T00:00:03.000Z");
    await b.close();
  });

  it("drops the torn fragment on the next append, leaving a log of whole lines", async () => {
    const { b, id, log } = await sessionWithTornLine();
    freeze("2035-01-01T00:00:03.000Z");
    await b.saveMessage(id, "user", "three");
    const text = readFileSync(log, "utf8");
    expect(text.endsWith("\n")).toBe(true);
    expect(
      text
        .slice(0, -1)
        .split("\n")
        .map((l) => JSON.parse(l).content),
    ).toEqual(["one", "two", "three"]);
    expect(await b.loadMessages(id)).toStrictEqual([
      { role: "user", content: "one", timestamp: "2035-01-01T00:00:01.000Z" },
      { role: "assistant", content: "two", timestamp: "2035-01-01T00:00:02.000Z" },
      { role: "user", content: "three", timestamp: "2035-01-01T00:00:03.000Z" },
    ]);
    expect((await b.getSession(id))?.updated_at).toBe("2035-01-01T00:00:03.000Z");
    await b.close();
  });

  it("repairs a log that is nothing but a torn line", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base, fsync: true });
    const id = await b.createSession("agent");
    appendFileSync(join(base, "sessions", id, "messages.jsonl"), '{"role":"us');
    expect(await b.loadMessages(id)).toEqual([]);
    expect((await b.getSession(id))?.updated_at).toBe((await b.getSession(id))?.created_at);
    await b.saveMessage(id, "user", "first");
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["first"]);
    await b.close();
  });

  it("takes over a lock left by a crashed process once it is stale", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    const lock = join(base, "locks", `${id}.lock`);
    mkdirSync(lock);
    const past = new Date(Date.now() - 60_000);
    utimesSync(lock, past, past);
    await b.saveMessage(id, "user", "after the crash");
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["after the crash"]);
    expect(existsSync(lock)).toBe(false);
    await b.close();
  });

  it("ignores what a crash left half-done: an index entry without a session, an old temporary directory", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    const [agentDir] = readdirSync(join(base, "agents"));
    const ghost = "01890000-0000-7000-8000-000000000000";
    writeFileSync(join(base, "agents", agentDir as string, ghost), "");
    const stale = join(base, "tmp", `${ghost}.0123456789ab`);
    mkdirSync(stale);
    writeFileSync(join(stale, "session.json"), "{");
    const past = new Date(Date.now() - 2 * 3_600_000);
    utimesSync(stale, past, past);
    expect((await b.listSessions("agent")).map((s) => s.session_id)).toEqual([id]);
    expect(await b.getSession(ghost)).toBeNull();
    const fresher = new FileStorageBackend({ basePath: base });
    await fresher.createSession("agent");
    expect(existsSync(stale)).toBe(false);
    await b.close();
    await fresher.close();
  });
});

describe("FileStorageBackend reads only what it needs", () => {
  it("appends, reads updated_at and loads the last N without parsing the start of the log", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    for (let i = 0; i < 5; i++) await b.saveMessage(id, "user", `m${i}`);
    const log = join(base, "sessions", id, "messages.jsonl");
    // Garbage in the first line: a full parse fails, a read from the end does not notice.
    writeFileSync(log, readFileSync(log, "utf8").replace('{"role"', "{garbage"));
    await expect(b.loadMessages(id)).rejects.toThrow(AgentixStorageError);
    await b.saveMessage(id, "assistant", "m5");
    expect((await b.loadMessages(id, { last: 3 })).map((m) => m.content)).toEqual(["m3", "m4", "m5"]);
    const [newest] = await b.loadMessages(id, { last: 1 });
    expect((await b.getSession(id))?.updated_at).toBe(newest?.timestamp);
    await b.close();
  });

  it("never rewrites session.json on append", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent", { big: "x".repeat(10_000) });
    const meta = join(base, "sessions", id, "session.json");
    const before = { text: readFileSync(meta, "utf8"), stat: statSync(meta) };
    for (let i = 0; i < 10; i++) await b.saveMessage(id, "user", String(i));
    const after = statSync(meta);
    expect(readFileSync(meta, "utf8")).toBe(before.text);
    expect([after.ino, after.mtimeMs]).toEqual([before.stat.ino, before.stat.mtimeMs]);
    await b.close();
  });

  it("reads only the head of session.json on append", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent", { note: "x" });
    const meta = join(base, "sessions", id, "session.json");
    writeFileSync(meta, readFileSync(meta, "utf8").replace('"note"', "note"));
    await expect(b.getSession(id)).rejects.toThrow(AgentixStorageError);
    await b.saveMessage(id, "user", "still appends");
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["still appends"]);
    await b.close();
  });

  it("loads the last N across large lines and read chunks", async () => {
    const b = new FileStorageBackend({ basePath: fresh() });
    const id = await b.createSession("agent");
    const sizes = [1, 70_000, 3, 300_000, 65_535, 0, 2];
    for (const [i, n] of sizes.entries()) await b.saveMessage(id, "user", `${i}:${"é".repeat(n)}`);
    const all = await b.loadMessages(id);
    for (let last = 1; last <= sizes.length + 1; last++) {
      expect(await b.loadMessages(id, { last })).toStrictEqual(all.slice(-last));
    }
    await b.close();
  });
});

describe("FileStorageBackend updated_at", () => {
  it("reports the later of the fork time and the newest message's timestamp", async () => {
    const b = new FileStorageBackend({ basePath: fresh() });
    const id = await b.createSession("agent");
    freeze("2036-01-01T00:00:10.000Z");
    await b.saveMessage(id, "user", "from a clock ahead");
    freeze("2036-01-01T00:00:05.000Z");
    const behind = await b.forkSession(id);
    expect(await b.getSession(behind)).toMatchObject({
      created_at: "2036-01-01T00:00:05.000Z",
      updated_at: "2036-01-01T00:00:10.000Z",
    });
    await b.saveMessage(behind, "user", "raised");
    expect((await b.loadMessages(behind, { last: 1 }))[0]?.timestamp).toBe("2036-01-01T00:00:10.000Z");
    freeze("2036-01-01T00:00:20.000Z");
    const ahead = await b.forkSession(id);
    expect((await b.getSession(ahead))?.updated_at).toBe("2036-01-01T00:00:20.000Z");
    freeze("2036-01-01T00:00:15.000Z");
    await b.saveMessage(ahead, "user", "raised to the fork time");
    expect((await b.loadMessages(ahead, { last: 1 }))[0]?.timestamp).toBe("2036-01-01T00:00:20.000Z");
    expect((await b.getSession(ahead))?.updated_at).toBe("2036-01-01T00:00:20.000Z");
    await b.close();
  });
});

describe("FileStorageBackend batches", () => {
  const logOf = (base: string, id: string) => join(base, "sessions", id, "messages.jsonl");
  const countOf = (base: string, id: string) => join(base, "sessions", id, "messages.count");

  it("writes a batch as one line per message, every line but the last continued by a space", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessage(id, "user", "single");
    await b.saveMessages(id, [
      { role: "assistant", content: "a" },
      { role: "tool", content: { result: [1, 2] } },
      { role: "assistant", content: "c" },
    ]);
    await b.saveMessages(id, [{ role: "user", content: "batch of one" }]);
    const text = readFileSync(logOf(base, id), "utf8");
    const messages = await b.loadMessages(id);
    const [t0, t1, , , t2] = messages.map((m) => m.timestamp);
    expect(text).toBe(
      `{"role":"user","content":"single","timestamp":"${t0}"}\n` +
        `{"role":"assistant","content":"a","timestamp":"${t1}"} \n` +
        `{"role":"tool","content":{"result":[1,2]},"timestamp":"${t1}"} \n` +
        `{"role":"assistant","content":"c","timestamp":"${t1}"}\n` +
        `{"role":"user","content":"batch of one","timestamp":"${t2}"}\n`,
    );
    // Each line is still one JSON message, as any JSONL reader sees it.
    expect(
      text
        .trimEnd()
        .split("\n")
        .map((line) => JSON.parse(line)),
    ).toStrictEqual(messages);
    await b.close();
  });

  it("reads a log written before batches existed unchanged, and appends to it", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = "01890000-0000-7000-8000-0000000000aa";
    // A v1 session as agentix wrote it: no messages.count, lines without framing, one hand-made (other key order).
    const dir = join(base, "sessions", id);
    mkdirSync(dir, { recursive: true });
    const record = {
      session_id: id,
      created_at: "2030-01-01T00:00:00.000Z",
      updated_at: "2030-01-01T00:00:00.000Z",
      agent_id: "v1",
      metadata: { cwd: "/old" },
    };
    writeFileSync(join(dir, "session.json"), `${JSON.stringify(record, null, 2)}\n`);
    const v1 = [
      { role: "user", content: "one", timestamp: "2030-01-01T00:00:01.000Z" },
      { role: "assistant", content: { parts: ["two"] }, timestamp: "2030-01-01T00:00:02.000Z" },
      { role: "system", content: "three", timestamp: "2030-01-01T00:00:03.000Z" },
    ];
    const lines = v1.map((m) => `${JSON.stringify(m)}\n`);
    lines[1] = `${JSON.stringify({ timestamp: v1[1]?.timestamp, content: v1[1]?.content, role: "assistant" })}\n`;
    writeFileSync(join(dir, "messages.jsonl"), lines.join(""));
    mkdirSync(join(base, "agents"), { recursive: true });

    expect(await b.loadMessages(id)).toStrictEqual(v1);
    expect(await b.loadMessages(id, { last: 2 })).toStrictEqual(v1.slice(1));
    expect(await b.countMessages(id)).toBe(3);
    expect((await b.getSession(id))?.updated_at).toBe("2030-01-01T00:00:03.000Z");
    expect(existsSync(countOf(base, id))).toBe(false); // reads write nothing
    expect(
      (
        await b.saveMessages(id, [
          { role: "user", content: "four" },
          { role: "assistant", content: "five" },
        ])
      ).length,
    ).toBe(5);
    expect((await b.loadMessages(id)).slice(0, 3)).toStrictEqual(v1);
    expect(readFileSync(join(dir, "messages.jsonl"), "utf8").startsWith(lines.join(""))).toBe(true);
    expect(existsSync(countOf(base, id))).toBe(true);
    expect(await b.countMessages(id)).toBe(5);
    await b.close();
  });

  it("ignores a batch cut at any byte as a whole, and the next append cuts it off", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessage(id, "user", "one");
    await b.saveMessages(id, [
      { role: "assistant", content: "two" },
      { role: "user", content: "three" },
    ]);
    const before = await b.loadMessages(id);
    const log = logOf(base, id);
    const start = statSync(log).size;
    const batch = [
      { role: "assistant" as const, content: "é€👩‍💻" },
      { role: "tool" as const, content: { x: [1] } },
      { role: "assistant" as const, content: "" },
    ];
    await b.saveMessages(id, batch);
    const whole = readFileSync(log);
    expect(whole.length).toBeGreaterThan(start + 100);
    const fork = (length: number) => b.forkSession(id).then(async (f) => [await b.loadMessages(f), length] as const);

    for (let cut = start + 1; cut < whole.length; cut++) {
      // What a writer killed after `cut - start` bytes of its write leaves; the count record is the one from
      // before the batch (the writer died before rewriting it), or, in every other round, one that claims
      // the whole batch (a record that outlived its log in a power loss).
      writeFileSync(log, whole.subarray(0, cut));
      const claimed = cut % 2 === 0 ? { count: 3, bytes: start } : { count: 6, bytes: whole.length };
      writeCount(countOf(base, id), { ...claimed, ino: statSync(log).ino });
      expect(await b.loadMessages(id)).toStrictEqual(before);
      expect(await b.loadMessages(id, { last: 1 })).toStrictEqual(before.slice(-1));
      expect(await b.loadMessages(id, { last: 4 })).toStrictEqual(before);
      expect(await b.countMessages(id)).toBe(3);
      expect((await b.getSession(id))?.updated_at).toBe(before.at(-1)?.timestamp);
      if (cut % 37 === 0) {
        const [copied] = await fork(cut);
        expect(copied).toStrictEqual(before);
      }
      const { length } = await b.saveMessages(id, [{ role: "user", content: `after ${cut}` }]);
      expect(length).toBe(4);
      const after = await b.loadMessages(id);
      expect(after.slice(0, 3)).toStrictEqual(before);
      expect(after.map((m) => m.content)[3]).toBe(`after ${cut}`);
      const repaired = readFileSync(log);
      expect(repaired.subarray(0, start)).toStrictEqual(whole.subarray(0, start));
      expect(repaired.toString("utf8", start)).toBe(`${JSON.stringify(after[3])}\n`);
      expect(await b.countMessages(id)).toBe(4);
    }
    expect(readdirSync(join(base, "tmp"))).toEqual([]);
    await b.close();
  });

  it("a fork of a log ending in a partial batch holds its committed part only, and counts it", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessages(id, [
      { role: "user", content: "a" },
      { role: "assistant", content: "b" },
    ]);
    const log = logOf(base, id);
    const committed = readFileSync(log);
    appendFileSync(log, '{"role":"user","content":"torn 1","timestamp":"2099-01-01T00:00:00.000Z"} \n{"role":"us');
    const fork = await b.forkSession(id);
    expect(readFileSync(logOf(base, fork))).toStrictEqual(committed);
    expect(await b.countMessages(fork)).toBe(2);
    expect(existsSync(countOf(base, fork))).toBe(true);
    expect((await b.saveMessages(fork, [{ role: "user", content: "c" }])).length).toBe(3);
    await b.close();
  });
});

describe("FileStorageBackend message count", () => {
  const countOf = (base: string, id: string) => join(base, "sessions", id, "messages.count");
  const logOf = (base: string, id: string) => join(base, "sessions", id, "messages.jsonl");

  async function sessionWith(n: number) {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    for (let i = 0; i < n; i += 3) {
      await b.saveMessages(
        id,
        Array.from({ length: Math.min(3, n - i) }, (_, k) => ({ role: "user" as const, content: `m${i + k}` })),
      );
    }
    return { base, b, id, count: countOf(base, id), log: logOf(base, id) };
  }

  it("keeps a record of the count and the log size it is for, and believes it (it does not recount)", async () => {
    const { b, id, count, log } = await sessionWith(10);
    const record = JSON.parse(readFileSync(count, "utf8"));
    expect(record).toStrictEqual({
      count: 10,
      bytes: statSync(log).size,
      ino: statSync(log).ino,
      check: expect.any(String),
    });
    expect(readFileSync(count).length).toBe(128);
    // A record that lies (with a valid checksum) is believed: the count is not read from the log.
    writeCount(count, { count: 1000, bytes: statSync(log).size, ino: statSync(log).ino });
    expect(await b.countMessages(id)).toBe(1000);
    expect((await b.saveMessages(id, [{ role: "user", content: "x" }])).length).toBe(1001);
    // Only the lines after the recorded offset are counted; an offset inside a batch is not trusted.
    const ends = [...readFileSync(log, "utf8").matchAll(/\n/g)].map((m) => m.index + 1);
    writeCount(count, { count: 500, bytes: ends[2] as number, ino: statSync(log).ino });
    expect(await b.countMessages(id)).toBe(508);
    writeCount(count, { count: 500, bytes: ends[1] as number, ino: statSync(log).ino });
    expect(await b.countMessages(id)).toBe(11);
    await b.close();
  });

  it("recounts when the record is deleted, and the next append writes it again", async () => {
    const { b, id, count } = await sessionWith(7);
    rmSync(count);
    expect(await b.countMessages(id)).toBe(7);
    expect(existsSync(count)).toBe(false);
    expect((await b.saveMessages(id, [{ role: "user", content: "x" }])).length).toBe(8);
    expect(JSON.parse(readFileSync(count, "utf8")).count).toBe(8);
    expect(await b.countMessages(id)).toBe(8);
    await b.close();
  });

  it("counts on from a stale record (a writer killed before updating it)", async () => {
    const { b, id, count } = await sessionWith(4);
    const stale = readFileSync(count);
    await b.saveMessages(id, [
      { role: "user", content: "x" },
      { role: "user", content: "y" },
    ]);
    await b.saveMessage(id, "user", "z");
    writeFileSync(count, stale);
    expect(await b.countMessages(id)).toBe(7);
    expect((await b.saveMessages(id, [{ role: "user", content: "w" }])).length).toBe(8);
    expect(JSON.parse(readFileSync(count, "utf8")).count).toBe(8);
    await b.close();
  });

  it("recounts when the record is corrupt or not the log's", async () => {
    const { b, id, count, log } = await sessionWith(5);
    const good = JSON.parse(readFileSync(count, "utf8"));
    const { size, ino } = statSync(log);
    const corrupt = [
      "",
      "{",
      "garbage".repeat(30),
      "\0".repeat(128),
      readFileSync(count, "utf8").replace('"count":5', '"count":6'), // checksum no longer holds
      readFileSync(count, "utf8").slice(0, 40),
    ];
    for (const text of corrupt) {
      writeFileSync(count, text);
      expect(await b.countMessages(id)).toBe(5);
    }
    const untrusted = [
      { count: 9, bytes: size + 10, ino }, // beyond the log (a log that lost its end)
      { count: 9, bytes: size, ino: ino + 1 }, // another file's (a log replaced)
      { count: 9, bytes: size - 3, ino }, // not the end of a line
      { count: 9, bytes: -1, ino },
      { count: 1.5, bytes: size, ino },
    ];
    for (const record of untrusted) {
      writeCount(count, record);
      expect(await b.countMessages(id)).toBe(5);
    }
    expect(good.count).toBe(5);
    expect((await b.saveMessages(id, [{ role: "user", content: "x" }])).length).toBe(6);
    expect(JSON.parse(readFileSync(count, "utf8")).count).toBe(6);
    await b.close();
  });

  it("a fork and an import get a record of their own; a repair keeps the count", async () => {
    const { base, b, id, log } = await sessionWith(5);
    const fork = await b.forkSession(id);
    const forkRecord = JSON.parse(readFileSync(countOf(base, fork), "utf8"));
    expect(forkRecord).toMatchObject({ count: 5, bytes: statSync(log).size, ino: statSync(logOf(base, fork)).ino });
    const record = (await b.getSession(id)) as NonNullable<Awaited<ReturnType<typeof b.getSession>>>;
    const messages = await b.loadMessages(id);
    const other = new FileStorageBackend({ basePath: fresh() });
    expect(await other.importSession(record, messages)).toBe(true);
    expect(JSON.parse(readFileSync(countOf(other.basePath, id), "utf8")).count).toBe(5);
    expect(await other.countMessages(id)).toBe(5);
    appendFileSync(log, '{"role":"user","content":"torn"} \n');
    expect(await b.countMessages(id)).toBe(5);
    expect((await b.saveMessages(id, [{ role: "user", content: "x" }])).length).toBe(6);
    await b.close();
    await other.close();
  });
});

describe("FileStorageBackend sessions by id and metadata updates", () => {
  it("rewrites session.json on update with updated_at raised to the newest message, keeping the index entry", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent", { cwd: "/a" });
    freeze("2037-01-01T00:00:10.000Z");
    await b.saveMessage(id, "user", "from a clock ahead");
    freeze("2037-01-01T00:00:05.000Z");
    const updated = await b.updateSession(id, { metadata: { cwd: "/b", n: 1 } });
    expect(updated).toStrictEqual({
      ...updated,
      updated_at: "2037-01-01T00:00:10.000Z",
      metadata: { cwd: "/b", n: 1 },
    });
    const stored = JSON.parse(readFileSync(join(base, "sessions", id, "session.json"), "utf8"));
    expect(stored).toStrictEqual(updated);
    expect(Object.keys(stored)).toEqual(["session_id", "created_at", "updated_at", "agent_id", "metadata"]);
    const [agentDir] = readdirSync(join(base, "agents"));
    expect(readdirSync(join(base, "agents", agentDir as string)).sort()).toEqual([id, "index.slots"]);
    expect(readdirSync(join(base, "tmp"))).toEqual([]);
    expect(await b.listSessions("agent", { cwd: "/b" })).toStrictEqual([updated]);
    await b.close();
  });

  it("a session directory without a readable session is an error for openSession, not a wait", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    await b.createSession("agent");
    const id = "01890000-0000-7000-8000-0000000000bb";
    mkdirSync(join(base, "sessions", id));
    await expect(b.openSession("agent", id)).rejects.toThrow(AgentixStorageError);
    await b.close();
  });
});

describe("FileStorageBackend contract v2 part 2 on disk", () => {
  const logOf = (base: string, id: string) => join(base, "sessions", id, "messages.jsonl");
  const keysOf = (base: string, id: string) => join(base, "sessions", id, "keys.jsonl");

  it("pages through 20,000 messages 100 at a time, each page reading about its own bytes, not the log before it", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    const n = 20_000;
    for (let i = 0; i < n; i += 1000) {
      await b.saveMessages(
        id,
        Array.from({ length: 1000 }, (_, k) => ({ role: "user" as const, content: `m${i + k} ${"x".repeat(100)}` })),
      );
    }
    const logBytes = statSync(logOf(base, id)).size;
    const perPage: number[] = [];
    const seen: string[] = [];
    for (let offset = 0; ; offset += 100) {
      const before = bytesRead.total;
      const page = await b.loadMessages(id, { offset, limit: 100 });
      perPage.push(bytesRead.total - before);
      seen.push(...page.map((m) => (m.content as string).split(" ")[0] as string));
      if (page.length < 100) break;
    }
    expect(seen).toEqual(Array.from({ length: n }, (_, i) => `m${i}`));
    // A page is ~15 KiB of lines; it reads chunks of 16 KiB, then 32 KiB, … until it has them, plus the log's
    // last bytes and the mark's 32 bytes: never the ~3 MB before it.
    expect(logBytes).toBeGreaterThan(2_500_000);
    expect(Math.max(...perPage)).toBeLessThan(64 << 10);
    // Without the mark (another backend: a cold start, no position index yet), a deep page scans from the start.
    const cold = new FileStorageBackend({ basePath: base });
    const before = bytesRead.total;
    expect((await cold.loadMessages(id, { offset: 19_000, limit: 1 }))[0]?.content).toMatch(/^m19000 /);
    expect(bytesRead.total - before).toBeGreaterThan(2_000_000);
    // A mark that no longer fits the log (replaced by an edit) is not used.
    await b.replaceMessages(id, 5000, [{ role: "user", content: "new 5000" }]);
    expect((await b.loadMessages(id, { offset: 5000, limit: 2 })).map((m) => m.content)).toEqual(["new 5000"]);
    expect((await b.loadMessages(id, { offset: 4999, limit: 1 }))[0]?.content).toMatch(/^m4999 /);
    await b.close();
    await cold.close();
  });

  it("loads, pages, forks and edits a 24 MB log reading at most 4 MiB at a time", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    const big = "y".repeat(1 << 20);
    for (let i = 0; i < 24; i += 4) {
      await b.saveMessages(
        id,
        Array.from({ length: 4 }, (_, k) => ({ role: "user" as const, content: `${i + k} ${big}` })),
      );
    }
    expect(statSync(logOf(base, id)).size).toBeGreaterThan(24 << 20);
    bytesRead.largest = 0;
    const all = await b.loadMessages(id);
    expect(all.map((m) => (m.content as string).split(" ")[0])).toEqual(Array.from({ length: 24 }, (_, i) => `${i}`));
    expect(await b.loadMessages(id, { offset: 22 })).toStrictEqual(all.slice(22));
    const fork = await b.forkSession(id, { length: 23 });
    expect(await b.countMessages(fork)).toBe(23);
    expect(await b.replaceMessages(id, 1, [{ role: "user", content: "r" }])).toEqual({ length: 2 });
    expect((await b.popMessage(fork))?.content).toMatch(/^22 /);
    // A message is one line: a line of 1 MiB is read whole, in pieces of at most 4 MiB, never the log at once.
    expect(bytesRead.largest).toBeLessThanOrEqual(4 << 20);
    await b.close();
  });

  it("a fork with length copies exactly the byte prefix of the log, ending the cut batch's last line", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessage(id, "user", "one");
    await b.saveMessages(id, [
      { role: "assistant", content: "two" },
      { role: "tool", content: { three: 3 } },
      { role: "assistant", content: "four" },
    ]);
    const log = readFileSync(logOf(base, id));
    const ends = [...log.toString("latin1").matchAll(/\n/g)].map((m) => m.index + 1);
    for (const length of [0, 1, 2, 3, 4]) {
      const fork = await b.forkSession(id, { length });
      const copied = readFileSync(logOf(base, fork));
      const end = length === 0 ? 0 : (ends[length - 1] as number);
      // Inside the batch (length 2, 3) the last kept line loses the space that continued it, and nothing else.
      const expected =
        length === 2 || length === 3
          ? Buffer.concat([log.subarray(0, end - 2), Buffer.from("\n")])
          : log.subarray(0, end);
      expect(copied).toStrictEqual(expected);
      expect(await b.loadMessages(fork)).toStrictEqual((await b.loadMessages(id)).slice(0, length));
      expect(JSON.parse(readFileSync(join(base, "sessions", fork, "messages.count"), "utf8"))).toMatchObject({
        count: length,
        bytes: copied.length,
      });
      expect(existsSync(keysOf(base, fork))).toBe(false);
    }
    await b.close();
  });

  it("a replace killed before its rename leaves the old log, and its key pending is settled as not written", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessages(id, [
      { role: "user", content: "a" },
      { role: "user", content: "b" },
    ]);
    await b.saveMessages(id, [{ role: "user", content: "c" }], { idempotencyKey: "earlier" });
    const log = logOf(base, id);
    const old = readFileSync(log);
    // What a writer killed between writing its temporary log (and its pending key line) and the rename leaves.
    const tmp = join(base, "tmp", `${id}.0123456789ab`);
    writeFileSync(
      tmp,
      `${old.toString("utf8").split("\n")[0]}\n{"role":"user","content":"r","timestamp":"2036-01-01T00:00:00.000Z"}\n`,
    );
    const pending = {
      s: "p",
      key: "replace",
      fingerprint: "x",
      length: 2,
      check: { ino: statSync(tmp).ino },
      popped: null,
    };
    appendFileSync(keysOf(base, id), `${JSON.stringify(pending)}\n`);
    expect(readFileSync(log)).toStrictEqual(old);
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["a", "b", "c"]);
    // The retry is applied (once): the pending line is settled as aborted, from the log.
    expect(await b.replaceMessages(id, 1, [{ role: "user", content: "r" }], { idempotencyKey: "replace" })).toEqual({
      length: 2,
    });
    expect(await b.replaceMessages(id, 1, [{ role: "user", content: "r" }], { idempotencyKey: "replace" })).toEqual({
      length: 2,
    });
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["a", "r"]);
    const lines = readFileSync(keysOf(base, id), "utf8").trimEnd().split("\n");
    expect(lines.map((l) => [JSON.parse(l).s, JSON.parse(l).key])).toEqual([
      ["c", "earlier"],
      ["a", "replace"],
      ["c", "replace"],
    ]);
    await b.close();
  });

  it("an edit killed after its rename (or its append) but before its key was marked is settled as written", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessages(id, [
      { role: "user", content: "a" },
      { role: "user", content: "b" },
    ]);
    const keys = keysOf(base, id);
    const unmark = () => {
      const text = readFileSync(keys, "utf8");
      const start = text.lastIndexOf("\n", text.length - 2) + 1;
      writeFileSync(keys, `${text.slice(0, start)}${text.slice(start).replace('{"s":"c"', '{"s":"p"')}`);
    };
    const popped = await b.popMessage(id, { idempotencyKey: "pop" });
    unmark();
    expect(await b.popMessage(id, { idempotencyKey: "pop" })).toStrictEqual(popped);
    expect(await b.saveMessages(id, [{ role: "user", content: "c" }], { idempotencyKey: "save" })).toEqual({
      length: 2,
    });
    unmark();
    // A plain append after the kill, then the retry: still the first write's result, nothing applied twice.
    await b.saveMessage(id, "user", "d");
    expect(await b.saveMessages(id, [{ role: "user", content: "c" }], { idempotencyKey: "save" })).toEqual({
      length: 2,
    });
    expect((await b.loadMessages(id)).map((m) => m.content)).toEqual(["a", "c", "d"]);
    // A torn key line (a writer killed inside its write, before its edit) is cut off.
    appendFileSync(keys, '{"s":"p","key":"torn","finger');
    expect(await b.saveMessages(id, [{ role: "user", content: "e" }], { idempotencyKey: "torn" })).toEqual({
      length: 4,
    });
    expect(readFileSync(keys, "utf8").endsWith("}\n")).toBe(true);
    await b.close();
  });

  it("writes one line per key, marked committed, and prunes the file to the 1,000 newest once past 2,000 lines", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    const write = (i: number) => b.saveMessages(id, [{ role: "user", content: { i } }], { idempotencyKey: `k${i}` });
    for (let i = 0; i < 2001; i++) await write(i);
    const lines = readFileSync(keysOf(base, id), "utf8").trimEnd().split("\n");
    expect(lines).toHaveLength(1000);
    expect(lines.every((l) => l.startsWith('{"s":"c","key":"k'))).toBe(true);
    expect(JSON.parse(lines[0] as string)).toMatchObject({ key: "k1001", length: 1002, popped: null });
    expect(JSON.parse(lines.at(-1) as string)).toMatchObject({ key: "k2000", length: 2001 });
    expect(await write(1001)).toEqual({ length: 1002 });
    expect(await b.countMessages(id)).toBe(2001);
    expect(readdirSync(join(base, "tmp"))).toEqual([]);
    await b.deleteSession(id);
    expect(existsSync(join(base, "sessions", id))).toBe(false);
    await b.close();
  });
});
