import { newSessionId, now } from "./clock.js";
import {
  AgentixStorageError,
  BackendClosedError,
  SessionExistsError,
  SessionNotFoundError,
  toStorageError,
} from "./errors.js";
import { type SyncTwin, SyncTwinHandle } from "./sync.js";
import type {
  CreateOptions,
  JsonObject,
  ListOptions,
  LoadOptions,
  MessageContent,
  MessageRecord,
  NewMessage,
  OpenedSession,
  Role,
  SessionPatch,
  SessionQuery,
  SessionRecord,
  WriteResult,
} from "./types.js";
import {
  createOptionsOf,
  importedSession,
  isSessionId,
  loadLast,
  newBatch,
  newMessage,
  newSession,
  openedSession,
  parse,
  patchMetadata,
  type ScanOptions,
  scanQuery,
  schemas,
  sessionQuery,
} from "./validation.js";

/** A primitive's result: a value for a natively synchronous backend, a promise otherwise. */
export type MaybePromise<T> = T | Promise<T>;

/** What `copySession` is told about the new session: its id and its time of creation. */
export interface ForkTarget {
  /** The new session's id (a UUIDv7 made by the base class). */
  session_id: string;
  /** The fork's time of creation, also its `updated_at`. */
  created_at: string;
}

/**
 * The contract every backend implements. A backend writes only the storage
 * primitives (the protected abstract methods below); this class validates every
 * input, turns unknown ids into "not found", stamps ids and times, tracks the
 * closed state and wraps every driver error in an {@link AgentixStorageError}.
 *
 * The `...Sync` twins run the async method on a worker thread (see
 * {@link StorageBackend.syncTwin}); natively synchronous backends extend
 * {@link SyncStorageBackend} instead.
 */
export abstract class StorageBackend implements AsyncDisposable {
  #closed = false;
  #twin: SyncTwinHandle | undefined;

  // ---- storage primitives: what a backend implements ----

  /**
   * Stores a new session record unless its id is taken, in one atomic step (an insert-if-absent).
   * Returns `null` when it stored the record, or the existing session (unchanged, nothing written) when the id
   * was taken: ids chosen by callers can collide, and `openSession` returns the existing record.
   */
  protected abstract insertSession(record: SessionRecord): MaybePromise<SessionRecord | null>;
  /** The session, or `null`. */
  protected abstract readSession(sessionId: string): MaybePromise<SessionRecord | null>;
  /**
   * The agent's sessions ordered by `updated_at` descending, then `session_id`
   * descending; only those with `cwd` when given; only those strictly after
   * `before` in that order; at most `limit`.
   */
  protected abstract querySessions(agentId: string, query: SessionQuery): MaybePromise<SessionRecord[]>;
  /**
   * Replaces the session's metadata (and so its cwd, which the cwd listing follows) and sets `updated_at` to
   * the later of `updated_at` and `at`, in one atomic step. The updated record, or `null` when the session
   * does not exist (and nothing was written).
   */
  protected abstract replaceMetadata(
    sessionId: string,
    metadata: JsonObject | null,
    at: string,
  ): MaybePromise<SessionRecord | null>;
  /**
   * Copies the session and all its messages to `target` atomically: same agent,
   * same metadata, `created_at = updated_at = target.created_at`, messages with
   * their original timestamps in order. `false` when the source does not exist.
   */
  protected abstract copySession(sessionId: string, target: ForkTarget): MaybePromise<boolean>;
  /** Removes the session and its messages; no error when it does not exist. */
  protected abstract removeSession(sessionId: string): MaybePromise<void>;
  /**
   * Appends the messages (one or more, all with the same timestamp) at the end of the session's list and sets
   * its `updated_at` to that timestamp, all or nothing, in one atomic step (one statement, script or write):
   * no reader ever sees part of the batch, also after a crash. When the session's `updated_at` is later than
   * the timestamp (a clock behind), the messages take `updated_at` instead. Returns the session's number of
   * messages after the append, or `null` when the session does not exist (and nothing was written).
   */
  protected abstract appendMessages(sessionId: string, messages: MessageRecord[]): MaybePromise<number | null>;
  /** The session's number of messages, or `null` when it does not exist. */
  protected abstract readLength(sessionId: string): MaybePromise<number | null>;
  /** The messages in append order (only the newest `last` when given), or `null` when the session does not exist. */
  protected abstract readMessages(sessionId: string, last: number | undefined): MaybePromise<MessageRecord[] | null>;
  /** Releases what the backend opened (never a client it was given). */
  protected abstract dispose(): MaybePromise<void>;

  /**
   * Optional (export, import and copy need it): sessions of every agent, or of
   * `agentId` only, ordered by `session_id` ascending, strictly after `after`, at most `limit`.
   */
  protected scanPage(
    _after: string | null,
    _limit: number,
    _agentId: string | undefined,
  ): MaybePromise<SessionRecord[]> {
    throw this.#unsupported("scanPage");
  }
  /**
   * Optional (import and copy need it): writes the session and its messages
   * exactly as given (ids, times, order), atomically. `false`, with nothing
   * written, when a session with that id exists already.
   */
  protected insertImported(_record: SessionRecord, _messages: MessageRecord[]): MaybePromise<boolean> {
    throw this.#unsupported("insertImported");
  }

  /**
   * How to rebuild this backend on a worker thread, so that the `...Sync`
   * methods can run the async ones there: the module to import, the class it
   * exports and options that survive `structuredClone`. `undefined` (the
   * default) means the sync methods throw; override them or this.
   */
  protected syncTwin(): SyncTwin | undefined {
    return undefined;
  }

  // ---- the public API ----

  /**
   * Creates a session and returns its id: a new UUIDv7, or `options.sessionId`.
   * @throws {ValidationError} on a bad agent id, metadata or `sessionId` (nothing written).
   * @throws {SessionExistsError} when `options.sessionId` is taken (nothing written).
   */
  createSession(agentId: string, metadata?: JsonObject | null, options?: CreateOptions): Promise<string> {
    return this.#async("createSession", ops.createSession, [agentId, metadata, options]);
  }
  /**
   * Get-or-create in one atomic step: the session `sessionId` of `agentId`, created with `metadata` when it
   * does not exist. Of concurrent calls for one id, exactly one gets `created: true`.
   * @throws {SessionExistsError} when the id belongs to another agent (its session is not changed).
   * @throws {ValidationError} on a bad agent id, session id (a canonical lowercase UUID) or metadata.
   */
  openSession(agentId: string, sessionId: string, metadata?: JsonObject | null): Promise<OpenedSession> {
    return this.#async("openSession", ops.openSession, [agentId, sessionId, metadata]);
  }
  /** The session record, or `null` for an unknown id. */
  getSession(sessionId: string): Promise<SessionRecord | null> {
    return this.#async("getSession", ops.getSession, [sessionId]);
  }
  /**
   * Replaces the session's metadata (its cwd follows) and moves `updated_at` to now (never backwards).
   * Returns the updated record. Throws `SessionNotFoundError`, `ValidationError`.
   */
  updateSession(sessionId: string, patch: SessionPatch): Promise<SessionRecord> {
    return this.#async("updateSession", ops.updateSession, [sessionId, patch]);
  }
  /** The agent's sessions, newest `updated_at` first (ties: greater `session_id` first). */
  listSessions(agentId: string, options?: ListOptions): Promise<SessionRecord[]> {
    return this.#async("listSessions", ops.listSessions, [agentId, options]);
  }
  /** Copies the session and its messages to a new id. Throws `SessionNotFoundError`. */
  forkSession(sessionId: string): Promise<string> {
    return this.#async("forkSession", ops.forkSession, [sessionId]);
  }
  /** Deletes the session and its messages; an unknown id is not an error. */
  deleteSession(sessionId: string): Promise<void> {
    return this.#async("deleteSession", ops.deleteSession, [sessionId]);
  }
  /** Appends a message and moves `updated_at` to its timestamp: a batch of one. Throws `SessionNotFoundError`, `ValidationError`. */
  saveMessage(sessionId: string, role: Role, content: MessageContent): Promise<void> {
    return this.#async("saveMessage", ops.saveMessage, [sessionId, role, content]);
  }
  /**
   * Appends the messages, all or none, in one atomic step; they share one timestamp and keep their order.
   * An empty list writes nothing. Returns the session's number of messages after the write.
   * @throws {ValidationError} naming the first bad message (`messages[3].content`); nothing written.
   * @throws {SessionNotFoundError}
   */
  saveMessages(sessionId: string, messages: NewMessage[]): Promise<WriteResult> {
    return this.#async("saveMessages", ops.saveMessages, [sessionId, messages]);
  }
  /** The session's number of messages. Throws `SessionNotFoundError`. */
  countMessages(sessionId: string): Promise<number> {
    return this.#async("countMessages", ops.countMessages, [sessionId]);
  }
  /** The session's messages, oldest first; with `last`, only the newest N. Throws `SessionNotFoundError`. */
  loadMessages(sessionId: string, options?: LoadOptions): Promise<MessageRecord[]> {
    return this.#async("loadMessages", ops.loadMessages, [sessionId, options]);
  }

  /**
   * A page of sessions of every agent (or of `agentId`), in `session_id` order:
   * pass the last id of a page as `after` to get the next. For export and copy.
   */
  scanSessions(options?: ScanOptions): Promise<SessionRecord[]> {
    return this.#async("scanSessions", ops.scanSessions, [options]);
  }
  /**
   * Writes a session and its messages exactly as given (ids, times, order), for
   * import and copy. Returns `false`, writing nothing, when the id exists already.
   */
  importSession(record: SessionRecord, messages: MessageRecord[]): Promise<boolean> {
    return this.#async("importSession", ops.importSession, [record, messages]);
  }

  /** Releases pools, connections and file handles the backend opened. Idempotent. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#twin?.close();
      await this.dispose();
    } catch (error) {
      throw toStorageError(error, `${this.constructor.name}.close`);
    }
  }

  /** Same as {@link StorageBackend.close}: what `await using` calls. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  /** Whether `close()` has been called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** {@link StorageBackend.createSession}, blocking the caller: returns the new id. */
  createSessionSync(agentId: string, metadata?: JsonObject | null, options?: CreateOptions): string {
    return this.runSync("createSession", ops.createSession, [agentId, metadata, options]);
  }
  /** {@link StorageBackend.openSession}, blocking the caller. */
  openSessionSync(agentId: string, sessionId: string, metadata?: JsonObject | null): OpenedSession {
    return this.runSync("openSession", ops.openSession, [agentId, sessionId, metadata]);
  }
  /** {@link StorageBackend.getSession}, blocking the caller. */
  getSessionSync(sessionId: string): SessionRecord | null {
    return this.runSync("getSession", ops.getSession, [sessionId]);
  }
  /** {@link StorageBackend.updateSession}, blocking the caller. */
  updateSessionSync(sessionId: string, patch: SessionPatch): SessionRecord {
    return this.runSync("updateSession", ops.updateSession, [sessionId, patch]);
  }
  /** {@link StorageBackend.listSessions}, blocking the caller. */
  listSessionsSync(agentId: string, options?: ListOptions): SessionRecord[] {
    return this.runSync("listSessions", ops.listSessions, [agentId, options]);
  }
  /** {@link StorageBackend.forkSession}, blocking the caller: returns the new id. */
  forkSessionSync(sessionId: string): string {
    return this.runSync("forkSession", ops.forkSession, [sessionId]);
  }
  /** {@link StorageBackend.deleteSession}, blocking the caller. */
  deleteSessionSync(sessionId: string): void {
    this.runSync("deleteSession", ops.deleteSession, [sessionId]);
  }
  /** {@link StorageBackend.saveMessage}, blocking the caller. */
  saveMessageSync(sessionId: string, role: Role, content: MessageContent): void {
    this.runSync("saveMessage", ops.saveMessage, [sessionId, role, content]);
  }
  /** {@link StorageBackend.saveMessages}, blocking the caller. */
  saveMessagesSync(sessionId: string, messages: NewMessage[]): WriteResult {
    return this.runSync("saveMessages", ops.saveMessages, [sessionId, messages]);
  }
  /** {@link StorageBackend.countMessages}, blocking the caller. */
  countMessagesSync(sessionId: string): number {
    return this.runSync("countMessages", ops.countMessages, [sessionId]);
  }
  /** {@link StorageBackend.loadMessages}, blocking the caller. */
  loadMessagesSync(sessionId: string, options?: LoadOptions): MessageRecord[] {
    return this.runSync("loadMessages", ops.loadMessages, [sessionId, options]);
  }
  /** {@link StorageBackend.scanSessions}, blocking the caller. */
  scanSessionsSync(options?: ScanOptions): SessionRecord[] {
    return this.runSync("scanSessions", ops.scanSessions, [options]);
  }
  /** {@link StorageBackend.importSession}, blocking the caller. */
  importSessionSync(record: SessionRecord, messages: MessageRecord[]): boolean {
    return this.runSync("importSession", ops.importSession, [record, messages]);
  }
  /** Synchronous `close()`, for natively synchronous backends and sync-only callers. */
  closeSync(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#twin?.close();
      const pending = this.dispose();
      if (pending instanceof Promise) pending.catch(() => {});
    } catch (error) {
      throw toStorageError(error, `${this.constructor.name}.close`);
    }
  }

  /**
   * Runs a sync method: on a worker twin by default, or natively (see {@link SyncStorageBackend}). The
   * arguments are validated here first, so that bad input gets the same `ValidationError` as on the async
   * path and never has to cross to the worker (where, say, a function could not even be cloned).
   */
  protected runSync<A extends unknown[], P, R>(method: string, op: Op<A, P, R>, args: A): R {
    this.#assertOpen();
    try {
      op.prepare(...args);
    } catch (error) {
      throw toStorageError(error, `${this.constructor.name}.${method}Sync`);
    }
    if (!this.#twin) {
      const twin = this.syncTwin();
      if (!twin) {
        throw new AgentixStorageError(
          `${this.constructor.name} has no synchronous path: override ${method}Sync (and the other ...Sync methods), ` +
            "or implement syncTwin() so that agentix can run the async method on a worker thread",
        );
      }
      this.#twin = new SyncTwinHandle(twin);
    }
    try {
      return this.#twin.call(method, args) as R;
    } catch (error) {
      // The worker's own errors arrive revived; anything else (the worker failing to start) is wrapped.
      throw toStorageError(error, `${this.constructor.name}.${method}Sync`);
    }
  }

  /** Runs an operation natively and synchronously, with the closed check and error wrapping. */
  protected guardSync<A extends unknown[], P, R>(method: string, op: Op<A, P, R>, args: A): R {
    this.#assertOpen();
    let result: MaybePromise<R>;
    try {
      result = op.run(primitives(this), op.prepare(...args));
    } catch (error) {
      throw toStorageError(error, `${this.constructor.name}.${method}`);
    }
    if (result instanceof Promise) {
      result.catch(() => {});
      throw new AgentixStorageError(`${this.constructor.name}.${method}Sync: a primitive returned a promise`);
    }
    return result;
  }

  async #async<A extends unknown[], P, R>(method: string, op: Op<A, P, R>, args: A): Promise<R> {
    this.#assertOpen();
    try {
      return await op.run(primitives(this), op.prepare(...args));
    } catch (error) {
      throw toStorageError(error, `${this.constructor.name}.${method}`);
    }
  }

  #unsupported(primitive: string): AgentixStorageError {
    return new AgentixStorageError(
      `${this.constructor.name} does not support export and import: implement scanPage and insertImported (${primitive} was called)`,
    );
  }

  #assertOpen(): void {
    if (this.#closed) throw new BackendClosedError(this.constructor.name);
  }
}

/**
 * Base of the natively synchronous backends (Memory, File, SQLite): their
 * primitives return plain values, the `...Sync` methods call them directly and
 * the async methods wrap them.
 */
export abstract class SyncStorageBackend extends StorageBackend {
  protected abstract override insertSession(record: SessionRecord): SessionRecord | null;
  protected abstract override readSession(sessionId: string): SessionRecord | null;
  protected abstract override querySessions(agentId: string, query: SessionQuery): SessionRecord[];
  protected abstract override replaceMetadata(
    sessionId: string,
    metadata: JsonObject | null,
    at: string,
  ): SessionRecord | null;
  protected abstract override copySession(sessionId: string, target: ForkTarget): boolean;
  protected abstract override removeSession(sessionId: string): void;
  protected abstract override appendMessages(sessionId: string, messages: MessageRecord[]): number | null;
  protected abstract override readLength(sessionId: string): number | null;
  protected abstract override readMessages(sessionId: string, last: number | undefined): MessageRecord[] | null;
  protected abstract override dispose(): void;

  protected override runSync<A extends unknown[], P, R>(method: string, op: Op<A, P, R>, args: A): R {
    return this.guardSync(method, op, args);
  }
}

/** The primitives as the operations see them (they are protected on the class). */
interface Primitives {
  insertSession(record: SessionRecord): MaybePromise<SessionRecord | null>;
  readSession(sessionId: string): MaybePromise<SessionRecord | null>;
  querySessions(agentId: string, query: SessionQuery): MaybePromise<SessionRecord[]>;
  replaceMetadata(sessionId: string, metadata: JsonObject | null, at: string): MaybePromise<SessionRecord | null>;
  copySession(sessionId: string, target: ForkTarget): MaybePromise<boolean>;
  removeSession(sessionId: string): MaybePromise<void>;
  appendMessages(sessionId: string, messages: MessageRecord[]): MaybePromise<number | null>;
  readLength(sessionId: string): MaybePromise<number | null>;
  readMessages(sessionId: string, last: number | undefined): MaybePromise<MessageRecord[] | null>;
  scanPage(after: string | null, limit: number, agentId: string | undefined): MaybePromise<SessionRecord[]>;
  insertImported(record: SessionRecord, messages: MessageRecord[]): MaybePromise<boolean>;
}

/**
 * One public operation, written once for sync and async backends alike: `prepare` validates the arguments
 * (throwing before anything is written), `run` calls the primitives.
 */
export interface Op<A extends unknown[], P, R> {
  prepare(...args: A): P;
  run(b: Primitives, prepared: P): MaybePromise<R>;
}

function op<A extends unknown[], P, R>(
  prepare: (...args: A) => P,
  run: (b: Primitives, prepared: P) => MaybePromise<R>,
): Op<A, P, R> {
  return { prepare, run };
}

/** Applies `next` to a value now, or to a promise when it settles: one body for sync and async backends. */
function then<T, U>(value: MaybePromise<T>, next: (value: T) => U): MaybePromise<U> {
  return value instanceof Promise ? value.then(next) : next(value);
}

/** A session id from a caller: a string, and "not found" unless it has the shape of one. */
function knownId(sessionId: unknown): string | null {
  const id = parse(schemas.sessionId, sessionId, "sessionId");
  return isSessionId(id) ? id : null;
}

/** A session id that must name an existing session: not having the shape of one is "not found". */
function existingId(sessionId: unknown): string {
  return existing(knownId(sessionId), sessionId);
}

/** `id` from {@link knownId}, checked only once the other arguments are valid (bad input is reported first). */
function existing(id: string | null, sessionId: unknown): string {
  if (id === null) throw new SessionNotFoundError(String(sessionId));
  return id;
}

function found<T>(sessionId: string, value: T | null | false): T {
  if (value === null || value === false) throw new SessionNotFoundError(sessionId);
  return value;
}

/** A deep copy of validated JSON, as a store would give it back (`undefined` properties dropped). */
function copyJson<T extends JsonObject | null>(value: T): T {
  return value === null ? value : (JSON.parse(JSON.stringify(value)) as T);
}

/** Each operation once: validation, then the primitives. */
const ops = {
  createSession: op(
    (agentId: unknown, metadata: unknown, options: unknown) =>
      newSession(agentId, metadata, createOptionsOf(options).sessionId),
    (b, record) =>
      then(b.insertSession(record), (existing) => {
        if (existing) throw new SessionExistsError(record.session_id);
        return record.session_id;
      }),
  ),
  openSession: op(
    openedSession,
    (b, record): MaybePromise<OpenedSession> =>
      then(b.insertSession(record), (existing) => {
        // The record as stored (what getSession returns): not the caller's metadata object, which may hold
        // `undefined` properties that are not stored, and which the caller may mutate later.
        if (!existing) return { session: { ...record, metadata: copyJson(record.metadata) }, created: true };
        if (existing.agent_id !== record.agent_id) {
          throw new SessionExistsError(record.session_id, "exists already and belongs to another agent");
        }
        return { session: existing, created: false };
      }),
  ),
  getSession: op(knownId, (b, id) => (id === null ? null : b.readSession(id))),
  updateSession: op(
    (sessionId: unknown, patch: unknown) => ({ metadata: patchMetadata(patch), id: existingId(sessionId) }),
    (b, { id, metadata }) => then(b.replaceMetadata(id, metadata, now()), (record) => found(id, record)),
  ),
  listSessions: op(
    (agentId: unknown, options: unknown) => ({
      agent: parse(schemas.agentId, agentId, "agentId"),
      query: sessionQuery(options),
    }),
    (b, { agent, query }) => b.querySessions(agent, query),
  ),
  forkSession: op(existingId, (b, id) => {
    const target: ForkTarget = { session_id: newSessionId(), created_at: now() };
    return then(b.copySession(id, target), (copied) => {
      found(id, copied);
      return target.session_id;
    });
  }),
  deleteSession: op(knownId, (b, id) => (id === null ? undefined : b.removeSession(id))),
  saveMessage: op(
    (sessionId: unknown, role: unknown, content: unknown) => {
      const id = knownId(sessionId);
      const message = newMessage(role, content);
      return { id: existing(id, sessionId), message };
    },
    (b, { id, message }) =>
      then(b.appendMessages(id, [message]), (length) => {
        found(id, length);
      }),
  ),
  saveMessages: op(
    (sessionId: unknown, messages: unknown) => {
      const id = knownId(sessionId);
      const batch = newBatch(messages);
      return { id: existing(id, sessionId), batch };
    },
    (b, { id, batch }): MaybePromise<WriteResult> =>
      then(batch.length === 0 ? b.readLength(id) : b.appendMessages(id, batch), (length) => ({
        length: found(id, length),
      })),
  ),
  countMessages: op(existingId, (b, id) => then(b.readLength(id), (count) => found(id, count))),
  loadMessages: op(
    (sessionId: unknown, options: unknown) => {
      const id = knownId(sessionId);
      const last = loadLast(options);
      return { id: existing(id, sessionId), last };
    },
    (b, { id, last }) => then(b.readMessages(id, last), (messages) => found(id, messages)),
  ),
  scanSessions: op(scanQuery, (b, scan) => b.scanPage(scan.after, scan.limit, scan.agentId)),
  importSession: op(importedSession, (b, imported) => b.insertImported(imported.record, imported.messages)),
};

/** The protected primitives, reached from the operations above (same module, so no public surface is added). */
function primitives(b: StorageBackend): Primitives {
  return b as unknown as Primitives;
}
