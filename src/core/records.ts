import type { JsonObject, SessionCursor, SessionRecord } from "./types.js";

/** The working directory of a session: `metadata.cwd` when it is a string. */
export function cwdOf(metadata: JsonObject | null): string | null {
  const cwd = metadata?.cwd;
  return typeof cwd === "string" ? cwd : null;
}

/** The listing order: newest `updated_at` first, then greater `session_id` first. */
export function compareSessions(a: SessionCursor, b: SessionCursor): number {
  if (a.updated_at !== b.updated_at) return a.updated_at > b.updated_at ? -1 : 1;
  if (a.session_id !== b.session_id) return a.session_id > b.session_id ? -1 : 1;
  return 0;
}

/** Whether `record` comes strictly after `cursor` in the listing order. */
export function isAfter(record: SessionCursor, cursor: SessionCursor): boolean {
  return compareSessions(record, cursor) > 0;
}

/** A session record with exactly the five keys, in their documented order. */
export function sessionRecord(
  session_id: string,
  agent_id: string,
  created_at: string,
  updated_at: string,
  metadata: JsonObject | null,
): SessionRecord {
  return { session_id, agent_id, created_at, updated_at, metadata };
}
