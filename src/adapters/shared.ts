// What the framework adapters share: how a framework's own session name becomes an agentix session id, how a
// write creates its session on first use, and how two framework values are compared as stored JSON.
import { createHash } from "node:crypto";
import type { StorageBackend } from "../core/backend.js";
import { ConflictError, SessionNotFoundError } from "../core/errors.js";
import type { JsonObject, LoadOptions, MessageRecord } from "../core/types.js";
import { isSessionId, sessionIdFor } from "../core/validation.js";

/**
 * The agentix session id of a framework's session name: a canonical UUID is used as it is (so ids made by
 * agentix, `createSession` or `randomUUID()` name the same session in both APIs), any other string is mapped by
 * `sessionIdFor` (the same UUIDv5 in every process).
 */
export function storageIdOf(key: string): string {
  return isSessionId(key) ? key : sessionIdFor(key);
}

/**
 * Runs a write on the session, creating the session first when it does not exist: one round trip for every
 * write but the session's first (which costs the failed try, `openSession` and the write again).
 */
export async function writeCreating<T>(
  storage: StorageBackend,
  session: { agentId: string; sessionId: string; metadata: JsonObject | null },
  write: () => Promise<T>,
): Promise<T> {
  try {
    return await write();
  } catch (error) {
    if (!(error instanceof SessionNotFoundError)) throw error;
    await storage.openSession(session.agentId, session.sessionId, session.metadata);
    return write();
  }
}

/** The session's messages (`[]` when it does not exist yet): reads never create a session. */
export async function loadOrEmpty(
  storage: StorageBackend,
  sessionId: string,
  options?: LoadOptions,
): Promise<MessageRecord[]> {
  try {
    return await storage.loadMessages(sessionId, options);
  } catch (error) {
    if (error instanceof SessionNotFoundError) return [];
    throw error;
  }
}

/** Whether the conflict is one of lengths (`expectedLength`), not an idempotency key used for another write. */
export function isLengthConflict(error: unknown): error is ConflictError {
  return error instanceof ConflictError && error.actualLength !== undefined;
}

/**
 * A value as JSON with its object keys sorted, `undefined` properties left out: what a store gives back, whatever
 * key order it keeps (Postgres `jsonb` keeps its own), compares equal to what was written.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value)) ?? "undefined";
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (typeof value !== "object" || value === null) return value;
  const record = value as Record<string, unknown>;
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(record).sort()) sorted[key] = sortKeys(record[key]);
  return sorted;
}

/** A short fixed-length digest: framework operation ids may be longer than an idempotency key may be. */
export function digest(text: string): string {
  return createHash("sha256").update(text).digest("base64url");
}
