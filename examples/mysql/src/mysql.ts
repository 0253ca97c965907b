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
 * RETURNING or data-modifying CTEs. An append, a metadata update and a fork are short transactions instead of
 * one statement; everything else is one prepared statement (two to open an existing session or to load one
 * without messages). The `...Sync` methods run on a worker thread, on a twin built from the same `url`.
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

  protected async insertSession(record: SessionRecord): Promise<SessionRecord | null> {
    await this.#ready();
    // An INSERT, and a read of the session holding the id only when the INSERT is refused (ER_DUP_ENTRY). A refused
    // INSERT writes nothing, so the call takes effect at that read, which returns the session as it is then (a
    // delete in between: insert again). No transaction: creating is one round trip. Not INSERT IGNORE: it turns
    // other errors into warnings. Not ON DUPLICATE KEY UPDATE: its affectedRows depends on CLIENT_FOUND_ROWS.
    for (;;) {
      try {
        await insertRow(this.#pool, record, 0);
        return null;
      } catch (error) {
        if ((error as { errno?: number }).errno !== ER_DUP_ENTRY) throw error;
      }
      const existing = await sessionById(this.#pool, record.session_id);
      if (existing) return existing;
    }
  }

  protected async readSession(sessionId: string): Promise<SessionRecord | null> {
    await this.#ready();
    return sessionById(this.#pool, sessionId);
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

  protected async replaceMetadata(
    sessionId: string,
    metadata: JsonObject | null,
    at: string,
  ): Promise<SessionRecord | null> {
    await this.#ready();
    // No UPDATE ... RETURNING in MySQL: the SELECT reads the row that the UPDATE changed and keeps locked until
    // COMMIT, so it returns exactly what this call wrote. cwd_hash follows cwd (a generated column).
    return this.#transaction(undefined, async (db) => {
      await run(
        db,
        `update sessions set metadata = ?, cwd = ?, updated_at = greatest(updated_at, cast(? as datetime(3)))
         where id = ?`,
        [json(metadata), cwdOf(metadata), datetime(at), sessionId],
      );
      return sessionById(db, sessionId);
    });
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
        `insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at, message_count)
         select ?, agent_id, cwd, metadata, ?, ?, message_count from sessions where id = ? lock in share mode`,
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

  protected async appendMessages(sessionId: string, messages: MessageRecord[]): Promise<number | null> {
    await this.#ready();
    // The UPDATE locks the session row until COMMIT, so batches to one session run one after the other: each takes
    // the next message ids and a time no earlier than the previous one (GREATEST clamps a clock that is behind).
    // The SELECT reads that time and the new count; no row, nothing inserted (the UPDATE's affectedRows cannot
    // tell: it counts rows found or rows changed, depending on the CLIENT_FOUND_ROWS flag). The transaction makes
    // the batch all or nothing, also when it takes several INSERTs.
    return this.#transaction(undefined, async (db) => {
      await run(
        db,
        `update sessions set updated_at = greatest(updated_at, cast(? as datetime(3))),
         message_count = message_count + ? where id = ?`,
        [datetime((messages[0] as MessageRecord).timestamp), messages.length, sessionId],
      );
      const sql = `select ${iso("updated_at")}, message_count from sessions where id = ?`;
      const [row] = await rows<[at: string, count: number]>(db, sql, [sessionId]);
      if (!row) return null;
      const at = datetime(row[0]);
      await insertMessages(db, sessionId, messages, at);
      return row[1];
    });
  }

  protected async readLength(sessionId: string): Promise<number | null> {
    await this.#ready();
    const [row] = await rows<[number]>(this.#pool, "select message_count from sessions where id = ?", [sessionId]);
    return row ? row[0] : null;
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
        await insertRow(db, record, messages.length);
      } catch (error) {
        if ((error as { errno?: number }).errno === ER_DUP_ENTRY) return false;
        throw error;
      }
      await insertMessages(db, record.session_id, messages);
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

async function sessionById(db: Db, sessionId: string): Promise<SessionRecord | null> {
  const [row] = await rows<SessionRow>(db, `select ${SESSION_COLUMNS} from sessions where id = ?`, [sessionId]);
  return row ? toSession(row) : null;
}

function insertRow(db: Db, record: SessionRecord, messageCount: number): Promise<ResultSetHeader> {
  const { session_id, agent_id, metadata, created_at, updated_at } = record;
  return run(
    db,
    `insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at, message_count)
     values (?, ?, ?, ?, ?, ?, ?)`,
    [session_id, agent_id, cwdOf(metadata), json(metadata), datetime(created_at), datetime(updated_at), messageCount],
  );
}

/**
 * Inserts the messages in order (at `at`, else at their own timestamps), in as few INSERTs as max_allowed_packet (16 MiB by default on MariaDB) allows
 * whatever their total size: at most 100 rows and about 1 MiB of content each, a larger message alone. The rows of
 * one INSERT take increasing AUTO_INCREMENT ids in the order of VALUES.
 */
async function insertMessages(db: Db, id: string, messages: MessageRecord[], at?: string): Promise<void> {
  const contents = messages.map((m) => JSON.stringify(m.content));
  for (let start = 0, end = 0; start < messages.length; start = end) {
    let size = 0;
    do size += (contents[end++] as string).length;
    while (end < messages.length && end - start < 100 && size + (contents[end] as string).length <= 1024 * 1024);
    const params = messages
      .slice(start, end)
      .flatMap((m, i) => [id, m.role, contents[start + i], at ?? datetime(m.timestamp)]);
    const values = Array.from({ length: end - start }, () => "(?, ?, ?, ?)").join(", ");
    await run(db, `insert into messages (session_id, role, content, created_at) values ${values}`, params as Param[]);
  }
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
