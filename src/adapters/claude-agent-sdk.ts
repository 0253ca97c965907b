/**
 * `agentix/claude-agent-sdk`: the Claude Agent SDK's `SessionStore` on any agentix backend.
 * @module agentix/claude-agent-sdk
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { SessionKey, SessionStore, SessionStoreEntry, SessionSummaryEntry } from "@anthropic-ai/claude-agent-sdk";
import { z } from "zod";
import type { StorageBackend } from "../core/backend.js";
import { requirePackages } from "../core/driver.js";
import { SessionNotFoundError } from "../core/errors.js";
import type { JsonObject, MessageRecord, NewMessage, Role, SessionRecord } from "../core/types.js";
import { newBatch, parseOptions } from "../core/validation.js";
import {
  agentIdOption,
  canonicalJson,
  digest,
  isLengthConflict,
  type NameScope,
  nameScope,
  sessionIdOfName,
  storageOption,
} from "./shared.js";

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

/** The SDK's summary state of a transcript: opaque to the store, kept verbatim. */
type SummaryData = SessionSummaryEntry["data"];
/** Folds entries into a summary's data: the SDK's `foldSessionSummary`, loaded on the store's first read or write. */
type Fold = (data: SummaryData, key: SessionKey, entries: unknown[]) => SummaryData;

let sdkFold: Promise<Fold> | undefined;
/** The SDK's fold (the SDK is there: the store is handed to it); a missing SDK is named, as a missing driver is. */
function loadFold(): Promise<Fold> {
  sdkFold ??= (async () => {
    await requirePackages("agentix/claude-agent-sdk", ["@anthropic-ai/claude-agent-sdk"]);
    const { foldSessionSummary } = await import("@anthropic-ai/claude-agent-sdk");
    return (data, key, entries) =>
      foldSessionSummary({ sessionId: key.sessionId, mtime: 0, data }, key, entries as SessionStoreEntry[]).data;
  })();
  return sdkFold;
}

/** The metadata keys that hold the SDK's key of a session (beside `cwd`, which serves the listings). */
const PROJECT = "claude_project_key";
const SESSION = "claude_session_id";
const SUBPATH = "claude_subpath";
/** The metadata key of a main transcript's summary: the SDK's `data`, folded over all its entries. */
const SUMMARY = "claude_summary";

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
 * - Entries are de-duplicated by their `uuid` when they are written, whichever batch they come in (the SDK's
 *   retries, `importSessionToStore` over a transcript that was mirrored live, overlapping batches of two
 *   processes): each uuid is stored once. The store remembers, per transcript it has read or written, its length
 *   and its uuids, drops the entries already stored, and appends the rest with a compare-and-swap on the length
 *   (`expectedLength`); when another writer got there first, it reads only the entries written since and tries
 *   again. So `append` is one round trip on a transcript this store has seen (`load` counts: the SDK loads a
 *   session before it resumes it), two for a new transcript (it is created first), and one read more, once, for
 *   a transcript another process wrote that this store has not seen: it must learn its uuids. A batch whose
 *   entries are all stored costs one look at the length (the transcript may have been deleted meanwhile). Appends
 *   of one store to one transcript run one after the other, in call order.
 * - Entries without a uuid (titles, tags) are not de-duplicated, but a batch whose uuids are all stored is a
 *   re-send and writes nothing, its entries without a uuid included; a batch re-sent after a lost reply is written
 *   once too (an idempotency key of the write). `load` returns each uuid once, also for transcripts written by the
 *   first release of this store (which de-duplicated only whole batches).
 * - A main transcript's summary (the SDK's `foldSessionSummary` over its entries, for `listSessionSummaries`) is in
 *   its session's metadata, written with the entries in one atomic step (the `metadata` option of `saveMessages`)
 *   under the same compare-and-swap: a summary always covers exactly the entries stored, whichever process wrote
 *   them, and costs no round trip of its own. Its `mtime` is the session's `updated_at`, the clock `listSessions`
 *   reports. A transcript written before summaries were kept (the first releases of this store) has none until its
 *   next append; the SDK reads such a transcript whole, as it does without summaries.
 */
export class AgentixSessionStore implements SessionStore {
  /** The agentix agent the transcripts belong to. */
  readonly agentId: string;
  readonly #storage: StorageBackend;
  readonly #scope: NameScope;
  /** What this store knows of the transcripts it read or wrote, the most recently used last. */
  readonly #known = new Map<string, Known>();
  /** Per transcript, the tail of this store's chain of steps on it (appends, loads, deletes): one at a time. */
  readonly #queues = new Map<string, Promise<unknown>>();
  /** The SDK's summary fold, once loaded. */
  #fold: Fold | undefined;

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
   * Appends the entries not stored yet (by uuid), in order, as one atomic batch; creates the transcript on its
   * first append. An empty batch, or one whose uuids are all stored, writes nothing.
   * @throws {ValidationError} when an entry is not JSON agentix can store (nested deeper than 512 levels), or a key
   * is not well-formed Unicode, or the `projectKey` holds NUL (nothing written).
   * @throws {ConflictError} when other writers won the compare-and-swap 200 times in a row (nothing written).
   */
  async append(key: SessionKey, entries: SessionStoreEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const batch = JSON.parse(JSON.stringify(entries)) as JsonObject[];
    const id = this.sessionIdOf(key);
    this.#fold ??= await loadFold();
    await this.#serially(id, async () => {
      let known = this.#recall(id) ?? (await this.#learn(id, key, batch));
      for (let attempt = 1; ; attempt++) {
        const fresh = unseen(batch, known.uuids);
        if (fresh.length === 0) {
          // Stored, as far as this store knows: one look at the length tells whether another process changed the
          // transcript since (then what it holds now is read, and the batch looked at again).
          const length = await this.#lengthOf(id);
          if (length === known.length) return;
          if (length === null) await this.#storage.openSession(this.agentId, id, this.#metadata(key));
          known = length === null ? empty() : await this.#catchUp(id, key, known, length);
          continue;
        }
        // The key names this write exactly (where and what): a re-send after a lost reply is answered, not rewritten.
        const idempotencyKey = `claude:${digest(JSON.stringify([known.length, fresh]))}`;
        const summary = this.#summarize(known, key, fresh);
        const metadata = this.#metadata(key, summary);
        try {
          await this.#storage.saveMessages(id, fresh.map(toMessage), {
            expectedLength: known.length,
            idempotencyKey,
            metadata,
          });
          this.#remember(id, this.#advance(known, key, fresh, summary));
          return;
        } catch (error) {
          if (error instanceof SessionNotFoundError) {
            // Deleted meanwhile: what it held is gone, the batch is written whole into the transcript made anew.
            await this.#storage.openSession(this.agentId, id, this.#metadata(key));
            known = empty();
            continue;
          }
          if (!isLengthConflict(error) || attempt === MAX_ATTEMPTS) throw error;
          // A writer that keeps winning (a backlog of appends of its own) is let through for a while, by a random
          // and growing pause, up to 50 ms.
          if (attempt > 1) await sleep(Math.random() * Math.min(2 ** attempt, 50));
          known = await this.#catchUp(id, key, known, error.actualLength ?? 0);
        }
      }
    });
  }

  /**
   * The transcript's entries in append order, each uuid once (its first occurrence); `null` for a transcript never
   * written. One read.
   */
  async load(key: SessionKey): Promise<SessionStoreEntry[] | null> {
    const id = this.sessionIdOf(key);
    this.#fold ??= await loadFold();
    const messages = await this.#serially(id, async () => {
      try {
        const records = await this.#storage.loadMessages(id);
        this.#remember(id, this.#advance(empty(), key, contents(records)));
        return records;
      } catch (error) {
        if (!(error instanceof SessionNotFoundError)) throw error;
        this.#known.delete(id);
        return null;
      }
    });
    if (messages === null) return null;
    const seen = new Set<string>();
    return messages
      .map((m) => m.content as unknown as SessionStoreEntry)
      .filter((entry) => {
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
   * The summaries of the project's main transcripts (the SDK's `foldSessionSummary` over each one's entries), with
   * the same `mtime` as {@link AgentixSessionStore.listSessions}: one listing. A transcript without a summary yet
   * (written before this store kept them) is left out: the SDK reads it whole.
   */
  async listSessionSummaries(projectKey: string): Promise<SessionSummaryEntry[]> {
    const records = await this.#storage.listSessions(this.agentId, { cwd: projectKey });
    return records.flatMap((record) => {
      const sessionId = String(record.metadata?.[SESSION]);
      const data = record.metadata?.[SUMMARY];
      if (!this.#isOwn(record, { projectKey, sessionId }) || !isObject(data)) return [];
      return [{ sessionId, mtime: Date.parse(record.updated_at), data }];
    });
  }

  /**
   * Deletes a transcript. The main transcript (no `subpath`) goes with its subagents' transcripts: they are
   * deleted first, then the main one, then any subagent transcript written meanwhile; each deletion is one atomic
   * step, the whole is not (after a crash midway the main transcript is still there, and deleting it again
   * finishes the job).
   */
  async delete(key: SessionKey): Promise<void> {
    const id = this.sessionIdOf(key);
    if (key.subpath !== undefined) return this.#deleteOne(id);
    for (const sub of await this.#subagents(key)) await this.#deleteOne(sub.session_id);
    await this.#deleteOne(id);
    // A subagent's append that raced the listing above has created its transcript again: one more sweep.
    for (const sub of await this.#subagents(key)) await this.#deleteOne(sub.session_id);
  }

  /** The subpaths of the session's subagent transcripts (never the main transcript). One listing. */
  async listSubkeys(key: { projectKey: string; sessionId: string }): Promise<string[]> {
    return (await this.#subagents(key)).map((record) => String(record.metadata?.[SUBPATH]));
  }

  /**
   * What the transcript holds, learnt by a store that has not seen it (so once per transcript and store): a new
   * transcript is created empty (the batch checked first, so that bad input creates nothing); an existing one is
   * read whole, the price of knowing its uuids.
   */
  async #learn(id: string, key: SessionKey, batch: JsonObject[]): Promise<Known> {
    newBatch(batch.map(toMessage));
    const { created } = await this.#storage.openSession(this.agentId, id, this.#metadata(key));
    return created ? empty() : this.#read(id, key);
  }

  /**
   * What the transcript holds after a lost compare-and-swap that found `actual` entries: only the entries written
   * since, when the transcript still begins as this store knew it (its last known entry is still in place); the
   * whole transcript again when it does not (deleted and written anew by another process).
   */
  async #catchUp(id: string, key: SessionKey, known: Known, actual: number): Promise<Known> {
    if (actual >= known.length) {
      let tail: MessageRecord[];
      try {
        tail = await this.#storage.loadMessages(id, { offset: Math.max(known.length - 1, 0) });
      } catch (error) {
        if (error instanceof SessionNotFoundError) return empty();
        throw error;
      }
      if (known.length === 0) return this.#advance(known, key, contents(tail));
      const [last, ...since] = tail;
      if (last !== undefined && fingerprint(last.content) === known.last) {
        return this.#advance(known, key, contents(since));
      }
    }
    return this.#read(id, key);
  }

  /** The transcript's length, `null` when it does not exist. */
  async #lengthOf(id: string): Promise<number | null> {
    try {
      return await this.#storage.countMessages(id);
    } catch (error) {
      if (error instanceof SessionNotFoundError) return null;
      throw error;
    }
  }

  /** The whole transcript, as known entries (none when it does not exist). */
  async #read(id: string, key: SessionKey): Promise<Known> {
    try {
      return this.#advance(empty(), key, contents(await this.#storage.loadMessages(id)));
    } catch (error) {
      if (error instanceof SessionNotFoundError) return empty();
      throw error;
    }
  }

  /** `known` (changed in place) after `entries` (read, or written) followed what it knew; its summary folded on. */
  #advance(known: Known, key: SessionKey, entries: unknown[], summary = this.#summarize(known, key, entries)): Known {
    for (const entry of entries) {
      const uuid = (entry as { uuid?: unknown } | null)?.uuid;
      if (typeof uuid === "string") known.uuids.add(uuid);
    }
    known.length += entries.length;
    if (entries.length > 0) known.last = fingerprint(entries.at(-1));
    known.summary = summary;
    return known;
  }

  /** The summary of `known`'s entries followed by `entries`; subagent transcripts have none (the SDK lists main ones). */
  #summarize(known: Known, key: SessionKey, entries: unknown[]): SummaryData {
    if (key.subpath !== undefined || entries.length === 0) return known.summary;
    return (this.#fold as Fold)(known.summary, key, entries);
  }

  #recall(id: string): Known | undefined {
    const known = this.#known.get(id);
    if (known !== undefined) this.#remember(id, known);
    return known;
  }

  #remember(id: string, known: Known): void {
    this.#known.delete(id); // to the end: the most recently used
    this.#known.set(id, known);
    // The least recently used transcripts are forgotten: a store that sees them again learns them again.
    for (const old of this.#known.keys()) {
      if (this.#known.size <= MAX_KNOWN) break;
      this.#known.delete(old);
    }
  }

  #deleteOne(id: string): Promise<void> {
    return this.#serially(id, async () => {
      this.#known.delete(id);
      await this.#storage.deleteSession(id);
    });
  }

  /** Runs `step` once every earlier step of this store on the transcript `id` has settled. */
  #serially<T>(id: string, step: () => Promise<T>): Promise<T> {
    const result = (this.#queues.get(id) ?? Promise.resolve()).then(step, step);
    const tail = result.then(
      () => {},
      () => {},
    );
    this.#queues.set(id, tail);
    void tail.then(() => {
      if (this.#queues.get(id) === tail) this.#queues.delete(id);
    });
    return result;
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

  /** A transcript's metadata: its key, and (main transcripts, when `known` is given) the summary of its entries. */
  #metadata(key: SessionKey, summary?: SummaryData): JsonObject {
    const base = { [PROJECT]: key.projectKey, [SESSION]: key.sessionId };
    return key.subpath === undefined
      ? { cwd: key.projectKey, ...base, ...(summary === undefined ? {} : { [SUMMARY]: summary as JsonObject }) }
      : {
          cwd: this.sessionIdOf({ projectKey: key.projectKey, sessionId: key.sessionId }),
          ...base,
          [SUBPATH]: key.subpath,
        };
  }
}

/** How many times `append` loses the compare-and-swap to other writers before it gives up (about 5 s of pauses). */
const MAX_ATTEMPTS = 200;
/** How many transcripts a store remembers (the uuids of each): a process mirrors a few live sessions at a time. */
const MAX_KNOWN = 128;

/** What a store knows of a transcript: its first `length` entries, as of its last read or write. */
interface Known {
  /** How many messages the transcript held (duplicates written by the first release included). */
  length: number;
  /** The uuids among them. */
  uuids: Set<string>;
  /** The fingerprint of the last of them (`null` for none): tells a transcript that grew from one made anew. */
  last: string | null;
  /** The SDK's summary of them (main transcripts; empty for none). */
  summary: SummaryData;
}

const empty = (): Known => ({ length: 0, uuids: new Set(), last: null, summary: {} });

const isObject = (value: unknown): value is SummaryData =>
  typeof value === "object" && value !== null && !Array.isArray(value);

const contents = (records: MessageRecord[]): unknown[] => records.map((record) => record.content);

/** An entry's digest, whatever key order its store keeps (Postgres `jsonb` keeps its own). */
function fingerprint(content: unknown): string {
  return digest(canonicalJson(content));
}

/**
 * What of `batch` is to be written: the entries whose uuid is not in `stored` (nor earlier in the batch), and those
 * without a uuid — but nothing when the batch has uuids and all are stored: it is a re-send (a retry, a replayed
 * import), and its entries without a uuid were written with it the first time.
 */
function unseen(batch: JsonObject[], stored: Set<string>): JsonObject[] {
  const taken = new Set<string>();
  let keyed = false;
  const fresh = batch.filter((entry) => {
    const uuid = entry.uuid;
    if (typeof uuid !== "string") return true;
    keyed = true;
    if (stored.has(uuid) || taken.has(uuid)) return false;
    taken.add(uuid);
    return true;
  });
  return keyed && taken.size === 0 ? [] : fresh;
}

const ROLES: Record<string, Role> = { user: "user", assistant: "assistant" };

function toMessage(entry: JsonObject): NewMessage {
  return { role: ROLES[String(entry.type)] ?? "system", content: entry };
}
