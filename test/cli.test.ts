// The `agentix` command line, run as users run it: the BUILT executable (dist/cli/index.js) in a child process,
// with its own HOME and TMPDIR, so that nothing outside this file's temp directory is read or written.
import { execFile, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, realpath, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Cluster, Redis } from "ioredis";
import postgres from "postgres";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { exportSessions } from "../src/cli/export.js";
import type { StorageBackend } from "../src/core/backend.js";
import type { LoadOptions, MessageRecord, SessionRecord } from "../src/core/types.js";
import { FileStorageBackend } from "../src/file.js";
import { MemoryStorageBackend } from "../src/memory.js";
import { createStorageBackend } from "../src/url.js";

/** A well-formed session id that no store holds. */
const PROBE = "00000000-0000-7000-8000-000000000000";
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const BIN = join(ROOT, "dist/cli/index.js");
const pgUrl = inject("postgresUrl");
const redisUrl = inject("redisUrl");
const redisClusterUrl = inject("redisClusterUrl");
const tag = randomUUID().slice(0, 8);
const pgSchema = `agentix_cli_${tag}`;
const redisPrefix = `agentix-cli-${tag}`;
const withParam = (url: string, name: string, value: string) => {
  const u = new URL(url);
  u.searchParams.set(name, value);
  return u.toString();
};
const pgStore = pgUrl ? withParam(pgUrl, "schema", pgSchema) : "";
const redisStore = redisUrl ? withParam(redisUrl, "prefix", redisPrefix) : "";

let work: string; // this file's temp directory: HOME, TMPDIR and every store live under it
let home: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the built CLI. `env` entries set to undefined are removed from the child's environment. */
function agentix(
  args: string[],
  options: { input?: string; env?: Record<string, string | undefined>; cwd?: string; bin?: string } = {},
): Promise<Run> {
  const env: Record<string, string> = {};
  const merged = {
    ...process.env,
    HOME: home,
    TMPDIR: join(work, "tmp"),
    AGENTIX_STORAGE_URL: undefined,
    ...options.env,
  };
  for (const [key, value] of Object.entries(merged)) if (value !== undefined) env[key] = value;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [options.bin ?? BIN, ...args], { env, cwd: options.cwd ?? work });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(options.input ?? "");
  });
}

/** A run that must succeed; its stdout. */
async function ok(args: string[], options?: Parameters<typeof agentix>[1]): Promise<string> {
  const run = await agentix(args, options);
  expect(run.stderr.includes("    at "), run.stderr).toBe(false);
  expect(run.code, `agentix ${args.join(" ")}\n${run.stderr}`).toBe(0);
  return run.stdout;
}

/** A run that must fail with exactly one line on stderr and no stack; that line. */
async function fails(args: string[], options?: Parameters<typeof agentix>[1]): Promise<string> {
  const run = await agentix(args, options);
  expect(run.code, run.stdout).toBe(1);
  expect(run.stderr.trimEnd().split("\n"), run.stderr).toHaveLength(1);
  return run.stderr.trimEnd();
}

/** Everything in a store, sessions in id order with their messages: what an exact comparison compares. */
async function dump(url: string): Promise<Array<{ session: SessionRecord; messages: MessageRecord[] }>> {
  const storage = await createStorageBackend(url);
  try {
    const out = [];
    for (let after: string | undefined; ; ) {
      const page = await storage.scanSessions({ limit: 500, ...(after ? { after } : {}) });
      for (const session of page) out.push({ session, messages: await storage.loadMessages(session.session_id) });
      if (page.length < 500) return out;
      after = page.at(-1)?.session_id;
    }
  } finally {
    await storage.close();
  }
}

/** Content and metadata that JSON Lines, SQL text and Redis strings must all carry unchanged. */
async function fillFixture(storage: StorageBackend): Promise<void> {
  const a = await storage.createSession("alpha", { cwd: "/work/a", nested: { list: [1, 2.5, { x: null }] }, ü: "✓" });
  for (const content of [
    "plain",
    "",
    '{"a":1}',
    "null",
    "42",
    "nul \u0000 lone \ud800 emoji 🦀 line\u2028sep\r\nnext",
    [],
    {},
    [{ type: "text", text: "block" }, { deep: [[[["x"]]]] }],
    "x".repeat(1 << 20),
  ] as const) {
    await storage.saveMessage(a, "user", content as never);
  }
  await storage.saveMessage(a, "assistant", { answer: true, n: -1.5e-7 });
  await storage.forkSession(a); // a fork: created_at after its messages' timestamps
  await storage.createSession("alpha", null); // no metadata, no messages
  const b = await storage.createSession("beta", { cwd: "/work/b" });
  await storage.saveMessage(b, "system", "beta's only message");
  // More than one page of the CLI's scan (200 per page).
  for (let i = 0; i < 205; i++) {
    const id = await storage.createSession("gamma", { i });
    await storage.saveMessage(id, "user", `message ${i}`);
  }
}

beforeAll(async () => {
  // The build the package ships: the CLI is tested as `npx agentix` would run it.
  const build = await promisify(execFile)("npx", ["tsc", "-p", "tsconfig.build.json"], { cwd: ROOT }).catch(
    (error: { stdout?: string; message: string }) => {
      throw new Error(`the build failed:\n${error.stdout ?? error.message}`);
    },
  );
  expect(build.stderr).toBe("");
  work = await mkdtemp(join(tmpdir(), "agentix-cli-test-"));
  home = join(work, "home");
  await mkdir(home);
  await mkdir(join(work, "tmp"));
}, 120_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
  if (pgUrl) {
    const sql = postgres(pgUrl, { onnotice: () => {} });
    await sql`drop schema if exists ${sql(pgSchema)} cascade`;
    await sql`drop schema if exists ${sql(`${pgSchema}_m`)} cascade`;
    await sql.end();
  }
  if (redisUrl) {
    const redis = new Redis(redisUrl);
    for await (const keys of redis.scanStream({ match: `${redisPrefix}:*`, count: 1000 })) {
      if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
    }
    await redis.quit();
  }
});

describe("agentix --help and --version", () => {
  it("prints the version of package.json", async () => {
    const { version } = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { version: string };
    expect((await ok(["--version"])).trim()).toBe(version);
  });

  it.each([
    [[], ["demo", "sessions", "export", "import", "copy", "migrate", "doctor", "--storage <url>", "--debug"]],
    [["sessions"], ["list", "show", "fork", "delete"]],
    [
      ["sessions", "list"],
      ["<agent-id>", "--cwd <dir>", "--limit <n>", "--json", "--storage <url>"],
    ],
    [
      ["sessions", "show"],
      ["<session-id>", "--json", "--full", "--last <n>"],
    ],
    [["sessions", "fork"], ["<session-id>"]],
    [["sessions", "delete"], ["<session-id>"]],
    [["demo"], ["temporary File store"]],
    [["export"], ["--agent <id>", "--out <file>", "JSON Lines"]],
    [["import"], ["[file]", "stdin"]],
    [["copy"], ["--from <url>", "--to <url>", "--agent <id>"]],
    [["migrate"], ["Postgres, PGlite and SQLite"]],
    [["doctor"], ["--repair", "quarantines"]],
  ])("agentix %j --help", async (command, expected) => {
    const out = await ok([...command, "--help"]);
    expect(out).toContain(`Usage: agentix ${command.join(" ")}`.trimEnd());
    for (const text of expected) expect(out).toContain(text);
  });
});

describe("agentix demo", () => {
  it("writes to a fresh temporary File store, says where, and shows create, append, fork, list and transcripts", async () => {
    // Even with AGENTIX_STORAGE_URL set, the demo never writes into that store.
    const real = join(work, "real-store");
    const out = await ok(["demo"], { env: { AGENTIX_STORAGE_URL: `file:${real}` } });
    expect(existsSync(real)).toBe(false);
    const dir = /a File store in (\S+) \(a new temporary directory\)/.exec(out)?.[1] as string;
    expect(dir.startsWith(join(work, "tmp"))).toBe(true);
    const [original, fork] = [...out.matchAll(/(?:createSession|forkSession)\s+([0-9a-f-]{36})/g)].map((m) => m[1]);

    // What it printed is what is stored: the listing is newest first (the fork), the fork holds the original's
    // five messages with their timestamps, then its own two.
    const stored = await dump(`file:${dir}`);
    const byId = new Map(stored.map((s) => [s.session.session_id, s]));
    const o = byId.get(original as string);
    const f = byId.get(fork as string);
    expect(stored).toHaveLength(2);
    expect(o?.messages).toHaveLength(5);
    expect(f?.messages.slice(0, 5)).toEqual(o?.messages);
    expect(f?.messages).toHaveLength(7);
    const table = out.slice(out.indexOf("listSessions"), out.indexOf("6. loadMessages"));
    expect(table.indexOf(fork as string)).toBeGreaterThan(0);
    expect(table.indexOf(fork as string)).toBeLessThan(table.indexOf(original as string));
    expect(out).toContain(`Session ${original}  agent travel-assistant`);
    expect(out).toContain(`Session ${fork}  agent travel-assistant`);
    expect(out).toContain("What if it rains all weekend?");
    expect(out).toContain(`node ${BIN} sessions show ${fork} --storage file:${dir}\n`);
  });

  it("uses --storage when given", async () => {
    const db = join(work, "demo.db");
    const out = await ok(["demo", "--storage", `sqlite:${db}`]);
    expect(out.split("\n")[0]).toBe(`Storage: sqlite:${db}`);
    expect(await dump(`sqlite:${db}`)).toHaveLength(2);
  });
});

describe("agentix sessions", () => {
  let store: string;
  let ids: { a: string; b: string; c: string };

  beforeAll(async () => {
    store = join(work, "sessions-store");
    const storage = new FileStorageBackend({ basePath: store });
    const a = await storage.createSession("agent-1", { cwd: "/proj/one", title: "first" });
    await storage.saveMessage(a, "user", "hello");
    const b = await storage.createSession("agent-1", { cwd: "/proj/two" });
    await storage.saveMessage(b, "user", Array.from({ length: 30 }, (_, i) => `line ${i + 1}`).join("\n"));
    await storage.saveMessage(b, "assistant", "\u001b[31mred\u001b[0m and a bell \u0007");
    const c = await storage.createSession("agent-1", null);
    ids = { a, b, c };
    await storage.close();
  });

  it("list: a table, newest first, with cwd and metadata; --limit says there are more", async () => {
    const lines = (await ok(["sessions", "list", "agent-1", "--storage", store])).trimEnd().split("\n");
    expect(lines[0]).toMatch(/^SESSION ID\s+UPDATED \(UTC\)\s+CWD\s+METADATA$/);
    expect(lines.slice(1, 4).map((l) => l.slice(0, 36))).toEqual([ids.c, ids.b, ids.a]);
    expect(lines[3]).toMatch(/\/proj\/one\s+\{"title":"first"\}$/);
    expect(lines[4]).toBe("3 sessions, newest first");
    // Global options may also come before the command.
    expect(await ok(["--storage", store, "sessions", "list", "agent-1"])).toBe(`${lines.join("\n")}\n`);
    const limited = (await ok(["sessions", "list", "agent-1", "--limit", "2", "--storage", store])).trimEnd();
    expect(limited.split("\n")).toHaveLength(4);
    expect(limited).toMatch(/2 sessions, newest first \(more: raise --limit\)$/);
    expect(await ok(["sessions", "list", "nobody", "--storage", store])).toBe('No sessions for agent "nobody".\n');
  });

  it("list --json: exactly the library's records; --cwd filters", async () => {
    const storage = new FileStorageBackend({ basePath: store });
    const expected = await storage.listSessions("agent-1");
    await storage.close();
    expect(JSON.parse(await ok(["sessions", "list", "agent-1", "--json", "--storage", store]))).toEqual(expected);
    const two = JSON.parse(
      await ok(["sessions", "list", "agent-1", "--cwd", "/proj/two", "--json", "--storage", store]),
    );
    expect(two.map((s: SessionRecord) => s.session_id)).toEqual([ids.b]);
  });

  it("list --cwd: a relative directory is resolved from the current one; an absolute one is matched as given", async () => {
    const project = await realpath(await mkdtemp(join(work, "project-")));
    await mkdir(join(project, "sub"));
    const storage = new FileStorageBackend({ basePath: store });
    const here = await storage.createSession("agent-cwd", { cwd: project });
    await storage.createSession("agent-cwd", { cwd: `${project}/` });
    await storage.close();
    const list = async (cwd: string, from: string) =>
      JSON.parse(
        await ok(["sessions", "list", "agent-cwd", "--cwd", cwd, "--json", "--storage", store], { cwd: from }),
      ).map((s: SessionRecord) => s.session_id);
    expect(await list(".", project)).toEqual([here]);
    expect(await list("..", join(project, "sub"))).toEqual([here]);
    expect(await list(project, work)).toEqual([here]);
    expect((await list(`${project}/`, work)).length).toBe(1);
    expect(await ok(["sessions", "list", "agent-cwd", "--cwd", "sub", "--storage", store], { cwd: project })).toBe(
      `No sessions for agent "agent-cwd" with cwd ${JSON.stringify(join(project, "sub"))}.\n`,
    );
  });

  it("show: a transcript with role and time; long content folded (--full unfolds); control characters escaped", async () => {
    const out = await ok(["sessions", "show", ids.b, "--storage", store]);
    expect(out).toMatch(
      new RegExp(`^Session ${ids.b}  agent agent-1\n  created \\S+ \\S+ UTC, updated \\S+ \\S+ UTC, cwd /proj/two\n`),
    );
    expect(out).toMatch(/\n {2}\d\d:\d\d:\d\d\.\d{3} {2}user {7}line 1\n {27}line 2\n/);
    expect(out).toContain("line 12\n");
    expect(out).not.toContain("line 13");
    expect(out).toContain("… 18 more lines (--full shows everything)");
    expect(out).toContain("assistant  \\u001b[31mred\\u001b[0m and a bell \\u0007");
    expect(out).not.toContain("\u001b");
    const full = await ok(["sessions", "show", ids.b, "--full", "--storage", store]);
    expect(full).toContain("line 30\n");
    expect(full).not.toContain("more lines");
  });

  it("show --json: exactly the library's record and messages", async () => {
    const storage = new FileStorageBackend({ basePath: store });
    const expected = { session: await storage.getSession(ids.b), messages: await storage.loadMessages(ids.b) };
    await storage.close();
    expect(JSON.parse(await ok(["sessions", "show", ids.b, "--json", "--storage", store]))).toEqual(expected);
    const last = JSON.parse(await ok(["sessions", "show", ids.b, "--json", "--last", "1", "--storage", store]));
    expect(last.messages).toEqual(expected.messages.slice(-1));
  });

  it("fork prints the new id; delete removes it, and deleting it again is an error", async () => {
    const fork = (await ok(["sessions", "fork", ids.a, "--storage", store])).trim();
    const storage = new FileStorageBackend({ basePath: store });
    expect(await storage.loadMessages(fork)).toEqual(await storage.loadMessages(ids.a));
    expect(await ok(["sessions", "delete", fork, "--storage", store])).toBe(`Deleted session ${fork}\n`);
    expect(await storage.getSession(fork)).toBeNull();
    await storage.close();
    expect(await fails(["sessions", "delete", fork, "--storage", store])).toBe(`agentix: session not found: "${fork}"`);
  });

  it("storage selection: --storage, else AGENTIX_STORAGE_URL, else ~/.agentix/projects", async () => {
    await ok(["demo", "--storage", join(home, ".agentix/projects")]);
    const count = async (options: Parameters<typeof agentix>[1], extra: string[] = []) =>
      JSON.parse(await ok(["sessions", "list", "travel-assistant", "--json", ...extra], options)).length;
    expect(await count({})).toBe(2);
    expect(await count({ env: { AGENTIX_STORAGE_URL: `file:${store}` } })).toBe(0);
    expect(await count({ env: { AGENTIX_STORAGE_URL: `file:${store}` } }, ["--storage", "~/.agentix/projects"])).toBe(
      2,
    );
  });
});

describe("agentix export, import and copy", () => {
  let source: string;
  let expected: Awaited<ReturnType<typeof dump>>;

  beforeAll(async () => {
    source = `file:${join(work, "source")}`;
    const storage = await createStorageBackend(source);
    await fillFixture(storage);
    await storage.close();
    expected = await dump(source);
    expect(expected).toHaveLength(209);
  });

  it("export → import round trip keeps ids, times, metadata, content and order exactly; re-import skips", async () => {
    const file = join(work, "export.jsonl");
    const exported = await agentix(["export", "--out", file, "--storage", source]);
    expect(exported.code).toBe(0);
    expect(exported.stdout).toBe("");
    expect(exported.stderr).toBe(`Exported 209 sessions to ${file}\n`);
    const text = await readFile(file, "utf8");
    expect(text.trimEnd().split("\n")).toHaveLength(209);
    expect(JSON.parse(text.split("\n")[0] as string)).toEqual(expected[0]);
    expect(await ok(["export", "--storage", source])).toBe(text); // stdout: the same bytes

    const target = `sqlite:${join(work, "imported.db")}`;
    expect(await ok(["import", file, "--storage", target])).toBe("Imported 209 sessions, skipped 0 already present\n");
    expect(await dump(target)).toEqual(expected);
    // From stdin, into a store that has them all already.
    expect(await ok(["import", "--storage", target], { input: text })).toBe(
      "Imported 0 sessions, skipped 209 already present\n",
    );
    expect(await dump(target)).toEqual(expected);
  });

  it("export --agent: only that agent's sessions", async () => {
    const lines = (await ok(["export", "--agent", "beta", "--storage", source])).trimEnd().split("\n");
    expect(lines.map((l) => JSON.parse(l))).toEqual(expected.filter((s) => s.session.agent_id === "beta"));
  });

  it("import: a broken line is named by its number, and what the store rejects too", async () => {
    const target = `file:${join(work, "broken-import")}`;
    const good = JSON.stringify(expected[0]);
    expect(await fails(["import", "--storage", target], { input: `${good}\n{oops\n` })).toMatch(
      /^agentix: line 2: not valid JSON \(/,
    );
    expect(await fails(["import", "--storage", target], { input: "\n[1, 2]\n" })).toBe(
      'agentix: line 2: expected {"session": record, "messages": [...]}, as agentix export writes; ' +
        "stopped there, after importing 0 sessions (and skipping 0 already present); --skip-invalid imports every valid line",
    );
    const bad = { ...expected[1], session: { ...expected[1]?.session, agent_id: "" } };
    expect(await fails(["import", "--storage", target], { input: `${JSON.stringify(bad)}\n` })).toMatch(
      /^agentix: line 1: record\.agent_id: /,
    );
    expect(await fails(["import", join(work, "no-such-file.jsonl")])).toMatch(/^agentix: cannot read .*ENOENT/);
    expect(await fails(["import", work, "--storage", target])).toBe(
      `agentix: cannot read ${work}: EISDIR: illegal operation on a directory, read`,
    );
  });

  it("import: a bad line stops it, saying what was imported before; --skip-invalid reports each and imports the rest", async () => {
    const lines = expected.slice(0, 6).map((s) => JSON.stringify(s));
    const bad = { ...expected[6], session: { ...expected[6]?.session, agent_id: "" } };
    const input = [lines[0], lines[1], lines[2], "{oops", lines[3], JSON.stringify(bad), lines[4], "", lines[5]];
    const target = `file:${join(work, "skip-invalid")}`;
    // Line 3 is there already: skipped, and counted as such.
    await ok(["import", "--storage", target], { input: `${lines[2]}\n` });
    expect(await fails(["import", "--storage", target], { input: input.join("\n") })).toMatch(
      /^agentix: line 4: not valid JSON \(.*\); stopped there, after importing 2 sessions \(and skipping 1 already present\); --skip-invalid imports every valid line$/,
    );
    expect((await dump(target)).map((s) => s.session)).toEqual(
      [expected[0], expected[1], expected[2]].map((s) => s?.session),
    );
    const run = await agentix(["import", "--skip-invalid", "--storage", target], { input: input.join("\n") });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toBe("Imported 3 sessions, skipped 3 already present and 2 invalid lines\n");
    expect(run.stderr.trimEnd().split("\n")).toEqual([
      expect.stringMatching(/^agentix: line 4: not valid JSON \(.*\) \(skipped\)$/),
      expect.stringMatching(/^agentix: line 6: record\.agent_id: .* \(skipped\)$/),
    ]);
    expect(await dump(target)).toEqual(expected.slice(0, 6));
  });

  const copy = async (from: string, to: string) => {
    const first = await agentix(["copy", "--from", from, "--to", to]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(/^Copied 209 sessions from .* to .*, skipped 0 already present\n$/);
    // Not a terminal: plain progress lines, the last one with the totals.
    expect(first.stderr.trimEnd().split("\n").at(-1)).toMatch(
      /^copy: 209\/209 sessions, 209 copied, 0 skipped, \d+\/s$/,
    );
    expect(await dump(to)).toEqual(expected);
    // Idempotent: a second run copies nothing and changes nothing.
    const again = await ok(["copy", "--from", from, "--to", to]);
    expect(again).toMatch(/^Copied 0 sessions from .*, skipped 209 already present\n$/);
    expect(await dump(to)).toEqual(expected);
  };
  const sqliteStore = () => `sqlite:${join(work, "copy.db")}`;

  it("copy File → SQLite, exactly and idempotently", async () => {
    await copy(source, sqliteStore());
  });

  it.skipIf(!pgUrl)("copy SQLite → Postgres (?schema=)", async () => {
    await copy(sqliteStore(), pgStore);
  });

  it.skipIf(!pgUrl || !redisUrl)("copy Postgres → Redis (?prefix=)", async () => {
    await copy(pgStore, redisStore);
  });

  it("copy --agent and --from defaulting to AGENTIX_STORAGE_URL", async () => {
    const to = `file:${join(work, "copy-beta")}`;
    const out = await ok(["copy", "--to", to, "--agent", "beta"], { env: { AGENTIX_STORAGE_URL: source } });
    expect(out).toMatch(/^Copied 1 session from /);
    expect(await dump(to)).toEqual(expected.filter((s) => s.session.agent_id === "beta"));
  });

  it.skipIf(!existsSync("/usr/bin/script"))(
    "copy shows a progress bar with counts and rate on a terminal",
    async () => {
      const to = `file:${join(work, "copy-tty")}`;
      // util-linux `script` runs the CLI on a pseudo-terminal, so process.stderr.isTTY is true.
      const command = [process.execPath, BIN, "copy", "--from", source, "--to", to].map((a) => `'${a}'`).join(" ");
      const { stdout } = await promisify(execFile)("script", ["-qec", command, "/dev/null"], {
        env: { ...process.env, HOME: home },
      });
      expect(stdout).toMatch(/[█░]+ 209\/209 sessions \| 209 copied, 0 skipped \| \d+\/s \| ETA/);
      expect(stdout).not.toMatch(/^copy: /m);
    },
  );
});

describe("the tool role through the CLI", () => {
  const toolSchema = `${pgSchema}_tool`;
  const toolPrefix = `${redisPrefix}-tool`;
  let source: string;
  let id: string;

  beforeAll(async () => {
    source = `file:${join(work, "tool-source")}`;
    const storage = await createStorageBackend(source);
    id = await storage.createSession("tools", { cwd: "/proj/tools" });
    await storage.saveMessage(id, "user", "what is 6 × 7?");
    // A turn as one batch: the call, two results (an object and a two-line string), the answer.
    await storage.saveMessages(id, [
      { role: "assistant", content: [{ type: "tool_use", id: "toolu_01", name: "mul", input: { a: 6 } }] },
      { role: "tool", content: [{ type: "tool_result", tool_use_id: "toolu_01", content: "42" }] },
      { role: "tool", content: "first line\nsecond line" },
      { role: "assistant", content: "6 × 7 = 42" },
    ]);
    await storage.saveMessage(id, "tool", { late: true });
    await storage.close();
  });

  afterAll(async () => {
    if (pgUrl) {
      const sql = postgres(pgUrl, { onnotice: () => {} });
      await sql`drop schema if exists ${sql(toolSchema)} cascade`;
      await sql.end();
    }
    if (redisUrl) {
      const redis = new Redis(redisUrl);
      for await (const keys of redis.scanStream({ match: `${toolPrefix}:*`, count: 1000 })) {
        if ((keys as string[]).length > 0) await redis.del(...(keys as string[]));
      }
      await redis.quit();
    }
  });

  it("sessions show: tool in the role column, its content aligned with the other roles'", async () => {
    const out = await ok(["sessions", "show", id, "--storage", source]);
    // After the header (three lines: no metadata besides cwd), without a date line (a run across midnight UTC).
    const lines = out
      .trimEnd()
      .split("\n")
      .slice(3)
      .filter((line) => !/^ {2}\d{4}-\d\d-\d\d$/.test(line));
    const role = /^ {2}\d\d:\d\d:\d\d\.\d{3} {2}(\S+) +/;
    expect(lines.map((line) => role.exec(line)?.[1] ?? "")).toEqual([
      "user",
      "assistant",
      "tool",
      "tool",
      "", // the second line of the two-line result
      "assistant",
      "tool",
    ]);
    // Every message's text starts in column 27, whatever the role's length; a continuation line too.
    for (const line of lines) {
      expect(line[26], line).toBe(" ");
      expect(line[27], line).not.toBe(" ");
    }
    expect(lines[2]).toMatch(/^ {2}\d\d:\d\d:\d\d\.\d{3} {2}tool {7}\{"type":"tool_result","tool_use_id":"toolu_01",/);
    expect(lines[3]).toMatch(/ {2}tool {7}first line$/);
    expect(lines[4]).toBe(`${" ".repeat(27)}second line`);
    expect(lines[6]).toMatch(/ {2}tool {7}\{"late":true\}$/);
  });

  it("export → import into SQLite → export: the same bytes, the role with them", async () => {
    const text = await ok(["export", "--storage", source]);
    const [line] = text.trimEnd().split("\n");
    const { messages } = JSON.parse(line as string) as { messages: MessageRecord[] };
    expect(messages.map((m) => m.role)).toEqual(["user", "assistant", "tool", "tool", "assistant", "tool"]);
    expect(text.match(/"role":"tool"/g)).toHaveLength(3);

    const target = `sqlite:${join(work, "tool-imported.db")}`;
    expect(await ok(["import", "--storage", target], { input: text })).toBe(
      "Imported 1 session, skipped 0 already present\n",
    );
    expect(await ok(["export", "--storage", target])).toBe(text);
    // And back into another File store, from the SQLite export.
    const back = `file:${join(work, "tool-back")}`;
    await ok(["import", "--storage", back], { input: await ok(["export", "--storage", target]) });
    expect(await ok(["export", "--storage", back])).toBe(text);
  });

  it("copy File → SQLite (and on to Postgres and Redis when there): the role byte for byte", async () => {
    const text = await ok(["export", "--storage", source]);
    const targets = [
      `sqlite:${join(work, "tool-copy.db")}`,
      ...(pgUrl ? [withParam(pgUrl, "schema", toolSchema)] : []),
      ...(redisUrl ? [withParam(redisUrl, "prefix", toolPrefix)] : []),
    ];
    let from = source;
    for (const to of targets) {
      expect(await ok(["copy", "--from", from, "--to", to])).toMatch(/^Copied 1 session from /);
      expect(await ok(["export", "--storage", to]), to).toBe(text);
      from = to;
    }
  });
});

/** The tags of the migrations shipped for a dialect, as `migrate` lists them when it applies them all. */
function shipped(dialect: "postgres" | "sqlite"): string {
  const journal = new URL(`../migrations/${dialect}/meta/_journal.json`, import.meta.url);
  const { entries } = JSON.parse(readFileSync(journal, "utf8")) as { entries: Array<{ tag: string }> };
  return entries.map((entry) => entry.tag).join(", ");
}

describe("agentix migrate", () => {
  it("SQLite: creates the schema of a new file and says it is up to date", async () => {
    const db = join(work, "migrate.db");
    expect(await ok(["migrate", "--storage", `sqlite:${db}`])).toBe(
      `SQLite schema at sqlite:${db}: applied ${shipped("sqlite")}\n`,
    );
    expect(await ok(["migrate", "--storage", `sqlite:${db}`])).toBe(`SQLite schema at sqlite:${db} is up to date\n`);
    const { default: Database } = await import("better-sqlite3");
    const sqlite = new Database(db, { readonly: true });
    const tables = sqlite.prepare("select name from sqlite_master where type = 'table'").pluck().all();
    sqlite.close();
    expect(tables).toEqual(expect.arrayContaining(["sessions", "messages"]));
  });

  it.skipIf(!pgUrl)("Postgres: creates the schema named by ?schema=", async () => {
    const url = withParam(pgUrl as string, "schema", `${pgSchema}_m`);
    expect(await ok(["migrate", "--storage", url])).toMatch(
      new RegExp(`^Postgres schema at .*: applied ${shipped("postgres")}\n$`),
    );
    expect(await ok(["migrate", "--storage", url])).toMatch(/ is up to date\n$/);
    const sql = postgres(pgUrl as string, { onnotice: () => {} });
    const rows = await sql`select table_name from information_schema.tables where table_schema = ${`${pgSchema}_m`}`;
    await sql.end();
    expect(rows.map((r) => r.table_name)).toEqual(expect.arrayContaining(["sessions", "messages"]));
  });

  it("PGlite: creates the schema in the directory of a pglite: URL, then reads from it", async () => {
    const url = `pglite:${join(work, "migrate-pglite")}`;
    expect(await ok(["migrate", "--storage", url])).toBe(`Postgres schema at ${url}: applied ${shipped("postgres")}\n`);
    expect(await ok(["migrate", "--storage", url])).toBe(`Postgres schema at ${url} is up to date\n`);
    expect(await ok(["sessions", "list", "a", "--json", "--storage", url])).toBe("[]\n");
  });

  it("File, memory: nothing to migrate", async () => {
    expect(await ok(["migrate", "--storage", join(work, "m")])).toMatch(
      /^Nothing to migrate: a file store has no schema/,
    );
    expect(await ok(["migrate", "--storage", "memory:"])).toMatch(/^Nothing to migrate: a memory store/);
  });
});

describe("reads that create nothing: on a missing store one line, exit code 1", () => {
  it("File: a missing directory stays missing", async () => {
    const dir = join(work, "nowhere", "store");
    for (const args of [["sessions", "list", "a"], ["sessions", "show", PROBE], ["export"]]) {
      expect(await fails([...args, "--storage", dir])).toBe(
        `agentix: no agentix store at ${dir}: the directory does not exist`,
      );
    }
    expect(await fails(["copy", "--from", dir, "--to", "memory:"])).toMatch(/^agentix: no agentix store at /);
    expect(existsSync(join(work, "nowhere"))).toBe(false);
  });

  it("SQLite: no file, no directory; an empty file gets no tables", async () => {
    const db = join(work, "nowhere-db", "agent.db");
    const message = `agentix: no agentix database at ${db}: run \`agentix migrate --storage sqlite:${db}\``;
    for (const args of [["sessions", "list", "a"], ["sessions", "show", PROBE], ["export"]]) {
      expect(await fails([...args, "--storage", `sqlite:${db}`])).toBe(message);
    }
    expect(await fails(["copy", "--from", `sqlite:${db}`, "--to", "memory:"])).toBe(message);
    expect(existsSync(join(work, "nowhere-db"))).toBe(false);
    const empty = join(work, "empty.db");
    await writeFile(empty, "");
    expect(await fails(["sessions", "list", "a", "--storage", `sqlite:${empty}`])).toBe(
      `agentix: no agentix tables in ${empty}: run \`agentix migrate --storage sqlite:${empty}\``,
    );
    expect((await stat(empty)).size).toBe(0);
  });

  it("PGlite: a missing directory stays missing; a missing schema gets no tables", async () => {
    const dir = join(work, "nowhere-pglite", "data");
    const message = `agentix: no agentix database at ${dir}: run \`agentix migrate --storage pglite:${dir}\``;
    expect(await fails(["sessions", "list", "a", "--storage", `pglite:${dir}`])).toBe(message);
    expect(await fails(["copy", "--from", `pglite:${dir}`, "--to", "memory:"])).toBe(message);
    expect(existsSync(join(work, "nowhere-pglite"))).toBe(false);
    const store = join(work, "probe-pglite");
    await ok(["migrate", "--storage", `pglite:${store}`]);
    const url = `pglite:${store}?schema=other`;
    expect(await fails(["export", "--storage", url])).toBe(
      `agentix: no agentix tables in schema other: run \`agentix migrate --storage ${url}\``,
    );
    const { PGlite } = await import("@electric-sql/pglite");
    const db = await PGlite.create(store);
    const { rows } = await db.query<{ n: number }>(
      "select count(*)::int as n from pg_namespace where nspname = 'other'",
    );
    await db.close();
    expect(rows[0]?.n).toBe(0);
  });

  it.skipIf(!pgUrl)("Postgres: a missing schema is neither created nor filled", async () => {
    const schema = `${pgSchema}_missing`;
    const url = withParam(pgUrl as string, "schema", schema);
    const message = `agentix: no agentix tables in schema ${schema}: run \`agentix migrate --storage ${url}\``;
    for (const args of [["sessions", "list", "a"], ["sessions", "show", PROBE], ["export"]]) {
      expect(await fails([...args, "--storage", url])).toBe(message);
    }
    expect(await fails(["copy", "--from", url, "--to", "memory:"])).toBe(message);
    const sql = postgres(pgUrl as string, { onnotice: () => {} });
    const [row] = await sql`select count(*)::int as n from pg_namespace where nspname = ${schema}`;
    await sql.end();
    expect(row?.n).toBe(0);
  });
});

describe("errors a person can act on: one line on stderr, exit code 1, no stack unless --debug", () => {
  const unknown = "01234567-89ab-7def-8123-456789abcdef";

  it("an unknown session", async () => {
    // An existing (empty) store: a missing one is its own error (see "reads that create nothing").
    const store = join(work, "errors");
    await mkdir(store, { recursive: true });
    for (const command of ["show", "fork", "delete"]) {
      expect(await fails(["sessions", command, unknown, "--storage", store])).toBe(
        `agentix: session not found: "${unknown}"`,
      );
    }
    expect(await fails(["sessions", "show", "not-an-id", "--storage", store])).toBe(
      'agentix: session not found: "not-an-id"',
    );
    const debug = await agentix(["sessions", "show", unknown, "--storage", store, "--debug"]);
    expect(debug.code).toBe(1);
    expect(debug.stderr).toMatch(/^SessionNotFoundError: session not found: .*\n\s+at /);
  });

  it("a bad URL scheme", async () => {
    expect(await fails(["sessions", "list", "a", "--storage", "mysql://localhost/db"])).toMatch(
      /^agentix: url: unknown scheme "mysql:" \(expected memory:, file:, sqlite:, postgres:\/\/.*\)$/,
    );
    expect(await fails(["export"], { env: { AGENTIX_STORAGE_URL: "ftp://x" } })).toMatch(/unknown scheme "ftp:"/);
  });

  it("an unreachable server (the password never printed)", async () => {
    expect(await fails(["sessions", "list", "a", "--storage", "postgres://me:s3cret@127.0.0.1:1/x"])).toBe(
      "agentix: cannot reach postgres://me:***@127.0.0.1:1/x: connect ECONNREFUSED 127.0.0.1:1",
    );
    expect(await fails(["copy", "--from", "memory:", "--to", "redis://127.0.0.1:1"])).toBe(
      "agentix: cannot reach redis://127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1",
    );
  });

  it("an unreachable server for import and copy: no line number, no progress line", async () => {
    const unreachable = "postgres://me:s3cret@127.0.0.1:1/x";
    const source = join(work, "unreachable-source");
    const storage = new FileStorageBackend({ basePath: source });
    const id = await storage.createSession("agent", null);
    const line = JSON.stringify({ session: await storage.getSession(id), messages: [] });
    await storage.close();
    const message = "agentix: cannot reach postgres://me:***@127.0.0.1:1/x: connect ECONNREFUSED 127.0.0.1:1";
    expect(await fails(["import", "--storage", unreachable], { input: `${line}\n` })).toBe(message);
    expect(await fails(["copy", "--from", source, "--to", unreachable])).toBe(message);
  });

  it("a bad option value", async () => {
    const run = await agentix(["sessions", "list", "a", "--limit", "0"]);
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("--limit <n>' argument '0' is invalid. expected a positive integer");
  });

  it("the parser's own errors read like the others: agentix: …, one line", async () => {
    expect(await fails(["sessions", "list", "a", "--limit", "0"])).toBe(
      "agentix: option '--limit <n>' argument '0' is invalid. expected a positive integer",
    );
    expect(await fails(["sessions", "list"])).toBe("agentix: missing required argument 'agent-id'");
    expect(await fails(["sessions", "list", "a", "--lmit", "3"])).toBe(
      "agentix: unknown option '--lmit' (Did you mean --limit?)",
    );
    expect(await fails(["sesions"])).toBe("agentix: unknown command 'sesions' (Did you mean sessions?)");
  });

  it("export --out into a missing directory names the user's path, not the temp file", async () => {
    const out = join(work, "no-such-dir", "x.jsonl");
    expect(await fails(["export", "--out", out, "--storage", "memory:"])).toBe(
      `agentix: cannot write ${out}: no such directory: ${join(work, "no-such-dir")}`,
    );
    // A directory where the file should go.
    expect(await fails(["export", "--out", work, "--storage", "memory:"])).toMatch(
      new RegExp(`^agentix: cannot write ${work}: EISDIR.*`),
    );
    expect((await readdir(work)).filter((name) => name.endsWith(".tmp"))).toEqual([]);
  });

  it("a missing driver package: the install command is named", async () => {
    // An install without the optional peer `postgres`: the built package with every other dependency linked in.
    const install = join(work, "no-postgres");
    await mkdir(join(install, "node_modules"), { recursive: true });
    await cp(join(ROOT, "dist"), join(install, "dist"), { recursive: true });
    await cp(join(ROOT, "migrations"), join(install, "migrations"), { recursive: true });
    await cp(join(ROOT, "package.json"), join(install, "package.json"));
    for (const name of await readdir(join(ROOT, "node_modules"))) {
      if (name !== "postgres") await symlink(join(ROOT, "node_modules", name), join(install, "node_modules", name));
    }
    const bin = join(install, "dist/cli/index.js");
    expect(await fails(["sessions", "list", "a", "--storage", "postgres://127.0.0.1:1/x"], { bin })).toBe(
      "agentix: agentix/postgres needs the packages postgres and drizzle-orm; postgres is not installed: npm install postgres",
    );
    // The other backends still work in that install.
    expect(await ok(["sessions", "list", "a", "--storage", "memory:"], { bin })).toBe('No sessions for agent "a".\n');
  });
});

describe("agentix export streams", () => {
  /** A backend that cannot hold a session in one array: export must not need it. */
  class NoLoadBackend extends MemoryStorageBackend {
    override loadMessages(_sessionId: string, _options?: LoadOptions): Promise<MessageRecord[]> {
      return Promise.reject(new Error("loadMessages called"));
    }
  }

  it("a session of 20,000 messages through iterateMessages, never loadMessages: the bytes of the normal export", async () => {
    const url = `sqlite:${join(work, "stream.db")}`;
    const source = await createStorageBackend(url);
    let records: Array<{ session: SessionRecord; messages: MessageRecord[] }>;
    try {
      const big = await source.createSession("streamer", { cwd: "/big", ü: "✓" });
      for (let i = 0; i < 20_000; i += 1000) {
        await source.saveMessages(
          big,
          Array.from({ length: 1000 }, (_, j) => {
            const n = i + j;
            if (n % 3 === 0) return { role: "user" as const, content: `message ${n} 🦀 \u2028 "quoted"` };
            if (n % 3 === 1) return { role: "assistant" as const, content: [{ type: "text", text: `answer ${n}` }] };
            return { role: "tool" as const, content: { n, nested: { list: [n, null, 2.5] } } };
          }),
        );
      }
      await source.createSession("streamer", null); // no messages: `"messages":[]`
      const small = await source.createSession("streamer", { cwd: "/small" });
      await source.saveMessage(small, "system", "one");
      records = [];
      for (const session of await source.scanSessions({ limit: 10 })) {
        records.push({ session, messages: await source.loadMessages(session.session_id) });
      }
    } finally {
      await source.close();
    }
    expect(records.map((r) => r.messages.length).sort((a, b) => a - b)).toEqual([0, 1, 20_000]);

    // The normal export: the CLI on the SQLite store, and what it always wrote, JSON.stringify of each line.
    const file = join(work, "stream.jsonl");
    await ok(["export", "--out", file, "--storage", url]);
    const normal = await readFile(file);
    expect(normal.equals(Buffer.from(records.map((r) => `${JSON.stringify(r)}\n`).join("")))).toBe(true);

    // The same sessions in a backend whose loadMessages throws, exported into a slow stream with a small buffer.
    const storage = new NoLoadBackend();
    for (const { session, messages } of records) expect(await storage.importSession(session, messages)).toBe(true);
    await expect(storage.loadMessages(records[0]?.session.session_id as string)).rejects.toThrow("loadMessages");
    const chunks: Buffer[] = [];
    let drains = 0;
    const sink = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk);
        setImmediate(done);
      },
    });
    sink.on("drain", () => drains++);
    expect(await exportSessions(storage, sink)).toBe(3);
    await storage.close();
    expect(Buffer.concat(chunks).equals(normal)).toBe(true);
    expect(drains).toBeGreaterThan(0); // it waited for the stream, instead of buffering the session
  });
});

describe("agentix copy of a session larger than the process's memory", () => {
  // The child's V8 heap is capped at HEAP_MB; the session's JSON is several times that. Holding the session (as
  // copy did before it streamed into the target's importSession) runs out of heap; streaming holds a batch.
  const HEAP_MB = 64;
  const MESSAGES = 100_000;
  const SIZE = 2_000; // characters of content per message: ~200 MB of JSON in all
  let source: string;
  let sourceExport: string;

  async function sha256(path: string): Promise<string> {
    const { createHash } = await import("node:crypto");
    const { createReadStream } = await import("node:fs");
    const hash = createHash("sha256");
    for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
    return hash.digest("hex");
  }

  /** Copies the big session into `to` under the heap cap, then exports both sides: the same bytes. */
  async function copyUnderCap(to: string): Promise<void> {
    const env = { NODE_OPTIONS: `--max-old-space-size=${HEAP_MB}` };
    const run = await agentix(["copy", "--from", source, "--to", to], { env });
    expect(run.code, run.stderr).toBe(0);
    // Progress lines only (no heap error), the last with the totals.
    const lines = run.stderr.trimEnd().split("\n");
    expect(
      lines.every((line) => line.startsWith("copy: ")),
      run.stderr,
    ).toBe(true);
    expect(lines.at(-1)).toMatch(/^copy: 1\/1 sessions, 1 copied, 0 skipped, \d+\/s$/);
    expect(run.stdout).toMatch(/^Copied 1 session from /);
    const out = join(work, `large-${randomUUID()}.jsonl`);
    await ok(["export", "--out", out, "--storage", to], { env });
    expect(await sha256(out)).toBe(await sha256(sourceExport));
    await rm(out);
  }

  beforeAll(async () => {
    source = `file:${join(work, "large-source")}`;
    const b = new FileStorageBackend({ basePath: join(work, "large-source") });
    const record: SessionRecord = {
      session_id: randomUUID(),
      agent_id: "large",
      created_at: "2024-01-15T14:30:00.000Z",
      updated_at: "2024-01-15T16:00:00.000Z",
      metadata: { cwd: "/large" },
    };
    const filler = 'abcdefghijklmnopqrstuvwxyzé\u0000"\\'.repeat(Math.ceil(SIZE / 30)).slice(0, SIZE);
    function* messages(): Generator<MessageRecord> {
      for (let i = 0; i < MESSAGES; i++) {
        const timestamp = new Date(Date.parse(record.created_at) + Math.floor(i / 40)).toISOString();
        const content = i % 10 === 0 ? { i, text: filler } : `${i} ${filler}`;
        yield { role: i % 2 === 0 ? "user" : "assistant", content, timestamp };
      }
    }
    try {
      expect(b.importSessionSync(record, messages())).toBe(true);
    } finally {
      await b.close();
    }
    sourceExport = join(work, "large-source.jsonl");
    await ok(["export", "--out", sourceExport, "--storage", source]);
    expect((await stat(sourceExport)).size).toBeGreaterThan(3 * HEAP_MB * 2 ** 20);
  }, 300_000);

  afterAll(async () => {
    if (pgUrl) {
      const sql = postgres(pgUrl, { onnotice: () => {} });
      await sql`drop schema if exists ${sql(`${pgSchema}_large`)} cascade`;
      await sql.end();
    }
    if (redisClusterUrl) {
      const { parseClusterUrl } = await import("../src/redis-server.js");
      const cluster = new Cluster(parseClusterUrl(redisClusterUrl)?.nodes ?? []);
      for (const node of cluster.nodes("master")) {
        const keys: string[] = [];
        for await (const batch of node.scanStream({ match: `${redisPrefix}-large:*`, count: 1000 }))
          keys.push(...batch);
        for (const key of keys) await cluster.unlink(key);
      }
      await cluster.quit();
    }
    if (redisUrl) {
      const redis = new Redis(redisUrl);
      const keys: string[] = [];
      for await (const batch of redis.scanStream({ match: `${redisPrefix}-large:*`, count: 1000 })) keys.push(...batch);
      if (keys.length > 0) await redis.unlink(...keys);
      await redis.quit();
    }
  });

  it("File → SQLite, byte for byte", async () => {
    await copyUnderCap(`sqlite:${join(work, "large.db")}`);
  }, 300_000);

  it.skipIf(!pgUrl)(
    "File → Postgres, byte for byte (chunks staged on the server)",
    async () => {
      await copyUnderCap(withParam(pgUrl as string, "schema", `${pgSchema}_large`));
    },
    300_000,
  );

  it.skipIf(!redisUrl)(
    "File → Redis, byte for byte",
    async () => {
      await copyUnderCap(withParam(redisUrl as string, "prefix", `${redisPrefix}-large`));
    },
    300_000,
  );

  it.skipIf(!redisClusterUrl)(
    "File → Redis Cluster, byte for byte (chunks in a temp key in the session's slot)",
    async () => {
      // A cluster URL lists several hosts, which URL cannot parse: the parameter goes on as text.
      await copyUnderCap(`${redisClusterUrl as string}?prefix=${redisPrefix}-large`);
    },
    300_000,
  );
});
