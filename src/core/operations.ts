// Each public operation of StorageBackend, written once for sync and async backends alike: validation, then the
// storage primitives (see backend.ts for what each primitive guarantees).

import { randomUUID } from "node:crypto";
import type { ForkTarget, MaybePromise, StorageBackend } from "./backend.js";
import { newSessionId, now } from "./clock.js";
import {
  AgentixStorageError,
  ConflictError,
  SessionExistsError,
  SessionNotFoundError,
  ValidationError,
} from "./errors.js";
import type {
  CopyOutcome,
  EditOutcome,
  JsonObject,
  MessageEdit,
  MessageRange,
  MessageRecord,
  OpenedSession,
  SessionQuery,
  SessionRecord,
  StagedImport,
  WriteResult,
} from "./types.js";
import {
  batchSizeOf,
  createOptionsOf,
  fingerprint,
  forkOptionsOf,
  ImportCheck,
  importedRecordOf,
  importedSession,
  isSessionId,
  loadRange,
  newBatch,
  newMessage,
  newSession,
  openedSession,
  parse,
  patchMetadata,
  replaceFrom,
  scanQuery,
  schemas,
  sessionQuery,
  type WriteShape,
  writeOptionsOf,
} from "./validation.js";

/** The primitives as the operations see them (they are protected on the class). */
export interface Primitives {
  insertSession(record: SessionRecord): MaybePromise<SessionRecord | null>;
  readSession(sessionId: string): MaybePromise<SessionRecord | null>;
  querySessions(agentId: string, query: SessionQuery): MaybePromise<SessionRecord[]>;
  replaceMetadata(sessionId: string, metadata: JsonObject | null, at: string): MaybePromise<SessionRecord | null>;
  copySession(sessionId: string, target: ForkTarget): MaybePromise<CopyOutcome>;
  removeSession(sessionId: string): MaybePromise<void>;
  appendMessages(sessionId: string, messages: MessageRecord[]): MaybePromise<number | null>;
  editMessages(sessionId: string, edit: MessageEdit): MaybePromise<EditOutcome>;
  readLength(sessionId: string): MaybePromise<number | null>;
  readMessages(sessionId: string, range: MessageRange): MaybePromise<MessageRecord[] | null>;
  scanPage(after: string | null, limit: number, agentId: string | undefined): MaybePromise<SessionRecord[]>;
  insertImported(record: SessionRecord, messages: MessageRecord[]): MaybePromise<boolean>;
  beginImport(staged: StagedImport): MaybePromise<boolean>;
  stageMessages(staged: StagedImport, offset: number, messages: MessageRecord[]): MaybePromise<boolean>;
  publishImport(staged: StagedImport, length: number): MaybePromise<boolean>;
  discardImport(staged: StagedImport): MaybePromise<void>;
}

/** The primitives of a streamed import: what `importSessionSync` calls on a worker twin, one call at a time. */
export type ImportPrimitives = Pick<Primitives, "beginImport" | "stageMessages" | "publishImport" | "discardImport">;

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
  // A string needs no parse (zod's would cost every call a few µs): any other value is zod's to report.
  const id = typeof sessionId === "string" ? sessionId : parse(schemas.sessionId, sessionId, "sessionId");
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
export const ops = {
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
  forkSession: op(
    (sessionId: unknown, options: unknown) => {
      const id = knownId(sessionId);
      const { length, sessionId: forkId, metadata } = forkOptionsOf(options);
      return { id: existing(id, sessionId), length, forkId, metadata };
    },
    (b, { id, length, forkId, metadata }) => {
      const target: ForkTarget = { session_id: forkId ?? newSessionId(), created_at: now(), length, metadata };
      return then(b.copySession(id, target), (outcome) => {
        if (outcome.status === "not-found") throw new SessionNotFoundError(id);
        if (outcome.status === "exists") throw new SessionExistsError(target.session_id);
        if (outcome.status === "out-of-range") {
          throw new ValidationError("options.length", `is beyond the session's ${outcome.length} messages`);
        }
        return target.session_id;
      });
    },
  ),
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
    (sessionId: unknown, messages: unknown, options: unknown) => {
      const id = knownId(sessionId);
      const batch = newBatch(messages);
      const write = writeOptionsOf(options);
      return { id: existing(id, sessionId), batch, write };
    },
    (b, { id, batch, write }): MaybePromise<WriteResult> => {
      if (write.expectedLength !== undefined || write.key !== undefined || write.metadata !== undefined) {
        const edit = newEdit("saveMessages", [], undefined, false, batch, write);
        return then(b.editMessages(id, edit), (outcome) => ({ length: settle(id, edit, outcome).length }));
      }
      return then(batch.length === 0 ? b.readLength(id) : b.appendMessages(id, batch), (length) => ({
        length: found(id, length),
      }));
    },
  ),
  replaceMessages: op(
    (sessionId: unknown, from: unknown, messages: unknown, options: unknown) => {
      const id = knownId(sessionId);
      const start = replaceFrom(from);
      const edit = newEdit("replaceMessages", [start], start, false, newBatch(messages), writeOptionsOf(options));
      return { id: existing(id, sessionId), edit };
    },
    (b, { id, edit }): MaybePromise<WriteResult> =>
      then(b.editMessages(id, edit), (outcome) => ({ length: settle(id, edit, outcome).length })),
  ),
  popMessage: op(
    (sessionId: unknown, options: unknown) => {
      const id = knownId(sessionId);
      const edit = newEdit("popMessage", [], undefined, true, [], writeOptionsOf(options));
      return { id: existing(id, sessionId), edit };
    },
    (b, { id, edit }) => then(b.editMessages(id, edit), (outcome) => settle(id, edit, outcome).popped),
  ),
  countMessages: op(existingId, (b, id) => then(b.readLength(id), (count) => found(id, count))),
  loadMessages: op(
    (sessionId: unknown, options: unknown) => {
      const id = knownId(sessionId);
      const range = loadRange(options);
      return { id: existing(id, sessionId), range };
    },
    (b, { id, range }) => then(b.readMessages(id, range), (messages) => found(id, messages)),
  ),
  /** Validation only: the iteration itself is pages of `loadMessages`. */
  iterateMessages: op(
    (sessionId: unknown, options: unknown) => {
      const id = knownId(sessionId);
      const batchSize = batchSizeOf(options);
      existing(id, sessionId);
      return batchSize;
    },
    (_b, batchSize) => batchSize,
  ),
  scanSessions: op(scanQuery, (b, scan) => b.scanPage(scan.after, scan.limit, scan.agentId)),
  importSession: op(importedSession, (b, imported) => b.insertImported(imported.record, imported.messages)),
};

/** The messages of a streamed import: an iterable (or, on the async path, an async iterable) of messages. */
function streamOf<T extends Iterable<unknown> | AsyncIterable<unknown>>(messages: unknown, async: boolean): T {
  const m = messages as { [Symbol.iterator]?: unknown; [Symbol.asyncIterator]?: unknown } | null;
  const iterable =
    typeof m?.[Symbol.iterator] === "function" || (async && typeof m?.[Symbol.asyncIterator] === "function");
  if (typeof m !== "object" || !iterable) {
    throw new ValidationError(
      "messages",
      `expected an array or ${async ? "an (async) iterable" : "an iterable"} of messages`,
    );
  }
  return messages as T;
}

/** A streamed import's start: the record and options validated, the staging named. */
function stagedImport(record: unknown, options: unknown): { staged: StagedImport; check: ImportCheck; size: number } {
  const r = importedRecordOf(record);
  const size = batchSizeOf(options);
  return { staged: { stage: randomUUID(), record: r }, check: new ImportCheck(r), size };
}

/** A primitive's value on the sync path, where a promise is a backend's mistake. */
function settled<T>(value: MaybePromise<T>, name: string): T {
  if (value instanceof Promise) {
    value.catch(() => {});
    throw new AgentixStorageError(`${name} returned a promise on the synchronous path`);
  }
  return value;
}

/**
 * `importSession` with the messages as an (async) iterable: `begin` (false: the id is taken, and nothing is read),
 * then each chunk of `batchSize` validated and staged in turn, awaiting the backend before the next is read (so
 * that about one chunk is held in memory), then `publish` in one atomic step. Any failure (a bad message, the
 * iterable throwing, the store) discards the staging and is rethrown: nothing becomes visible.
 */
export async function importStream(
  b: ImportPrimitives,
  record: unknown,
  messages: unknown,
  options: unknown,
): Promise<boolean> {
  const source = streamOf<Iterable<unknown> | AsyncIterable<unknown>>(messages, true);
  const { staged, check, size } = stagedImport(record, options);
  if (!(await b.beginImport(staged))) return false;
  let published = false;
  try {
    let chunk: unknown[] = [];
    for await (const message of source) {
      chunk.push(message);
      if (chunk.length < size) continue;
      const offset = check.count;
      if (!(await b.stageMessages(staged, offset, check.chunk(chunk)))) return false;
      chunk = [];
    }
    const offset = check.count;
    if (chunk.length > 0 && !(await b.stageMessages(staged, offset, check.chunk(chunk)))) return false;
    check.finish();
    published = await b.publishImport(staged, check.count);
    return published;
  } finally {
    if (!published) await discard(() => b.discardImport(staged));
  }
}

/** {@link importStream} over a sync iterable, with primitives that answer synchronously. */
export function importStreamSync(b: ImportPrimitives, record: unknown, messages: unknown, options: unknown): boolean {
  const source = streamOf<Iterable<unknown>>(messages, false);
  const { staged, check, size } = stagedImport(record, options);
  if (!settled(b.beginImport(staged), "beginImport")) return false;
  let published = false;
  try {
    let chunk: unknown[] = [];
    for (const message of source) {
      chunk.push(message);
      if (chunk.length < size) continue;
      const offset = check.count;
      if (!settled(b.stageMessages(staged, offset, check.chunk(chunk)), "stageMessages")) return false;
      chunk = [];
    }
    const offset = check.count;
    if (chunk.length > 0 && !settled(b.stageMessages(staged, offset, check.chunk(chunk)), "stageMessages"))
      return false;
    check.finish();
    published = settled(b.publishImport(staged, check.count), "publishImport");
    return published;
  } finally {
    if (!published) {
      try {
        settled(b.discardImport(staged), "discardImport");
      } catch {
        // The import's own error (or false) is what the caller needs; leftovers are invisible and cleaned later.
      }
    }
  }
}

/** Discards a staging, best effort: the import's own error (or `false`) is what the caller needs. */
async function discard(run: () => MaybePromise<void>): Promise<void> {
  try {
    await run();
  } catch {
    // Leftovers are invisible, and cleaned by a later import or creation of that id.
  }
}

/** A validated history edit; its fingerprint covers the operation and every argument that shapes the write. */
function newEdit(
  operation: string,
  args: number[],
  from: number | undefined,
  pop: boolean,
  messages: MessageRecord[],
  write: WriteShape,
): MessageEdit {
  const { expectedLength, key, metadata } = write;
  // Metadata joins the fingerprint only when given: keys remembered before the option existed still match.
  const shaped = [...args, expectedLength ?? null, ...(metadata === undefined ? [] : [{ metadata }])];
  const idempotency = key === undefined ? undefined : { key, fingerprint: fingerprint(operation, shaped, messages) };
  return { from, pop, messages, at: messages[0]?.timestamp ?? now(), expectedLength, metadata, idempotency };
}

/** An edit's outcome as the caller sees it: the result, or the error that says why nothing was written. */
function settle(id: string, edit: MessageEdit, outcome: EditOutcome): { length: number; popped: MessageRecord | null } {
  switch (outcome.status) {
    case "written":
      return outcome;
    case "not-found":
      throw new SessionNotFoundError(id);
    case "conflict": {
      const expectedLength = edit.expectedLength as number;
      const detail = `session ${id} has ${outcome.length} messages, not the expected ${expectedLength}`;
      throw new ConflictError(detail, { expectedLength, actualLength: outcome.length });
    }
    case "out-of-range":
      throw new ValidationError("from", `is beyond the session's ${outcome.length} messages`);
    case "replayed":
      if (outcome.fingerprint !== edit.idempotency?.fingerprint) {
        throw new ConflictError(`idempotency key ${JSON.stringify(edit.idempotency?.key)} was used for another write`);
      }
      return outcome;
  }
}

/** The protected primitives, reached from the operations above (same module, so no public surface is added). */
export function primitives(b: StorageBackend): Primitives {
  return b as unknown as Primitives;
}
