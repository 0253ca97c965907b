// Large sessions on a private server (its latency is this file's alone): forking, loading and deleting 200k
// messages must not stall Redis for other clients. Correctness is asserted; the worst PING latency seen by another
// client meanwhile is printed as a figure, never asserted (timing depends on the machine).
import { randomUUID } from "node:crypto";
import { on } from "node:events";
import { Worker } from "node:worker_threads";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisStorageBackend } from "../src/redis.js";
import { figure, hasRedisServer, PrivateRedis, required, sleep } from "./reliability/support.js";

const runs = required("redis-server", hasRedisServer);
const MESSAGES = 200_000;
const PINGER = `
const { parentPort, workerData } = require("node:worker_threads");
const { Redis } = require("ioredis");
const redis = new Redis(workerData.url);
let running = true;
let worst = 0;
parentPort.on("message", () => { running = false; });
(async () => {
  await redis.ping();
  parentPort.postMessage("ready");
  while (running) {
    const start = performance.now();
    await redis.ping();
    worst = Math.max(worst, performance.now() - start);
    await new Promise((r) => setTimeout(r, 1));
  }
  parentPort.postMessage(worst);
  redis.disconnect();
})();
`;

describe.skipIf(!runs)("RedisStorageBackend with a large session", { timeout: 120_000 }, () => {
  let server: PrivateRedis;
  let raw: Redis;
  beforeAll(async () => {
    server = await PrivateRedis.create(["--latency-monitor-threshold", "1"]);
    raw = new Redis(server.url);
  });
  afterAll(async () => {
    raw?.disconnect();
    await server?.destroy();
  });

  /**
   * A session of `n` messages, pushed by the test in chunks (an append of 200k would be one long script); with `pad`,
   * each message's content carries that many more bytes.
   */
  async function large(b: RedisStorageBackend, prefix: string, n: number, pad = 0): Promise<string> {
    const id = await b.createSession("big");
    const timestamp = (await b.getSession(id))?.updated_at as string;
    const content = (i: number) => (pad === 0 ? { i } : { i, pad: "p".repeat(pad) });
    for (let i = 0; i < n; i += 10_000) {
      const lines = Array.from({ length: Math.min(10_000, n - i) }, (_, k) =>
        JSON.stringify({ role: "user", content: content(i + k), timestamp }),
      );
      await raw.rpush(`${prefix}:messages:${id}`, ...lines);
    }
    return id;
  }

  /**
   * While `work` runs: the worst latency of PINGs sent one after another by another client on a thread of its own
   * (so that this thread parsing JSON does not count), and the slowest command Redis itself reports (LATENCY).
   */
  async function worstPing<T>(work: () => Promise<T>): Promise<{ result: T; worstMs: number; serverMs: number }> {
    const pinger = new Worker(PINGER, { eval: true, workerData: { url: server.url } });
    const replies = on(pinger, "message");
    await replies.next(); // connected
    await raw.latency("RESET");
    try {
      return { result: await work(), ...(await finish()) };
    } finally {
      pinger.postMessage("stop");
      await pinger.terminate();
    }
    async function finish() {
      pinger.postMessage("stop");
      const worst = (await replies.next()).value[0] as number;
      const latest = (await raw.call("LATENCY", "LATEST")) as Array<[string, number, number, number]>;
      const serverMs = Math.max(0, ...latest.filter(([event]) => event === "command").map(([, , , max]) => max));
      return { worstMs: Math.round(worst * 10) / 10, serverMs };
    }
  }

  it("forks, loads and deletes 200k messages, all correct, while another client PINGs", async () => {
    const prefix = "large";
    await using b = new RedisStorageBackend({ url: server.url, prefix });
    const id = await large(b, prefix, MESSAGES);
    expect(await b.countMessages(id)).toBe(MESSAGES);

    const fork = await worstPing(() => b.forkSession(id));
    expect(await raw.llen(`${prefix}:messages:${fork.result}`)).toBe(MESSAGES);
    expect(await raw.lrange(`${prefix}:messages:${fork.result}`, -3, -1)).toEqual(
      await raw.lrange(`${prefix}:messages:${id}`, -3, -1),
    );

    const branch = await worstPing(() => b.forkSession(id, { length: MESSAGES / 2 - 1 }));
    expect(await b.countMessages(branch.result)).toBe(MESSAGES / 2 - 1);
    await b.deleteSession(branch.result);

    const load = await worstPing(() => b.loadMessages(fork.result));
    expect(load.result).toHaveLength(MESSAGES);
    expect(load.result.every((m, i) => (m.content as { i: number }).i === i)).toBe(true);
    const last = await worstPing(() => b.loadMessages(id, { last: MESSAGES - 5 }));
    expect(last.result).toHaveLength(MESSAGES - 5);
    expect(last.result[0]?.content).toEqual({ i: 5 });

    const removal = await worstPing(async () => {
      await b.deleteSession(id);
      await b.deleteSession(fork.result);
    });
    expect(await b.getSession(id)).toBeNull();
    expect(await raw.exists(`${prefix}:messages:${id}`, `${prefix}:messages:${fork.result}`)).toBe(0);
    // Only the writer's op bitmap is left (it expires): no temp key, no list, no index entry.
    const [, left] = await raw.scan("0", "MATCH", `${prefix}:*`, "COUNT", 1000);
    expect(left.filter((key) => !key.startsWith(`${prefix}:op:`))).toEqual([]);
    const phases = { fork, forkHalf: branch, load, loadLast: last, delete: removal };
    figure(
      "redis 200k messages, worst PING latency / slowest command (ms)",
      Object.fromEntries(Object.entries(phases).map(([name, p]) => [name, `${p.worstMs} / ${p.serverMs}`])),
    );
  });

  it("a full load under concurrent appends returns the list as it was at one moment", async () => {
    const prefix = "appending";
    await using b = new RedisStorageBackend({ url: server.url, prefix });
    const id = await large(b, prefix, 30_000);
    let stop = false;
    const writer = (async () => {
      for (let n = 0; !stop; n++) await b.saveMessage(id, "assistant", { extra: n });
    })();
    const loaded = await b.loadMessages(id);
    stop = true;
    await writer;
    const all = await b.loadMessages(id);
    expect(loaded.length).toBeGreaterThanOrEqual(30_000);
    expect(loaded).toStrictEqual(all.slice(0, loaded.length));
    await b.deleteSession(id);
  });

  it("a full load under concurrent pops never mixes two versions of the list", async () => {
    const prefix = "popping";
    await using b = new RedisStorageBackend({ url: server.url, prefix });
    const id = await large(b, prefix, 30_000);
    const popper = (async () => {
      for (let n = 0; n < 20; n++) {
        await b.popMessage(id);
        await sleep(2);
      }
    })();
    const loaded = await b.loadMessages(id);
    await popper;
    // A consistent read is a prefix 0..k-1 of the original list, whole: no message missing or doubled.
    expect(loaded.every((m, i) => (m.content as { i: number }).i === i)).toBe(true);
    expect(loaded.length).toBeGreaterThanOrEqual(30_000 - 20);
    await b.deleteSession(id);
  });

  it("forks a large session with a chosen id and length; a fork of a missing session writes nothing", async () => {
    const prefix = "branch";
    await using b = new RedisStorageBackend({ url: server.url, prefix });
    // 20k messages of ~300 bytes: over the bound of one COPY (4 MiB), so copied in chunks.
    const id = await large(b, prefix, 20_000, 250);
    const target = randomUUID();
    expect(await b.forkSession(id, { length: 12_345, sessionId: target })).toBe(target);
    const copy = await b.loadMessages(target);
    expect(copy).toHaveLength(12_345);
    expect(copy.at(-1)?.content).toMatchObject({ i: 12_344 });
    await b.saveMessage(target, "user", "only in the fork");
    expect(await b.countMessages(id)).toBe(20_000);
    await b.deleteSession(id);
    await b.deleteSession(target);
  });

  it("a crash between a fork's chunks leaves no fork, only a temp key that expires", async () => {
    const prefix = "crash";
    const client = new Redis(server.url);
    await using b = new RedisStorageBackend({ client, prefix });
    const id = await large(b, prefix, 20_000, 250);
    // The process "dies" before its third piece reaches the temp key (a piece is a MULTI that RPUSHes): nothing more
    // reaches Redis.
    const multi = client.multi.bind(client);
    let pushes = 0;
    client.multi = ((...args: Parameters<typeof multi>) => {
      const m = multi(...args);
      const rpush = m.rpush.bind(m) as (...a: unknown[]) => typeof m;
      (m as unknown as { rpush: typeof rpush }).rpush = (...a) => {
        if (++pushes === 3) m.exec = () => Promise.reject(new Error("crash"));
        return rpush(...a);
      };
      return m;
    }) as typeof client.multi;
    const target = randomUUID();
    await expect(b.forkSession(id, { sessionId: target })).rejects.toThrow(/crash/);
    expect(await b.getSession(target)).toBeNull();
    expect(await raw.exists(`${prefix}:session:${target}`, `${prefix}:messages:${target}`)).toBe(0);
    expect((await b.listSessions("big")).map((s) => s.session_id)).toEqual([id]);
    const [, temps] = await raw.scan("0", "MATCH", `${prefix}:tmp:*`, "COUNT", 1000);
    expect(temps).toHaveLength(1);
    expect(temps[0]).toContain(target);
    // Two pieces: the source's first messages, in order.
    const copied = await raw.lrange(temps[0] as string, 0, -1);
    expect(copied.length).toBeGreaterThan(1);
    expect(copied.length).toBeLessThan(20_000);
    expect(copied).toEqual(await raw.lrange(`${prefix}:messages:${id}`, 0, copied.length - 1));
    const ttl = await raw.pttl(temps[0] as string);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(600_000);
    // The same fork again succeeds (with a temp key of its own), and the source is untouched.
    client.multi = multi as typeof client.multi;
    expect(await b.forkSession(id, { sessionId: target })).toBe(target);
    expect(await b.countMessages(target)).toBe(20_000);
    expect(await raw.pttl(`${prefix}:messages:${target}`)).toBe(-1);
    await raw.unlink(temps[0] as string);
    await b.deleteSession(id);
    await b.deleteSession(target);
    client.disconnect();
  });

  it("a fork restarted by an edit of the source, and one racing appends, copy one version of the source", async () => {
    const prefix = "racing";
    await using b = new RedisStorageBackend({ url: server.url, prefix });
    const id = await large(b, prefix, 50_000, 250);
    let stop = false;
    const edits = (async () => {
      for (let n = 0; !stop; n++) {
        await b.saveMessage(id, "assistant", { extra: n });
        if (n % 50 === 10) await b.popMessage(id);
        await sleep(1);
      }
    })();
    const fork = await b.forkSession(id);
    stop = true;
    await edits;
    const copy = await b.loadMessages(fork);
    const source = await b.loadMessages(id);
    expect(copy.length).toBeGreaterThanOrEqual(50_000);
    // Every message of the fork is the source's at its position, except possibly popped ones at the end.
    expect(copy.slice(0, 50_000)).toStrictEqual(source.slice(0, 50_000));
    expect((await raw.scan("0", "MATCH", `${prefix}:tmp:*`, "COUNT", 1000))[1]).toEqual([]);
    await b.deleteSession(id);
    await b.deleteSession(fork);
  });
  /** The commands that `client` sends while `work` runs (name and arguments, as strings). */
  async function sent(client: Redis, work: () => Promise<unknown>): Promise<string[][]> {
    const commands: string[][] = [];
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((command: { name: string; args: unknown[] }) => {
      commands.push([command.name, ...command.args.map(String)]);
      return send(command as Parameters<typeof send>[0]);
    }) as typeof client.sendCommand;
    try {
      await work();
    } finally {
      client.sendCommand = send;
    }
    return commands;
  }

  it("copies a fork of large messages in chunks bounded by bytes, not only by count", async () => {
    const prefix = "bytes";
    const client = new Redis(server.url);
    await using b = new RedisStorageBackend({ client, prefix });
    // 5,000 messages of ~4 kB (20 MB): a chunk of 1,024 of them would be one 4 MB RPUSH.
    const id = await large(b, prefix, 5_000, 4_000);
    let fork = "";
    const commands = await sent(client, async () => {
      fork = await b.forkSession(id);
    });
    const pushes = commands.filter(([name]) => name === "rpush");
    expect(pushes.length).toBeGreaterThan(30);
    for (const [, , ...lines] of pushes) {
      expect(lines.reduce((n, line) => n + Buffer.byteLength(line), 0)).toBeLessThanOrEqual(512 * 1024);
    }
    const ranges = commands
      .filter(([name]) => name === "lrange")
      .map(([, , from, to]) => Number(to) - Number(from) + 1);
    expect(Math.max(...ranges)).toBeLessThanOrEqual(Math.ceil((512 * 1024) / 4_000));
    expect(pushes.reduce((n, [, , ...lines]) => n + lines.length, 0)).toBe(5_000);
    expect(await raw.lrange(`${prefix}:messages:${fork}`, 0, -1)).toEqual(
      await raw.lrange(`${prefix}:messages:${id}`, 0, -1),
    );
    // A full load of them: after the probe of 4,097 (one LRANGE when the session fits), pages of at most 1 MiB.
    let loaded = 0;
    const reads = await sent(client, async () => {
      loaded = (await b.loadMessages(fork)).length;
    });
    expect(loaded).toBe(5_000);
    const pages = reads.filter(([name]) => name === "lrange").map(([, , from, to]) => Number(to) - Number(from) + 1);
    expect(pages[0]).toBe(4_097);
    expect(pages.length).toBeGreaterThan(5);
    expect(Math.max(...pages.slice(1))).toBeLessThanOrEqual(Math.ceil((1024 * 1024) / 4_000));
    await b.deleteSession(id);
    await b.deleteSession(fork);
    client.disconnect();
  });

  it("forks a session of a few MB (more than a chunk's count) with one COPY in one script", async () => {
    const prefix = "copy";
    const client = new Redis(server.url);
    await using b = new RedisStorageBackend({ client, prefix });
    // 10,000 small messages, under 4 MiB: one script, which COPYs (cheap in C: about a millisecond).
    const id = await large(b, prefix, 10_000);
    let fork = "";
    const commands = await sent(client, async () => {
      fork = await b.forkSession(id);
    });
    expect(commands.map(([name]) => name)).toEqual(["evalsha"]);
    expect(await raw.lrange(`${prefix}:messages:${fork}`, 0, -1)).toEqual(
      await raw.lrange(`${prefix}:messages:${id}`, 0, -1),
    );
    const half = await b.forkSession(id, { length: 4_000 });
    expect(await raw.lrange(`${prefix}:messages:${half}`, 0, -1)).toEqual(
      await raw.lrange(`${prefix}:messages:${id}`, 0, 3_999),
    );
    for (const s of [id, fork, half]) await b.deleteSession(s);
    client.disconnect();
  });
});
