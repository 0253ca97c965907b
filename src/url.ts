import { fileURLToPath } from "node:url";
import type { StorageBackend } from "./core/backend.js";
import { ValidationError } from "./core/errors.js";
import { expandHome } from "./core/paths.js";
import { FileStorageBackend } from "./file.js";
import { MemoryStorageBackend } from "./memory.js";

/** The environment variable that selects the default backend wherever none is given. */
export const STORAGE_URL_ENV = "AGENTIX_STORAGE_URL";

/**
 * Builds a backend from a URL, loading its driver's subpath on demand.
 *
 * | URL | backend |
 * | --- | --- |
 * | `memory:` | {@link MemoryStorageBackend} |
 * | `file:<dir>`, `file:///abs/dir` or a bare directory | `FileStorageBackend` (`~` expanded) |
 * | `sqlite:<path>`, `sqlite:///abs/path.db`, `sqlite::memory:` | `SqliteStorageBackend` |
 * | `postgres://...` / `postgresql://...` (`?schema=tenant` picks the schema; `?prepare=false` behind a transaction pooler) | `PostgresStorageBackend` |
 * | `pglite:<dir>`, `pglite:///abs/dir`, `pglite:memory:` (`?schema=` too) | `PostgresStorageBackend` on PGlite (in process) |
 * | `redis://...` / `rediss://...` (`?prefix=myapp` picks the key prefix) | `RedisStorageBackend` |
 * | `redis+cluster://host:port,host:port` / `rediss+cluster://...` (`?prefix=myapp`) | `RedisStorageBackend`, cluster mode |
 *
 * Query parameters besides `schema`, `prepare` and `prefix`: `application_name`, `sslmode` and `connect_timeout` on Postgres,
 * `db` and `family` on Redis, passed to the driver.
 *
 * @throws {ValidationError} for an unknown scheme or query parameter.
 * @throws {AgentixStorageError} when the backend's driver package is not installed.
 * @example
 * const storage = await createStorageBackend(process.env.AGENTIX_STORAGE_URL ?? "sqlite:./agent.db");
 */
export async function createStorageBackend(url: string): Promise<StorageBackend> {
  switch (storageScheme(url)) {
    case "memory":
    case "file":
      return createEmbeddedBackend(url) as StorageBackend;
    case "sqlite": {
      const path = url.slice(7);
      return new (await import("./sqlite.js")).SqliteStorageBackend({
        path: path === ":memory:" ? path : filePath(path),
      });
    }
    case "postgres": {
      const { base: rest, param } = takeParam(url, "schema", ["prepare", ...POSTGRES_PARAMS]);
      const { base, param: prepare } = takeParam(rest, "prepare", POSTGRES_PARAMS);
      if (prepare !== undefined && prepare !== "true" && prepare !== "false")
        throw new ValidationError("url", `prepare must be true or false, not "${prepare}"`);
      const { PostgresStorageBackend } = await import("./postgres.js");
      return new PostgresStorageBackend({
        url: base,
        ...(param === undefined ? {} : { schema: param }),
        ...(prepare === undefined ? {} : { prepare: prepare === "true" }),
      });
    }
    case "pglite": {
      // Not a WHATWG URL (a path may hold anything but "?"): the query is split off by hand.
      const [base = url, query = ""] = url.split(/\?(.*)/s);
      const params = new URLSearchParams(query);
      const unknown = [...new Set(params.keys())].filter((key) => key !== "schema");
      if (unknown.length > 0)
        throw new ValidationError("url", `unknown query parameter "${unknown[0]}" (a pglite: URL takes schema)`);
      const schema = params.get("schema") ?? undefined;
      const { PostgresStorageBackend } = await import("./postgres.js");
      return new PostgresStorageBackend(schema === undefined ? { url: base } : { url: base, schema });
    }
    case "redis": {
      const { base, param } = /^rediss?\+cluster:/i.test(url)
        ? clusterParam(url)
        : takeParam(url, "prefix", REDIS_PARAMS);
      const { RedisStorageBackend } = await import("./redis.js");
      return new RedisStorageBackend(param === undefined ? { url: base } : { url: base, prefix: param });
    }
  }
}

type Scheme = "memory" | "file" | "sqlite" | "postgres" | "pglite" | "redis";
const SCHEMES: Record<string, Scheme> = {
  memory: "memory",
  file: "file",
  sqlite: "sqlite",
  postgres: "postgres",
  postgresql: "postgres",
  pglite: "pglite",
  redis: "redis",
  rediss: "redis",
  "redis+cluster": "redis",
  "rediss+cluster": "redis",
};

/** Which backend a storage URL names. @throws {ValidationError} for an unknown scheme or a non-string. */
export function storageScheme(url: string): Scheme {
  if (typeof url !== "string" || url.trim() === "") throw new ValidationError("url", "expected a non-empty string");
  // A one-letter "scheme" is a Windows drive, so a bare path.
  const scheme = /^([a-z][a-z0-9+.-]+):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined) return "file";
  const known = SCHEMES[scheme];
  if (!known) {
    throw new ValidationError(
      "url",
      `unknown scheme "${scheme}:" (expected memory:, file:, sqlite:, postgres://, postgresql://, pglite:, redis://, rediss:// or redis+cluster://)`,
    );
  }
  return known;
}

/** The backends that need no driver (`memory:`, `file:` and bare paths), built synchronously; `undefined` for the others. */
export function createEmbeddedBackend(url: string): StorageBackend | undefined {
  switch (storageScheme(url)) {
    case "memory":
      return new MemoryStorageBackend();
    case "file":
      return new FileStorageBackend({ basePath: url.startsWith("file:") ? filePath(url.slice(5)) : expandHome(url) });
    default:
      return undefined;
  }
}

/**
 * The file system path a `file:` URL (or bare directory) or an `sqlite:` URL names; `undefined` for `sqlite::memory:`
 * and the other schemes. @throws {ValidationError} for an unknown scheme or a missing path.
 */
export function storagePath(url: string): string | undefined {
  switch (storageScheme(url)) {
    case "file":
      return url.startsWith("file:") ? filePath(url.slice(5)) : expandHome(url);
    case "sqlite":
      return url.slice(7) === ":memory:" ? undefined : filePath(url.slice(7));
    case "pglite": {
      // As PostgresStorageBackend opens it: `pglite:` and `pglite:memory:` in memory, else a directory.
      const rest = decodeURIComponent((url.split("?")[0] as string).slice("pglite:".length));
      return rest === "" || rest === "memory:" ? undefined : expandHome(rest.replace(/^\/\/(?=\/)/, ""));
    }
    default:
      return undefined;
  }
}

/** `//host/path` and `///path` as file URLs; anything else as a path, `~` expanded. */
function filePath(rest: string): string {
  if (rest === "") throw new ValidationError("url", "a file: or sqlite: URL needs a path");
  return rest.startsWith("//") ? fileURLToPath(`file:${rest}`) : expandHome(decodeURIComponent(rest));
}

// The query parameters passed on to the driver. Any other is an error: postgres.js sends an unknown one to the
// server as a setting ("unrecognized configuration parameter"), ioredis makes it a client option.
const POSTGRES_PARAMS = ["application_name", "sslmode", "connect_timeout"];
const REDIS_PARAMS = ["db", "family"];

/**
 * Removes the agentix parameter `name` from a driver URL, so that the driver never sees it.
 * @throws {ValidationError} for a parameter that is neither `name` nor one of `driverParams`.
 */
function takeParam(url: string, name: string, driverParams: string[]): { base: string; param: string | undefined } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch (error) {
    throw new ValidationError("url", `not a valid URL: ${(error as Error).message}`);
  }
  const known = [name, ...driverParams];
  const unknown = [...new Set(parsed.searchParams.keys())].filter((key) => !known.includes(key));
  if (unknown.length > 0) {
    const list = unknown.map((key) => `"${key}"`).join(", ");
    throw new ValidationError(
      "url",
      `unknown query parameter${unknown.length === 1 ? "" : "s"} ${list} (a ${parsed.protocol}// URL takes ${known.join(", ")})`,
    );
  }
  const param = parsed.searchParams.get(name) ?? undefined;
  if (param === undefined) return { base: url, param };
  parsed.searchParams.delete(name);
  return { base: parsed.toString(), param };
}

/**
 * `?prefix=` of a `redis+cluster://` URL, which WHATWG URLs cannot parse (several hosts); it takes no other parameter.
 * @throws {ValidationError} for another parameter.
 */
function clusterParam(url: string): { base: string; param: string | undefined } {
  const at = url.indexOf("?");
  if (at === -1) return { base: url, param: undefined };
  const params = new URLSearchParams(url.slice(at + 1));
  const unknown = [...new Set(params.keys())].filter((key) => key !== "prefix");
  if (unknown.length > 0) {
    const list = unknown.map((key) => `"${key}"`).join(", ");
    throw new ValidationError("url", `unknown query parameter ${list} (a redis+cluster:// URL takes prefix)`);
  }
  return { base: url.slice(0, at), param: params.get("prefix") ?? undefined };
}
