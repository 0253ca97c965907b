import { newSessionId, now } from "./clock.js";
import { AgentixStorageError, BackendClosedError, SessionNotFoundError, toStorageError } from "./errors.js";
import { type SyncTwin, SyncTwinHandle } from "./sync.js";
import type {
  JsonObject,
  ListOptions,
  LoadOptions,
  MessageContent,
  MessageRecord,
  Role,
  SessionQuery,
  SessionRecord,
} from "./types.js";
import {
  importedSession,
  isSessionId,
  loadLast,
  newMessage,
  newSession,
  parse,
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

  /** Stores a new session record (its id is new: no conflict is possible). */
  protected abstract insertSession(record: SessionRecord): MaybePromise<void>;
  /** The session, or `null`. */
  protected abstract readSession(sessionId: string): MaybePromise<SessionRecord | null>;
  /**
   * The agent's sessions ordered by `updated_at` descending, then `session_id`
   * descending; only those with `cwd` when given; only those strictly after
   * `before` in that order; at most `limit`.
   */
  protected abstract querySessions(agentId: string, query: SessionQuery): MaybePromise<SessionRecord[]>;
  /**
   * Copies the session and all its messages to `target` atomically: same agent,
   * same metadata, `created_at = updated_at = target.created_at`, messages with
   * their original timestamps in order. `false` when the source does not exist.
   */
  protected abstract copySession(sessionId: string, target: ForkTarget): MaybePromise<boolean>;
  /** Removes the session and its messages; no error when it does not exist. */
  protected abstract removeSession(sessionId: string): MaybePromise<void>;
  /**
   * Appends the message and sets the session's `updated_at` to its timestamp in
   * one atomic step. When the session's `updated_at` is later than
   * `message.timestamp` (a clock behind), the message takes `updated_at` instead.
   * `false` when the session does not exist (and nothing was written).
   */
  protected abstract appendMessage(sessionId: string, message: MessageRecord): MaybePromise<boolean>;
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

  /** Creates a session and returns its id (a UUIDv7). Throws `ValidationError` on a bad agent id or metadata. */
  createSession(agentId: string, metadata?: JsonObject | null): Promise<string> {
    return this.#async("createSession", () => ops.createSession(this, agentId, metadata));
  }
  /** The session record, or `null` for an unknown id. */
  getSession(sessionId: string): Promise<SessionRecord | null> {
    return this.#async("getSession", () => ops.getSession(this, sessionId));
  }
  /** The agent's sessions, newest `updated_at` first (ties: greater `session_id` first). */
  listSessions(agentId: string, options?: ListOptions): Promise<SessionRecord[]> {
    return this.#async("listSessions", () => ops.listSessions(this, agentId, options));
  }
  /** Copies the session and its messages to a new id. Throws `SessionNotFoundError`. */
  forkSession(sessionId: string): Promise<string> {
    return this.#async("forkSession", () => ops.forkSession(this, sessionId));
  }
  /** Deletes the session and its messages; an unknown id is not an error. */
  deleteSession(sessionId: string): Promise<void> {
    return this.#async("deleteSession", () => ops.deleteSession(this, sessionId));
  }
  /** Appends a message and moves `updated_at` to its timestamp. Throws `SessionNotFoundError`, `ValidationError`. */
  saveMessage(sessionId: string, role: Role, content: MessageContent): Promise<void> {
    return this.#async("saveMessage", () => ops.saveMessage(this, sessionId, role, content));
  }
  /** The session's messages, oldest first; with `last`, only the newest N. Throws `SessionNotFoundError`. */
  loadMessages(sessionId: string, options?: LoadOptions): Promise<MessageRecord[]> {
    return this.#async("loadMessages", () => ops.loadMessages(this, sessionId, options));
  }

  /**
   * A page of sessions of every agent (or of `agentId`), in `session_id` order:
   * pass the last id of a page as `after` to get the next. For export and copy.
   */
  scanSessions(options?: ScanOptions): Promise<SessionRecord[]> {
    return this.#async("scanSessions", () => ops.scanSessions(this, options));
  }
  /**
   * Writes a session and its messages exactly as given (ids, times, order), for
   * import and copy. Returns `false`, writing nothing, when the id exists already.
   */
  importSession(record: SessionRecord, messages: MessageRecord[]): Promise<boolean> {
    return this.#async("importSession", () => ops.importSession(this, record, messages));
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
  createSessionSync(agentId: string, metadata?: JsonObject | null): string {
    return this.runSync("createSession", [agentId, metadata], () => ops.createSession(this, agentId, metadata));
  }
  /** {@link StorageBackend.getSession}, blocking the caller. */
  getSessionSync(sessionId: string): SessionRecord | null {
    return this.runSync("getSession", [sessionId], () => ops.getSession(this, sessionId));
  }
  /** {@link StorageBackend.listSessions}, blocking the caller. */
  listSessionsSync(agentId: string, options?: ListOptions): SessionRecord[] {
    return this.runSync("listSessions", [agentId, options], () => ops.listSessions(this, agentId, options));
  }
  /** {@link StorageBackend.forkSession}, blocking the caller: returns the new id. */
  forkSessionSync(sessionId: string): string {
    return this.runSync("forkSession", [sessionId], () => ops.forkSession(this, sessionId));
  }
  /** {@link StorageBackend.deleteSession}, blocking the caller. */
  deleteSessionSync(sessionId: string): void {
    this.runSync("deleteSession", [sessionId], () => ops.deleteSession(this, sessionId));
  }
  /** {@link StorageBackend.saveMessage}, blocking the caller. */
  saveMessageSync(sessionId: string, role: Role, content: MessageContent): void {
    this.runSync("saveMessage", [sessionId, role, content], () => ops.saveMessage(this, sessionId, role, content));
  }
  /** {@link StorageBackend.loadMessages}, blocking the caller. */
  loadMessagesSync(sessionId: string, options?: LoadOptions): MessageRecord[] {
    return this.runSync("loadMessages", [sessionId, options], () => ops.loadMessages(this, sessionId, options));
  }
  /** {@link StorageBackend.scanSessions}, blocking the caller. */
  scanSessionsSync(options?: ScanOptions): SessionRecord[] {
    return this.runSync("scanSessions", [options], () => ops.scanSessions(this, options));
  }
  /** {@link StorageBackend.importSession}, blocking the caller. */
  importSessionSync(record: SessionRecord, messages: MessageRecord[]): boolean {
    return this.runSync("importSession", [record, messages], () => ops.importSession(this, record, messages));
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
   * Runs a sync method: on a worker twin by default, or natively (see
   * {@link SyncStorageBackend}) by running the same operation on this backend.
   */
  protected runSync<T>(method: string, args: unknown[], _native: () => MaybePromise<T>): T {
    this.#assertOpen();
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
      return this.#twin.call(method, args) as T;
    } catch (error) {
      // The worker's own errors arrive revived; anything else (worker start, uncloneable args) is wrapped.
      throw toStorageError(error, `${this.constructor.name}.${method}Sync`);
    }
  }

  /** Runs an operation natively and synchronously, with the closed check and error wrapping. */
  protected guardSync<T>(method: string, run: () => MaybePromise<T>): T {
    this.#assertOpen();
    let result: MaybePromise<T>;
    try {
      result = run();
    } catch (error) {
      throw toStorageError(error, `${this.constructor.name}.${method}`);
    }
    if (result instanceof Promise) {
      result.catch(() => {});
      throw new AgentixStorageError(`${this.constructor.name}.${method}Sync: a primitive returned a promise`);
    }
    return result;
  }

  async #async<T>(method: string, run: () => MaybePromise<T>): Promise<T> {
    this.#assertOpen();
    try {
      return await run();
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
  protected abstract override insertSession(record: SessionRecord): void;
  protected abstract override readSession(sessionId: string): SessionRecord | null;
  protected abstract override querySessions(agentId: string, query: SessionQuery): SessionRecord[];
  protected abstract override copySession(sessionId: string, target: ForkTarget): boolean;
  protected abstract override removeSession(sessionId: string): void;
  protected abstract override appendMessage(sessionId: string, message: MessageRecord): boolean;
  protected abstract override readMessages(sessionId: string, last: number | undefined): MessageRecord[] | null;
  protected abstract override dispose(): void;

  protected override runSync<T>(method: string, _args: unknown[], native: () => MaybePromise<T>): T {
    return this.guardSync(method, native);
  }
}

/** The primitives as the operations see them (they are protected on the class). */
interface Primitives {
  insertSession(record: SessionRecord): MaybePromise<void>;
  readSession(sessionId: string): MaybePromise<SessionRecord | null>;
  querySessions(agentId: string, query: SessionQuery): MaybePromise<SessionRecord[]>;
  copySession(sessionId: string, target: ForkTarget): MaybePromise<boolean>;
  removeSession(sessionId: string): MaybePromise<void>;
  appendMessage(sessionId: string, message: MessageRecord): MaybePromise<boolean>;
  readMessages(sessionId: string, last: number | undefined): MaybePromise<MessageRecord[] | null>;
  scanPage(after: string | null, limit: number, agentId: string | undefined): MaybePromise<SessionRecord[]>;
  insertImported(record: SessionRecord, messages: MessageRecord[]): MaybePromise<boolean>;
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

function found<T>(sessionId: string, value: T | null | false): T {
  if (value === null || value === false) throw new SessionNotFoundError(sessionId);
  return value;
}

/** Each operation once, for both sync and async backends: validation, then the primitive. */
const ops = {
  createSession(b: StorageBackend, agentId: unknown, metadata: unknown): MaybePromise<string> {
    const record = newSession(agentId, metadata);
    return then(primitives(b).insertSession(record), () => record.session_id);
  },
  getSession(b: StorageBackend, sessionId: unknown): MaybePromise<SessionRecord | null> {
    const id = knownId(sessionId);
    return id === null ? null : primitives(b).readSession(id);
  },
  listSessions(b: StorageBackend, agentId: unknown, options: unknown): MaybePromise<SessionRecord[]> {
    const agent = parse(schemas.agentId, agentId, "agentId");
    return primitives(b).querySessions(agent, sessionQuery(options));
  },
  forkSession(b: StorageBackend, sessionId: unknown): MaybePromise<string> {
    const id = knownId(sessionId);
    if (id === null) throw new SessionNotFoundError(String(sessionId));
    const target: ForkTarget = { session_id: newSessionId(), created_at: now() };
    return then(primitives(b).copySession(id, target), (copied) => {
      found(id, copied);
      return target.session_id;
    });
  },
  deleteSession(b: StorageBackend, sessionId: unknown): MaybePromise<void> {
    const id = knownId(sessionId);
    return id === null ? undefined : primitives(b).removeSession(id);
  },
  saveMessage(b: StorageBackend, sessionId: unknown, role: unknown, content: unknown): MaybePromise<void> {
    const id = knownId(sessionId);
    const message = newMessage(role, content);
    if (id === null) throw new SessionNotFoundError(String(sessionId));
    return then(primitives(b).appendMessage(id, message), (saved) => {
      found(id, saved);
    });
  },
  loadMessages(b: StorageBackend, sessionId: unknown, options: unknown): MaybePromise<MessageRecord[]> {
    const id = knownId(sessionId);
    const last = loadLast(options);
    if (id === null) throw new SessionNotFoundError(String(sessionId));
    return then(primitives(b).readMessages(id, last), (messages) => found(id, messages));
  },
  scanSessions(b: StorageBackend, options: unknown): MaybePromise<SessionRecord[]> {
    const scan = scanQuery(options);
    return primitives(b).scanPage(scan.after, scan.limit, scan.agentId);
  },
  importSession(b: StorageBackend, record: unknown, messages: unknown): MaybePromise<boolean> {
    const imported = importedSession(record, messages);
    return primitives(b).insertImported(imported.record, imported.messages);
  },
};

/** The protected primitives, reached from the operations above (same module, so no public surface is added). */
function primitives(b: StorageBackend): Primitives {
  return b as unknown as Primitives;
}
