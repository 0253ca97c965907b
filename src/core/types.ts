/** Who wrote a message; `"tool"` is a tool's result (or call) in the agent loop. */
export type Role = "user" | "assistant" | "system" | "tool";

/** A value that JSON carries unchanged. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** A JSON object: what session metadata is. */
export type JsonObject = { [key: string]: JsonValue };

/** What a message may hold at the top level: a string, an array or an object. */
export type MessageContent = string | JsonValue[] | JsonObject;

/** A session as every backend returns it: exactly these five keys. */
export interface SessionRecord {
  /** A lowercase hyphenated UUID: a UUIDv7 made by agentix, or the caller's own. */
  session_id: string;
  /** The agent the session belongs to (1–256 characters). */
  agent_id: string;
  /** ISO 8601 UTC with milliseconds, e.g. `"2024-01-15T14:30:00.123Z"`. */
  created_at: string;
  /**
   * The time of the last write: the newest message's `timestamp`, or of the last `updateSession`; `created_at`
   * before either. Never moves backwards.
   */
  updated_at: string;
  /** A JSON object (given at creation or by `updateSession`), or `null`; `metadata.cwd` is the working directory when it is a string. */
  metadata: JsonObject | null;
}

/** A message as every backend returns it: exactly these three keys. */
export interface MessageRecord {
  /** `"user"`, `"assistant"`, `"system"` or `"tool"`. */
  role: Role;
  /** A string, an array or an object; comes back deep-equal to what was saved. */
  content: MessageContent;
  /** ISO 8601 UTC with milliseconds: when the message was saved. */
  timestamp: string;
}

/** Where a page of `listSessions` ends: pass the last record of the previous page. */
export type SessionCursor = Pick<SessionRecord, "updated_at" | "session_id">;

/** Options of `listSessions`. */
export interface ListOptions {
  /** Only sessions whose `metadata.cwd` is exactly this string. */
  cwd?: string;
  /** At most this many records (a positive integer). */
  limit?: number;
  /** Keyset pagination: only records strictly after this one in the listing order. */
  before?: SessionCursor;
}

/** Options of `loadMessages`. */
export interface LoadOptions {
  /** Only the newest N messages, still oldest first (a positive integer). */
  last?: number;
}

/** `listSessions` options after validation, as a backend's primitive receives them. */
export interface SessionQuery {
  /** Only sessions whose cwd is exactly this. */
  cwd?: string;
  /** At most this many. */
  limit?: number;
  /** Only sessions strictly after this position in the listing order. */
  before?: SessionCursor;
}

/** A message to append: what `saveMessages` takes (the time of saving is added). */
export interface NewMessage {
  /** `"user"`, `"assistant"`, `"system"` or `"tool"`. */
  role: Role;
  /** A string, an array or an object. */
  content: MessageContent;
}

/** Options of `createSession`. */
export interface CreateOptions {
  /**
   * The new session's id, chosen by the caller: a UUID in canonical lowercase form, any version (see
   * `sessionIdFor` to map a string key to one). Taken already: `SessionExistsError`, nothing written.
   */
  sessionId?: string;
}

/** What `openSession` returns: the session, and whether this call created it. */
export interface OpenedSession {
  /** The session record (the existing one, unchanged, when `created` is `false`). */
  session: SessionRecord;
  /** `true` for the one call that created the session. */
  created: boolean;
}

/** What `updateSession` changes. */
export interface SessionPatch {
  /** The new metadata, replacing the old (validated as at creation); `null` clears it. */
  metadata: JsonObject | null;
}

/** What a write of messages returns. */
export interface WriteResult {
  /** The session's number of messages after the write. */
  length: number;
}
