import { sql } from "drizzle-orm";
import {
  bigint,
  binary,
  customType,
  datetime,
  index,
  int,
  mysqlEnum,
  mysqlTable,
  primaryKey,
  uniqueIndex,
  varbinary,
} from "drizzle-orm/mysql-core";

// The tables of src/schema/pg.ts, in MySQL's terms. Each type is chosen so that the database compares
// and keeps values exactly as JavaScript does:
// - session ids: CHAR(36) ASCII with the binary collation, so `=`, `<` and ORDER BY compare bytes, like `<` on JS strings;
// - agent ids and cwd: binary strings. Every text collation of MySQL/MariaDB folds case or, like utf8mb4_bin,
//   ignores trailing spaces ("a" = "a "); binary strings compare byte for byte;
// - content and metadata: JSON *text* in utf8mb4 (4-byte UTF-8, for emoji). JSON.stringify escapes NUL and lone
//   surrogates, so the text is always valid UTF-8. Not the JSON type: MySQL's reorders object keys, and MariaDB's
//   (LONGTEXT with a JSON_VALID check) refuses the escaped lone surrogate "\ud800";
// - times: DATETIME(3), UTC, converted at the boundary (it has no time zone, so the session's time_zone never applies).
// drizzle-orm has no column option for charset and collation: `customType` writes the type verbatim.

const sessionId = customType<{ data: string }>({ dataType: () => "char(36) character set ascii collate ascii_bin" });
const jsonText = customType<{ data: string }>({
  dataType: () => "longtext character set utf8mb4 collate utf8mb4_bin",
});
const bytes = customType<{ data: string }>({ dataType: () => "longblob" });
const at = (name: string) => datetime(name, { mode: "string", fsp: 3 });

/**
 * One row per session. An index key holds at most 3072 bytes, so the unbounded `cwd` is indexed through its
 * SHA-256 (`cwd_hash`, computed by the database); queries compare both.
 */
export const sessions = mysqlTable(
  "sessions",
  {
    id: sessionId("id").primaryKey(),
    // 256 UTF-16 code units (the longest agent id) are at most 768 bytes of UTF-8.
    agentId: varbinary("agent_id", { length: 768 }).notNull(),
    cwd: bytes("cwd"),
    cwdHash: binary("cwd_hash", { length: 32 }).generatedAlwaysAs(sql`unhex(sha2(cwd, 256))`, { mode: "stored" }),
    metadata: jsonText("metadata"),
    createdAt: at("created_at").notNull(),
    updatedAt: at("updated_at").notNull(),
    /** The number of messages, kept by every append, so that counting them is one row read. */
    messageCount: int("message_count", { unsigned: true }).notNull().default(0),
  },
  // InnoDB reads an index backwards as fast as forwards: ascending indexes serve "newest first".
  (t) => [
    index("sessions_agent_updated_idx").on(t.agentId, t.updatedAt, t.id),
    index("sessions_agent_cwd_updated_idx").on(t.agentId, t.cwdHash, t.updatedAt, t.id),
    // Scans of one agent in id order (export, copy --agent): each page a range of this index, O(page).
    index("sessions_agent_id_idx").on(t.agentId, t.id),
  ],
);

/**
 * One row per message. `position` (0 is the oldest) fixes the order and is what pages are read by: an append
 * numbers its messages from the session's `message_count`, an edit drops positions from the end and numbers its
 * messages from there. `id` (AUTO_INCREMENT) only identifies the row.
 */
export const messages = mysqlTable(
  "messages",
  {
    id: bigint("id", { mode: "number", unsigned: true }).autoincrement().primaryKey(),
    sessionId: sessionId("session_id")
      .notNull()
      .references(() => sessions.id, { onDelete: "cascade" }),
    position: int("position", { unsigned: true }).notNull(),
    role: mysqlEnum("role", ["user", "assistant", "system", "tool"]).notNull(),
    content: jsonText("content").notNull(),
    createdAt: at("created_at").notNull(),
  },
  // Unique: two messages of a session at one position would be a lost write.
  (t) => [uniqueIndex("messages_session_position_idx").on(t.sessionId, t.position)],
);

/**
 * The writes a session remembers under their idempotency key: the fingerprint of the arguments and what the
 * write returned. `seq` numbers a session's keys in the order written, so that the oldest beyond the 1,000 most
 * recent are one range to delete. They go with the session (ON DELETE CASCADE).
 */
export const idempotencyKeys = mysqlTable(
  "idempotency_keys",
  {
    sessionId: sessionId("session_id")
      .notNull()
      .references(() => sessions.id, { onDelete: "cascade" }),
    seq: int("seq", { unsigned: true }).notNull(),
    // Compared byte for byte, as agent ids are; at most 256 UTF-16 code units, so at most 768 bytes of UTF-8.
    key: varbinary("idempotency_key", { length: 768 }).notNull(),
    fingerprint: varbinary("fingerprint", { length: 255 }).notNull(),
    /** The session's number of messages after the write. */
    length: int("length", { unsigned: true }).notNull(),
    /** The message that `popMessage` removed, as JSON text, or NULL. */
    popped: jsonText("popped"),
  },
  (t) => [
    primaryKey({ columns: [t.sessionId, t.seq] }),
    uniqueIndex("idempotency_keys_session_key_idx").on(t.sessionId, t.key),
  ],
);
