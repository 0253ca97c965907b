import { sql } from "drizzle-orm";
import { bigint, check, index, integer, pgTable, text, timestamp, uuid } from "drizzle-orm/pg-core";

// Content and metadata are JSON *text*: jsonb refuses "\u0000" and lone
// surrogates, and would reorder keys; text keeps every value byte for byte.
const at = (name: string) => timestamp(name, { precision: 3, withTimezone: true, mode: "string" });

/** One row per session. `cwd` is `metadata.cwd` when it is a string, kept apart so that it can be indexed. */
export const sessions = pgTable(
  "sessions",
  {
    id: uuid("id").primaryKey(),
    agentId: text("agent_id").notNull(),
    cwd: text("cwd"),
    metadata: text("metadata"),
    createdAt: at("created_at").notNull(),
    updatedAt: at("updated_at").notNull(),
    /** The number of messages, kept by every append, so that counting them is one row read. */
    messageCount: integer("message_count").notNull().default(0),
  },
  (t) => [
    index("sessions_agent_updated_idx").on(t.agentId, t.updatedAt.desc(), t.id.desc()),
    // md5(cwd), not cwd: a btree row holds at most ~2.7 kB, and a path may be 4 kB. Queries match both.
    index("sessions_agent_cwd_updated_idx").on(t.agentId, sql`md5(${t.cwd})`, t.updatedAt.desc(), t.id.desc()),
  ],
);

/** One row per message; `id` increases with every append and fixes the order. */
export const messages = pgTable(
  "messages",
  {
    id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
    sessionId: uuid("session_id")
      .notNull()
      .references(() => sessions.id, { onDelete: "cascade" }),
    role: text("role").notNull(),
    content: text("content").notNull(),
    createdAt: at("created_at").notNull(),
  },
  (t) => [
    index("messages_session_idx").on(t.sessionId, t.id),
    check("messages_role_check", sql`${t.role} in ('user', 'assistant', 'system', 'tool')`),
  ],
);
