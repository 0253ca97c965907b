import { type ForkTarget, SyncStorageBackend } from "./core/backend.js";
import { latest } from "./core/clock.js";
import { compareSessions, cwdOf, isAfter } from "./core/records.js";
import type {
  CopyOutcome,
  EditOutcome,
  JsonObject,
  MessageEdit,
  MessageRange,
  MessageRecord,
  SessionQuery,
  SessionRecord,
} from "./core/types.js";

/** How many idempotency keys a session remembers (the contract's minimum). */
const KEYS_KEPT = 1000;

interface RememberedWrite {
  fingerprint: string;
  length: number;
  /** JSON of the popped message, or `null`. */
  popped: string | null;
}

interface StoredSession {
  record: SessionRecord;
  /** JSON of `record.metadata`: what is stored is a copy no caller can reach. */
  metadata: string;
  cwd: string | null;
  /** Each message as JSON, in append order. */
  messages: string[];
  /** Idempotency keys, oldest first (a Map keeps insertion order). */
  keys: Map<string, RememberedWrite>;
}

/**
 * Sessions in this process's memory, gone with the backend (what
 * `persistenceEnabled: false` uses). Everything is stored as JSON text, so
 * a caller mutating a saved or returned object never changes what is stored.
 */
export class MemoryStorageBackend extends SyncStorageBackend {
  readonly #sessions = new Map<string, StoredSession>();
  readonly #byAgent = new Map<string, Set<string>>();

  protected insertSession(record: SessionRecord): SessionRecord | null {
    const existing = this.#sessions.get(record.session_id);
    if (existing) return toRecord(existing);
    this.#store({ ...record }, JSON.stringify(record.metadata), []);
    return null;
  }

  protected readSession(sessionId: string): SessionRecord | null {
    const stored = this.#sessions.get(sessionId);
    return stored ? toRecord(stored) : null;
  }

  protected querySessions(agentId: string, query: SessionQuery): SessionRecord[] {
    const matches: StoredSession[] = [];
    for (const id of this.#byAgent.get(agentId) ?? []) {
      const stored = this.#sessions.get(id) as StoredSession;
      if (query.cwd !== undefined && stored.cwd !== query.cwd) continue;
      if (query.before && !isAfter(stored.record, query.before)) continue;
      matches.push(stored);
    }
    matches.sort((a, b) => compareSessions(a.record, b.record));
    return matches.slice(0, query.limit).map(toRecord);
  }

  protected replaceMetadata(sessionId: string, metadata: JsonObject | null, at: string): SessionRecord | null {
    const stored = this.#sessions.get(sessionId);
    if (!stored) return null;
    stored.metadata = JSON.stringify(metadata);
    stored.cwd = cwdOf(metadata);
    stored.record.updated_at = latest(at, stored.record.updated_at);
    return toRecord(stored);
  }

  protected copySession(sessionId: string, target: ForkTarget): CopyOutcome {
    const source = this.#sessions.get(sessionId);
    if (!source) return { status: "not-found" };
    if (this.#sessions.has(target.session_id)) return { status: "exists" };
    const length = target.length ?? source.messages.length;
    if (length > source.messages.length) return { status: "out-of-range", length: source.messages.length };
    const { session_id, created_at } = target;
    const record = { ...source.record, session_id, created_at, updated_at: created_at };
    const metadata = target.metadata === undefined ? source.metadata : JSON.stringify(target.metadata);
    this.#store(record, metadata, source.messages.slice(0, length));
    return { status: "copied" };
  }

  protected removeSession(sessionId: string): void {
    const stored = this.#sessions.get(sessionId);
    if (!stored) return;
    this.#sessions.delete(sessionId);
    const ids = this.#byAgent.get(stored.record.agent_id);
    ids?.delete(sessionId);
    if (ids?.size === 0) this.#byAgent.delete(stored.record.agent_id);
  }

  protected appendMessages(sessionId: string, messages: MessageRecord[]): number | null {
    const stored = this.#sessions.get(sessionId);
    if (!stored) return null;
    append(stored, messages);
    return stored.messages.length;
  }

  protected editMessages(sessionId: string, edit: MessageEdit): EditOutcome {
    const stored = this.#sessions.get(sessionId);
    if (!stored) return { status: "not-found" };
    const key = edit.idempotency?.key;
    const remembered = key === undefined ? undefined : stored.keys.get(key);
    if (remembered) return { status: "replayed", ...remembered, popped: parse(remembered.popped) };
    const length = stored.messages.length;
    if (edit.expectedLength !== undefined && edit.expectedLength !== length) return { status: "conflict", length };
    if (edit.from !== undefined && edit.from > length) return { status: "out-of-range", length };
    const keep = edit.pop ? Math.max(0, length - 1) : (edit.from ?? length);
    const popped = edit.pop ? (stored.messages[length - 1] ?? null) : null;
    if (keep < length) {
      stored.messages.length = keep;
      stored.record.updated_at = latest(edit.at, stored.record.updated_at);
    }
    if (edit.messages.length > 0) append(stored, edit.messages);
    if (edit.metadata !== undefined) {
      stored.metadata = JSON.stringify(edit.metadata);
      stored.cwd = cwdOf(edit.metadata);
      stored.record.updated_at = latest(edit.at, stored.record.updated_at);
    }
    if (edit.idempotency) {
      const write = { fingerprint: edit.idempotency.fingerprint, length: stored.messages.length, popped };
      stored.keys.set(edit.idempotency.key, write);
      if (stored.keys.size > KEYS_KEPT) stored.keys.delete(stored.keys.keys().next().value as string);
    }
    return { status: "written", length: stored.messages.length, popped: parse(popped) };
  }

  protected readLength(sessionId: string): number | null {
    return this.#sessions.get(sessionId)?.messages.length ?? null;
  }

  protected readMessages(sessionId: string, range: MessageRange): MessageRecord[] | null {
    const stored = this.#sessions.get(sessionId);
    if (!stored) return null;
    const lines =
      "last" in range
        ? stored.messages.slice(-range.last)
        : stored.messages.slice(range.offset, range.limit === undefined ? undefined : range.offset + range.limit);
    return lines.map((line) => JSON.parse(line) as MessageRecord);
  }

  protected override scanPage(after: string | null, limit: number, agentId: string | undefined): SessionRecord[] {
    const ids = agentId === undefined ? this.#sessions.keys() : (this.#byAgent.get(agentId) ?? []);
    return [...ids]
      .filter((id) => after === null || id > after)
      .sort()
      .slice(0, limit)
      .map((id) => toRecord(this.#sessions.get(id) as StoredSession));
  }

  protected override insertImported(record: SessionRecord, messages: MessageRecord[]): boolean {
    if (this.#sessions.has(record.session_id)) return false;
    this.#store(
      { ...record },
      JSON.stringify(record.metadata),
      messages.map((m) => JSON.stringify(m)),
    );
    return true;
  }

  protected dispose(): void {
    this.#sessions.clear();
    this.#byAgent.clear();
  }

  #store(record: SessionRecord, metadata: string, messages: string[]): void {
    const parsed = JSON.parse(metadata) as SessionRecord["metadata"];
    this.#sessions.set(record.session_id, {
      record: { ...record, metadata: null },
      metadata,
      cwd: cwdOf(parsed),
      messages,
      keys: new Map(),
    });
    const ids = this.#byAgent.get(record.agent_id) ?? new Set<string>();
    this.#byAgent.set(record.agent_id, ids.add(record.session_id));
  }
}

/** Appends a batch: one timestamp for all, raised to `updated_at` when the clock is behind. */
function append(stored: StoredSession, messages: MessageRecord[]): void {
  const timestamp = latest((messages[0] as MessageRecord).timestamp, stored.record.updated_at);
  for (const m of messages) stored.messages.push(JSON.stringify({ role: m.role, content: m.content, timestamp }));
  stored.record.updated_at = timestamp;
}

function parse(line: string | null): MessageRecord | null {
  return line === null ? null : (JSON.parse(line) as MessageRecord);
}

function toRecord(stored: StoredSession): SessionRecord {
  return { ...stored.record, metadata: JSON.parse(stored.metadata) as SessionRecord["metadata"] };
}
