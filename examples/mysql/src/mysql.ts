import { fileURLToPath } from "node:url";
import { and, eq, type SQL, sql } from "drizzle-orm";
import { drizzle, type MySql2Database } from "drizzle-orm/mysql2";
import { migrate } from "drizzle-orm/mysql2/migrator";
import mysql, { type Pool, type RowDataPacket } from "mysql2/promise";
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
import { messages as messageTable, sessions } from "./schema.js";
import {
  type Db,
  datetime,
  driverError,
  errno,
  fromRow,
  insertMessages,
  insertRow,
  iso,
  json,
  listSessions,
  messageFields,
  messageRange,
  raisedTo,
  remember,
  rememberedWrite,
  run,
  scanSessions,
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

/** A column's bare name (`\`message_count\``), for column lists. */
const name = (column: { name: string }): SQL => sql`${sql.identifier(column.name)}`;

/**
 * Sessions in MySQL or MariaDB through Drizzle and mysql2: the design of the Postgres backend in a dialect without
 * RETURNING or data-modifying CTEs. The tables are schema.ts's and every statement is built with Drizzle from them
 * (statements.ts). An append, an edit, a metadata update and a fork are short transactions instead of one
 * statement; everything else is one statement (two to open an existing session or to load a page that holds no
 * messages). The `...Sync` methods run on a worker thread, on a twin built from the same `url`.
 */
export class MySqlStorageBackend extends StorageBackend {
  readonly #pool: Pool;
  readonly #db: MySql2Database & { $client: Pool };
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
    this.#db = drizzle({ client: this.#pool });
  }

  protected async insertSession(record: SessionRecord): Promise<SessionRecord | null> {
    await this.#ready();
    // An INSERT, and a read of the session holding the id only when the INSERT is refused (ER_DUP_ENTRY). A refused
    // INSERT writes nothing, so the call takes effect at that read, which returns the session as it is then (a
    // delete in between: insert again). No transaction: creating is one round trip. Not INSERT IGNORE: it turns
    // other errors into warnings. Not ON DUPLICATE KEY UPDATE: its affectedRows depends on CLIENT_FOUND_ROWS.
    for (;;) {
      try {
        await insertRow(this.#db, record, 0);
        return null;
      } catch (error) {
        if (errno(error) !== ER_DUP_ENTRY) throw error;
      }
      const existing = await sessionById(this.#db, record.session_id);
      if (existing) return existing;
    }
  }

  protected async readSession(sessionId: string): Promise<SessionRecord | null> {
    await this.#ready();
    return sessionById(this.#db, sessionId);
  }

  protected async querySessions(agentId: string, query: SessionQuery): Promise<SessionRecord[]> {
    await this.#ready();
    const { cwd, before, limit } = query;
    // One statement per combination of filters, each served by its index (a backward range scan, no sort).
    const cursor = before && { updatedAt: datetime(before.updated_at), id: before.session_id };
    return (await listSessions(this.#db, agentId, { cwd, before: cursor, limit })).map(toSession);
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
      const set = { metadata: json(metadata), cwd: cwdOf(metadata), updatedAt: raisedTo(at) };
      await run(db.update(sessions).set(set).where(eq(sessions.id, sessionId)));
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
      // LOCK IN SHARE MODE in MariaDB's words (Drizzle's `.for("share")` writes MySQL 8's FOR SHARE).
      const [[source]] = (await run(
        db.execute(
          sql`select ${sessions.messageCount} as n from ${sessions} where ${sessions.id} = ${sessionId} lock in share mode`,
        ),
      )) as unknown as [Array<{ n: number }>];
      if (!source) return { status: "not-found" };
      const length = target.length ?? source.n;
      if (length > source.n) {
        // Nothing is written either way; a taken id is the answer first, as for a fork in range.
        const [taken] = await run(db.select({ one: sql`1` }).from(sessions).where(eq(sessions.id, target.session_id)));
        return taken ? { status: "exists" } : { status: "out-of-range", length: source.n };
      }
      // The copied cwd and metadata, or the caller's (cwd_hash follows cwd, a generated column).
      const [cwd, metadata] =
        target.metadata === undefined
          ? [name(sessions.cwd), name(sessions.metadata)]
          : [sql`${cwdOf(target.metadata)}`, sql`${json(target.metadata)}`];
      const s = sessions;
      try {
        await run(
          db.execute(sql`insert into ${s} (${name(s.id)}, ${name(s.agentId)}, ${name(s.cwd)}, ${name(s.metadata)},
                           ${name(s.createdAt)}, ${name(s.updatedAt)}, ${name(s.messageCount)})
            select ${target.session_id}, ${name(s.agentId)}, ${cwd}, ${metadata}, ${at}, ${at}, ${length}
            from ${s} where ${name(s.id)} = ${sessionId}`),
        );
      } catch (error) {
        // A refused statement writes nothing, and leaves the transaction open: the COMMIT commits nothing.
        if (errno(error) === ER_DUP_ENTRY) return { status: "exists" };
        throw error;
      }
      const m = messageTable;
      const columns = [m.position, m.role, m.content, m.createdAt].map(name);
      await run(
        db.execute(sql`insert into ${m} (${name(m.sessionId)}, ${sql.join(columns, sql`, `)})
          select ${target.session_id}, ${sql.join(columns, sql`, `)} from ${m}
          where ${name(m.sessionId)} = ${sessionId} and ${name(m.position)} < ${length}`),
      );
      return { status: "copied" };
    });
  }

  protected async removeSession(sessionId: string): Promise<void> {
    await this.#ready();
    // The messages go with it: ON DELETE CASCADE.
    await run(this.#db.delete(sessions).where(eq(sessions.id, sessionId)));
  }

  protected async appendMessages(sessionId: string, messages: MessageRecord[]): Promise<number | null> {
    await this.#ready();
    // The UPDATE locks the session row until COMMIT, so batches to one session run one after the other: each takes
    // the next positions and a time no earlier than the previous one (GREATEST clamps a clock that is behind).
    // The SELECT reads that time and the new count; no row, nothing inserted (the UPDATE's affectedRows cannot
    // tell: it counts rows found or rows changed, depending on the CLIENT_FOUND_ROWS flag). The transaction makes
    // the batch all or nothing, also when it takes several INSERTs.
    return this.#transaction(undefined, async (db) => {
      const set = {
        updatedAt: raisedTo((messages[0] as MessageRecord).timestamp),
        messageCount: sql`${sessions.messageCount} + ${messages.length}`,
      };
      await run(db.update(sessions).set(set).where(eq(sessions.id, sessionId)));
      const [row] = await run(
        db
          .select({ at: iso(sessions.updatedAt), count: sessions.messageCount })
          .from(sessions)
          .where(eq(sessions.id, sessionId)),
      );
      if (!row) return null;
      await insertMessages(db, sessionId, messages, row.count - messages.length, datetime(row.at));
      return row.count;
    });
  }

  protected async editMessages(sessionId: string, edit: MessageEdit): Promise<EditOutcome> {
    await this.#ready();
    const { idempotency, expectedLength, from, pop, messages, metadata } = edit;
    // SELECT ... FOR UPDATE locks the session row until COMMIT: appends, forks, deletes and other edits of the
    // session wait, so the checks below hold until the writes are committed. READ COMMITTED: every later read
    // sees what the writers before committed, and the DELETE locks the rows it drops, not the gaps after them.
    return this.#transaction("read committed", async (db): Promise<EditOutcome> => {
      const [row] = await run(
        db
          .select({ length: sessions.messageCount, updatedAt: iso(sessions.updatedAt) })
          .from(sessions)
          .where(eq(sessions.id, sessionId))
          .for("update"),
      );
      if (!row) return { status: "not-found" };
      const { length, updatedAt } = row;
      const remembered = idempotency && (await rememberedWrite(db, sessionId, idempotency.key));
      if (remembered) return { status: "replayed", ...remembered };
      if (expectedLength !== undefined && expectedLength !== length) return { status: "conflict", length };
      if (from !== undefined && from > length) return { status: "out-of-range", length };
      const keep = pop ? Math.max(0, length - 1) : (from ?? length);
      let popped: MessageRecord | null = null;
      if (keep < length) {
        const m = messageTable;
        if (pop) {
          const last = db
            .select(messageFields)
            .from(m)
            .where(and(eq(m.sessionId, sessionId), eq(m.position, keep)));
          popped = (await run(last)).map(fromRow)[0] ?? null;
        }
        await run(db.delete(m).where(and(eq(m.sessionId, sessionId), sql`${m.position} >= ${keep}`)));
      }
      const written = keep + messages.length;
      // With metadata, a written edit moves updated_at even when the list stays as it was.
      if (keep < length || messages.length > 0 || metadata !== undefined) {
        // The later of the two (ISO 8601 strings of one format compare as their times): updated_at never moves
        // back, and appended messages take it when the clock is behind.
        // biome-ignore lint/complexity/useMathMinMax: strings, which Math.max would turn into NaN
        const at = datetime(edit.at > updatedAt ? edit.at : updatedAt);
        await insertMessages(db, sessionId, messages, keep, at);
        // The metadata and cwd as replaceMetadata sets them (cwd_hash follows cwd, a generated column).
        const replaced = metadata === undefined ? {} : { metadata: json(metadata), cwd: cwdOf(metadata) };
        const set = { messageCount: written, updatedAt: at, ...replaced };
        await run(db.update(sessions).set(set).where(eq(sessions.id, sessionId)));
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
    const [row] = await run(
      this.#db.select({ n: sessions.messageCount }).from(sessions).where(eq(sessions.id, sessionId)),
    );
    return row ? row.n : null;
  }

  protected async readMessages(sessionId: string, range: MessageRange): Promise<MessageRecord[] | null> {
    await this.#ready();
    // Along the (session_id, position) index: a range of positions, or backwards for `last` (then reversed here).
    // Not joined with sessions to tell "no session" from "no messages" in one statement as in Postgres: MariaDB
    // sorts the joined rows with a filesort.
    const found = (await messageRange(this.#db, sessionId, range)).map(fromRow);
    if (found.length === 0) {
      const [exists] = await run(this.#db.select({ one: sql`1` }).from(sessions).where(eq(sessions.id, sessionId)));
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
    return (await scanSessions(this.#db, after, limit, agentId)).map(toSession);
  }

  protected override async insertImported(record: SessionRecord, messages: MessageRecord[]): Promise<boolean> {
    await this.#ready();
    return this.#transaction(undefined, async (db) => {
      try {
        await insertRow(db, record, messages.length);
      } catch (error) {
        if (errno(error) === ER_DUP_ENTRY) return false;
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

  /** Runs `work` in a transaction on one connection of the pool, through a Drizzle database on that connection. */
  async #transaction<T>(isolation: "read committed" | undefined, work: (db: Db) => Promise<T>): Promise<T> {
    const connection = await this.#pool.getConnection();
    try {
      // Without SESSION, SET TRANSACTION applies to the next transaction only.
      if (isolation) await connection.query(`set transaction isolation level ${isolation}`);
      await connection.beginTransaction();
      const result = await work(drizzle({ client: connection }));
      await connection.commit();
      return result;
    } catch (error) {
      await connection.rollback().catch(() => {});
      throw driverError(error);
    } finally {
      connection.release();
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
