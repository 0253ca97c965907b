import { randomUUID } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  AGENTIX_NAMESPACE,
  AgentixStorageError,
  BackendClosedError,
  createStorageBackend,
  isSessionId,
  MemoryStorageBackend,
  SessionExistsError,
  SessionNotFoundError,
  sessionIdFor,
  ValidationError,
} from "../src/index.js";
import { AsyncMemoryBackend } from "./fixtures/async-memory.js";

describe("sync twins on the worker thread", () => {
  it("run the async methods of a twin built from the same options, with the same error classes", () => {
    const b = new AsyncMemoryBackend();
    // The twin lives on the worker with its own memory: what it writes, it reads back.
    const id = b.createSessionSync("agent", { cwd: "/w" });
    b.saveMessageSync(id, "user", { text: "\u0000\ud800" });
    expect(b.loadMessagesSync(id)).toMatchObject([{ role: "user", content: { text: "\u0000\ud800" } }]);
    expect(b.getSessionSync(id)?.metadata).toStrictEqual({ cwd: "/w" });
    expect(b.listSessionsSync("agent", { cwd: "/w" })).toHaveLength(1);
    expect(() => b.saveMessageSync("00000000-0000-7000-8000-000000000000", "user", "x")).toThrow(SessionNotFoundError);
    let error: unknown;
    try {
      b.saveMessageSync(id, "user", { a: [1, Number.NaN] });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe("content.a[1]");
    b.closeSync();
    expect(() => b.getSessionSync(id)).toThrow(BackendClosedError);
  });

  it("throws an error that says what to override when the backend cannot be rebuilt", async () => {
    const b = new AsyncMemoryBackend({ twin: false });
    expect(() => b.createSessionSync("agent")).toThrow(/override createSessionSync.*syncTwin\(\)/);
    expect(() => b.createSessionSync("agent")).toThrow(AgentixStorageError);
    const id = await b.createSession("agent");
    expect(await b.getSession(id)).not.toBeNull();
    await b.close();
  });
});

describe("sync twins on the worker thread (v2 methods)", () => {
  /** The error `call` throws. */
  const thrown = (call: () => unknown): unknown => {
    try {
      call();
    } catch (error) {
      return error;
    }
    throw new Error("expected an error");
  };

  it("run createSession with a sessionId, openSession, updateSession, saveMessages and countMessages", () => {
    const b = new AsyncMemoryBackend();
    const id = randomUUID();
    expect(b.createSessionSync("agent", { cwd: "/w" }, { sessionId: id })).toBe(id);
    const taken = thrown(() => b.createSessionSync("other", null, { sessionId: id }));
    expect(taken).toBeInstanceOf(SessionExistsError);
    expect((taken as SessionExistsError).sessionId).toBe(id);
    expect(thrown(() => b.openSessionSync("other", id))).toBeInstanceOf(SessionExistsError);
    expect(b.openSessionSync("agent", id, { cwd: "/ignored" })).toStrictEqual({
      created: false,
      session: b.getSessionSync(id),
    });
    expect(
      b.saveMessagesSync(id, [
        { role: "tool", content: { out: 1 } },
        { role: "user", content: "x" },
      ]),
    ).toStrictEqual({ length: 2 });
    expect(b.countMessagesSync(id)).toBe(2);
    expect(b.updateSessionSync(id, { metadata: { cwd: "/v" } })).toStrictEqual(b.getSessionSync(id));
    expect(b.listSessionsSync("agent", { cwd: "/v" }).map((s) => s.session_id)).toEqual([id]);
    const missing = thrown(() => b.countMessagesSync("00000000-0000-7000-8000-000000000000"));
    expect(missing).toBeInstanceOf(SessionNotFoundError);
    expect((missing as SessionNotFoundError).sessionId).toBe("00000000-0000-7000-8000-000000000000");
    const bad = thrown(() =>
      b.saveMessagesSync(id, [
        { role: "user", content: "ok" },
        { role: "Tool" as never, content: "x" },
      ]),
    );
    expect(bad).toBeInstanceOf(ValidationError);
    expect((bad as ValidationError).field).toBe("messages[1].role");
    b.closeSync();
  });

  it("validate arguments before the worker: what cannot be cloned is a ValidationError, nothing written", () => {
    const b = new AsyncMemoryBackend();
    const id = b.createSessionSync("agent", { v: 1 });
    const fn = () => 1;
    const sym = Symbol("s");
    const fresh = randomUUID();
    const cases: Array<[() => unknown, string]> = [
      [() => b.createSessionSync("agent", { f: fn } as never, { sessionId: fresh }), "metadata.f"],
      [() => b.openSessionSync("agent", fresh, { s: sym } as never), "metadata.s"],
      [() => b.updateSessionSync(id, { metadata: { f: fn } } as never), "patch.metadata.f"],
      [() => b.saveMessagesSync(id, [{ role: "user", content: { f: fn } }] as never), "messages[0].content.f"],
      [() => b.saveMessagesSync(id, [{ role: "user", content: "x", s: sym }] as never), "messages[0]"],
      [() => b.saveMessageSync(id, "tool", [sym] as never), "content[0]"],
      [() => b.countMessagesSync(fn as never), "sessionId"],
    ];
    for (const [call, field] of cases) {
      const error = thrown(call);
      expect(error, field).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).field).toBe(field);
    }
    expect(b.getSessionSync(fresh)).toBeNull();
    expect(b.getSessionSync(id)?.metadata).toStrictEqual({ v: 1 });
    expect(b.countMessagesSync(id)).toBe(0);
    b.closeSync();
  });
});

describe("sessionIdFor", () => {
  const DNS = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
  const V5 = /^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it("is the UUIDv5 of RFC 9562 (and of Python's uuid.uuid5)", () => {
    expect(sessionIdFor("www.example.com", DNS)).toBe("2ed6657d-e927-568b-95e1-2665a8aea6a2");
    expect(sessionIdFor("python.org", DNS)).toBe("886313e1-3b8a-5372-9b90-0c9aee199e5d");
  });

  it("uses AGENTIX_NAMESPACE by default, a constant fixed forever", () => {
    expect(AGENTIX_NAMESPACE).toBe("0b7e6c52-5d3c-4a8e-9f0a-61677478a001");
    // Computed independently with Python's uuid.uuid5(UUID(AGENTIX_NAMESPACE), key), keys as UTF-8.
    expect(sessionIdFor("thread-1")).toBe("e2afb46e-af07-5c70-9878-d815f88a3c8d");
    expect(sessionIdFor("会话 🚀")).toBe("81e54622-36bb-567b-a299-f9988bdeea64");
    expect(sessionIdFor("")).toBe("5475191f-eca1-55a0-bf4d-6de80ea6db22");
    expect(sessionIdFor("thread-1", AGENTIX_NAMESPACE)).toBe(sessionIdFor("thread-1"));
  });

  it("is deterministic, canonical, version 5 with the RFC variant, and different per key and namespace", () => {
    const keys = ["a", "A", "a ", "", "\u0000", "x".repeat(10_000), ...Array.from({ length: 500 }, () => randomUUID())];
    const ids = keys.map((k) => sessionIdFor(k));
    expect(keys.map((k) => sessionIdFor(k))).toEqual(ids);
    for (const id of ids) {
      expect(id).toMatch(V5);
      expect(isSessionId(id)).toBe(true);
    }
    expect(new Set(ids).size).toBe(keys.length);
    const other = randomUUID();
    expect(sessionIdFor("thread-1", other)).not.toBe(sessionIdFor("thread-1"));
    expect(sessionIdFor("thread-1", other)).toBe(sessionIdFor("thread-1", other));
    expect(sessionIdFor("thread-1", DNS)).not.toBe(sessionIdFor("thread-1", other));
  });

  it("reads a namespace in upper case as the same UUID", () => {
    expect(sessionIdFor("www.example.com", DNS.toUpperCase())).toBe("2ed6657d-e927-568b-95e1-2665a8aea6a2");
    expect(sessionIdFor("k", AGENTIX_NAMESPACE.toUpperCase())).toBe(sessionIdFor("k"));
  });

  it.each([
    ["a lone high surrogate", "\ud800", undefined, "key"],
    ["a lone low surrogate in the middle", "a\udc00b", undefined, "key"],
    ["a key that is not a string", 42, undefined, "key"],
    ["a namespace that is not a UUID", "k", "dns", "namespace"],
    ["a namespace without hyphens", "k", DNS.replaceAll("-", ""), "namespace"],
    ["a namespace in braces", "k", `{${DNS}}`, "namespace"],
    ["a namespace with a space", "k", `${DNS} `, "namespace"],
    ["a namespace that is null", "k", null, "namespace"],
  ])("refuses %s with a ValidationError", (_label, key, namespace, field) => {
    let error: unknown;
    try {
      sessionIdFor(key as string, namespace as string);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe(field);
  });
});

describe("createStorageBackend", () => {
  it("builds a memory backend from memory:", async () => {
    const b = await createStorageBackend("memory:");
    expect(b).toBeInstanceOf(MemoryStorageBackend);
    await b.close();
  });

  it("rejects an unknown scheme or a non-string with a ValidationError", async () => {
    await expect(createStorageBackend("mysql://x")).rejects.toBeInstanceOf(ValidationError);
    await expect(createStorageBackend("")).rejects.toBeInstanceOf(ValidationError);
    await expect(createStorageBackend(42 as never)).rejects.toBeInstanceOf(ValidationError);
  });
});

describe("importDriver and requirePackages", () => {
  const failure = (promise: Promise<unknown>) =>
    promise.then(
      () => expect.unreachable(),
      (e: unknown) => e as Error,
    );

  it("name every package a subpath needs, in one line, and the install command", async () => {
    const { importDriver } = await import("../src/core/driver.js");
    const one = await failure(importDriver("agentix-no-such-driver", "agentix/nothing", ["agentix-no-such-driver@1"]));
    expect(one).toBeInstanceOf(AgentixStorageError);
    expect(one.message).toBe(
      "agentix/nothing needs the package agentix-no-such-driver: npm install agentix-no-such-driver@1",
    );
    expect(one.cause).toBeDefined();
    // A subpath of a package is not a package: the message names the package.
    const two = await failure(
      importDriver("agentix-no-such-a/sub", "agentix/nothing", ["agentix-no-such-a@2", "@agentix-no/such-b"]),
    );
    expect(two.message).toBe(
      "agentix/nothing needs the packages agentix-no-such-a and @agentix-no/such-b: " +
        "npm install agentix-no-such-a@2 @agentix-no/such-b",
    );
  });

  it("install only what is missing, naming the rest", async () => {
    const { importDriver } = await import("../src/core/driver.js");
    const error = await failure(importDriver("agentix-no-such-b", "agentix/nothing", ["zod", "agentix-no-such-b"]));
    expect(error.message).toBe(
      "agentix/nothing needs the packages zod and agentix-no-such-b; agentix-no-such-b is not installed: " +
        "npm install agentix-no-such-b",
    );
  });

  it("leave other failures alone: a subpath that an installed package does not export", async () => {
    const { importDriver } = await import("../src/core/driver.js");
    const error = await failure(importDriver("zod/agentix-no-such-subpath", "agentix/nothing", ["zod"]));
    expect(error).not.toBeInstanceOf(AgentixStorageError);
    expect(error.message).toMatch(/not exported/);
  });

  it("requirePackages passes when everything is there", async () => {
    const { requirePackages } = await import("../src/core/driver.js");
    await expect(requirePackages("agentix/nothing", ["zod", "uuidv7@1"])).resolves.toBeUndefined();
    const error = await failure(requirePackages("agentix/nothing", ["zod", "agentix-no-such-c", "agentix-no-such-d"]));
    expect(error.message).toBe(
      "agentix/nothing needs the packages zod, agentix-no-such-c and agentix-no-such-d; " +
        "agentix-no-such-c and agentix-no-such-d are not installed: npm install agentix-no-such-c agentix-no-such-d",
    );
  });

  it.each([
    ["drizzle-orm/migrator", "drizzle-orm"],
    ["better-sqlite3@12", "better-sqlite3"],
    ["@scope/pkg/sub", "@scope/pkg"],
    ["@scope/pkg@1.2", "@scope/pkg"],
  ])("packageName(%j) is %j", async (specifier, name) => {
    const { packageName } = await import("../src/core/driver.js");
    expect(packageName(specifier)).toBe(name);
  });
});

describe("package exports", () => {
  it("map every subpath to a source entry that exists", async () => {
    const { readFile, access } = await import("node:fs/promises");
    const pkg = JSON.parse(await readFile(new URL("../package.json", import.meta.url), "utf8")) as {
      exports: Record<string, string | { types: string; require?: string; default: string }>;
    };
    const subpaths = Object.keys(pkg.exports).filter((k) => k !== "./package.json");
    expect(subpaths.sort()).toEqual([
      ".",
      "./ai-sdk",
      "./claude-agent-sdk",
      "./langchain",
      "./openai-agents",
      "./postgres",
      "./redis",
      "./schema",
      "./sqlite",
      "./testing",
    ]);
    const sourceOf = (built: string, ext: RegExp) => built.replace(/^\.\/dist\//, "../src/").replace(ext, ".ts");
    for (const key of subpaths) {
      const entry = pkg.exports[key] as { types: string; require?: string; default: string };
      const types = sourceOf(entry.types, /\.d\.ts$/);
      const runtime = sourceOf(entry.default, /\.js$/);
      await access(new URL(types, import.meta.url));
      await access(new URL(runtime, import.meta.url));
      if (runtime !== types) {
        // A runtime entry that checks for its packages first (schema, testing) exports exactly what the types say,
        // and require() (Node's require of ES modules, which refuses top-level await) gets the typed module itself.
        expect(entry.require && sourceOf(entry.require, /\.js$/), key).toBe(types);
        const [typed, run] = await Promise.all([import(types), import(runtime)]);
        expect(Object.keys(run).sort(), key).toEqual(Object.keys(typed).sort());
        for (const name of Object.keys(typed)) expect(run[name], `${key} ${name}`).toBe(typed[name]);
      } else {
        expect(entry.require, key).toBeUndefined();
      }
    }
  });
});

describe("ValidationError.field", () => {
  it("names metadata.cwd for a cwd that no backend can index", async () => {
    const storage = new MemoryStorageBackend();
    const error = await storage.createSession("agent", { cwd: "/a\u0000b" }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe("metadata.cwd");
    expect((error as Error).message).toBe("metadata.cwd: must be well-formed Unicode without NUL characters");
  });
});
