// Where the Postgres and Redis tests find their servers, in this order:
// AGENTIX_TEST_POSTGRES_URL / AGENTIX_TEST_REDIS_URL; a server on the default
// local port; a testcontainers container when Docker is there. With none, the
// tests are skipped with a loud message, except under CI=true, where the run fails.
import { connect } from "node:net";
import type {} from "vitest";
import type { TestProject } from "vitest/node";
import { pgbouncerBinary, startPgBouncer } from "./pgbouncer.js";
import { clusterToolsAvailable, startRedisCluster } from "./redis-cluster.js";

declare module "vitest" {
  export interface ProvidedContext {
    postgresUrl: string | null;
    redisUrl: string | null;
    /** A private 3-master Redis Cluster (`redis+cluster://...`), or null without redis-server. */
    redisClusterUrl: string | null;
    /** A private PgBouncer in transaction mode in front of `postgresUrl` (see ./pgbouncer.ts). */
    pgbouncerUrl: string | null;
  }
}

interface Service {
  name: string;
  env: string;
  port: number;
  localUrl: string;
  container: () => Promise<{ url: string; stop: () => Promise<unknown> }>;
}

const services: Service[] = [
  {
    name: "Postgres",
    env: "AGENTIX_TEST_POSTGRES_URL",
    port: 5432,
    localUrl: "postgres://postgres@127.0.0.1:5432/test",
    container: async () => {
      const { PostgreSqlContainer } = await import("@testcontainers/postgresql");
      const c = await new PostgreSqlContainer("postgres:16-alpine").start();
      return { url: c.getConnectionUri(), stop: () => c.stop() };
    },
  },
  {
    name: "Redis",
    env: "AGENTIX_TEST_REDIS_URL",
    port: 6379,
    localUrl: "redis://127.0.0.1:6379",
    container: async () => {
      const { RedisContainer } = await import("@testcontainers/redis");
      const c = await new RedisContainer("redis:7-alpine").start();
      return { url: c.getConnectionUrl(), stop: () => c.stop() };
    },
  },
];

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port, timeout: 1000 });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
    socket.once("timeout", () => done(false));
  });
}

async function dockerAvailable(): Promise<boolean> {
  try {
    const { getContainerRuntimeClient } = await import("testcontainers");
    await getContainerRuntimeClient();
    return true;
  } catch {
    return false;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const stops: Array<() => Promise<unknown>> = [];
  for (const service of services) {
    const key = service.name === "Postgres" ? "postgresUrl" : "redisUrl";
    let url: string | null = process.env[service.env] ?? null;
    if (!url && (await listening(service.port))) url = service.localUrl;
    if (!url && (await dockerAvailable())) {
      const started = await service.container();
      stops.push(started.stop);
      url = started.url;
    }
    if (!url) {
      const message = `no ${service.name} server: set ${service.env}, run one on 127.0.0.1:${service.port}, or start Docker (docker compose up -d)`;
      if (process.env.CI === "true") throw new Error(`${message}. Under CI=true the ${service.name} tests must run.`);
      console.warn(`\n!!! ${message}. The ${service.name} tests are SKIPPED.\n`);
    }
    project.provide(key, url);
  }
  // Redis Cluster: a private one, started from redis-server (which CI has).
  let clusterUrl: string | null = null;
  if (await clusterToolsAvailable()) {
    const cluster = await startRedisCluster();
    stops.push(cluster.stop);
    clusterUrl = cluster.url;
  } else if (process.env.CI === "true") {
    throw new Error("no redis-server/redis-cli on the PATH: under CI=true the Redis Cluster tests must run");
  } else {
    console.warn("\n!!! no redis-server/redis-cli on the PATH. The Redis Cluster tests are SKIPPED.\n");
  }
  project.provide("redisClusterUrl", clusterUrl);
  project.provide("pgbouncerUrl", await pgbouncer(project.getProvidedContext().postgresUrl ?? null, stops));
  return async () => {
    await Promise.all(stops.map((stop) => stop()));
  };
}

/** Starts the private PgBouncer in front of Postgres; missing, the pooler tests are skipped (under CI=true: fail). */
async function pgbouncer(postgresUrl: string | null, stops: Array<() => Promise<unknown>>): Promise<string | null> {
  const binary = pgbouncerBinary();
  if (postgresUrl === null) return null;
  if (binary === null) {
    const message = "no pgbouncer binary: install it (apt-get install pgbouncer) or set AGENTIX_PGBOUNCER";
    if (process.env.CI === "true") throw new Error(`${message}. Under CI=true the pooler tests must run.`);
    console.warn(`\n!!! ${message}. The PgBouncer tests are SKIPPED.\n`);
    return null;
  }
  const started = await startPgBouncer(binary, postgresUrl);
  stops.push(started.stop);
  return started.url;
}
