/**
 * The Postgres backend's values and rows: what the statements take (JSON text, cwd) and what their rows become
 * (records and outcomes). Internal to `agentix/postgres`.
 * @module
 */
import { cwdOf, sessionRecord } from "./core/records.js";
import type { EditOutcome, JsonObject, MessageContent, MessageRecord, Role, SessionRecord } from "./core/types.js";
import type { EditRow, SessionRow } from "./postgres-statements.js";

/** The values of a session record's columns, as the statements take them. */
export function sessionValues(record: SessionRecord): Record<string, unknown> {
  return {
    agent: record.agent_id,
    cwd: cwdOf(record.metadata),
    metadata: json(record.metadata),
    createdAt: record.created_at,
    updatedAt: record.updated_at,
  };
}

/** Content and metadata are stored as JSON text (see src/schema/pg.ts); `null` metadata is SQL NULL. */
export function json(value: JsonObject | null): string | null {
  return value === null ? null : JSON.stringify(value);
}

/** A batch as one JSON text parameter: `[[role, content as JSON text], ...]`, read back with `->>`. */
export function roleAndContent(messages: MessageRecord[]): string {
  return JSON.stringify(messages.map((m) => [m.role, JSON.stringify(m.content)]));
}

/** What the edit statement's row says (never `stale`: that is run again). */
export function editOutcome([status, length, fingerprint, role, content, timestamp]: EditRow): EditOutcome {
  const popped = role === null ? null : message(role, content as string, timestamp as string);
  switch (status) {
    case "written":
      return { status, length: length as number, popped };
    case "replayed":
      return { status, fingerprint: fingerprint as string, length: length as number, popped };
    case "conflict":
    case "out-of-range":
      return { status, length: length as number };
    default:
      return { status: "not-found" };
  }
}

/** A message record from a row: content is stored as JSON text. */
export function message(role: string, content: string, timestamp: string): MessageRecord {
  return { role: role as Role, content: JSON.parse(content) as MessageContent, timestamp };
}

export function toSession([id, agentId, createdAt, updatedAt, metadata]: SessionRow): SessionRecord {
  return sessionRecord(
    id,
    agentId,
    createdAt,
    updatedAt,
    metadata === null ? null : (JSON.parse(metadata) as JsonObject),
  );
}
