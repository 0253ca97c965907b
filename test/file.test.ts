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
  `^(sessions|agents|locks|tmp|sessions/${UUID}|sessions/${UUID}/(session\\.json|messages\\.jsonl)|agents/${AGENT}|agents/${AGENT}/${UUID})$`,
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
    expect(readdirSync(join(base, "agents", agents[0] as string))).toEqual([id]);
    for (const path of walk(base)) expect(path).toMatch(LAYOUT);
    expect(readdirSync(join(base, "locks"))).toEqual([]);
    expect(readdirSync(join(base, "tmp"))).toEqual([]);
    await b.deleteSession(id);
    expect(walk(base).sort()).toEqual(["agents", `agents/${agents[0]}`, "locks", "sessions", "tmp"]);
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
