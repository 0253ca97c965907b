/**
 * `agentix/claude-agent-sdk`: the Claude Agent SDK's `SessionStore` on any agentix backend.
 * @module agentix/claude-agent-sdk
 */
import { createHash } from "node:crypto";
import type { SessionKey, SessionStore, SessionStoreEntry } from "@anthropic-ai/claude-agent-sdk";
import { z } from "zod";
import type { StorageBackend } from "../core/backend.js";
import { SessionNotFoundError } from "../core/errors.js";
import type { JsonObject, NewMessage, Role, SessionRecord } from "../core/types.js";
import { parseOptions } from "../core/validation.js";
import { agentIdOption, appendCreating, type NameScope, nameScope, sessionIdOfName, storageOption } from "./shared.js";

/** Options of {@link AgentixSessionStore}. */
export interface AgentixSessionStoreOptions {
  /** The agentix backend the transcripts live in: any of the five, or your own. */
  storage: StorageBackend;
  /**
   * The agentix agent the transcripts belong to (`agentix sessions <agentId>` lists them). Two stores with two
   * agent ids never see each other's sessions.
   * @default "claude-agent-sdk"
   */
  agentId?: string;
}

/** A transcript as {@link AgentixSessionStore.listSessions} lists it (the `SessionStore` interface's shape). */
export interface ListedTranscript {
  /** The SDK's session id. */
  sessionId: string;
  /** When the transcript was last written: its session's `updated_at`, in integer epoch milliseconds. */
  mtime: number;
}

const OPTIONS = z.strictObject({ storage: storageOption, agentId: agentIdOption.optional() });

/** The metadata keys that hold the SDK's key of a session (beside `cwd`, which serves the listings). */
const PROJECT = "claude_project_key";
const SESSION = "claude_session_id";
const SUBPATH = "claude_subpath";

/**
 * A Claude Agent SDK `SessionStore` (`query({ options: { sessionStore } })`, `resume`, and the SDK's
 * `listSessions`, `getSessionMessages`, `deleteSession`, `forkSession`, `importSessionToStore` with
 * `sessionStore`) that keeps each transcript as an agentix session on any backend.
 *
 * - A transcript (a main one, or a subagent's under its `subpath`) is one agentix session of `agentId`; each
 *   entry is one message (role `user`, `assistant`, or `system` for every other entry type) whose content is the
 *   entry as JSON. Session ids are derived from the key (UUIDv5), the same in every process.
 * - The main transcript's `metadata.cwd` is the `projectKey`, so that {@link AgentixSessionStore.listSessions} is one
 *   indexed listing; a subagent transcript's `metadata.cwd` is its parent's agentix session id, so that
 *   {@link AgentixSessionStore.listSubkeys} is one listing too, and {@link AgentixSessionStore.delete} of the main
 *   transcript finds and deletes its subagents'.
 * - `append` is one atomic batch, one round trip once the transcript exists. A batch that carries entry uuids is
 *   written under an idempotency key made of its content: the SDK's retries of a batch (after a lost reply, say)
 *   and replays of the same batches write nothing. Entries already stored that arrive again in other batches (an
 *   `importSessionToStore` of a session that was mirrored live) are dropped by `load`: each uuid is returned
 *   once, where it first appeared. Entries without a uuid (titles, tags) are never de-duplicated.
 * - `listSessionSummaries` is not implemented: agentix keeps no sidecar that an append updates in the same atomic
 *   step, and the SDK then lists with `listSessions` and reads only the sessions of the page it returns.
 */
export class AgentixSessionStore implements SessionStore {
  /** The agentix agent the transcripts belong to. */
  readonly agentId: string;
  readonly #storage: StorageBackend;
  readonly #scope: NameScope;

  /** @throws {ValidationError} on a missing or mistyped option (`storage` must be an agentix backend). */
  constructor(options: AgentixSessionStoreOptions) {
    const o = parseOptions(OPTIONS, options, "AgentixSessionStore");
    this.#storage = o.storage;
    this.agentId = o.agentId ?? "claude-agent-sdk";
    this.#scope = nameScope("agentix/claude-agent-sdk", this.agentId);
  }

  /**
   * The agentix session id of a transcript:
   * `sessionIdFor(JSON.stringify([projectKey, sessionId, subpath ?? null]), sessionIdFor(JSON.stringify(["agentix/claude-agent-sdk", agentId])))`.
   */
  sessionIdOf(key: SessionKey): string {
    return sessionIdOfName(JSON.stringify([key.projectKey, key.sessionId, key.subpath ?? null]), this.#scope);
  }

  /**
   * Appends the entries, in order, as one atomic batch; creates the transcript on its first append. An empty batch
   * writes nothing.
   * @throws {ValidationError} when an entry is not JSON agentix can store (nested deeper than 512 levels), or a key
   * is not well-formed Unicode, or the `projectKey` holds NUL (nothing written).
   */
  async append(key: SessionKey, entries: SessionStoreEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const text = JSON.stringify(entries);
    const batch = (JSON.parse(text) as JsonObject[]).map(toMessage);
    const keyed = entries.some((entry) => typeof entry.uuid === "string");
    const options = keyed ? { idempotencyKey: `claude-batch:${createHash("sha256").update(text).digest("hex")}` } : {};
    const session = { agentId: this.agentId, sessionId: this.sessionIdOf(key), metadata: this.#metadata(key) };
    await appendCreating(this.#storage, session, batch, options);
  }

  /**
   * The transcript's entries in append order, each uuid once (its first occurrence); `null` for a transcript never
   * written. One read.
   */
  async load(key: SessionKey): Promise<SessionStoreEntry[] | null> {
    let contents: SessionStoreEntry[];
    try {
      const messages = await this.#storage.loadMessages(this.sessionIdOf(key));
      contents = messages.map((m) => m.content as unknown as SessionStoreEntry);
    } catch (error) {
      if (error instanceof SessionNotFoundError) return null;
      throw error;
    }
    const seen = new Set<string>();
    return contents.filter((entry) => {
      if (typeof entry.uuid !== "string") return true;
      if (seen.has(entry.uuid)) return false;
      seen.add(entry.uuid);
      return true;
    });
  }

  /**
   * The project's main transcripts (no subagents'), with their time of last write (`updated_at`, epoch ms).
   * One listing.
   */
  async listSessions(projectKey: string): Promise<ListedTranscript[]> {
    const records = await this.#storage.listSessions(this.agentId, { cwd: projectKey });
    return records
      .filter((record) => this.#isOwn(record, { projectKey, sessionId: String(record.metadata?.[SESSION]) }))
      .map((record) => ({ sessionId: String(record.metadata?.[SESSION]), mtime: Date.parse(record.updated_at) }));
  }

  /**
   * Deletes a transcript. The main transcript (no `subpath`) goes with its subagents' transcripts: they are
   * deleted first, then the main one, then any subagent transcript written meanwhile; each deletion is one atomic
   * step, the whole is not (after a crash midway the main transcript is still there, and deleting it again
   * finishes the job).
   */
  async delete(key: SessionKey): Promise<void> {
    const id = this.sessionIdOf(key);
    if (key.subpath !== undefined) return this.#storage.deleteSession(id);
    for (const sub of await this.#subagents(key)) await this.#storage.deleteSession(sub.session_id);
    await this.#storage.deleteSession(id);
    // A subagent's append that raced the listing above has created its transcript again: one more sweep.
    for (const sub of await this.#subagents(key)) await this.#storage.deleteSession(sub.session_id);
  }

  /** The subpaths of the session's subagent transcripts (never the main transcript). One listing. */
  async listSubkeys(key: { projectKey: string; sessionId: string }): Promise<string[]> {
    return (await this.#subagents(key)).map((record) => String(record.metadata?.[SUBPATH]));
  }

  async #subagents({ projectKey, sessionId }: { projectKey: string; sessionId: string }): Promise<SessionRecord[]> {
    // Only the session's part of the key: a caller may pass a whole SessionKey, subpath and all.
    const key = { projectKey, sessionId };
    const parent = this.sessionIdOf(key);
    const records = await this.#storage.listSessions(this.agentId, { cwd: parent });
    return records.filter((record) => {
      const subpath = record.metadata?.[SUBPATH];
      return typeof subpath === "string" && this.#isOwn(record, { ...key, subpath });
    });
  }

  /** Whether `record` is the transcript of `key`: its id is the one the key maps to (metadata is only data). */
  #isOwn(record: SessionRecord, key: SessionKey): boolean {
    const m = record.metadata;
    return (
      m?.[PROJECT] === key.projectKey &&
      m[SESSION] === key.sessionId &&
      (m[SUBPATH] ?? undefined) === key.subpath &&
      this.sessionIdOf(key) === record.session_id
    );
  }

  #metadata(key: SessionKey): JsonObject {
    const base = { [PROJECT]: key.projectKey, [SESSION]: key.sessionId };
    return key.subpath === undefined
      ? { cwd: key.projectKey, ...base }
      : {
          cwd: this.sessionIdOf({ projectKey: key.projectKey, sessionId: key.sessionId }),
          ...base,
          [SUBPATH]: key.subpath,
        };
  }
}

const ROLES: Record<string, Role> = { user: "user", assistant: "assistant" };

function toMessage(entry: JsonObject): NewMessage {
  return { role: ROLES[String(entry.type)] ?? "system", content: entry };
}
