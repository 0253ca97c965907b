/**
 * Base class of every error agentix throws. When a driver (postgres.js,
 * ioredis, better-sqlite3, fs) failed, its error is kept as `cause`.
 */
export class AgentixStorageError extends Error {
  /** The class name, kept on the instance so that it survives serialization and logs. */
  override name = "AgentixStorageError";
}

/** The session does not exist (or no longer exists). Nothing was written. */
export class SessionNotFoundError extends AgentixStorageError {
  override name = "SessionNotFoundError";
  /** The id that was not found, as the caller passed it. */
  readonly sessionId: string;
  constructor(sessionId: string, options?: ErrorOptions) {
    super(`session not found: ${JSON.stringify(sessionId)}`, options);
    this.sessionId = sessionId;
  }
}

/**
 * A session with the caller's chosen id exists already (`createSession` with `sessionId`, or `openSession` for
 * an id that belongs to another agent). Nothing was written.
 */
export class SessionExistsError extends AgentixStorageError {
  override name = "SessionExistsError";
  /** The id that is taken. */
  readonly sessionId: string;
  constructor(sessionId: string, detail = "exists already", options?: ErrorOptions) {
    super(`session ${JSON.stringify(sessionId)} ${detail}`, options);
    this.sessionId = sessionId;
  }
}

/**
 * A write's precondition failed, and nothing was written: the session's length was not `expectedLength`
 * (compare-and-swap), or an `idempotencyKey` was reused with other arguments.
 */
export class ConflictError extends AgentixStorageError {
  override name = "ConflictError";
  /** The length the write expected (`WriteOptions.expectedLength`), when that was the conflict. */
  readonly expectedLength: number | undefined;
  /** The session's length at the time of the write, when `expectedLength` was the conflict. */
  readonly actualLength: number | undefined;
  constructor(message: string, lengths?: { expectedLength: number; actualLength: number }, options?: ErrorOptions) {
    super(message, options);
    this.expectedLength = lengths?.expectedLength;
    this.actualLength = lengths?.actualLength;
  }
}

/**
 * A stored session is damaged: one of its files is not what agentix writes (a hand edit, a sync conflict, a
 * partial restore). Only that session is affected: listings and scans skip it (and report it), its own calls
 * throw this error, `deleteSession` still removes it, and `agentix doctor --repair` quarantines the damage.
 */
export class CorruptSessionError extends AgentixStorageError {
  override name = "CorruptSessionError";
  /** The damaged session's id. */
  readonly sessionId: string;
  /** The damaged file (an absolute path, or the store's name for it). */
  readonly file: string;
  /** The 1-based line of `file` that is damaged, when the damage is a line (`undefined`: the whole file). */
  readonly line: number | undefined;
  constructor(sessionId: string, file: string, line: number | undefined, problem: string, options?: ErrorOptions) {
    const where = line === undefined ? file : `${file}, line ${line}`;
    super(`session ${JSON.stringify(sessionId)} is damaged: ${where}: ${problem} (see \`agentix doctor\`)`, options);
    this.sessionId = sessionId;
    this.file = file;
    this.line = line;
  }
}

/** An argument or option was rejected before anything was written. `field` names it. */
export class ValidationError extends AgentixStorageError {
  override name = "ValidationError";
  /** The rejected argument or option with its path, e.g. `content.parts[2].data`, `options.limit`. */
  readonly field: string;
  constructor(field: string, problem: string, options?: ErrorOptions) {
    super(`${field}: ${problem}`, options);
    this.field = field;
  }
}

/** A call was made after `close()`. */
export class BackendClosedError extends AgentixStorageError {
  override name = "BackendClosedError";
  constructor(backend: string) {
    super(`${backend} is closed`);
  }
}

/** Wraps anything that is not already an agentix error, keeping it as `cause`. */
export function toStorageError(error: unknown, doing: string): AgentixStorageError {
  if (error instanceof AgentixStorageError) return error;
  const detail = error instanceof Error ? error.message : String(error);
  return new AgentixStorageError(`${doing} failed: ${detail}`, { cause: error });
}
