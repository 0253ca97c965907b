/**
 * agentix as the session store of the OpenAI Agents SDK (`@openai/agents`): {@link AgentixSession} implements its
 * `Session` interface, and the history rewrites and transactions that the runner's output guardrails use, on any
 * agentix {@link StorageBackend}.
 * @module agentix/openai-agents
 */
import { randomUUID } from "node:crypto";
import {
  type AgentInputItem,
  applySessionHistoryMutations,
  type SessionHistoryRewriteArgs,
  type SessionHistoryRewriteAwareSession,
  type SessionHistoryTransactionArgs,
  type SessionHistoryTransactionAwareSession,
} from "@openai/agents-core";
import type { StorageBackend } from "../core/backend.js";
import { AgentixStorageError, ConflictError, SessionNotFoundError, ValidationError } from "../core/errors.js";
import type { JsonObject, MessageRecord, NewMessage, Role } from "../core/types.js";
import { canonicalJson, digest, isLengthConflict, loadOrEmpty, sessionIdOfName, writeCreating } from "./shared.js";

/** Options of {@link AgentixSession}. */
export interface AgentixSessionOptions {
  /** Where the items are stored: any agentix backend. It stays yours: the session never closes it. */
  storage: StorageBackend;
  /**
   * The session's name, as `getSessionId()` returns it: a UUID names the agentix session of that id, any other
   * string the session `sessionIdFor(sessionId)`. Two `AgentixSession`s with one name share one history.
   * @default a new random UUID
   */
  sessionId?: string;
  /**
   * The agent the session is created under (what `listSessions` lists it by).
   * @default "openai-agents"
   */
  agentId?: string;
  /**
   * The session's metadata when this object creates it (`cwd` is indexed); an existing session keeps its own.
   * @default null
   */
  metadata?: JsonObject | null;
}

/** How often a rewrite reads the history again when another writer changed its length in between. */
const REWRITE_ATTEMPTS = 10;

/**
 * A `Session` of the OpenAI Agents SDK stored in an agentix backend: pass it as `run(agent, input, { session })`.
 *
 * Each item is one agentix message: its role is the item's (`user`, `assistant`, `system`), `tool` for a tool's
 * result (`function_call_result` and the other `…_result`/`…_output` items) and `assistant` for the model's other
 * items (tool calls, reasoning); its content is the whole item, so every item comes back as it was added. The
 * agentix session is created by the first write; reads of a session never written return no items.
 *
 * Every write is one atomic step: `addItems` one batch, `popItem` one pop, `clearSession` one delete (which also
 * forgets the transactions' operation ids, as the SDK's `MemorySession` does); `applyHistoryMutations` and
 * `applyHistoryTransaction` are compare-and-swap edits (`expectedLength`), the transactions idempotent by their
 * `operationId` (`idempotencyKey`). Items must be JSON: binary data (`Uint8Array`) is refused with a
 * `ValidationError`, nothing written (the runner itself stores binary data as `data:` URLs).
 */
export class AgentixSession implements SessionHistoryRewriteAwareSession, SessionHistoryTransactionAwareSession {
  /** The agentix session id the items are stored under: the one to use with the agentix API and CLI. */
  readonly storageSessionId: string;
  readonly #storage: StorageBackend;
  readonly #name: string;
  readonly #session: { agentId: string; sessionId: string; metadata: JsonObject | null };

  /** @throws {ValidationError} when `sessionId` is not well-formed Unicode. */
  constructor(options: AgentixSessionOptions) {
    this.#storage = options.storage;
    this.#name = options.sessionId ?? randomUUID();
    this.storageSessionId = sessionIdOfName(this.#name, "global");
    this.#session = {
      agentId: options.agentId ?? "openai-agents",
      sessionId: this.storageSessionId,
      metadata: options.metadata ?? null,
    };
  }

  /** The session's name (`options.sessionId`, or the UUID made for it). */
  async getSessionId(): Promise<string> {
    return this.#name;
  }

  /** Every item, oldest first, or the newest `limit` (still oldest first): one read. */
  async getItems(limit?: number): Promise<AgentInputItem[]> {
    if (limit !== undefined && limit <= 0) return [];
    const records = await loadOrEmpty(this.#storage, this.storageSessionId, limit === undefined ? {} : { last: limit });
    return records.map((record) => this.#item(record));
  }

  /** Appends the items as one atomic batch (all or none): one round trip. */
  async addItems(items: AgentInputItem[]): Promise<void> {
    if (items.length === 0) return;
    const messages = items.map(toMessage);
    await this.#write(() => this.#storage.saveMessages(this.storageSessionId, messages));
  }

  /** Removes and returns the newest item in one atomic step; `undefined` when there is none. */
  async popItem(): Promise<AgentInputItem | undefined> {
    try {
      const record = await this.#storage.popMessage(this.storageSessionId);
      return record === null ? undefined : this.#item(record);
    } catch (error) {
      if (error instanceof SessionNotFoundError) return undefined;
      throw error;
    }
  }

  /** Deletes the session's items (the agentix session itself, with its operation ids); the next write starts anew. */
  async clearSession(): Promise<void> {
    await this.#storage.deleteSession(this.storageSessionId);
  }

  /**
   * Replaces the whole history by `items` (a compaction item and what it keeps) in one atomic step, where the
   * runner would otherwise clear the session and add the items again (two writes, the session empty in between).
   */
  async replaceHistoryWithCompaction(items: AgentInputItem[]): Promise<void> {
    const messages = items.map(toMessage);
    await this.#write(() => this.#storage.replaceMessages(this.storageSessionId, 0, messages));
  }

  /**
   * Rewrites stored items (`replace_function_call`: the SDK's own `applySessionHistoryMutations`), writing only
   * from the first changed item on, in one compare-and-swap step: an item another writer appended meanwhile is
   * never lost (the history is read again and the rewrite redone).
   * @throws {ConflictError} when other writers changed the history's length on every one of 10 attempts.
   */
  async applyHistoryMutations(args: SessionHistoryRewriteArgs): Promise<void> {
    if (args.mutations.length === 0) return;
    await this.#rewrite(async () => {
      const items = (await loadOrEmpty(this.#storage, this.storageSessionId)).map((r) => this.#item(r));
      const next = applySessionHistoryMutations(items, args.mutations);
      const from = firstDifference(items, next);
      if (from === items.length && from === next.length) return;
      await this.#storage.replaceMessages(this.storageSessionId, from, next.slice(from).map(toMessage), {
        expectedLength: items.length,
      });
    });
  }

  /**
   * Applies a history transaction atomically and at most once per `operationId`: `append_items` appends its items
   * as one batch; `replace_suffix` replaces the newest items, which must equal `expectedSuffix`, by `replacement`.
   * A retry with the same `operationId` and transaction succeeds without writing again.
   * @throws {ConflictError} when the stored suffix does not match `expectedSuffix`, or an `append_items`
   * `operationId` was applied with other items; nothing written.
   * @throws {ValidationError} on an empty `operationId` or an unknown transaction type.
   */
  async applyHistoryTransaction(args: SessionHistoryTransactionArgs): Promise<void> {
    const { operationId, transaction } = args;
    if (typeof operationId !== "string" || operationId.trim() === "")
      throw new ValidationError("operationId", "must be a non-empty string");
    if (transaction.type === "append_items") return this.#appendOnce(operationId, transaction.items);
    if (transaction.type === "replace_suffix")
      return this.#replaceSuffixOnce(operationId, transaction.expectedSuffix, transaction.replacement);
    const type: unknown = (transaction as { type?: unknown } | null)?.type;
    throw new ValidationError("transaction.type", `unknown transaction type ${JSON.stringify(type) ?? String(type)}`);
  }

  async #appendOnce(operationId: string, items: AgentInputItem[]): Promise<void> {
    if (items.length === 0) return;
    // The key is the operation id alone, and an append's fingerprint is its items only: a retry matches, the same
    // id with other items is the ConflictError the SDK asks for.
    const idempotencyKey = `openai-agents:${digest(operationId)}`;
    const messages = items.map(toMessage);
    try {
      await this.#write(() => this.#storage.saveMessages(this.storageSessionId, messages, { idempotencyKey }));
    } catch (error) {
      if (error instanceof ConflictError && !isLengthConflict(error))
        throw new ConflictError(`operation ${JSON.stringify(operationId)} was applied with other items`, undefined, {
          cause: error,
        });
      throw error;
    }
  }

  async #replaceSuffixOnce(
    operationId: string,
    expectedSuffix: AgentInputItem[],
    replacement: AgentInputItem[],
  ): Promise<void> {
    // A replace's fingerprint holds its position and expected length, which a retry (reading a history the first
    // try has changed) cannot know again: the key names the operation *and* its transaction, so that finding it
    // remembered means this very transaction was applied.
    const idempotencyKey = `openai-agents:${digest(canonicalJson([operationId, expectedSuffix, replacement]))}`;
    const expected = expectedSuffix.map(canonicalJson);
    const id = this.storageSessionId;
    await this.#rewrite(async () => {
      const length = await this.#storage.countMessages(id).catch((error: unknown) => {
        if (error instanceof SessionNotFoundError) return 0;
        throw error;
      });
      const from = length - expected.length;
      if (from >= 0) {
        const suffix = await loadOrEmpty(this.#storage, id, { offset: from });
        if (suffix.length !== expected.length) {
          // Another writer changed the length between the two reads: read again (what #rewrite does on this).
          throw new ConflictError("the history changed while it was read", {
            expectedLength: length,
            actualLength: from + suffix.length,
          });
        }
        if (suffix.every((record, i) => canonicalJson(record.content) === expected[i])) {
          try {
            // expectedLength: nothing written when another writer came between the reads and this write.
            const options = { expectedLength: length, idempotencyKey };
            await this.#write(() => this.#storage.replaceMessages(id, from, replacement.map(toMessage), options));
          } catch (error) {
            if (!(error instanceof ConflictError) || isLengthConflict(error)) throw error;
            // The key is remembered: this transaction was applied before, and the history has come back since.
          }
          return;
        }
      }
      if (!(await this.#remembered(idempotencyKey))) {
        throw new ConflictError("the session's newest items do not match the transaction's expected suffix");
      }
    });
  }

  /**
   * Whether the session remembers the idempotency key: a pop that expects an impossible length never writes, and
   * the store checks the key before the length.
   */
  async #remembered(idempotencyKey: string): Promise<boolean> {
    try {
      await this.#storage.popMessage(this.storageSessionId, {
        expectedLength: Number.MAX_SAFE_INTEGER,
        idempotencyKey,
      });
      return false;
    } catch (error) {
      if (error instanceof ConflictError) return !isLengthConflict(error);
      if (error instanceof SessionNotFoundError) return false;
      throw error;
    }
  }

  /** Runs a compare-and-swap edit, again while other writers change the length in between. */
  async #rewrite(attempt: () => Promise<void>): Promise<void> {
    for (let i = 1; ; i++) {
      try {
        return await attempt();
      } catch (error) {
        if (!isLengthConflict(error) || i === REWRITE_ATTEMPTS) throw error;
      }
    }
  }

  #write<T>(write: () => Promise<T>): Promise<T> {
    return writeCreating(this.#storage, this.#session, write);
  }

  #item(record: MessageRecord): AgentInputItem {
    const { content } = record;
    if (typeof content !== "object" || content === null || Array.isArray(content)) {
      throw new AgentixStorageError(
        `session ${this.storageSessionId} holds a ${record.role} message that is not an OpenAI Agents item ` +
          `(its content is a ${Array.isArray(content) ? "list" : typeof content}): it was not written by AgentixSession`,
      );
    }
    return content as unknown as AgentInputItem;
  }
}

/** The agentix role of an item: its own, `tool` for a tool's result, `assistant` for the model's other items. */
export function roleOf(item: AgentInputItem): Role {
  const role = (item as { role?: unknown }).role;
  if (role === "user" || role === "assistant" || role === "system") return role;
  const type = (item as { type?: unknown }).type;
  if (typeof type === "string" && (type.endsWith("_result") || type.endsWith("_output"))) return "tool";
  return "assistant";
}

function toMessage(item: AgentInputItem): NewMessage {
  return { role: roleOf(item), content: item as unknown as JsonObject };
}

/** The position of the first item that differs, as stored JSON (the shorter length when one is a prefix). */
function firstDifference(a: readonly AgentInputItem[], b: readonly AgentInputItem[]): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (canonicalJson(a[i]) !== canonicalJson(b[i])) return i;
  return n;
}
