import { fileURLToPath } from "node:url";
import { drizzle } from "drizzle-orm/mysql2";
import { migrate } from "drizzle-orm/mysql2/migrator";
import mysql, { type Pool, type PoolConnection, type RowDataPacket } from "mysql2/promise";
import { z } from "zod";
// In your own project, all of these come from "agentix".
import {
  AgentixStorageError,
  type CopyOutcome,
  cwdOf,
  type EditOutcome,
  type ForkTarget,
  type JsonObject,
  type MessageEdit,
  type MessageRange,
  type MessageRecord,
  parseOptions,
  type SessionQuery,
  type SessionRecord,
  StorageBackend,
  type SyncTwin,
} from "../../../src/index.js";
import {
  datetime,
  fromRow,
  insertMessages,
  insertRow,
  iso,
  json,
  MESSAGE_COLUMNS,
  type MessageRow,
  type Param,
  remember,
  rememberedWrite,
  rows,
  run,
  SESSION_COLUMNS,
  type SessionRow,
  sessionById,
  toSession,
} from "./statements.js";

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

/**
 * Sessions in MySQL or MariaDB through mysql2: the design of the Postgres backend in a dialect without
 * RETURNING or data-modifying CTEs. An append, an edit, a metadata update and a fork are short transactions
 * instead of one statement; everything else is one prepared statement (two to open an existing session or to
 * load a page that holds no messages). The `...Sync` methods run on a worker thread, on a twin built from the same `url`.
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

  protected async copySession(sessionId: string, target: ForkTarget): Promise<CopyOutcome> {
    await this.#ready();
    const at = datetime(target.created_at);
    // READ COMMITTED: InnoDB then reads the source messages as a snapshot, without the shared next-key locks of
    // REPEATABLE READ, under which concurrent forks of one session deadlock (MariaDB reports "Failed to read
    // auto-increment value from storage engine"). The source session row itself is locked (LOCK IN SHARE MODE)
    // until COMMIT, so that no append, edit or delete lands between the statements. Nobody sees the fork before COMMIT.
    return this.#transaction("read committed", async (db): Promise<CopyOutcome> => {
      const sql = "select message_count from sessions where id = ? lock in share mode";
      const [source] = await rows<[count: number]>(db, sql, [sessionId]);
      if (!source) return { status: "not-found" };
      const length = target.length ?? source[0];
      if (length > source[0]) {
        // Nothing is written either way; a taken id is the answer first, as for a fork in range.
        const [taken] = await rows(db, "select 1 from sessions where id = ?", [target.session_id]);
        return taken ? { status: "exists" } : { status: "out-of-range", length: source[0] };
      }
      // The copied cwd and metadata, or the caller's (cwd_hash follows cwd, a generated column).
      const [cwd, metadata, params] =
        target.metadata === undefined
          ? ["cwd", "metadata", []]
          : ["?", "?", [cwdOf(target.metadata), json(target.metadata)]];
      try {
        await run(
          db,
          `insert into sessions (id, agent_id, cwd, metadata, created_at, updated_at, message_count)
           select ?, agent_id, ${cwd}, ${metadata}, ?, ?, ? from sessions where id = ?`,
          [target.session_id, ...params, at, at, length, sessionId],
        );
      } catch (error) {
        // A refused statement writes nothing, and leaves the transaction open: the COMMIT commits nothing.
        if ((error as { errno?: number }).errno === ER_DUP_ENTRY) return { status: "exists" };
        throw error;
      }
      await run(
        db,
        `insert into messages (session_id, position, role, content, created_at)
         select ?, position, role, content, created_at from messages where session_id = ? and position < ?`,
        [target.session_id, sessionId, length],
      );
      return { status: "copied" };
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
    // the next positions and a time no earlier than the previous one (GREATEST clamps a clock that is behind).
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
      const [at, count] = row;
      await insertMessages(db, sessionId, messages, count - messages.length, datetime(at));
      return count;
    });
  }

  protected async editMessages(sessionId: string, edit: MessageEdit): Promise<EditOutcome> {
    await this.#ready();
    const { idempotency, expectedLength, from, pop, messages } = edit;
    // SELECT ... FOR UPDATE locks the session row until COMMIT: appends, forks, deletes and other edits of the
    // session wait, so the checks below hold until the writes are committed. READ COMMITTED: every later read
    // sees what the writers before committed, and the DELETE locks the rows it drops, not the gaps after them.
    return this.#transaction("read committed", async (db): Promise<EditOutcome> => {
      const sql = `select message_count, ${iso("updated_at")} from sessions where id = ? for update`;
      const [row] = await rows<[count: number, updatedAt: string]>(db, sql, [sessionId]);
      if (!row) return { status: "not-found" };
      const [length, updatedAt] = row;
      const remembered = idempotency && (await rememberedWrite(db, sessionId, idempotency.key));
      if (remembered) return { status: "replayed", ...remembered };
      if (expectedLength !== undefined && expectedLength !== length) return { status: "conflict", length };
      if (from !== undefined && from > length) return { status: "out-of-range", length };
      const keep = pop ? Math.max(0, length - 1) : (from ?? length);
      let popped: MessageRecord | null = null;
      if (keep < length) {
        if (pop) {
          const last = `select ${MESSAGE_COLUMNS} from messages where session_id = ? and position = ?`;
          popped = (await rows<MessageRow>(db, last, [sessionId, keep])).map(fromRow)[0] ?? null;
        }
        await run(db, "delete from messages where session_id = ? and position >= ?", [sessionId, keep]);
      }
      const written = keep + messages.length;
      if (keep < length || messages.length > 0) {
        // The later of the two (ISO 8601 strings of one format compare as their times): updated_at never moves
        // back, and appended messages take it when the clock is behind.
        // biome-ignore lint/complexity/useMathMinMax: strings, which Math.max would turn into NaN
        const at = datetime(edit.at > updatedAt ? edit.at : updatedAt);
        await insertMessages(db, sessionId, messages, keep, at);
        const update = "update sessions set message_count = ?, updated_at = ? where id = ?";
        await run(db, update, [written, at, sessionId]);
      }
      if (idempotency) {
        await remember(db, sessionId, idempotency.key, {
          fingerprint: idempotency.fingerprint,
          length: written,
          popped,
        });
      }
      return { status: "written", length: written, popped };
    });
  }

  protected async readLength(sessionId: string): Promise<number | null> {
    await this.#ready();
    const [row] = await rows<[number]>(this.#pool, "select message_count from sessions where id = ?", [sessionId]);
    return row ? row[0] : null;
  }

  protected async readMessages(sessionId: string, range: MessageRange): Promise<MessageRecord[] | null> {
    await this.#ready();
    // Along the (session_id, position) index: a range of positions, or backwards for `last` (then reversed here).
    // Not joined with sessions to tell "no session" from "no messages" in one statement as in Postgres: MariaDB
    // sorts the joined rows with a filesort.
    let sql = `select ${MESSAGE_COLUMNS} from messages where session_id = ?`;
    const params: Param[] = [sessionId];
    if ("last" in range) {
      sql += " order by position desc limit ?";
      params.push(range.last);
    } else {
      sql += " and position >= ? order by position";
      params.push(range.offset);
      if (range.limit !== undefined) {
        sql += " limit ?";
        params.push(range.limit);
      }
    }
    const found = (await rows<MessageRow>(this.#pool, sql, params)).map(fromRow);
    if (found.length === 0) {
      const [exists] = await rows(this.#pool, "select 1 from sessions where id = ?", [sessionId]);
      return exists ? [] : null;
    }
    return "last" in range ? found.reverse() : found;
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
      await insertMessages(db, record.session_id, messages, 0);
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
