// The package as its users get it: `npm pack` of a fresh build, unpacked into the node_modules of projects in a temp
// directory, beside links to the packages each project installed (from this checkout's node_modules: no network).
// Then used there as a user uses it: the ...Sync methods of a custom backend written in TypeScript, under vitest;
// importing each subpath with its packages missing; and what the tarball holds.
import { execFile } from "node:child_process";
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, posix } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as {
  dependencies: Record<string, string>;
};

let work: string;
let tarball: string;
/** The files in the tarball, relative to its `package/` folder. */
let packed: Set<string>;

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), "agentix-package-test-"));
  // Built in a copy of the checkout, so that this file never races test/cli.test.ts, which builds into dist/.
  const stage = join(work, "stage");
  await mkdir(stage);
  for (const entry of [
    "package.json",
    "README.md",
    "LICENSE",
    "tsconfig.json",
    "tsconfig.build.json",
    "src",
    "migrations",
  ]) {
    await cp(join(ROOT, entry), join(stage, entry), { recursive: true });
  }
  await symlink(join(ROOT, "node_modules"), join(stage, "node_modules"));
  await run(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"], {
    cwd: stage,
  });
  const { stdout } = await run("npm", ["pack", "--json", "--pack-destination", work], { cwd: stage });
  const [info] = JSON.parse(stdout) as Array<{ filename: string; files: Array<{ path: string }> }>;
  if (!info) throw new Error(`npm pack printed no package: ${stdout}`);
  tarball = join(work, info.filename);
  packed = new Set(info.files.map((f) => f.path));
}, 120_000);

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

/**
 * A project that installed agentix from the tarball and `packages` (linked from this checkout, as npm would have
 * installed them), and agentix's own dependencies. Nothing else: a package it lacks is missing there.
 */
async function project(name: string, packages: string[], files: Record<string, string> = {}): Promise<string> {
  const dir = join(work, name);
  await mkdir(join(dir, "node_modules", "agentix"), { recursive: true });
  await run("tar", ["-xzf", tarball, "-C", join(dir, "node_modules", "agentix"), "--strip-components=1"]);
  for (const dep of [...Object.keys(pkg.dependencies), ...packages]) {
    await mkdir(dirname(join(dir, "node_modules", dep)), { recursive: true });
    await symlink(join(ROOT, "node_modules", dep), join(dir, "node_modules", dep));
  }
  files["package.json"] ??= JSON.stringify({ name, private: true, type: "module" });
  for (const [path, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, path)), { recursive: true });
    await writeFile(join(dir, path), text);
  }
  return dir;
}

/** The environment of a process started in a project: this run's vitest settings left out. */
function cleanEnv(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const key of Object.keys(env)) if (key.startsWith("VITEST") || key === "NODE_OPTIONS") delete env[key];
  return env;
}

const SUBPATHS = [
  "agentix",
  "agentix/sqlite",
  "agentix/postgres",
  "agentix/redis",
  "agentix/schema",
  "agentix/testing",
  "agentix/openai-agents",
  "agentix/ai-sdk",
  "agentix/langchain",
  "agentix/claude-agent-sdk",
];

/** Imports every subpath in the project, in a plain Node process: "ok" or the error, per subpath. */
async function importAll(dir: string): Promise<Record<string, string>> {
  const script = `const out = {};
for (const subpath of ${JSON.stringify(SUBPATHS)}) {
  try { await import(subpath); out[subpath] = "ok"; } catch (e) { out[subpath] = e.name + ": " + e.message.split("\\n")[0]; }
}
console.log(JSON.stringify(out));`;
  await writeFile(join(dir, "import-all.mjs"), script);
  const { stdout } = await run(process.execPath, ["import-all.mjs"], { cwd: dir, env: cleanEnv() });
  return JSON.parse(stdout) as Record<string, string>;
}

// A custom backend as a user writes one, in TypeScript: async primitives (a stand-in for a networked store) and a
// syncTwin, so that its ...Sync methods run on agentix's worker thread, which must then load this very file.
const CUSTOM_BACKEND = `import {
  type CopyOutcome, type EditOutcome, type ForkTarget, type JsonObject, type MessageEdit, type MessageRange,
  type MessageRecord, type SessionQuery, type SessionRecord, StorageBackend, type SyncTwin,
} from "agentix";

// An enum: only a TypeScript compiler makes JavaScript of it, so no Node loads this file without tsx.
enum Names { Backend = "MapStorageBackend" }

export class MapStorageBackend extends StorageBackend {
  readonly #sessions = new Map<string, SessionRecord>();
  readonly #messages = new Map<string, MessageRecord[]>();

  protected async insertSession(record: SessionRecord): Promise<SessionRecord | null> {
    const existing = this.#sessions.get(record.session_id);
    if (existing) return structuredClone(existing);
    this.#sessions.set(record.session_id, structuredClone(record));
    this.#messages.set(record.session_id, []);
    return null;
  }
  protected async readSession(sessionId: string): Promise<SessionRecord | null> {
    const record = this.#sessions.get(sessionId);
    return record ? structuredClone(record) : null;
  }
  protected async querySessions(agentId: string, _query: SessionQuery): Promise<SessionRecord[]> {
    return [...this.#sessions.values()].filter((s) => s.agent_id === agentId).map((s) => structuredClone(s));
  }
  protected async replaceMetadata(sessionId: string, metadata: JsonObject | null, at: string): Promise<SessionRecord | null> {
    const session = this.#sessions.get(sessionId);
    if (!session) return null;
    session.metadata = structuredClone(metadata);
    if (at > session.updated_at) session.updated_at = at;
    return structuredClone(session);
  }
  protected async copySession(_sessionId: string, _target: ForkTarget): Promise<CopyOutcome> {
    return { status: "not-found" }; // forks are not what this test is about
  }
  protected async editMessages(_sessionId: string, _edit: MessageEdit): Promise<EditOutcome> {
    return { status: "not-found" }; // neither are edits
  }
  protected async removeSession(sessionId: string): Promise<void> {
    this.#sessions.delete(sessionId);
    this.#messages.delete(sessionId);
  }
  protected async appendMessages(sessionId: string, batch: MessageRecord[]): Promise<number | null> {
    const session = this.#sessions.get(sessionId);
    const messages = this.#messages.get(sessionId);
    if (!session || !messages) return null;
    messages.push(...structuredClone(batch));
    session.updated_at = batch[0]?.timestamp ?? session.updated_at;
    return messages.length;
  }
  protected async readLength(sessionId: string): Promise<number | null> {
    return this.#messages.get(sessionId)?.length ?? null;
  }
  protected async readMessages(sessionId: string, range: MessageRange): Promise<MessageRecord[] | null> {
    const messages = this.#messages.get(sessionId);
    if (!messages) return null;
    const end = "last" in range || range.limit === undefined ? undefined : range.offset + range.limit;
    return structuredClone("last" in range ? messages.slice(-range.last) : messages.slice(range.offset, end));
  }
  protected async dispose(): Promise<void> {}
  protected override syncTwin(): SyncTwin {
    return { module: import.meta.url, exportName: Names.Backend, options: {} };
  }
}
`;

const CUSTOM_BACKEND_TEST = `import { SessionNotFoundError } from "agentix";
import { expect, it } from "vitest";
import { MapStorageBackend } from "../src/map-backend.js";

it("runs the ...Sync methods on agentix's worker thread", async () => {
  const storage = new MapStorageBackend();
  const id = storage.createSessionSync("agent", { cwd: "/work" });
  storage.saveMessageSync(id, "user", "hello");
  expect(storage.loadMessagesSync(id).map((m) => m.content)).toEqual(["hello"]);
  expect(storage.getSessionSync(id)?.agent_id).toBe("agent");
  // The worker's errors keep their class and fields: the backend's module shares the worker's agentix.
  const unknown = "01234567-89ab-7def-8123-456789abcdef";
  let error: unknown;
  try {
    storage.loadMessagesSync(unknown);
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(SessionNotFoundError);
  expect((error as SessionNotFoundError).sessionId).toBe(unknown);
  await storage.close();
});
`;

describe("a user's project", () => {
  it("runs the ...Sync methods of a custom backend written in TypeScript, with tsx installed (vitest)", async () => {
    const dir = await project("custom-backend", ["tsx", "vitest"], {
      "src/map-backend.ts": CUSTOM_BACKEND,
      "test/map-backend.test.ts": CUSTOM_BACKEND_TEST,
    });
    const vitest = join(dir, "node_modules/vitest/vitest.mjs");
    const result = await run(process.execPath, [vitest, "run", "--reporter=verbose"], { cwd: dir, env: cleanEnv() })
      .then(({ stdout, stderr }) => ({ code: 0, output: stdout + stderr }))
      .catch((error: { code?: number; stdout?: string; stderr?: string }) => ({
        code: error.code ?? -1,
        output: `${error.stdout ?? ""}${error.stderr ?? ""}`,
      }));
    expect(result.output).toMatch(/Tests\s+.*1 passed/);
    expect(result.code, result.output).toBe(0);
  }, 90_000);

  it("loads every subpath when its packages are installed; require() the ones without top-level await", async () => {
    const dir = await project("everything", [
      "better-sqlite3",
      "drizzle-orm",
      "postgres",
      "ioredis",
      "vitest",
      "@openai/agents-core",
      "ai",
      "@langchain/core",
      "@anthropic-ai/claude-agent-sdk",
    ]);
    expect(await importAll(dir)).toEqual(Object.fromEntries(SUBPATHS.map((s) => [s, "ok"])));
    // Node 20.19+ and 22.12+ require() ES modules, unless their graph has top-level await (the driver subpaths').
    if (!(process.features as { require_module?: boolean }).require_module) return;
    const script = `for (const s of ["agentix", "agentix/schema", "agentix/testing", "agentix/openai-agents", "agentix/ai-sdk", "agentix/langchain", "agentix/claude-agent-sdk"]) console.log(s, Object.keys(require(s)).length > 0);`;
    await writeFile(join(dir, "require.cjs"), script);
    const { stdout } = await run(process.execPath, ["--no-warnings", "require.cjs"], { cwd: dir, env: cleanEnv() });
    expect(stdout).toBe(
      "agentix true\nagentix/schema true\nagentix/testing true\nagentix/openai-agents true\nagentix/ai-sdk true\n" +
        "agentix/langchain true\nagentix/claude-agent-sdk true\n",
    );
  });

  it("names, in one line, every package a subpath needs when some are missing", async () => {
    expect(await importAll(await project("no-drivers", []))).toEqual({
      agentix: "ok",
      "agentix/sqlite":
        "AgentixStorageError: agentix/sqlite needs the packages better-sqlite3 and drizzle-orm: " +
        "npm install better-sqlite3@12 drizzle-orm",
      "agentix/postgres":
        "AgentixStorageError: agentix/postgres needs the packages postgres and drizzle-orm: " +
        "npm install postgres drizzle-orm",
      "agentix/redis": "AgentixStorageError: agentix/redis needs the package ioredis: npm install ioredis",
      "agentix/schema": "AgentixStorageError: agentix/schema needs the package drizzle-orm: npm install drizzle-orm",
      "agentix/testing": "AgentixStorageError: agentix/testing needs the package vitest: npm install -D vitest",
      "agentix/openai-agents":
        "AgentixStorageError: agentix/openai-agents needs the package @openai/agents-core: npm install @openai/agents-core",
      "agentix/ai-sdk": "AgentixStorageError: agentix/ai-sdk needs the package ai: npm install ai",
      "agentix/langchain":
        "AgentixStorageError: agentix/langchain needs the package @langchain/core: npm install @langchain/core",
      // The SDK is loaded on a store's first append or load (for its summary fold), not at import.
      "agentix/claude-agent-sdk": "ok",
    });
    const some = await importAll(await project("no-drizzle", ["better-sqlite3", "postgres"]));
    expect(some["agentix/sqlite"]).toBe(
      "AgentixStorageError: agentix/sqlite needs the packages better-sqlite3 and drizzle-orm; " +
        "drizzle-orm is not installed: npm install drizzle-orm",
    );
    expect(some["agentix/postgres"]).toBe(
      "AgentixStorageError: agentix/postgres needs the packages postgres and drizzle-orm; " +
        "drizzle-orm is not installed: npm install drizzle-orm",
    );
  });
});

/** The first ```ts block after the heading that starts with `heading` in a Markdown file of this repository. */
async function codeBlock(file: string, heading: string): Promise<string> {
  const text = await readFile(join(ROOT, file), "utf8");
  const at = text.indexOf(`\n${heading}`);
  const block = at === -1 ? null : /```ts\n([\s\S]*?)```/.exec(text.slice(at));
  if (!block?.[1]) throw new Error(`no ts code block after "${heading}" in ${file}`);
  return block[1];
}

describe("the published types", () => {
  it("compile the custom-backend skeleton of docs/custom-backend.md §3 as written, and every subpath's consumer", async () => {
    // A strict project of a user's (this repository's own flags), without skipLibCheck, so that agentix's .d.ts are
    // checked too; agentix/schema is left out: drizzle-orm's own declarations need skipLibCheck (as do those of
    // @openai/agents-core and ai, so agentix/openai-agents and agentix/ai-sdk are left out too).
    const compilerOptions = {
      target: "ES2022",
      module: "NodeNext",
      moduleResolution: "NodeNext",
      types: ["node"],
      strict: true,
      noUncheckedIndexedAccess: true,
      exactOptionalPropertyTypes: true,
      noImplicitOverride: true,
      verbatimModuleSyntax: true,
      skipLibCheck: false,
      noEmit: true,
    };
    const consumer = `import { AgentixClient, MemoryStorageBackend } from "agentix";
import { PostgresStorageBackend } from "agentix/postgres";
import { RedisStorageBackend } from "agentix/redis";
import { SqliteStorageBackend } from "agentix/sqlite";
import { runConformanceSuite } from "agentix/testing";
export const all = [AgentixClient, MemoryStorageBackend, PostgresStorageBackend, RedisStorageBackend, SqliteStorageBackend];
export const suite: typeof runConformanceSuite = runConformanceSuite;
`;
    const dir = await project(
      "typescript",
      [
        "typescript",
        "@types/node",
        "@types/better-sqlite3",
        "better-sqlite3",
        "drizzle-orm",
        "postgres",
        "ioredis",
        "vitest",
      ],
      {
        "tsconfig.json": JSON.stringify({ compilerOptions, files: ["skeleton.ts", "consumer.ts"] }),
        "skeleton.ts": await codeBlock("docs/custom-backend.md", "## 3. The skeleton"),
        "consumer.ts": consumer,
      },
    );
    const tsc = join(dir, "node_modules/typescript/bin/tsc");
    const result = await run(process.execPath, [tsc, "-p", "."], { cwd: dir }).then(
      ({ stdout }) => stdout,
      (error: { stdout?: string; message: string }) => error.stdout || error.message,
    );
    expect(result).toBe("");
  }, 90_000);
});

describe("the repository's own install", () => {
  it("lists every dependency with an install script in allowScripts: the drivers build, ssh2's optional add-ons do not", async () => {
    // npm 11.16+ runs no install script that allowScripts denies (npm 12 none it does not allow); testcontainers'
    // ssh2 and its cpu-features would each compile an optional native add-on that the tests never use.
    const { allowScripts } = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as {
      allowScripts: Record<string, boolean>;
    };
    const lock = JSON.parse(await readFile(join(ROOT, "package-lock.json"), "utf8")) as {
      packages: Record<string, { hasInstallScript?: boolean }>;
    };
    const scripted = Object.entries(lock.packages)
      .filter(([, entry]) => entry.hasInstallScript)
      .map(([path]) => path.slice(path.lastIndexOf("node_modules/") + "node_modules/".length));
    expect([...new Set(scripted)].filter((name) => !(name in allowScripts))).toEqual([]);
    expect(allowScripts).toMatchObject({ "better-sqlite3": true, "cpu-features": false, ssh2: false });
  });
});

describe("the tarball", () => {
  it("holds the license, the README and package.json's repository", async () => {
    for (const file of ["LICENSE", "README.md", "package.json"]) expect(packed.has(file), file).toBe(true);
    expect(await readFile(join(ROOT, "LICENSE"), "utf8")).toMatch(
      /^MIT License\n\nCopyright \(c\) 2026 the agentix authors\n/,
    );
    const { repository } = JSON.parse(await readFile(join(ROOT, "package.json"), "utf8")) as { repository: unknown };
    expect(repository).toEqual({ type: "git", url: "git+https://github.com/agentix-dev/agentix.git" });
  });

  it("holds every file the source maps point to", async () => {
    const dir = await project("maps", []);
    const maps = [...packed].filter((file) => file.endsWith(".map"));
    expect(maps.length).toBeGreaterThan(10);
    const missing: string[] = [];
    for (const map of maps) {
      const { sources } = JSON.parse(await readFile(join(dir, "node_modules/agentix", map), "utf8")) as {
        sources: string[];
      };
      for (const source of sources) {
        const file = posix.normalize(posix.join(posix.dirname(map), source));
        if (!packed.has(file)) missing.push(`${map} → ${source}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it("holds every file the README links to (the other links are absolute)", async () => {
    const readme = await readFile(join(ROOT, "README.md"), "utf8");
    const links = [...readme.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1] as string);
    expect(links.length).toBeGreaterThan(3);
    const relative = links.filter((link) => !/^(https?:|mailto:|#)/.test(link)).map((link) => link.split("#")[0]);
    expect(relative.filter((link) => !packed.has(posix.normalize(link as string)))).toEqual([]);
  });
});
