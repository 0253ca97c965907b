import { fileURLToPath } from "node:url";
import { drizzle } from "drizzle-orm/mysql2";
import { migrate } from "drizzle-orm/mysql2/migrator";
import mysql, { type Pool, type PoolConnection, type ResultSetHeader, type RowDataPacket } from "mysql2/promise";
import { z } from "zod";
// In your own project, all of these come from "agentix".
import {
  AgentixStorageError,
  cwdOf,
  type ForkTarget,
  type JsonObject,
  type MessageContent,
  type MessageRecord,
  parseOptions,
  type Role,
  type SessionQuery,
  type SessionRecord,
  StorageBackend,
  type SyncTwin,
  sessionRecord,
} from "../../../src/index.js";

/** Options of {@link MySqlStorageBackend}: a `url` or a `pool`. */
export type MySqlStorageOptions = {
  /** Apply pending migrations (examples/mysql/migrations) on first use. @default true */
  migrate?: boolean;
} & (
  | {
      /** `mysql://user:pass@host:3306/database`: the backend opens (and closes) its own pool. */
      url: string;
      /** Connections in that pool. @default 10 */
      connectionLimit?: number;
    }
  | {
      /** A pool made by `mysql2/promise`'s `createPool()`. Never closed by the backend; no `...Sync` methods. */
      pool: Pool;
    }
);

const isPool = (v: unknown): v is Pool =>
  typeof v === "object" && v !== null && "pool" in v && typeof (v as Pool).getConnection === "function";

const OPTIONS = z
  .strictObject({
    url: z
      .string()
      .regex(/^(mysql|mariadb):\/\//, "must be a mysql:// or mariadb:// URL")
      .refine((u) => URL.canParse(u) && new URL(u).pathname.length > 1, "must name a database: mysql://host/db")
      .optional(),
    connectionLimit: z.number().int().positive().optional(),
    pool: z.custom<Pool>(isPool, "expected a pool made by createPool() from mysql2/promise").optional(),
    migrate: z.boolean().optional(),
  })
  .refine((o) => (o.url === undefined) !== (o.pool === undefined), "give either url or pool")
  .refine((o) => o.pool === undefined || o.connectionLimit === undefined, {
    path: ["connectionLimit"],
    message: "sizes the pool opened from url; not with pool",
  });

const MIGRATIONS_FOLDER = fileURLToPath(new URL("../migrations", import.meta.url));
const ER_DUP_ENTRY = 1062;

/** DATETIME(3) as `2024-01-15T14:30:00.123Z`, formatted by the server whatever the pool's date options. */
const iso = (column: string) => `concat(left(date_format(${column}, '%Y-%m-%dT%H:%i:%s.%f'), 23), 'Z')`;
/** `2024-01-15T14:30:00.123Z` as DATETIME(3) input: MySQL refuses the `T` and the `Z`. */
const datetime = (timestamp: string) => `${timestamp.slice(0, 10)} ${timestamp.slice(11, 23)}`;

const SESSION_COLUMNS = `id, agent_id, ${iso("created_at")}, ${iso("updated_at")}, metadata`;
// agent_id is a binary string: mysql2 returns it as a Buffer.
type SessionRow = [id: string, agentId: Buffer, createdAt: string, updatedAt: string, metadata: string | null];
type MessageRow = [role: Role, content: string, timestamp: string];
type Db = Pool | PoolConnection;
type Param = string | number | null;

/**
 * Sessions in MySQL or MariaDB through mysql2: the design of the Postgres backend in a dialect without
 * RETURNING or data-modifying CTEs. An append and a fork are short transactions instead of one statement;
 * everything else is one prepared statement (two to load a session without messages). The `...Sync` methods run on a worker thread, on a twin built
 * from the same `url`.
 */
export class MySqlStorageBackend extends StorageBackend {
  readonly #pool: Pool;
  readonly #url: string | undefined;
  readonly #connectionLimit: number | undefined;
  readonly #migrate: boolean;
  #migrated: Promise<void> | undefined;

  constructor(options: MySqlStorageOptions) {
    super();
    const o = parseOptions(OPTIONS, options, "MySqlStorageBackend");
    this.#url = o.url;
    this.#connectionLimit = o.connectionLimit;
    this.#migrate = o.migrate ?? true;
    // A pool connects on first use, so nothing is opened here.
    this.#pool = o.pool ?? mysql.createPool({ uri: o.url as string, connectionLimit: o.connectionLimit ?? 10 });
  }

  protected async insertSession(record: SessionRecord): Promise<void> {
    await this.#ready();
    await insertRow(this.#pool, record);
  }

  protected async readSession(sessionId: string): Promise<SessionRecord | null> {
    await this.#ready();
    const [row] = await rows<SessionRow>(this.#pool, `select ${SESSION_COLUMNS} from sessions where id = ?`, [
      sessionId,
    ]);
    return row ? toSession(row) : null;
  }

  protected async querySessions(agentId: string, query: SessionQuery): Promise<SessionRecord[]> {
    await this.#ready();
    const { cwd, before, limit } = query;
    // One statement per combination of filters, each served by its index (a backward range scan, no sort).
    let sql = `select ${SESSION_COLUMNS} from sessions where agent_id = ?`;
    const params: Param[] = [agentId];
    if (cwd !== undefined) {
      sql += " and cwd_hash = unhex(sha2(?, 256)) and cwd = ?";
      params.push(cwd, cwd);
    }
    if (before !== undefined) {
      // Not `(updated_at, id) < (?, ?)`: MariaDB reads that by walking the index from the newest session down to
      // the cursor, so deep pages would cost more. This form is two index ranges.
      sql += " and (updated_at < ? or (updated_at = ? and id < ?))";
      const at = datetime(before.updated_at);
      params.push(at, at, before.session_id);
    }
    sql += " order by updated_at desc, id desc";
    if (limit !== undefined) {
      sql += " limit ?";
      params.push(limit);
    }
    return (await rows<SessionRow>(this.#pool, sql, params)).map(toSession);
  }

  protected async copySession(sessionId: string, target: ForkTarget): Promise<boolean> {
    await this.#ready();
    const at = datetime(target.created_at);
    // READ COMMITTED: InnoDB then reads the source messages as a snapshot, without the shared next-key locks of
    // REPEATABLE READ, under which concurrent forks of one session deadlock (MariaDB reports "Failed to read
    // auto-increment value from storage engine"). The source session row itself is locked (LOCK IN SHARE MODE)
    // until COMMIT, so that no append or delete lands between the two statements. Nobody sees the fork before COMMIT.
    return this.#transaction("read committed", async (db) => {
      const copied = await run(
        db,
        `insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at)
         select ?, agent_id, cwd, metadata, ?, ? from sessions where id = ? lock in share mode`,
        [target.session_id, at, at, sessionId],
      );
      if (copied.affectedRows === 0) return false;
      // Rows are inserted, and take their AUTO_INCREMENT ids, in the order of the SELECT.
      await run(
        db,
        `insert into messages (session_id, role, content, created_at)
         select ?, role, content, created_at from messages where session_id = ? order by id`,
        [target.session_id, sessionId],
      );
      return true;
    });
  }

  protected async removeSession(sessionId: string): Promise<void> {
    await this.#ready();
    // The messages go with it: ON DELETE CASCADE.
    await this.#pool.execute("delete from sessions where id = ?", [sessionId]);
  }

  protected async appendMessage(sessionId: string, message: MessageRecord): Promise<boolean> {
    await this.#ready();
    // The UPDATE locks the session row until COMMIT, so appends to one session run one after the other: each
    // takes the next message id and a time no earlier than the previous one (GREATEST clamps a clock that is
    // behind). The INSERT reads the updated row; no row, nothing inserted. (The UPDATE's affectedRows cannot tell:
    // it counts the rows found or only those changed, depending on the client's CLIENT_FOUND_ROWS flag.)
    return this.#transaction(undefined, async (db) => {
      await run(db, "update sessions set updated_at = greatest(updated_at, cast(? as datetime(3))) where id = ?", [
        datetime(message.timestamp),
        sessionId,
      ]);
      const inserted = await run(
        db,
        `insert into messages (session_id, role, content, created_at)
         select id, ?, ?, updated_at from sessions where id = ?`,
        [message.role, JSON.stringify(message.content), sessionId],
      );
      return inserted.affectedRows === 1;
    });
  }

  protected async readMessages(sessionId: string, last: number | undefined): Promise<MessageRecord[] | null> {
    await this.#ready();
    // Along the (session_id, id) index, backwards for `last` (then reversed here). Not joined with sessions to tell
    // "no session" from "no messages" in one statement as in Postgres: MariaDB sorts the joined rows with a filesort.
    const found = await rows<MessageRow>(
      this.#pool,
      `select role, content, ${iso("created_at")} from messages
       where session_id = ? order by id ${last === undefined ? "" : "desc limit ?"}`,
      last === undefined ? [sessionId] : [sessionId, last],
    );
    if (found.length === 0) {
      const [exists] = await rows(this.#pool, "select 1 from sessions where id = ?", [sessionId]);
      return exists ? [] : null;
    }
    const messages = found.map(([role, content, timestamp]): MessageRecord => {
      return { role, content: JSON.parse(content) as MessageContent, timestamp };
    });
    return last === undefined ? messages : messages.reverse();
  }

  protected override async scanPage(
    after: string | null,
    limit: number,
    agentId: string | undefined,
  ): Promise<SessionRecord[]> {
    await this.#ready();
    let sql = `select ${SESSION_COLUMNS} from sessions where true`;
    const params: Param[] = [];
    if (agentId !== undefined) {
      sql += " and agent_id = ?";
      params.push(agentId);
    }
    if (after !== null) {
      sql += " and id > ?";
      params.push(after);
    }
    params.push(limit);
    return (await rows<SessionRow>(this.#pool, `${sql} order by id limit ?`, params)).map(toSession);
  }

  protected override async insertImported(record: SessionRecord, messages: MessageRecord[]): Promise<boolean> {
    await this.#ready();
    return this.#transaction(undefined, async (db) => {
      try {
        await insertRow(db, record);
      } catch (error) {
        if ((error as { errno?: number }).errno === ER_DUP_ENTRY) return false;
        throw error;
      }
      // One statement per message: each stays under max_allowed_packet, whatever the session's total size.
      for (const m of messages) {
        await run(db, "insert into messages (session_id, role, content, created_at) values (?, ?, ?, ?)", [
          record.session_id,
          m.role,
          JSON.stringify(m.content),
          datetime(m.timestamp),
        ]);
      }
      return true;
    });
  }

  protected async dispose(): Promise<void> {
    if (this.#url !== undefined) await this.#pool.end();
  }

  protected override syncTwin(): SyncTwin {
    if (this.#url === undefined) {
      throw new AgentixStorageError(
        "MySqlStorageBackend: the ...Sync methods run on a worker thread, which cannot share a pool passed in; " +
          "build the backend from { url } to use them",
      );
    }
    const options: MySqlStorageOptions = { url: this.#url, migrate: this.#migrate };
    if (this.#connectionLimit !== undefined) options.connectionLimit = this.#connectionLimit;
    return { module: import.meta.url, exportName: "MySqlStorageBackend", options };
  }

  /** Runs `work` in a transaction on one connection of the pool. */
  async #transaction<T>(isolation: "read committed" | undefined, work: (db: PoolConnection) => Promise<T>): Promise<T> {
    const db = await this.#pool.getConnection();
    try {
      // Without SESSION, SET TRANSACTION applies to the next transaction only.
      if (isolation) await db.query(`set transaction isolation level ${isolation}`);
      await db.beginTransaction();
      const result = await work(db);
      await db.commit();
      return result;
    } catch (error) {
      await db.rollback().catch(() => {});
      throw error;
    } finally {
      db.release();
    }
  }

  /** Applies pending migrations once per backend, on first use; a failed attempt is retried by the next call. */
  #ready(): Promise<void> {
    if (!this.#migrate) return Promise.resolve();
    this.#migrated ??= this.#applyMigrations().catch((error: unknown) => {
      this.#migrated = undefined;
      throw error;
    });
    return this.#migrated;
  }

  /**
   * drizzle's migrator, under a named lock of the server so that processes starting at once apply each
   * migration once. MySQL commits DDL implicitly: a migration interrupted half-way is not rolled back.
   */
  async #applyMigrations(): Promise<void> {
    const db = await this.#pool.getConnection();
    // GET_LOCK names are server-wide (at most 64 characters): one lock per database.
    const lock = "concat('agentix_migrations_', md5(database()))";
    try {
      const [[acquired]] = await db.query<RowDataPacket[]>({ sql: `select get_lock(${lock}, 60)`, rowsAsArray: true });
      if (acquired?.[0] !== 1) throw new AgentixStorageError("MySqlStorageBackend: timed out waiting for migrations");
      try {
        await migrate(drizzle(db), { migrationsFolder: MIGRATIONS_FOLDER, migrationsTable: "__agentix_migrations" });
      } finally {
        await db.query(`do release_lock(${lock})`);
      }
    } finally {
      db.release();
    }
  }
}

/** Rows as arrays: column names never matter, so a pool with its own row options reads the same. */
async function rows<T>(db: Db, sql: string, params: Param[]): Promise<T[]> {
  const [result] = await db.execute<RowDataPacket[]>({ sql, rowsAsArray: true }, params);
  return result as unknown as T[];
}

async function run(db: Db, sql: string, params: Param[]): Promise<ResultSetHeader> {
  const [result] = await db.execute<ResultSetHeader>(sql, params);
  return result;
}

function insertRow(db: Db, record: SessionRecord): Promise<ResultSetHeader> {
  return run(
    db,
    "insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at) values (?, ?, ?, ?, ?, ?)",
    [
      record.session_id,
      record.agent_id,
      cwdOf(record.metadata),
      json(record.metadata),
      datetime(record.created_at),
      datetime(record.updated_at),
    ],
  );
}

/** Content and metadata are stored as JSON text (see schema.ts); `null` metadata is SQL NULL. */
function json(value: JsonObject | null): string | null {
  return value === null ? null : JSON.stringify(value);
}

function toSession([id, agentId, createdAt, updatedAt, metadata]: SessionRow): SessionRecord {
  return sessionRecord(
    id,
    agentId.toString("utf8"),
    createdAt,
    updatedAt,
    metadata === null ? null : (JSON.parse(metadata) as JsonObject),
  );
}
