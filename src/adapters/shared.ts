// What the framework adapters share: how a framework's name for a session becomes an agentix session id, the
// options' common fields, the writes that create their session on first use, and how two framework values are
// compared as stored JSON.
import { createHash } from "node:crypto";
import { z } from "zod";
import { StorageBackend } from "../core/backend.js";
import { ConflictError, SessionNotFoundError } from "../core/errors.js";
import type {
  JsonObject,
  JsonValue,
  LoadOptions,
  MessageRecord,
  NewMessage,
  WriteOptions,
  WriteResult,
} from "../core/types.js";
import { isSessionId, MAX_AGENT_ID_LENGTH, sessionIdFor } from "../core/validation.js";

/**
 * Where a framework's session names live, which decides their agentix ids (stored ids: they never change, see
 * test/adapters-ids.test.ts).
 * - `"global"` (openai-agents, ai-sdk): a name is the session's own, whatever agent it is stored under. A canonical
 *   UUID is used as it is (so ids made by agentix, `createSession` or `randomUUID()` name the same session in both
 *   APIs), any other string is `sessionIdFor(name)`.
 * - a namespace (langchain, claude-agent-sdk, from {@link nameScope}): a name is unique only within one agent of
 *   one adapter, and is `sessionIdFor(name, namespace)` — UUIDs too.
 */
export type NameScope = "global" | { readonly namespace: string };

/**
 * The scope of an adapter's names under one agent: the namespace `sessionIdFor(JSON.stringify([adapter, agentId]))`,
 * so that the same name under two agents (or two adapters) is two sessions, the same in every process.
 */
export function nameScope(adapter: string, agentId: string): NameScope {
  return { namespace: sessionIdFor(JSON.stringify([adapter, agentId])) };
}

/** The agentix session id of a framework's session name in its scope (see {@link NameScope}). */
export function sessionIdOfName(name: string, scope: NameScope): string {
  if (scope === "global") return isSessionId(name) ? name : sessionIdFor(name);
  return sessionIdFor(name, scope.namespace);
}

/** `storage` of an adapter's options: any agentix backend (the five, or a custom one). */
export const storageOption = z.custom<StorageBackend>((value) => value instanceof StorageBackend, {
  message: "must be an agentix StorageBackend",
});

/** `agentId` of an adapter's options: as the backends take it. */
export const agentIdOption = z
  .string()
  .min(1)
  .max(MAX_AGENT_ID_LENGTH)
  .refine((s) => s.isWellFormed() && !s.includes("\u0000"), "must be well-formed Unicode without NUL characters");

/** A session as an adapter creates it on its first write. */
export interface SessionToOpen {
  agentId: string;
  sessionId: string;
  metadata: JsonObject | null;
}

/**
 * Runs a write on the session, creating the session first when it does not exist: one round trip for every
 * write but the session's first, where the write fails without writing, the session is opened (get-or-create, so
 * concurrent first writes create it once) and the write sent again.
 */
export async function writeCreating<T>(
  storage: StorageBackend,
  session: SessionToOpen,
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

/** `saveMessages` through {@link writeCreating}: one atomic batch, the session created on its first. */
export function appendCreating(
  storage: StorageBackend,
  session: SessionToOpen,
  messages: NewMessage[],
  options?: WriteOptions,
): Promise<WriteResult> {
  return writeCreating(storage, session, () => storage.saveMessages(session.sessionId, messages, options));
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
 * `JSON.parse(JSON.stringify(value))`: what a framework's own JSON stores keep of a value (`undefined` properties
 * dropped, `-0` as `0`, `toJSON()` applied), so that what agentix validates and stores is exactly that.
 */
export function asJson<T extends JsonValue>(value: unknown): T {
  return JSON.parse(JSON.stringify(value)) as T;
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
