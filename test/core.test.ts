import { describe, expect, it } from "vitest";
import {
  AgentixStorageError,
  BackendClosedError,
  createStorageBackend,
  MemoryStorageBackend,
  SessionNotFoundError,
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
    expect(subpaths.sort()).toEqual([".", "./postgres", "./redis", "./schema", "./sqlite", "./testing"]);
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
