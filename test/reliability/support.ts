// Shared by the reliability tests (issue 9): how big a run is, private servers to crash, a proxy that loses
// replies, the backends on namespaces of their own, and the gauges (heap, file descriptors) the soak reads.
import { execFile, execFileSync, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import v8 from "node:v8";
import vm from "node:vm";
import { inject } from "vitest";
import type { StorageBackend } from "../../src/core/backend.js";

/** `RELIABILITY_FULL=1` (`npm run test:reliability`) runs the long versions; `npm test` runs the bounded ones. */
export const FULL = process.env.RELIABILITY_FULL === "1";

/** `bounded` in `npm test`, `full` under `RELIABILITY_FULL=1`. */
export function scaled(bounded: number, full: number): number {
  return FULL ? full : bounded;
}

/** Prints a measured figure (the numbers RELIABILITY.md quotes) under RELIABILITY_FULL or RELIABILITY_FIGURES=1. */
export function figure(name: string, value: unknown): void {
  if (FULL || process.env.RELIABILITY_FIGURES === "1") console.log(`[reliability] ${name}: ${JSON.stringify(value)}`);
}

/**
 * Whether a test that needs `what` can run. Missing, it is skipped with a loud message, except under CI=true,
 * where the file fails: CI must not pass by skipping the fault tests.
 */
export function required(what: string, found: boolean): boolean {
  if (found) return true;
  const message = `${what} not found`;
  if (process.env.CI === "true") throw new Error(`${message}; under CI=true the reliability fault tests must run`);
  console.warn(`\n!!! ${message}: these reliability tests are SKIPPED.\n`);
  return false;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `check` every 10 ms for up to `ms`; true once it holds. */
export async function eventually(check: () => boolean | Promise<boolean>, ms = 5_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await sleep(10);
  }
  return check();
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
    server.once("error", reject);
  });
}

export function tempDir(label: string): string {
  return mkdtempSync(join(tmpdir(), `agentix-rel-${label}-`));
}

// ---- gauges ----

let collect: (() => void) | undefined;

/** Heap in use after full collections: what is really retained. */
export function settledHeap(): number {
  // vitest's workers do not run with --expose-gc; the flag still exposes gc() to contexts created afterwards.
  if (!collect) {
    v8.setFlagsFromString("--expose_gc");
    collect = vm.runInNewContext("gc") as () => void;
  }
  for (let i = 0; i < 3; i++) collect();
  return process.memoryUsage().heapUsed;
}

/** Open file descriptors of this process (Linux), or `null` where /proc is missing. */
export function openFds(): number | null {
  return existsSync("/proc/self/fd") ? readdirSync("/proc/self/fd").length : null;
}

/** A snapshot of what the prototypes hold, to compare after hostile input: nothing may leak into them. */
export function prototypeSnapshot(): string {
  const names = (o: object) => Reflect.ownKeys(o).map(String).sort().join(",");
  return [Object.prototype, Array.prototype, Function.prototype].map(names).join("|");
}

// ---- private servers: started on free loopback ports, never the shared 5432/6379 ----

/** The directory holding initdb and pg_ctl: $AGENTIX_PG_BIN, `pg_config --bindir`, or the newest /usr/lib/postgresql/N/bin. */
export function postgresBin(): string | null {
  const candidates: string[] = [];
  if (process.env.AGENTIX_PG_BIN) candidates.push(process.env.AGENTIX_PG_BIN);
  const config = spawnSync("pg_config", ["--bindir"], { encoding: "utf8" });
  if (config.status === 0) candidates.push(config.stdout.trim());
  if (existsSync("/usr/lib/postgresql")) {
    const versions = readdirSync("/usr/lib/postgresql").sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((v) => `/usr/lib/postgresql/${v}/bin`));
  }
  return candidates.find((dir) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl"))) ?? null;
}

export const hasRedisServer = spawnSync("redis-server", ["--version"]).status === 0;

const run = promisify(execFile);

/**
 * A throwaway Postgres cluster in a temp directory. initdb refuses to run as root, so as root every tool runs as
 * the `postgres` user (runuser), and the directory is handed to it.
 */
export class PrivatePostgres {
  readonly #bin: string;
  readonly dir: string;
  readonly port: number;

  private constructor(bin: string, dir: string, port: number) {
    this.#bin = bin;
    this.dir = dir;
    this.port = port;
  }

  static async create(bin: string): Promise<PrivatePostgres> {
    const dir = tempDir("pg");
    if (process.getuid?.() === 0) {
      const [uid, gid] = ["-u", "-g"].map((flag) =>
        Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" })),
      );
      chownSync(dir, uid as number, gid as number);
    }
    const pg = new PrivatePostgres(bin, dir, await freePort());
    const initdb = ["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale=C"];
    await pg.#tool("initdb", ["-D", pg.#data, ...initdb]);
    await pg.start();
    return pg;
  }

  /** The URL of its `postgres` database. */
  get url(): string {
    return `postgres://postgres@127.0.0.1:${this.port}/postgres`;
  }

  async start(): Promise<void> {
    const options = `-p ${this.port} -k ${this.dir} -c listen_addresses=127.0.0.1`;
    const log = join(this.dir, "log");
    await this.#tool("pg_ctl", ["-D", this.#data, "-l", log, "-w", "-t", "60", "-o", options, "start"]);
  }

  /** `immediate` is a crash: every server process quits at once, recovery replays the WAL at the next start. */
  async stop(mode: "immediate" | "fast"): Promise<void> {
    await this.#tool("pg_ctl", ["-D", this.#data, "-m", mode, "-w", "stop"]);
  }

  async destroy(): Promise<void> {
    await this.stop("immediate").catch(() => {});
    rmSync(this.dir, { recursive: true, force: true });
  }

  get #data(): string {
    return join(this.dir, "data");
  }

  async #tool(name: string, args: string[]): Promise<void> {
    const path = join(this.#bin, name);
    const [file, argv] = process.getuid?.() === 0 ? ["runuser", ["-u", "postgres", "--", path, ...args]] : [path, args];
    await run(file, argv, { cwd: this.dir });
  }
}

/** A throwaway redis-server, killed with SIGKILL and started again on the same port. */
export class PrivateRedis {
  readonly dir = tempDir("redis");
  readonly port: number;
  readonly #extra: string[];
  #child: ReturnType<typeof spawn> | undefined;

  private constructor(port: number, extra: string[]) {
    this.port = port;
    this.#extra = extra;
  }

  /** `extra`: more redis-server arguments, e.g. `["--appendonly", "yes"]`; by default it persists nothing. */
  static async create(extra: string[] = []): Promise<PrivateRedis> {
    const redis = new PrivateRedis(await freePort(), extra);
    await redis.start();
    return redis;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const args = ["--port", String(this.port), "--bind", "127.0.0.1", "--dir", this.dir, "--save", ""];
    this.#child = spawn("redis-server", [...args, "--appendonly", "no", ...this.#extra], { stdio: "ignore" });
    if (!(await eventually(() => ping(this.port), 10_000)))
      throw new Error(`redis-server did not start on ${this.port}`);
  }

  async kill(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGKILL");
    await exited;
  }

  async destroy(): Promise<void> {
    await this.kill();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function ping(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: "127.0.0.1" });
    const done = (up: boolean) => {
      socket.destroy();
      resolve(up);
    };
    socket.once("connect", () => socket.write("PING\r\n"));
    socket.once("data", (data) => done(data.toString().startsWith("+PONG")));
    socket.once("error", () => done(false));
  });
}

/**
 * A TCP proxy in front of a server that can lose replies: the server receives and runs what the client sends,
 * but its answers never arrive and the connection is then closed, as when a network path, a load balancer or a
 * `CLIENT KILL` drops a connection at the wrong moment. New connections work normally.
 */
export class ReplyLosingProxy {
  readonly #server: Server;
  readonly #pairs = new Set<{ client: Socket; upstream: Socket; swallow: boolean }>();

  private constructor(server: Server) {
    this.#server = server;
  }

  static async listen(target: number): Promise<ReplyLosingProxy> {
    const server = createServer();
    const proxy = new ReplyLosingProxy(server);
    server.on("connection", (client) => proxy.#pipe(client, target));
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    return proxy;
  }

  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  /** From now on the answers on the connections open now are dropped (the requests still go through). */
  swallowReplies(): void {
    for (const pair of this.#pairs) pair.swallow = true;
  }

  /**
   * Closes the connections whose answers are being dropped. (With a reset instead of a close, postgres.js's
   * `end()` later waits out its whole timeout: a driver quirk that would only slow the tests down.)
   */
  cut(): void {
    for (const pair of this.#pairs) {
      if (!pair.swallow) continue;
      pair.client.destroy();
      pair.upstream.destroy();
    }
  }

  async close(): Promise<void> {
    for (const { client, upstream } of this.#pairs) {
      client.destroy();
      upstream.destroy();
    }
    await new Promise((resolve) => this.#server.close(resolve));
  }

  #pipe(client: Socket, target: number): void {
    const upstream = connect({ port: target, host: "127.0.0.1" });
    const pair = { client, upstream, swallow: false };
    this.#pairs.add(pair);
    client.on("data", (data) => upstream.write(data));
    upstream.on("data", (data) => {
      if (!pair.swallow) client.write(data);
    });
    const end = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) socket.on("error", end).on("close", end);
  }
}

// ---- the five backends, each on a namespace of this test file ----

export type BackendName = "memory" | "file" | "sqlite" | "postgres" | "redis";

export interface Subject {
  name: BackendName;
  /** False when its server is missing (the shared test servers are found by test/support/global-setup.ts). */
  available: boolean;
  /**
   * A backend on `tenant` (a schema, key prefix, directory or file of its own); `memory` is new on each call.
   * `connectionName` names its server connections: Postgres `application_name`, Redis `CLIENT SETNAME`.
   */
  open(tenant?: string, connectionName?: string): Promise<StorageBackend>;
}

/**
 * The five backends on namespaces of one test file: a random schema / key prefix / temp directory,
 * all removed by `cleanup()`.
 */
export function subjects(label: string): {
  all: Subject[];
  /** In every name this file uses: schema `rel_{namespace}_{tenant}`, key prefix `rel-{namespace}-{tenant}`. */
  namespace: string;
  cleanup: () => Promise<void>;
  /** Server connections named `name` now open: for leak checks. 0 for the embedded backends. */
  connections: (backend: BackendName, name: string) => Promise<number>;
} {
  const id = `${label}_${Math.random().toString(36).slice(2, 8)}`;
  const postgresUrl = inject("postgresUrl");
  const redisUrl = inject("redisUrl");
  const dir = tempDir(label);
  const schemas = new Set<string>();
  const prefixes = new Set<string>();
  const all: Subject[] = [
    {
      name: "memory",
      available: true,
      open: async () => new (await import("../../src/memory.js")).MemoryStorageBackend(),
    },
    {
      name: "file",
      available: true,
      open: async (tenant = "main") =>
        new (await import("../../src/file.js")).FileStorageBackend({ basePath: join(dir, "file", tenant) }),
    },
    {
      name: "sqlite",
      available: true,
      open: async (tenant = "main") =>
        new (await import("../../src/sqlite.js")).SqliteStorageBackend({ path: join(dir, "sqlite", `${tenant}.db`) }),
    },
    {
      name: "postgres",
      available: postgresUrl !== null,
      open: async (tenant = "main", connectionName?: string) => {
        const schema = `rel_${id}_${tenant}`;
        schemas.add(schema);
        const url = new URL(postgresUrl as string);
        if (connectionName) url.searchParams.set("application_name", connectionName);
        return new (await import("../../src/postgres.js")).PostgresStorageBackend({ url: url.href, schema });
      },
    },
    {
      name: "redis",
      available: redisUrl !== null,
      open: async (tenant = "main", connectionName?: string) => {
        const prefix = `rel-${id}-${tenant}`;
        prefixes.add(prefix);
        const redisOptions = connectionName ? { connectionName } : {};
        return new (await import("../../src/redis.js")).RedisStorageBackend({
          url: redisUrl as string,
          prefix,
          redisOptions,
        });
      },
    },
  ];
  // Each store is cleaned even when another one fails.
  const cleanup = async () => {
    const results = await Promise.allSettled([
      (async () => rmSync(dir, { recursive: true, force: true }))(),
      (async () => {
        if (!postgresUrl || schemas.size === 0) return;
        const { default: postgres } = await import("postgres");
        const sql = postgres(postgresUrl, { onnotice: () => {} });
        try {
          // Quoted by hand: sql(name) would split a name with a dot into schema and table.
          for (const schema of schemas)
            await sql.unsafe(`drop schema if exists "${schema.replaceAll('"', '""')}" cascade`);
        } finally {
          await sql.end();
        }
      })(),
      (async () => {
        if (!redisUrl || prefixes.size === 0) return;
        const { Redis } = await import("ioredis");
        const redis = new Redis(redisUrl);
        try {
          for (const prefix of prefixes) await dropPrefix(redis, prefix);
        } finally {
          await redis.quit();
        }
      })(),
    ]);
    for (const result of results) if (result.status === "rejected") throw result.reason;
  };
  const connections = async (backend: BackendName, name: string): Promise<number> => {
    if (backend === "postgres" && postgresUrl) {
      const { default: postgres } = await import("postgres");
      const sql = postgres(postgresUrl, { max: 1, onnotice: () => {} });
      try {
        const [row] = await sql`select count(*)::int as n from pg_stat_activity where application_name = ${name}`;
        return row?.n as number;
      } finally {
        await sql.end();
      }
    }
    if (backend === "redis" && redisUrl) {
      const { Redis } = await import("ioredis");
      const redis = new Redis(redisUrl);
      try {
        return String(await redis.client("LIST"))
          .split("\n")
          .filter((line) => line.includes(` name=${name} `)).length;
      } finally {
        await redis.quit();
      }
    }
    return 0;
  };
  return { all, namespace: id, cleanup, connections };
}

/** Deletes every key under `prefix:` with SCAN (never KEYS) and UNLINK. */
export async function dropPrefix(redis: import("ioredis").Redis, prefix: string): Promise<void> {
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix.replace(/[*?[\]\\]/g, "\\$&")}:*`, "COUNT", 1000);
    if (keys.length > 0) await redis.unlink(...keys);
    cursor = next;
  } while (cursor !== "0");
}
