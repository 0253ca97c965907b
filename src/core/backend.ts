import { AgentixStorageError, BackendClosedError, toStorageError } from "./errors.js";
import { type ImportPrimitives, importStream, importStreamSync, type Op, ops, primitives } from "./operations.js";
import { type SyncTwin, SyncTwinHandle } from "./sync.js";
import type {
  CopyOutcome,
  CreateOptions,
  EditOutcome,
  ForkOptions,
  ImportOptions,
  IterateOptions,
  JsonObject,
  ListOptions,
  LoadOptions,
  MessageContent,
  MessageEdit,
  MessageRange,
  MessageRecord,
  NewMessage,
  OpenedSession,
  Role,
  SessionPatch,
  SessionQuery,
  SessionRecord,
  StagedImport,
  WriteOptions,
  WriteResult,
} from "./types.js";
import type { ScanOptions } from "./validation.js";

export type { Op } from "./operations.js";

/** A primitive's result: a value for a natively synchronous backend, a promise otherwise. */
export type MaybePromise<T> = T | Promise<T>;

/** What `copySession` is told about the new session. */
export interface ForkTarget {
  /** The new session's id: a UUIDv7 made by the base class, or the caller's (which may be taken). */
  session_id: string;
  /** The fork's time of creation, also its `updated_at`. */
  created_at: string;
  /** Copy only the first `length` messages (`undefined`: all). */
  length: number | undefined;
  /** The fork's metadata, and so its cwd (`undefined`: the source's). */
  metadata: JsonObject | null | undefined;
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
  /** The default import primitives' staging: each streamed import's messages, by stage, until published. */
  readonly #staged = new Map<string, MessageRecord[]>();

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
   * Copies the session and its messages (the first `target.length`, or all) to `target.session_id`
   * atomically: same agent, the source's metadata or `target.metadata`, `created_at = updated_at =
   * target.created_at`, messages with their original timestamps in order. Nothing is written when the
   * source does not exist (`not-found`), the target id is taken (`exists`) or `target.length` is beyond the
   * source's length (`out-of-range`, with that length).
   */
  protected abstract copySession(sessionId: string, target: ForkTarget): MaybePromise<CopyOutcome>;
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
  /**
   * Edits the history in one atomic step (one statement, script or locked write), in this order: `not-found`
   * when the session does not exist; `replayed` (nothing written) when `edit.idempotency.key` is remembered;
   * `conflict` when `edit.expectedLength` is not the length; `out-of-range` when `edit.from` is beyond it; else
   * drops positions ≥ `from` (or, for `pop`, the last message), appends `edit.messages` as
   * {@link StorageBackend.appendMessages} does, moves `updated_at` to `edit.at` (never backwards) when the
   * list changed, replaces the metadata (and cwd) when `edit.metadata` is defined (then `updated_at` moves even
   * when the list did not change), remembers the key with its fingerprint and outcome (keeping at least the session's 1,000
   * most recent keys, deleted with the session), and returns `written` with the new length and the popped message.
   */
  protected abstract editMessages(sessionId: string, edit: MessageEdit): MaybePromise<EditOutcome>;
  /** The session's number of messages, or `null` when it does not exist. */
  protected abstract readLength(sessionId: string): MaybePromise<number | null>;
  /**
   * The messages in `range`, oldest first: the newest `last`, or positions `offset …` (at most `limit`),
   * reading no more of the store than that where it can. `null` when the session does not exist.
   */
  protected abstract readMessages(sessionId: string, range: MessageRange): MaybePromise<MessageRecord[] | null>;
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
   * Optional, with {@link StorageBackend.stageMessages}, {@link StorageBackend.publishImport} and
   * {@link StorageBackend.discardImport}: a streamed import (`importSession` given an iterable), written in chunks
   * into staging that no reader sees, then published in one short atomic step. Starts `staged.stage`'s staging;
   * `false` (nothing staged) when a session with that id exists already.
   *
   * The defaults keep the chunks in memory and publish them with {@link StorageBackend.insertImported}: correct
   * (all or nothing), but the whole session is in memory at the end. A backend overrides all four to stream.
   */
  protected beginImport(staged: StagedImport): MaybePromise<boolean> {
    const known = this.readSession(staged.record.session_id);
    const start = (existing: SessionRecord | null) => {
      if (existing === null) this.#staged.set(staged.stage, []);
      return existing === null;
    };
    return known instanceof Promise ? known.then(start) : start(known);
  }
  /**
   * Adds the messages (validated, in order; the first is at position `offset`) to the staging. `false` when the
   * id was taken meanwhile (the import stops and returns `false`). Called one chunk at a time, never concurrently.
   */
  protected stageMessages(staged: StagedImport, _offset: number, messages: MessageRecord[]): MaybePromise<boolean> {
    const kept = this.#staged.get(staged.stage);
    if (kept === undefined) throw new AgentixStorageError(`import ${staged.stage} was not begun or is over`);
    for (const message of messages) kept.push(message);
    return true;
  }
  /**
   * Makes the staged session (`length` messages) visible in one atomic step, exactly as given (ids, times,
   * order). `false`, nothing visible, when the id was taken meanwhile (a racing create or import: never a mixed
   * session). Its staging is gone afterwards.
   */
  protected publishImport(staged: StagedImport, _length: number): MaybePromise<boolean> {
    const kept = this.#staged.get(staged.stage) ?? [];
    this.#staged.delete(staged.stage);
    return this.insertImported(staged.record, kept);
  }
  /**
   * Drops the staging of an import that failed or lost a race (called once, unless `publishImport` returned
   * `true`). A crash leaves staging behind: it must stay invisible, and be cleaned later.
   */
  protected discardImport(staged: StagedImport): MaybePromise<void> {
    this.#staged.delete(staged.stage);
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
  /**
   * Copies the session and its messages (the first `options.length`, or all) to a new session, all or nothing,
   * and returns its id (`options.sessionId`, or a new UUIDv7); `options.metadata` replaces the copied metadata.
   * @throws {SessionNotFoundError}
   * @throws {SessionExistsError} when `options.sessionId` is taken.
   * @throws {ValidationError} on bad options, or a `length` beyond the session's length (nothing written).
   */
  forkSession(sessionId: string, options?: ForkOptions): Promise<string> {
    return this.#async("forkSession", ops.forkSession, [sessionId, options]);
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
  saveMessages(sessionId: string, messages: NewMessage[], options?: WriteOptions): Promise<WriteResult> {
    return this.#async("saveMessages", ops.saveMessages, [sessionId, messages, options]);
  }
  /**
   * Atomically drops the messages at positions ≥ `from` and appends `messages` (empty: a truncation;
   * `from = 0`: the whole history). Kept messages keep their timestamps. Returns the new length.
   * @throws {ValidationError} when `from` is beyond the length, or on bad messages (nothing written).
   * @throws {ConflictError} when `options.expectedLength` is not the length, or the key was used for another write.
   * @throws {SessionNotFoundError}
   */
  replaceMessages(
    sessionId: string,
    from: number,
    messages: NewMessage[],
    options?: WriteOptions,
  ): Promise<WriteResult> {
    return this.#async("replaceMessages", ops.replaceMessages, [sessionId, from, messages, options]);
  }
  /**
   * Atomically removes the last message and returns it; `null` (nothing written) when there is none.
   * @throws {ConflictError} when `options.expectedLength` is not the length, or the key was used for another write.
   * @throws {SessionNotFoundError}
   */
  popMessage(sessionId: string, options?: WriteOptions): Promise<MessageRecord | null> {
    return this.#async("popMessage", ops.popMessage, [sessionId, options]);
  }
  /** The session's number of messages. Throws `SessionNotFoundError`. */
  countMessages(sessionId: string): Promise<number> {
    return this.#async("countMessages", ops.countMessages, [sessionId]);
  }
  /**
   * The session's messages, oldest first: all, the newest `last`, or the page of positions `offset …`
   * (at most `limit`). Throws `SessionNotFoundError`, and `ValidationError` for `last` with `offset`/`limit`.
   */
  loadMessages(sessionId: string, options?: LoadOptions): Promise<MessageRecord[]> {
    return this.#async("loadMessages", ops.loadMessages, [sessionId, options]);
  }
  /**
   * Every message of the session in order, read `batchSize` at a time (page by page by position), so that a
   * session too large for one array can still be read. Messages appended meanwhile are seen; a history
   * edited meanwhile may be seen in part. `SessionNotFoundError` (also when the session is deleted midway)
   * and `ValidationError` come from the iteration.
   */
  async *iterateMessages(sessionId: string, options?: IterateOptions): AsyncIterable<MessageRecord> {
    const limit = await this.#async("iterateMessages", ops.iterateMessages, [sessionId, options]);
    for (let offset = 0; ; offset += limit) {
      const page = await this.#async("iterateMessages", ops.loadMessages, [sessionId, { offset, limit }]);
      yield* page;
      if (page.length < limit) return;
    }
  }

  /**
   * A page of sessions of every agent (or of `agentId`), in `session_id` order:
   * pass the last id of a page as `after` to get the next. For export and copy.
   */
  scanSessions(options?: ScanOptions): Promise<SessionRecord[]> {
    return this.#async("scanSessions", ops.scanSessions, [options]);
  }
  /**
   * Writes a session and its messages exactly as given (ids, times, order), all or nothing, for import and copy.
   * Returns `false`, writing nothing, when the id exists already.
   *
   * `messages` may be an array, or an iterable or async iterable (such as another backend's `iterateMessages`):
   * then they are validated and written `options.batchSize` at a time into staging no reader sees, and the
   * session appears in one atomic step at the end, so that a session larger than memory can be imported. An id
   * that exists already returns `false` before any message is read; a bad message (`ValidationError`), a failing
   * iterable or store leave nothing visible.
   */
  importSession(
    record: SessionRecord,
    messages: MessageRecord[] | Iterable<MessageRecord> | AsyncIterable<MessageRecord>,
    options?: ImportOptions,
  ): Promise<boolean> {
    if (Array.isArray(messages)) return this.#async("importSession", ops.importSession, [record, messages]);
    this.#assertOpen();
    // An iterable is streamed: checked and staged `batchSize` at a time, published at the end (see importStream).
    return importStream(primitives(this), record, messages, options).catch((error: unknown) => {
      throw toStorageError(error, `${this.constructor.name}.importSession`);
    });
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
  forkSessionSync(sessionId: string, options?: ForkOptions): string {
    return this.runSync("forkSession", ops.forkSession, [sessionId, options]);
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
  saveMessagesSync(sessionId: string, messages: NewMessage[], options?: WriteOptions): WriteResult {
    return this.runSync("saveMessages", ops.saveMessages, [sessionId, messages, options]);
  }
  /** {@link StorageBackend.replaceMessages}, blocking the caller. */
  replaceMessagesSync(sessionId: string, from: number, messages: NewMessage[], options?: WriteOptions): WriteResult {
    return this.runSync("replaceMessages", ops.replaceMessages, [sessionId, from, messages, options]);
  }
  /** {@link StorageBackend.popMessage}, blocking the caller. */
  popMessageSync(sessionId: string, options?: WriteOptions): MessageRecord | null {
    return this.runSync("popMessage", ops.popMessage, [sessionId, options]);
  }
  /** {@link StorageBackend.countMessages}, blocking the caller. */
  countMessagesSync(sessionId: string): number {
    return this.runSync("countMessages", ops.countMessages, [sessionId]);
  }
  /** {@link StorageBackend.loadMessages}, blocking the caller. */
  loadMessagesSync(sessionId: string, options?: LoadOptions): MessageRecord[] {
    return this.runSync("loadMessages", ops.loadMessages, [sessionId, options]);
  }
  /** {@link StorageBackend.iterateMessages} as an `Iterable`, each page read blocking the caller. */
  *iterateMessagesSync(sessionId: string, options?: IterateOptions): Iterable<MessageRecord> {
    // Validated here, read as pages of loadMessagesSync: a worker twin runs methods by name, and its
    // iterateMessages is an async generator, which cannot cross back to this thread.
    const limit = this.guardSync("iterateMessages", ops.iterateMessages, [sessionId, options]);
    for (let offset = 0; ; offset += limit) {
      const page = this.runSync("loadMessages", ops.loadMessages, [sessionId, { offset, limit }]);
      yield* page;
      if (page.length < limit) return;
    }
  }
  /** {@link StorageBackend.scanSessions}, blocking the caller. */
  scanSessionsSync(options?: ScanOptions): SessionRecord[] {
    return this.runSync("scanSessions", ops.scanSessions, [options]);
  }
  /** {@link StorageBackend.importSession}, blocking the caller. */
  importSessionSync(
    record: SessionRecord,
    messages: MessageRecord[] | Iterable<MessageRecord>,
    options?: ImportOptions,
  ): boolean {
    if (Array.isArray(messages)) return this.runSync("importSession", ops.importSession, [record, messages]);
    this.#assertOpen();
    try {
      return importStreamSync(this.syncImport(), record, messages, options);
    } catch (error) {
      throw toStorageError(error, `${this.constructor.name}.importSessionSync`);
    }
  }

  /**
   * The import primitives as the sync path calls them: on the worker twin, one blocking call each (an iterable
   * cannot cross to the worker, its chunks can); natively for {@link SyncStorageBackend}.
   * @internal
   */
  protected syncImport(): ImportPrimitives {
    const call =
      (name: string) =>
      (...args: unknown[]) =>
        this.#twinFor("importSession").call(name, args) as never;
    return {
      beginImport: call("beginImport"),
      stageMessages: call("stageMessages"),
      publishImport: call("publishImport"),
      discardImport: call("discardImport"),
    };
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
   * @internal
   */
  protected runSync<A extends unknown[], P, R>(method: string, op: Op<A, P, R>, args: A): R {
    this.#assertOpen();
    try {
      op.prepare(...args);
    } catch (error) {
      throw toStorageError(error, `${this.constructor.name}.${method}Sync`);
    }
    const twin = this.#twinFor(method);
    try {
      return twin.call(method, args) as R;
    } catch (error) {
      // The worker's own errors arrive revived; anything else (the worker failing to start) is wrapped.
      throw toStorageError(error, `${this.constructor.name}.${method}Sync`);
    }
  }

  /** The worker twin, started on first use. */
  #twinFor(method: string): SyncTwinHandle {
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
    return this.#twin;
  }

  /**
   * Runs an operation natively and synchronously, with the closed check and error wrapping.
   * @internal
   */
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
  protected abstract override copySession(sessionId: string, target: ForkTarget): CopyOutcome;
  protected abstract override removeSession(sessionId: string): void;
  protected abstract override appendMessages(sessionId: string, messages: MessageRecord[]): number | null;
  protected abstract override editMessages(sessionId: string, edit: MessageEdit): EditOutcome;
  protected abstract override readLength(sessionId: string): number | null;
  protected abstract override readMessages(sessionId: string, range: MessageRange): MessageRecord[] | null;
  protected abstract override dispose(): void;

  protected override beginImport(staged: StagedImport): boolean {
    return super.beginImport(staged) as boolean;
  }
  protected override stageMessages(staged: StagedImport, offset: number, messages: MessageRecord[]): boolean {
    return super.stageMessages(staged, offset, messages) as boolean;
  }
  protected override publishImport(staged: StagedImport, length: number): boolean {
    return super.publishImport(staged, length) as boolean;
  }
  protected override discardImport(staged: StagedImport): void {
    super.discardImport(staged);
  }

  /** @internal */
  protected override syncImport(): ImportPrimitives {
    return primitives(this);
  }

  /** @internal */
  protected override runSync<A extends unknown[], P, R>(method: string, op: Op<A, P, R>, args: A): R {
    return this.guardSync(method, op, args);
  }
}
