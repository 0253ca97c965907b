import { type ForkTarget, SyncStorageBackend } from "./core/backend.js";
import { latest } from "./core/clock.js";
import { compareSessions, cwdOf, isAfter } from "./core/records.js";
import type { JsonObject, MessageRecord, SessionQuery, SessionRecord } from "./core/types.js";

interface StoredSession {
  record: SessionRecord;
  /** JSON of `record.metadata`: what is stored is a copy no caller can reach. */
  metadata: string;
  cwd: string | null;
  /** Each message as JSON, in append order. */
  messages: string[];
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

  protected copySession(sessionId: string, target: ForkTarget): boolean {
    const source = this.#sessions.get(sessionId);
    if (!source) return false;
    const record = { ...source.record, ...target, updated_at: target.created_at };
    this.#store(record, source.metadata, [...source.messages]);
    return true;
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
    const timestamp = latest((messages[0] as MessageRecord).timestamp, stored.record.updated_at);
    // Serialized first, so that nothing is stored if one message fails (it cannot: they were validated).
    const lines = messages.map((m) => JSON.stringify({ role: m.role, content: m.content, timestamp }));
    stored.messages.push(...lines);
    stored.record.updated_at = timestamp;
    return stored.messages.length;
  }

  protected readLength(sessionId: string): number | null {
    return this.#sessions.get(sessionId)?.messages.length ?? null;
  }

  protected readMessages(sessionId: string, last: number | undefined): MessageRecord[] | null {
    const stored = this.#sessions.get(sessionId);
    if (!stored) return null;
    const lines = last === undefined ? stored.messages : stored.messages.slice(-last);
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
    });
    const ids = this.#byAgent.get(record.agent_id) ?? new Set<string>();
    this.#byAgent.set(record.agent_id, ids.add(record.session_id));
  }
}

function toRecord(stored: StoredSession): SessionRecord {
  return { ...stored.record, metadata: JSON.parse(stored.metadata) as SessionRecord["metadata"] };
}
