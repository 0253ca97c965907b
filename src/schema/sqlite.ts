import { sql } from "drizzle-orm";
import { check, index, integer, primaryKey, sqliteTable, text } from "drizzle-orm/sqlite-core";

// Content and metadata are JSON text (escaped, so "\u0000" and lone surrogates
// survive); times are ISO 8601 text, which sorts in time order.

/** One row per session. `cwd` is `metadata.cwd` when it is a string, kept apart so that it can be indexed. */
export const sessions = sqliteTable(
  "sessions",
  {
    id: text("id").primaryKey(),
    agentId: text("agent_id").notNull(),
    cwd: text("cwd"),
    metadata: text("metadata"),
    createdAt: text("created_at").notNull(),
    updatedAt: text("updated_at").notNull(),
    /** The number of messages, kept by every append, so that counting them is one row read. */
    messageCount: integer("message_count").notNull().default(0),
    /** How many idempotency keys the session has remembered: the `seq` of the newest, by which older ones are pruned. */
    keySeq: integer("key_seq").notNull().default(0),
  },
  // SQLite walks an index backwards, so ascending indexes serve "newest first".
  (t) => [
    index("sessions_agent_updated_idx").on(t.agentId, t.updatedAt, t.id),
    index("sessions_agent_cwd_updated_idx").on(t.agentId, t.cwd, t.updatedAt, t.id),
    // Scans by agent (scanSessions({ agentId }): export, copy --agent) page along it in id order.
    index("sessions_agent_id_idx").on(t.agentId, t.id),
  ],
);

/**
 * One row per message. `position` (0 for the oldest, dense up to `message_count - 1`) fixes the order: it is
 * assigned from the session's `message_count` inside the write transaction, and reads, edits and forks go along
 * `(session_id, position)`. `id` (AUTOINCREMENT: never reused) only records the order rows were written in.
 */
export const messages = sqliteTable(
  "messages",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    sessionId: text("session_id")
      .notNull()
      .references(() => sessions.id, { onDelete: "cascade" }),
    position: integer("position").notNull(),
    role: text("role").notNull(),
    content: text("content").notNull(),
    createdAt: text("created_at").notNull(),
  },
  (t) => [
    // Serves every read, edit and fork. Positions are unique per session by construction: only write transactions
    // (BEGIN IMMEDIATE, one writer at a time) assign them, from the session's message_count.
    index("messages_session_idx").on(t.sessionId, t.position),
    check("messages_role_check", sql`${t.role} in ('user', 'assistant', 'system', 'tool')`),
  ],
);

/**
 * The idempotency keys a session remembers, with what the write under each did (its new length and, for a pop,
 * the popped message), so that a retry returns the same. `seq` numbers a session's keys (from `key_seq`): all
 * but the 1,000 newest are pruned as keys are added.
 */
export const idempotencyKeys = sqliteTable(
  "idempotency_keys",
  {
    sessionId: text("session_id")
      .notNull()
      .references(() => sessions.id, { onDelete: "cascade" }),
    key: text("key").notNull(),
    fingerprint: text("fingerprint").notNull(),
    seq: integer("seq").notNull(),
    length: integer("length").notNull(),
    poppedRole: text("popped_role"),
    poppedContent: text("popped_content"),
    poppedAt: text("popped_at"),
  },
  (t) => [
    primaryKey({ columns: [t.sessionId, t.key] }),
    index("idempotency_keys_session_seq_idx").on(t.sessionId, t.seq),
  ],
);
