// A private 3-master Redis Cluster for the tests: redis-server --cluster-enabled yes on free loopback ports in a temp
// dir, joined by redis-cli --cluster create, stopped (and its dir removed) afterwards. Needs redis-server and
// redis-cli on the PATH, nothing else.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A running cluster: its nodes' ports and how to stop it. */
export interface RedisCluster {
  ports: number[];
  /** `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,...` */
  url: string;
  stop: () => Promise<void>;
}

/** A free loopback port (and its cluster bus port, +10000, both below 55536). */
async function freePort(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = createServer();
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    if (port < 55_000 && (await canListen(port + 10_000))) return port;
  }
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

/** Whether redis-server and redis-cli are installed. */
export async function clusterToolsAvailable(): Promise<boolean> {
  try {
    await run("redis-server", ["--version"]);
    await run("redis-cli", ["--version"]);
    return true;
  } catch {
    return false;
  }
}

/** Starts a cluster of `masters` masters (no replicas) and waits until every slot is served. */
export async function startRedisCluster(masters = 3): Promise<RedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), "agentix-redis-cluster-"));
  const ports: number[] = [];
  const children: ChildProcess[] = [];
  const stop = async () => {
    await Promise.all(
      children.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once("exit", () => resolve());
            child.kill("SIGTERM");
          }),
      ),
    );
    await rm(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < masters; i++) {
      const port = await freePort();
      ports.push(port);
      // biome-ignore format: one option per line
      const child = spawn("redis-server", [
        "--port", String(port), "--bind", "127.0.0.1", "--dir", dir,
        "--cluster-enabled", "yes", "--cluster-config-file", `nodes-${port}.conf`, "--cluster-node-timeout", "5000",
        "--save", "", "--appendonly", "no", "--logfile", `redis-${port}.log`, "--daemonize", "no",
      ], { stdio: "ignore" });
      children.push(child);
    }
    for (const port of ports) await waitForPing(port);
    await run("redis-cli", [
      "--cluster",
      "create",
      ...ports.map((port) => `127.0.0.1:${port}`),
      "--cluster-replicas",
      "0",
      "--cluster-yes",
    ]);
    for (const port of ports) await waitFor(port, (info) => /cluster_state:ok/.test(info), "CLUSTER", "INFO");
    return { ports, url: `redis+cluster://${ports.map((port) => `127.0.0.1:${port}`).join(",")}`, stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

async function waitForPing(port: number): Promise<void> {
  await waitFor(port, (reply) => reply.trim() === "PONG", "PING");
}

async function waitFor(port: number, ok: (reply: string) => boolean, ...command: string[]): Promise<void> {
  let last = "";
  for (let i = 0; i < 200; i++) {
    try {
      last = (await run("redis-cli", ["-h", "127.0.0.1", "-p", String(port), ...command])).stdout;
      if (ok(last)) return;
    } catch (error) {
      last = String(error);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`redis cluster node ${port}: ${command.join(" ")} never became ready (${last.trim()})`);
}
