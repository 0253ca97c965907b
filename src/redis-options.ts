// The Redis backend's options: their type (public, re-exported by src/redis.ts), their schema, and the connection
// defaults for a backend that opens its own connection.
import type { Cluster, Redis as RedisClient, RedisOptions } from "ioredis";
import { z } from "zod";
import { importDriver } from "./core/driver.js";
import { isPlainObject } from "./core/validation.js";
import { isClusterUrl, parseClusterUrl, validDatabase } from "./redis-server.js";

export const { Redis, Cluster: ClusterClass } = await importDriver<typeof import("ioredis")>(
  "ioredis",
  "agentix/redis",
  ["ioredis"],
);

/** Options of {@link RedisStorageBackend}: `url` or `client`, and `prefix`. */
export type RedisStorageOptions = (
  | {
      /**
       * `redis://` or `rediss://` URL; the backend opens (lazily, on first use) and closes its own connection.
       * `redis+cluster://host:port,host:port` (`rediss+cluster://` for TLS) connects to a Redis Cluster
       * (cluster mode, see the README).
       */
      url: string;
      /**
       * Passed to `new Redis(url, redisOptions)`, e.g. `{ tls: {...}, connectTimeout: 5000 }`; with a cluster URL,
       * to each node's connection (`ClusterOptions.redisOptions`).
       */
      redisOptions?: RedisOptions;
      /** @hidden */
      client?: never;
    }
  | {
      /**
       * An ioredis client of yours: a `Redis` (standalone or Sentinel) or a `Cluster` (cluster mode). `close()`
       * leaves it open; the `...Sync` methods need `url`.
       */
      client: RedisClient | Cluster;
      /** @hidden */
      url?: never;
      /** @hidden */
      redisOptions?: never;
    }
) & {
  /**
   * Namespace of every key: `{prefix}:session:{id}`, ... Letters, digits, `_`, `-` and `.` only, so that no
   * tenant's key can be another's and `SCAN MATCH {prefix}:*` selects exactly this tenant's keys.
   * @default "agentix"
   */
  prefix?: string;
};

export const optionsSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^rediss?(\+cluster)?:\/\//, "must be a redis://, rediss:// or redis+cluster:// URL")
      .refine((url) => !isClusterUrl(url) || parseClusterUrl(url), "must be redis+cluster://host:port,host:port")
      .refine(
        (url) => isClusterUrl(url) || validDatabase(url),
        "the path must be a database index, e.g. redis://host:6379/0",
      )
      .optional(),
    client: z
      .custom<RedisClient | Cluster>(isClient, { message: "must be an ioredis client (Redis or Cluster)" })
      .optional(),
    redisOptions: z.custom<RedisOptions>(isPlainObject, { message: "must be a plain object" }).optional(),
    prefix: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,128}$/, "must be 1-128 letters, digits, '_', '-' or '.'")
      .default("agentix"),
  })
  .refine((o) => (o.url === undefined) !== (o.client === undefined), { message: "pass either url or client" })
  .refine((o) => o.client === undefined || o.redisOptions === undefined, {
    message: "redisOptions apply only with url",
    path: ["redisOptions"],
  });

/** The defaults for connections opened from `url`: a call against an unreachable server fails within seconds. */
export const CONNECT_TIMEOUT_MS = 2_000;
export const MAX_RETRIES_PER_REQUEST = 3;

/** An ioredis `Redis` or `Cluster` (also from another copy of ioredis). */
function isClient(value: unknown): value is RedisClient | Cluster {
  if (value instanceof Redis || value instanceof ClusterClass) return true;
  const v = value as { defineCommand?: unknown } | null;
  return typeof v?.defineCommand === "function";
}
