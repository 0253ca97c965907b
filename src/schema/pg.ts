import { sql } from "drizzle-orm";
import {
  bigint,
  check,
  index,
  integer,
  PgSchema,
  type PgTableFn,
  pgTable,
  primaryKey,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from "drizzle-orm/pg-core";

// Content and metadata are JSON *text*: jsonb refuses "\u0000" and lone
// surrogates, and would reorder keys; text keeps every value byte for byte.
const at = (name: string) => timestamp(name, { precision: 3, withTimezone: true, mode: "string" });

/** The tables, made by `table`: `pgTable` (unqualified, what drizzle-kit generates the migrations from) or a schema's. */
function define<S extends string | undefined>(table: PgTableFn<S>) {
  /** One row per session. `cwd` is `metadata.cwd` when it is a string, kept apart so that it can be indexed. */
  const sessions = table(
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
      /** How many idempotency keys the session has remembered: the `seq` of the newest, by which older ones are pruned. */
      keySeq: integer("key_seq").notNull().default(0),
    },
    (t) => [
      index("sessions_agent_updated_idx").on(t.agentId, t.updatedAt.desc(), t.id.desc()),
      // md5(cwd), not cwd: a btree row holds at most ~2.7 kB, and a path may be 4 kB. Queries match both.
      index("sessions_agent_cwd_updated_idx").on(t.agentId, sql`md5(${t.cwd})`, t.updatedAt.desc(), t.id.desc()),
      // Scans of one agent in id order (export, copy --agent): each page a range of this index, O(page).
      index("sessions_agent_id_idx").on(t.agentId, t.id),
    ],
  );

  /**
   * One row per message. `position` (0 for the oldest, dense up to `message_count - 1`) fixes the order: it is
   * assigned from the session's `message_count` under the session row's lock, and reads, edits and forks go
   * along `(session_id, position)`. `id` only records the order rows were written in.
   */
  const messages = table(
    "messages",
    {
      id: bigint("id", { mode: "number" }).primaryKey().generatedAlwaysAsIdentity(),
      sessionId: uuid("session_id")
        .notNull()
        .references(() => sessions.id, { onDelete: "cascade" }),
      position: integer("position").notNull(),
      role: text("role").notNull(),
      content: text("content").notNull(),
      createdAt: at("created_at").notNull(),
    },
    (t) => [
      uniqueIndex("messages_session_idx").on(t.sessionId, t.position),
      check("messages_role_check", sql`${t.role} in ('user', 'assistant', 'system', 'tool')`),
    ],
  );

  /**
   * The idempotency keys a session remembers, with what the write under each did (its new length and, for a pop,
   * the popped message), so that a retry returns the same. `seq` numbers a session's keys (from `key_seq`): all
   * but the 1,000 newest are pruned as keys are added.
   */
  const idempotencyKeys = table(
    "idempotency_keys",
    {
      sessionId: uuid("session_id")
        .notNull()
        .references(() => sessions.id, { onDelete: "cascade" }),
      key: text("key").notNull(),
      fingerprint: text("fingerprint").notNull(),
      seq: integer("seq").notNull(),
      length: integer("length").notNull(),
      poppedRole: text("popped_role"),
      poppedContent: text("popped_content"),
      poppedAt: at("popped_at"),
    },
    (t) => [
      primaryKey({ name: "idempotency_keys_pkey", columns: [t.sessionId, t.key] }),
      index("idempotency_keys_session_seq_idx").on(t.sessionId, t.seq),
    ],
  );

  /**
   * The chunks of streamed imports not yet published (`importSession` given an iterable), one row per message at
   * its position, under the import's random stage id. No foreign key: the session row does not exist yet, and
   * staged rows are invisible to every read (all of them start at the session row). Publishing moves them to
   * `messages` in one statement; what a crashed import left is dropped once old, by `staged_at`.
   */
  const importStages = table(
    "import_stages",
    {
      stage: uuid("stage").notNull(),
      position: integer("position").notNull(),
      role: text("role").notNull(),
      content: text("content").notNull(),
      createdAt: at("created_at").notNull(),
      stagedAt: at("staged_at").notNull().defaultNow(),
    },
    (t) => [
      primaryKey({ name: "import_stages_pkey", columns: [t.stage, t.position] }),
      index("import_stages_staged_idx").on(t.stagedAt),
    ],
  );
  return { sessions, messages, idempotencyKeys, importStages };
}

// drizzle-kit reads these (drizzle.config.ts): the migrations are written for unqualified names.
const unqualified = define(pgTable);
/** One row per session (unqualified: the tables drizzle-kit generates the migrations from). See {@link pgTables}. */
export const sessions = unqualified.sessions;
/** One row per message, at its `position` in the session (unqualified). See {@link pgTables}. */
export const messages = unqualified.messages;
/** The idempotency keys a session remembers, with what each write did (unqualified). See {@link pgTables}. */
export const idempotencyKeys = unqualified.idempotencyKeys;
/** Messages of streamed imports not yet published (unqualified). See {@link pgTables}. */
export const importStages = unqualified.importStages;

type Defined = ReturnType<typeof define<string>>;

/** The tables of {@link pgTables}: `sessions`, `messages`, `idempotencyKeys` and `importStages` of one Postgres schema. */
export interface PgTables {
  /** {@link sessions}, in the schema. */
  sessions: Defined["sessions"];
  /** {@link messages}, in the schema. */
  messages: Defined["messages"];
  /** {@link idempotencyKeys}, in the schema. */
  idempotencyKeys: Defined["idempotencyKeys"];
  /** {@link importStages}, in the schema. */
  importStages: Defined["importStages"];
}

/**
 * The same tables inside the Postgres schema `schema` (a tenant's): every statement built from them names the schema
 * (`"tenant"."sessions"`), so that it never depends on the connection's `search_path`. The name is data: Drizzle
 * quotes it. `"public"` is a schema like any other here (drizzle's `pgSchema()` refuses it; its class does not).
 */
export function pgTables(schema: string): PgTables {
  return define(new PgSchema(schema).table);
}
