import { sql } from "drizzle-orm";
import { check, index, integer, sqliteTable, text } from "drizzle-orm/sqlite-core";

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
  },
  // SQLite walks an index backwards, so ascending indexes serve "newest first".
  (t) => [
    index("sessions_agent_updated_idx").on(t.agentId, t.updatedAt, t.id),
    index("sessions_agent_cwd_updated_idx").on(t.agentId, t.cwd, t.updatedAt, t.id),
  ],
);

/** One row per message; `id` (AUTOINCREMENT: never reused) increases with every append and fixes the order. */
export const messages = sqliteTable(
  "messages",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    sessionId: text("session_id")
      .notNull()
      .references(() => sessions.id, { onDelete: "cascade" }),
    role: text("role").notNull(),
    content: text("content").notNull(),
    createdAt: text("created_at").notNull(),
  },
  (t) => [
    index("messages_session_idx").on(t.sessionId, t.id),
    check("messages_role_check", sql`${t.role} in ('user', 'assistant', 'system', 'tool')`),
  ],
);
