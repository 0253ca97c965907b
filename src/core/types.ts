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

/** Options of `loadMessages`: the newest `last`, or a page by position (`offset`, `limit`); not both. */
export interface LoadOptions {
  /** Only the newest N messages, still oldest first (a positive integer). */
  last?: number;
  /** The position of the first message to return (position 0 is the oldest; a non-negative integer). @default 0 */
  offset?: number;
  /** At most this many messages from `offset` on (a positive integer). */
  limit?: number;
}

/** Which messages a read returns, as a backend's `readMessages` receives it (validated). */
export type MessageRange =
  | {
      /** The newest `last` messages, oldest first. */
      last: number;
    }
  | {
      /** The position of the first message. */
      offset: number;
      /** At most this many (fewer at the end); all from `offset` when undefined. */
      limit: number | undefined;
    };

/** Options of `iterateMessages`. */
export interface IterateOptions {
  /** How many messages are read (and held in memory) at a time (a positive integer). @default 1000 */
  batchSize?: number;
}

/** Options of the writes that edit a history: `saveMessages`, `replaceMessages`, `popMessage`. */
export interface WriteOptions {
  /**
   * Compare-and-swap: write only if the session has exactly this many messages at that moment; otherwise
   * `ConflictError` (with both lengths) and nothing written. The way two writers never lose each other's messages.
   */
  expectedLength?: number;
  /**
   * A key (1–256 characters) naming this write: a retry with the same key and the same arguments returns the
   * first call's result and writes nothing; the same key with other arguments is a `ConflictError`. Each
   * session remembers at least its 1,000 most recent keys.
   */
  idempotencyKey?: string;
  /**
   * Replaces the session's metadata (validated, and `cwd` re-indexed, as `updateSession` does) in the same atomic
   * step as the write, and only when the write happens (not on a `ConflictError`, nor for a replayed key): state
   * kept beside a history (a summary, a cursor) never disagrees with it. `updated_at` moves to the time of the
   * write, also when the list does not change. Part of the arguments an idempotency key remembers.
   * @default unchanged
   */
  metadata?: JsonObject | null;
}

/** Options of `forkSession`. */
export interface ForkOptions {
  /** Copy only the first N messages (a branch from an earlier turn; at most the session's length). @default all */
  length?: number;
  /** The fork's id, chosen by the caller (a canonical lowercase UUID); taken: `SessionExistsError`. */
  sessionId?: string;
  /** The fork's metadata, replacing the copied one. @default the source's metadata */
  metadata?: JsonObject | null;
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

/**
 * A history edit, as a backend's `editMessages` receives it (validated, stamped): an optional compare-and-swap,
 * an optional drop (positions ≥ `from`, or the last message for `pop`), then the messages to append.
 */
export interface MessageEdit {
  /** Drop the messages at positions ≥ `from` first (`undefined`: none). Beyond the length: `out-of-range`. */
  from: number | undefined;
  /** Drop the last message first, if there is one, and return it (`popMessage`). Never with `from`. */
  pop: boolean;
  /** Appended after the drop, in order; all have the same timestamp (raised to `updated_at` when behind). */
  messages: MessageRecord[];
  /** The time of the write: when the edit changes the list, `updated_at` becomes the later of it and `updated_at`. */
  at: string;
  /** Write only if the session has exactly this many messages now; else `conflict`. */
  expectedLength: number | undefined;
  /**
   * When defined, the session's new metadata (and so its cwd, which the cwd listing follows), replaced in the same
   * atomic step when the edit is written; `updated_at` then moves to `at` (never backwards) even when the list does
   * not change. `undefined`: the metadata is not touched.
   */
  metadata: JsonObject | null | undefined;
  /**
   * Remember the write under `key`, with `fingerprint` (of the arguments) and its outcome, in the same atomic
   * step. A key the session remembers already: nothing is written, and the remembered outcome comes back.
   */
  idempotency:
    | {
        /** The caller's idempotency key. */
        key: string;
        /** What the write's arguments hash to: a retry matches it, another write under the key does not. */
        fingerprint: string;
      }
    | undefined;
}

/** What `editMessages` did (or, for `replayed`, what the remembered write under the same key did). */
export type EditOutcome =
  | {
      /** The edit was made. */
      status: "written";
      /** The session's length after it. */
      length: number;
      /** The message a `pop` removed (`null` when there was none, or no pop). */
      popped: MessageRecord | null;
    }
  | {
      /** The session does not exist: nothing written. */
      status: "not-found";
    }
  | {
      /** The length was not `expectedLength`: nothing written. */
      status: "conflict";
      /** The session's length. */
      length: number;
    }
  | {
      /** `from` is beyond the length: nothing written. */
      status: "out-of-range";
      /** The session's length. */
      length: number;
    }
  | {
      /** The key is remembered: nothing written; what follows is the remembered write's. */
      status: "replayed";
      /** The remembered write's fingerprint (the base class compares it with this call's). */
      fingerprint: string;
      /** The length after the remembered write. */
      length: number;
      /** The message the remembered write popped, or `null`. */
      popped: MessageRecord | null;
    };

/** What `copySession` did. */
export type CopyOutcome =
  | {
      /** The fork was written. */
      status: "copied";
    }
  | {
      /** The source does not exist: nothing written. */
      status: "not-found";
    }
  | {
      /** The target id is taken: nothing written. */
      status: "exists";
    }
  | {
      /** `target.length` is beyond the source's length: nothing written. */
      status: "out-of-range";
      /** The source's length. */
      length: number;
    };

/**
 * A streamed import in progress, as a backend's import primitives receive it (`beginImport`, `stageMessages`,
 * `publishImport`, `discardImport`): the validated record, and a random id naming this one import's staging.
 */
export interface StagedImport {
  /** A random UUID, distinct for every import: two imports of one session id never share staging. */
  stage: string;
  /** The session record to publish, validated (its `updated_at` checked against the messages before publishing). */
  record: SessionRecord;
}

/** Options of a streamed `importSession` (messages given as an iterable). */
export interface ImportOptions {
  /** How many messages are validated and staged at a time (and so held in memory). @default 1000 */
  batchSize?: number;
}
