// The Postgres floor: the least work that still keeps the contract's durability and order on the backend's tables,
// written plainly against postgres.js (prepared statements, rows as arrays). An append is one statement (the
// session row's count and updated_at raised, the message inserted at the count), a fork one statement, a listing
// one indexed select, a read one select along (session_id, position) with a second look only when it is empty.
import type { Sql } from "postgres";
import type { MessageRecord, Role, SessionCursor, SessionRecord } from "../../src/core/types.js";
import { statements as mirrorStatements, postgresJsDriver, RawPostgres } from "./postgres.js";

const iso = (column: string) => `to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`;

type Row = string[];

function statements(s: string) {
  const columns = `id, agent_id, ${iso("created_at")}, ${iso("updated_at")}, metadata`;
  const order = "order by updated_at desc nulls last, id desc nulls last";
  const messages = `select role, content, ${iso("created_at")} from ${s}.messages where session_id = $1`;
  return {
    load: `${messages} order by position`,
    loadLast: `${messages} order by position desc limit $2`,
    loadPage: `${messages} and position >= $2 and position < $3 order by position`,
    exists: `select 1 from ${s}.sessions where id = $1`,
    list: `select ${columns} from ${s}.sessions where agent_id = $1 ${order} limit $2`,
    listBefore: `select ${columns} from ${s}.sessions where agent_id = $1 and (updated_at, id) < ($2, $3) ${order} limit $4`,
  };
}

/**
 * The mirror's append, batch and fork statements are already one plain statement each, the least there is; the
 * floor reads without the mirror's lateral join (which tells "no session" from "no messages" in the same statement).
 */
export class FloorPostgres extends RawPostgres {
  readonly #sql: Sql;
  readonly #q: ReturnType<typeof statements>;

  constructor(sql: Sql, schema: string) {
    super(postgresJsDriver(sql, mirrorStatements(`"${schema}"`)));
    this.#sql = sql;
    this.#q = statements(`"${schema}"`);
  }

  async #rows(query: string, params: Array<string | number>): Promise<Row[]> {
    return (await this.#sql.unsafe(query, params, { prepare: true }).values()) as unknown as Row[];
  }

  async #messages(sessionId: string, query: string, params: Array<string | number>): Promise<MessageRecord[]> {
    const rows = await this.#rows(query, params);
    if (rows.length === 0 && (await this.#rows(this.#q.exists, [sessionId])).length === 0) {
      throw new Error(`session not found: ${sessionId}`);
    }
    return rows.map(([role, content, timestamp]) => ({
      role: role as Role,
      content: JSON.parse(content as string),
      timestamp: timestamp as string,
    }));
  }

  override async loadMessages(sessionId: string, last?: number): Promise<MessageRecord[]> {
    if (last === undefined) return this.#messages(sessionId, this.#q.load, [sessionId]);
    return (await this.#messages(sessionId, this.#q.loadLast, [sessionId, last])).reverse();
  }

  override loadPage(sessionId: string, offset: number, limit: number): Promise<MessageRecord[]> {
    return this.#messages(sessionId, this.#q.loadPage, [sessionId, offset, offset + limit]);
  }

  override async listSessions(agentId: string, limit: number, before?: SessionCursor): Promise<SessionRecord[]> {
    const rows = before
      ? await this.#rows(this.#q.listBefore, [agentId, before.updated_at, before.session_id, limit])
      : await this.#rows(this.#q.list, [agentId, limit]);
    return rows.map(([session_id, agent_id, created_at, updated_at, metadata]) => ({
      session_id: session_id as string,
      agent_id: agent_id as string,
      created_at: created_at as string,
      updated_at: updated_at as string,
      metadata: metadata === null ? null : JSON.parse(metadata as string),
    }));
  }
}
