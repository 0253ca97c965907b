// Issue 18's stall row: how long one call on a big session blocks Redis for every other client, measured as the worst
// latency of PINGs that another connection sends (one per millisecond) during a full load, an iteration and a fork.
// The pinger runs on a worker thread with a raw socket, so that this process's own work (parsing a million messages)
// never delays it. Redis only, opt-in: `npm run bench -- --only redis --workloads stall` (a million messages).
import { Worker } from "node:worker_threads";
import { Redis } from "ioredis";
import { bigSession, type Workload } from "./workloads.js";

/** Where the pinger connects: the Redis server of the namespace. */
export interface PingTarget {
  host: string;
  port: number;
}

// CommonJS, run by the worker as is: PING, wait for +PONG, note the time, sleep a millisecond, again.
const PINGER = `
const { parentPort, workerData } = require("node:worker_threads");
const socket = require("node:net").connect(workerData.port, workerData.host);
let worst = 0, count = 0, sent = 0n, buffer = "", running = true, waiting = false;
const send = () => { if (!running) return; sent = process.hrtime.bigint(); socket.write("PING\\r\\n"); };
socket.setNoDelay(true);
socket.on("connect", send);
socket.on("data", (data) => {
  buffer += data;
  while (buffer.includes("\\r\\n")) {
    buffer = buffer.slice(buffer.indexOf("\\r\\n") + 2);
    const ms = Number(process.hrtime.bigint() - sent) / 1e6;
    if (ms > worst) worst = ms;
    count++;
    // A read waits for the PING in flight: the one that an operation which just ended may have held up.
    if (waiting) { waiting = false; parentPort.postMessage({ worst, count }); }
    if (running) setTimeout(send, 1);
  }
});
parentPort.on("message", (message) => {
  if (message === "reset") { worst = 0; count = 0; parentPort.postMessage({ worst, count }); }
  else if (message === "read") waiting = true;
  else { running = false; socket.end(); parentPort.postMessage({ worst, count }); }
});
`;

class Pinger {
  readonly #worker: Worker;
  constructor(target: PingTarget) {
    this.#worker = new Worker(PINGER, { eval: true, workerData: target });
  }
  #ask(message: "reset" | "read" | "stop"): Promise<{ worst: number; count: number }> {
    return new Promise((resolve) => {
      this.#worker.once("message", resolve);
      this.#worker.postMessage(message);
    });
  }
  /**
   * The worst PING latency (ms) while `run` runs, how long `run` took, and the slowest command that Redis's SLOWLOG
   * recorded meanwhile (`slow`, 0 when none passed its threshold).
   */
  async during(redis: Redis, run: () => Promise<unknown>): Promise<{ worst: number; ms: number; slow: number }> {
    const mark = await slowMark(redis);
    await this.#ask("reset");
    const start = performance.now();
    await run();
    const ms = performance.now() - start;
    const { worst } = await this.#ask("read");
    return { worst, ms, slow: (await slowSince(redis, mark)).ms };
  }
  async stop(): Promise<void> {
    await this.#ask("stop");
    await this.#worker.terminate();
  }
}

interface StallState {
  id: string;
  pinger: Pinger;
  /** For Redis's own account of slow commands: SLOWLOG (read only; its threshold, 10 ms by default, is the target). */
  redis: Redis;
}

type SlowEntry = [id: number, at: number, micros: number, args: string[]];

/** The newest SLOWLOG entry's id. */
async function slowMark(redis: Redis): Promise<number> {
  const [entry] = (await redis.slowlog("GET", 1)) as SlowEntry[];
  return entry ? entry[0] : -1;
}

/** The slowest command (ms) the SLOWLOG recorded after `mark` (0: none over its threshold), and how many. */
async function slowSince(redis: Redis, mark: number): Promise<{ ms: number; count: number }> {
  const entries = ((await redis.slowlog("GET", 128)) as SlowEntry[]).filter(([id]) => id > mark);
  const worst = entries.reduce<SlowEntry | undefined>((w, e) => (!w || e[2] > w[2] ? e : w), undefined);
  if (worst) {
    const shown = worst[3].slice(0, 4).map((a) => String(a).slice(0, 40));
    console.log(
      `    slowlog: ${entries.length} over the threshold, worst ${(worst[2] / 1000).toFixed(1)} ms ${shown.join(" ")}`,
    );
  }
  return { ms: Math.max(0, ...entries.map(([, , micros]) => micros / 1000)), count: entries.length };
}

export const stall: Workload<StallState> = {
  name: "stall",
  metrics: [
    { name: "stall_load", unit: "ms", extra: ["ms_load", "slowlog_load"] },
    { name: "stall_iterate", unit: "ms", extra: ["ms_iterate", "slowlog_iterate"] },
    { name: "stall_fork", unit: "ms", extra: ["ms_fork", "slowlog_fork"] },
    { name: "stall_delete", unit: "ms", extra: ["ms_delete", "slowlog_delete"] },
    // The floor: the worst PING while nothing runs for as long as the load took (a busy machine's scheduling).
    { name: "stall_idle", unit: "ms" },
  ],
  reps: { full: 2, quick: 2 },
  async seed(ns, scale) {
    if (!ns.pingTarget) throw new Error("stall: only on Redis (the namespace has no server to PING)");
    const { host, port } = ns.pingTarget;
    const id = await bigSession(ns.admin, "stall", scale.bigSize);
    return { id, pinger: new Pinger(ns.pingTarget), redis: new Redis({ host, port }) };
  },
  async warm({ subject, state }) {
    await subject.loadPage(state.id, 0, 100);
    await state.pinger.during(state.redis, async () => {});
  },
  async run({ subject, admin, state, scale }) {
    const { pinger, id, redis } = state;
    const load = await pinger.during(redis, async () => {
      const n = (await subject.loadMessages(id)).length;
      if (n !== scale.bigSize) throw new Error(`stall: load read ${n} messages`);
    });
    const iterate = await pinger.during(redis, async () => {
      let n = 0;
      for await (const _ of subject.iterateMessages(id, 1000)) n++;
      if (n !== scale.bigSize) throw new Error(`stall: iterate read ${n} messages`);
    });
    let forkId = "";
    const fork = await pinger.during(redis, async () => {
      forkId = await subject.forkSession(id);
    });
    if ((await admin.countMessages(forkId)) !== scale.bigSize) throw new Error("stall: the fork's count");
    const remove = await pinger.during(redis, () => admin.deleteSession(forkId));
    const idle = await pinger.during(redis, () => new Promise((resolve) => setTimeout(resolve, load.ms)));
    return {
      stall_load: load.worst,
      ms_load: load.ms,
      slowlog_load: load.slow,
      stall_iterate: iterate.worst,
      ms_iterate: iterate.ms,
      slowlog_iterate: iterate.slow,
      stall_fork: fork.worst,
      ms_fork: fork.ms,
      slowlog_fork: fork.slow,
      stall_delete: remove.worst,
      ms_delete: remove.ms,
      slowlog_delete: remove.slow,
      stall_idle: idle.worst,
    };
  },
  async check({ admin, state, scale }) {
    await state.pinger.stop();
    await state.redis.quit();
    if ((await admin.countMessages(state.id)) !== scale.bigSize) throw new Error("stall: the big session's count");
  },
};
