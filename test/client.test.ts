import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  AgentixAgentOptions,
  AgentixClient,
  FileStorageBackend,
  MemoryStorageBackend,
  STORAGE_URL_ENV,
  ValidationError,
} from "../src/index.js";
import { SqliteStorageBackend } from "../src/sqlite.js";

let home: string;
const saved = { HOME: process.env.HOME, url: process.env[STORAGE_URL_ENV] };

beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), "agentix-client-"));
  process.env.HOME = home;
  delete process.env[STORAGE_URL_ENV];
});

afterEach(async () => {
  process.env.HOME = saved.HOME;
  if (saved.url === undefined) delete process.env[STORAGE_URL_ENV];
  else process.env[STORAGE_URL_ENV] = saved.url;
  await rm(home, { recursive: true, force: true });
});

describe("AgentixClient", () => {
  it("stores sessions under $HOME/.agentix/projects by default", async () => {
    await using client = new AgentixClient();
    expect(client.storage).toBeInstanceOf(FileStorageBackend);
    const id = await client.storage.createSession("agent", { cwd: "/x" });
    await client.storage.saveMessage(id, "user", "hi");
    const written = await readdir(join(home, ".agentix", "projects"), { recursive: true });
    expect(written.some((f) => f.includes(id))).toBe(true);
  });

  it("uses storageBasePath, ~ expanded", async () => {
    const client = new AgentixClient({ storageBasePath: "~/elsewhere" });
    const id = await client.storage.createSession("agent");
    expect(await readdir(join(home, "elsewhere"), { recursive: true })).toEqual(
      expect.arrayContaining([expect.stringContaining(id)]),
    );
    await client.close();
    expect(client.storage.closed).toBe(true);
  });

  it("keeps sessions in memory without persistence, also when AGENTIX_STORAGE_URL is set", async () => {
    process.env[STORAGE_URL_ENV] = `file:${home}/from-env`;
    const client = new AgentixClient({ persistenceEnabled: false });
    expect(client.storage).toBeInstanceOf(MemoryStorageBackend);
    await client.storage.createSession("agent");
    await client.close();
    expect(await readdir(home)).toEqual([]);
  });

  it("uses a given backend and leaves it open on close", async () => {
    const backend = new MemoryStorageBackend();
    const client = new AgentixClient({ storageBackend: backend, persistenceEnabled: true });
    expect(client.storage).toBe(backend);
    await client.close();
    expect(backend.closed).toBe(false);
    await backend.close();
  });

  it("follows AGENTIX_STORAGE_URL when no backend is given", async () => {
    process.env[STORAGE_URL_ENV] = `file:${home}/from-env`;
    const viaFile = new AgentixClient();
    expect(viaFile.storage).toBeInstanceOf(FileStorageBackend);
    await viaFile.storage.createSession("agent");
    expect(await readdir(join(home, "from-env"))).not.toEqual([]);
    await viaFile.close();

    // A driver-backed URL loads on first use; sync calls need `await client.ready()` first.
    process.env[STORAGE_URL_ENV] = `sqlite:${home}/env.db`;
    const viaSqlite = new AgentixClient();
    expect(() => viaSqlite.storage.createSessionSync("agent")).toThrow(/client\.ready\(\)/);
    const id = await viaSqlite.storage.createSession("agent");
    expect(await viaSqlite.ready()).toBe(viaSqlite.storage);
    expect(viaSqlite.storage.getSessionSync(id)?.agent_id).toBe("agent");
    await viaSqlite.close();
    const check = new SqliteStorageBackend({ path: `${home}/env.db` });
    expect((await check.getSession(id))?.agent_id).toBe("agent");
    await check.close();
  });

  it("rejects bad options with a ValidationError", () => {
    expect(() => new AgentixClient({ persistenceEnabled: false, storageBackend: new MemoryStorageBackend() })).toThrow(
      ValidationError,
    );
    expect(() => new AgentixClient({ persistenceEnabld: false } as never)).toThrow(ValidationError);
    expect(() => new AgentixClient({ storageBasePath: 42 } as never)).toThrow(
      expect.objectContaining({ field: "AgentixClient options.storageBasePath" }),
    );
    expect(() => new AgentixClient({ storageBasePath: "" })).toThrow(ValidationError);
    expect(() => new AgentixClient({ storageBackend: {} as never })).toThrow(ValidationError);
    process.env[STORAGE_URL_ENV] = "mongodb://x";
    expect(() => new AgentixClient()).toThrow(ValidationError);
    expect(AgentixAgentOptions.safeParse({ persistenceEnabled: true }).success).toBe(true);
  });

  it("reports a backend that cannot load on first use and on ready()", async () => {
    process.env[STORAGE_URL_ENV] = "postgres://127.0.0.1:1/nothing?schema=x";
    const client = new AgentixClient();
    await expect(client.storage.getSession("00000000-0000-7000-8000-000000000000")).rejects.toMatchObject({
      name: "AgentixStorageError",
    });
    await client.close();
  });
});
