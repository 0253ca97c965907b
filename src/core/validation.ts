import { createHash } from "node:crypto";
import { z } from "zod";
import { AGENTIX_NAMESPACE, newSessionId, now, uuidv5 } from "./clock.js";
import { ValidationError } from "./errors.js";
import type {
  CreateOptions,
  ForkOptions,
  JsonObject,
  ListOptions,
  MessageContent,
  MessageRange,
  MessageRecord,
  Role,
  SessionQuery,
  SessionRecord,
} from "./types.js";

/** Deepest nesting accepted in content and metadata, so that every backend (and every JSON parser on the way) carries it. */
export const MAX_JSON_DEPTH = 512;
/** The longest accepted agent id, in UTF-16 code units. */
export const MAX_AGENT_ID_LENGTH = 256;

const SESSION_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/**
 * Whether `id` has the shape of a session id (a lowercase hyphenated UUID).
 * Anything else cannot name a stored session, so it is "not found" before any backend sees it.
 */
export function isSessionId(id: string): boolean {
  return SESSION_ID.test(id);
}

/** Whether `value` is a plain object: `{}` or `Object.create(null)`, not a class instance, array, Date or Map. */
export function isPlainObject(value: unknown): value is Record<string, unknown> {
  if (typeof value !== "object" || value === null) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Why JSON cannot carry `value` unchanged, or `null` when it can.
 * `undefined` object properties are dropped, as `JSON.stringify` does; everywhere else it is refused.
 */
export interface JsonProblem {
  /** Where: keys and indexes from the top. */
  path: Array<string | number>;
  problem: string;
}

export function jsonProblem(value: unknown): JsonProblem | null {
  // The fast walk tracks no ancestors: a cycle shows up as nesting deeper than the limit, and only then does
  // a second walk tell a cycle from deep nesting. The path is built on the way back up, so a valid value costs
  // no allocation per element.
  const found = walk(value, 0, null);
  return found?.problem === TOO_DEEP ? walk(value, 0, new Set()) : found;
}

const TOO_DEEP = `nested deeper than ${MAX_JSON_DEPTH} levels`;

function walk(v: unknown, depth: number, ancestors: Set<object> | null): JsonProblem | null {
  switch (typeof v) {
    case "string":
    case "boolean":
      return null;
    case "number":
      if (!Number.isFinite(v)) return { path: [], problem: `${v} is not a JSON number` };
      if (v === 0 && 1 / v < 0) return { path: [], problem: "-0 has no JSON form (it would come back as 0)" };
      return null;
    case "object":
      if (v === null) return null;
      break;
    default:
      return { path: [], problem: `${typeof v} is not a JSON value` };
  }
  if (ancestors?.has(v)) return { path: [], problem: "a cycle cannot be stored" };
  if (depth > MAX_JSON_DEPTH) return { path: [], problem: TOO_DEEP };
  ancestors?.add(v);
  let found: JsonProblem | null = null;
  if (Array.isArray(v)) {
    if (Object.getPrototypeOf(v) !== Array.prototype)
      return { path: [], problem: "an array subclass is not a JSON array" };
    for (let i = 0; i < v.length && !found; i++) {
      const item: unknown = v[i];
      found =
        item === undefined
          ? { path: [], problem: "undefined (or a hole) is not a JSON value" }
          : walk(item, depth + 1, ancestors);
      found?.path.unshift(i);
    }
  } else {
    if (!isPlainObject(v))
      return { path: [], problem: `a ${v.constructor?.name ?? "object"} is not a plain JSON object` };
    if (Object.getOwnPropertySymbols(v).length > 0) return { path: [], problem: "symbol keys cannot be stored" };
    const keys = Object.keys(v);
    for (let i = 0; i < keys.length && !found; i++) {
      const key = keys[i] as string;
      const item = v[key];
      if (item === undefined) continue; // dropped, as JSON.stringify does
      found = walk(item, depth + 1, ancestors);
      found?.path.unshift(key);
    }
  }
  ancestors?.delete(v);
  return found;
}

/** A zod schema for a value that JSON carries unchanged. */
function json<T>(kind: (v: unknown) => v is T, expected: string) {
  return z.custom<T>().superRefine((value, ctx) => {
    if (!kind(value)) {
      ctx.addIssue({ code: "custom", message: `expected ${expected}, got ${describe(value)}` });
      return;
    }
    const found = jsonProblem(value);
    if (found) ctx.addIssue({ code: "custom", message: found.problem, path: found.path });
  });
}

const isContent = (v: unknown): v is MessageContent => typeof v === "string" || Array.isArray(v) || isPlainObject(v);

/** Index keys (agent ids, cwd) must be storable as text by every backend: well-formed Unicode without NUL. */
const indexText = (s: string) => s.isWellFormed() && !s.includes("\u0000");

export const schemas = {
  agentId: z
    .string()
    .min(1, "must not be empty")
    .max(MAX_AGENT_ID_LENGTH, `must be at most ${MAX_AGENT_ID_LENGTH} characters`)
    .refine(indexText, "must be well-formed Unicode without NUL characters"),
  sessionId: z.string(),
  role: z.enum(["user", "assistant", "system", "tool"]),
  content: json(isContent, "a string, an array or a plain object"),
  metadata: json(isPlainObject, "a plain object or null")
    .nullable()
    .refine((m) => typeof m?.cwd !== "string" || indexText(m.cwd), {
      message: "must be well-formed Unicode without NUL characters",
      path: ["cwd"],
    }),
  positiveInt: z.number().int().positive().max(Number.MAX_SAFE_INTEGER),
  nonNegativeInt: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  timestamp: z
    .string()
    .regex(TIMESTAMP, "must be an ISO 8601 UTC timestamp with milliseconds")
    .refine((s) => {
      const ms = Date.parse(s);
      return !Number.isNaN(ms) && new Date(ms).toISOString() === s;
    }, "is not a real date and time"),
} as const;

const sessionIdShape = z.string().refine(isSessionId, "must be a session id (a lowercase hyphenated UUID)");
const createOptions = z.strictObject({ sessionId: sessionIdShape.optional() });
const sessionPatch = z.strictObject({ metadata: schemas.metadata });
const cursor = z.looseObject({ updated_at: schemas.timestamp, session_id: sessionIdShape });
const listOptions = z.strictObject({
  cwd: z.string().refine(indexText, "must be well-formed Unicode without NUL characters").optional(),
  limit: schemas.positiveInt.optional(),
  before: cursor.optional(),
});
const loadOptions = z
  .strictObject({
    last: schemas.positiveInt.optional(),
    offset: schemas.nonNegativeInt.optional(),
    limit: schemas.positiveInt.optional(),
  })
  .refine((o) => o.last === undefined || (o.offset === undefined && o.limit === undefined), {
    message: "last does not combine with offset or limit",
  });
const iterateOptions = z.strictObject({ batchSize: schemas.positiveInt.optional() });
const writeOptions = z.strictObject({
  expectedLength: schemas.nonNegativeInt.optional(),
  idempotencyKey: z
    .string()
    .min(1, "must not be empty")
    .max(256, "must be at most 256 characters")
    .refine(indexText, "must be well-formed Unicode without NUL characters")
    .optional(),
  metadata: schemas.metadata.optional(),
});

/** Parses `value` with `schema`, turning the first problem into a `ValidationError` that names the field. */
export function parse<T>(schema: z.ZodType<T>, value: unknown, field: string): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const path = (issue?.path ?? []).map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("");
  throw new ValidationError(`${field}${path}`, issue?.message ?? "invalid");
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") return `a ${(value as object).constructor?.name ?? "object"}`;
  return typeof value;
}

/** The record of a new session, validated: under `sessionId` when given, else a new UUIDv7. */
export function newSession(agentId: unknown, metadata: unknown, sessionId?: unknown): SessionRecord {
  const agent = parse(schemas.agentId, agentId, "agentId");
  const meta = parse(schemas.metadata, metadata ?? null, "metadata") as JsonObject | null;
  const id = sessionId === undefined ? newSessionId() : parse(sessionIdShape, sessionId, "sessionId");
  const at = now();
  return { session_id: id, agent_id: agent, created_at: at, updated_at: at, metadata: meta };
}

/**
 * The record `openSession` creates when the id is free, validated. Unlike `createSession`'s, the id is required:
 * a missing one is a `ValidationError`, never a new random id.
 */
export function openedSession(agentId: unknown, sessionId: unknown, metadata: unknown): SessionRecord {
  const record = newSession(agentId, metadata);
  record.session_id = parse(sessionIdShape, sessionId, "sessionId");
  return record;
}

/** The options of `createSession`, validated. */
export function createOptionsOf(options: unknown): CreateOptions {
  return parse(createOptions, options ?? {}, "options") as CreateOptions;
}

/** The metadata `updateSession` sets, validated. */
export function patchMetadata(patch: unknown): JsonObject | null {
  return parse(sessionPatch, patch, "patch").metadata as JsonObject | null;
}

/** A message to append, validated, stamped with the time of saving. */
export function newMessage(role: unknown, content: unknown): MessageRecord {
  return { role: roleOf(role, "role"), content: contentOf(content, "content"), timestamp: now() };
}

const ROLES: ReadonlySet<unknown> = new Set(schemas.role.options);

/**
 * `role` and `content` checked directly, without zod's machinery, when they are valid (every append's path: zod's
 * parse was a few µs of each append's client CPU); zod only for an invalid one, so that its error is the same.
 */
function roleOf(role: unknown, field: string): Role {
  return ROLES.has(role) ? (role as Role) : (parse(schemas.role, role, field) as Role);
}

function contentOf(content: unknown, field: string): MessageContent {
  return isContent(content) && jsonProblem(content) === null ? content : parse(schemas.content, content, field);
}

/**
 * A batch to append, validated as a whole before anything is written (a bad message is named
 * `messages[3].content...`), every message stamped with the same time of saving. Walked by hand with the
 * field schemas rather than through `z.array(z.strictObject(...))`, which copies every message: this is the
 * batch append's hot path.
 */
export function newBatch(messages: unknown): MessageRecord[] {
  if (!Array.isArray(messages)) throw new ValidationError("messages", `expected an array, got ${describe(messages)}`);
  const timestamp = now();
  return messages.map((m: unknown, i) => {
    const field = `messages[${i}]`;
    if (!isPlainObject(m))
      throw new ValidationError(field, `expected an object with role and content, got ${describe(m)}`);
    const extra = Object.keys(m).find((key) => key !== "role" && key !== "content");
    if (extra !== undefined)
      throw new ValidationError(field, `unknown key ${JSON.stringify(extra)}: a message has role and content`);
    const role = roleOf(m.role, `${field}.role`);
    return { role, content: contentOf(m.content, `${field}.content`), timestamp };
  });
}

/**
 * The session id of a string key (a framework's session name or thread id): the UUIDv5 of `key` in
 * `namespace` (RFC 9562), so the same key always names the same session. `namespace` is a UUID,
 * {@link AGENTIX_NAMESPACE} by default; keep one per application to keep its keys apart from others'.
 * @throws {ValidationError} when `key` is not a well-formed string or `namespace` is not a UUID.
 */
export function sessionIdFor(key: string, namespace: string = AGENTIX_NAMESPACE): string {
  // UTF-8 cannot carry a lone surrogate: two keys would map to one id.
  parse(
    z.string().refine((s) => s.isWellFormed(), "must be well-formed Unicode"),
    key,
    "key",
  );
  const ns = parse(
    z.string().regex(/^[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}$/i, "must be a UUID"),
    namespace,
    "namespace",
  );
  return uuidv5(key, ns);
}

export function sessionQuery(options: unknown): SessionQuery {
  const o = parse(listOptions, options ?? {}, "options") as ListOptions;
  const query: SessionQuery = {};
  if (o.cwd !== undefined) query.cwd = o.cwd;
  if (o.limit !== undefined) query.limit = o.limit;
  if (o.before !== undefined) query.before = { updated_at: o.before.updated_at, session_id: o.before.session_id };
  return query;
}

/** The messages `loadMessages` asks for. */
export function loadRange(options: unknown): MessageRange {
  const o = parse(loadOptions, options ?? {}, "options");
  return o.last === undefined ? { offset: o.offset ?? 0, limit: o.limit } : { last: o.last };
}

/** How many messages `iterateMessages` reads at a time. */
export function batchSizeOf(options: unknown): number {
  return parse(iterateOptions, options ?? {}, "options").batchSize ?? 1000;
}

/** The options of a history write, validated. */
export function writeOptionsOf(options: unknown): WriteShape {
  const o = parse(writeOptions, options ?? {}, "options");
  return {
    expectedLength: o.expectedLength,
    key: o.idempotencyKey,
    metadata: o.metadata as JsonObject | null | undefined,
  };
}

/** Write options after validation. */
export interface WriteShape {
  expectedLength: number | undefined;
  key: string | undefined;
  /** The metadata the write sets along (`undefined`: unchanged). */
  metadata: JsonObject | null | undefined;
}

/** The start of a `replaceMessages`: a position (checked against the length by the store, atomically). */
export function replaceFrom(from: unknown): number {
  return parse(schemas.nonNegativeInt, from, "from");
}

const forkOptions = z.strictObject({
  length: schemas.nonNegativeInt.optional(),
  sessionId: sessionIdShape.optional(),
  metadata: schemas.metadata.optional(),
});

/** The options of `forkSession`, validated. */
export function forkOptionsOf(options: unknown): ForkOptions {
  return parse(forkOptions, options ?? {}, "options") as ForkOptions;
}

/**
 * What an idempotency key remembers of its write's arguments: the SHA-256 of the operation, its position
 * arguments, `expectedLength` and each message's role and content as JSON, so that a retry with the same
 * arguments matches and any other write under the key does not.
 */
export function fingerprint(operation: string, args: unknown[], messages: MessageRecord[]): string {
  const json = JSON.stringify([operation, args, messages.map((m) => [m.role, m.content])]);
  return createHash("sha256").update(json).digest("base64url");
}

/** Options of `scanSessions`. */
export interface ScanOptions {
  /** Only this agent's sessions. */
  agentId?: string;
  /** Only sessions whose id is greater than this one (the last id of the previous page). */
  after?: string;
  /** At most this many (default 100). */
  limit?: number;
}

const scanOptions = z.strictObject({
  agentId: schemas.agentId.optional(),
  after: sessionIdShape.optional(),
  limit: schemas.positiveInt.optional(),
});

export function scanQuery(options: unknown): { after: string | null; limit: number; agentId: string | undefined } {
  const o = parse(scanOptions, options ?? {}, "options");
  return { after: o.after ?? null, limit: o.limit ?? 100, agentId: o.agentId };
}

const importedMessage = z.strictObject({ role: schemas.role, content: schemas.content, timestamp: schemas.timestamp });
const importedRecord = z.strictObject({
  session_id: sessionIdShape,
  agent_id: schemas.agentId,
  created_at: schemas.timestamp,
  updated_at: schemas.timestamp,
  metadata: schemas.metadata,
});

/** An imported session's record, validated (its `updated_at` is checked against the messages by {@link ImportCheck}). */
export function importedRecordOf(record: unknown): SessionRecord {
  const r = parse(importedRecord, record, "record") as SessionRecord;
  return {
    session_id: r.session_id,
    agent_id: r.agent_id,
    created_at: r.created_at,
    updated_at: r.updated_at,
    metadata: r.metadata,
  };
}

/**
 * The checks of an import's messages, one chunk at a time (a streamed import validates each chunk before it is
 * staged), in the order {@link importedSession} makes them: each message's shape, timestamps in order (also across
 * chunks), then, at the end, `updated_at` not before `created_at` nor the newest message. Errors name a message by
 * its position in the whole import (`messages[2345].content`).
 */
export class ImportCheck {
  #count = 0;
  #newest: string | undefined;

  constructor(readonly record: SessionRecord) {}

  /** How many messages were checked so far. */
  get count(): number {
    return this.#count;
  }

  /** The chunk's messages, validated and copied (exactly their three keys). */
  chunk(messages: readonly unknown[]): MessageRecord[] {
    const valid = messages.map((value, i) => parse(importedMessage, value, `messages[${this.#count + i}]`));
    return valid.map((x) => {
      if (this.#newest !== undefined && x.timestamp < this.#newest) {
        throw new ValidationError(`messages[${this.#count}].timestamp`, "is before the previous message's");
      }
      this.#newest = x.timestamp;
      this.#count++;
      return { role: x.role, content: x.content, timestamp: x.timestamp } as MessageRecord;
    });
  }

  /** The last check, once every message was seen. */
  finish(): void {
    const { created_at, updated_at } = this.record;
    if (updated_at < created_at || updated_at < (this.#newest ?? created_at)) {
      throw new ValidationError("record.updated_at", "is before created_at or before the newest message");
    }
  }
}

/**
 * A session and its messages to import, validated: the record's five keys, each message's three, timestamps in
 * order, `updated_at` not before `created_at` nor the newest message.
 */
export function importedSession(
  record: unknown,
  messages: unknown,
): { record: SessionRecord; messages: MessageRecord[] } {
  const r = importedRecordOf(record);
  if (!Array.isArray(messages)) parse(z.array(importedMessage), messages, "messages");
  const check = new ImportCheck(r);
  const valid = check.chunk(messages as unknown[]);
  check.finish();
  return { record: r, messages: valid };
}

/** Validates a constructor's options object; unknown or mistyped options are a `ValidationError`. */
export function parseOptions<T>(schema: z.ZodType<T>, options: unknown, className: string): T {
  return parse(schema, options ?? {}, `${className} options`);
}
