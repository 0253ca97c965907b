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

describe("importDriver", () => {
  it("names the package to install when a driver is missing", async () => {
    const { importDriver } = await import("../src/core/driver.js");
    const error = await importDriver("agentix-no-such-driver", "agentix/nothing", "agentix-no-such-driver@1").catch(
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(AgentixStorageError);
    expect((error as Error).message).toBe(
      'agentix/nothing needs the package "agentix-no-such-driver": run npm install agentix-no-such-driver@1',
    );
    expect((error as Error).cause).toBeDefined();
  });
});

describe("package exports", () => {
  it("map every subpath to a source entry that exists", async () => {
    const { readFile, access } = await import("node:fs/promises");
    const pkg = JSON.parse(await readFile(new URL("../package.json", import.meta.url), "utf8")) as {
      exports: Record<string, string | { types: string; default: string }>;
    };
    const subpaths = Object.keys(pkg.exports).filter((k) => k !== "./package.json");
    expect(subpaths.sort()).toEqual([".", "./postgres", "./redis", "./schema", "./sqlite", "./testing"]);
    for (const key of subpaths) {
      const entry = pkg.exports[key] as { types: string; default: string };
      expect(entry.types).toBe(entry.default.replace(/\.js$/, ".d.ts"));
      const source = entry.default.replace(/^\.\/dist\//, "../src/").replace(/\.js$/, ".ts");
      await access(new URL(source, import.meta.url));
    }
  });
});
