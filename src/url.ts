import { homedir } from "node:os";
import { resolve } from "node:path";
import type { StorageBackend } from "./core/backend.js";
import { AgentixStorageError, ValidationError } from "./core/errors.js";
import { MemoryStorageBackend } from "./memory.js";

/** The environment variable that selects the default backend wherever none is given. */
export const STORAGE_URL_ENV = "AGENTIX_STORAGE_URL";

/** Expands a leading `~` to the home directory and makes the path absolute. */
export function expandHome(path: string): string {
  if (path === "~") return homedir();
  if (path.startsWith("~/")) return resolve(homedir(), path.slice(2));
  return resolve(path);
}

/**
 * Builds a backend from a URL, loading its driver's subpath on demand:
 * `memory:`, `file:<dir>` (or a bare directory), `sqlite:<path>`,
 * `postgres://...` / `postgresql://...`, `redis://...` / `rediss://...`.
 * An unknown scheme is a `ValidationError`.
 *
 * @example
 * const storage = await createStorageBackend(process.env.AGENTIX_STORAGE_URL ?? "memory:");
 */
export async function createStorageBackend(url: string): Promise<StorageBackend> {
  if (typeof url !== "string" || url.length === 0) throw new ValidationError("url", "expected a non-empty string");
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  switch (scheme) {
    case "memory":
      return new MemoryStorageBackend();
    case "file":
    case undefined:
      throw notYet("file");
    case "sqlite":
      throw notYet("sqlite");
    case "postgres":
    case "postgresql":
      throw notYet("postgres");
    case "redis":
    case "rediss":
      throw notYet("redis");
    default:
      throw new ValidationError(
        "url",
        `unknown scheme "${scheme}:" (expected memory:, file:, sqlite:, postgres://, redis://)`,
      );
  }
}

function notYet(name: string): AgentixStorageError {
  return new AgentixStorageError(`the ${name} backend is not available in this version of agentix`);
}
