// What the framework adapters share: framework names → agentix session ids, the options' common fields, and the
// one-round-trip append that opens the session only when it is not there yet.
import { z } from "zod";
import { StorageBackend } from "../core/backend.js";
import { SessionNotFoundError } from "../core/errors.js";
import type { JsonObject, JsonValue, NewMessage, WriteOptions, WriteResult } from "../core/types.js";
import { MAX_AGENT_ID_LENGTH, sessionIdFor } from "../core/validation.js";

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

/**
 * The UUID namespace of an adapter's sessions of one agent: `sessionIdFor(JSON.stringify([adapter, agentId]))`.
 * A framework's session name becomes `sessionIdFor(name, namespace)`, so that the same name under two agents (or
 * two adapters) is two sessions, the same in every process.
 */
export function namespaceOf(adapter: string, agentId: string): string {
  return sessionIdFor(JSON.stringify([adapter, agentId]));
}

/**
 * `JSON.parse(JSON.stringify(value))`: what a framework's own JSON stores keep of a value (`undefined` properties
 * dropped, `-0` as `0`, `toJSON()` applied), so that what agentix validates and stores is exactly that.
 */
export function asJson<T extends JsonValue>(value: unknown): T {
  return JSON.parse(JSON.stringify(value)) as T;
}

/**
 * Appends `messages` to the session `sessionId` of `agentId`, creating it with `metadata` first if it does not exist.
 * One round trip (the append) when the session exists; when it does not, the append fails without writing, and
 * the session is opened (get-or-create, so concurrent first appends create it once) and the append sent again.
 */
export async function appendOpening(
  storage: StorageBackend,
  agentId: string,
  sessionId: string,
  metadata: JsonObject,
  messages: NewMessage[],
  options?: WriteOptions,
): Promise<WriteResult> {
  try {
    return await storage.saveMessages(sessionId, messages, options);
  } catch (error) {
    if (!(error instanceof SessionNotFoundError)) throw error;
  }
  await storage.openSession(agentId, sessionId, metadata);
  return storage.saveMessages(sessionId, messages, options);
}
