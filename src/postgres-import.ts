/**
 * Streamed imports into Postgres (`importSession` given an iterable): the client holds one chunk at a time.
 *
 * Each chunk goes in one statement into `import_stages` (src/schema/pg.ts), rows keyed by (stage, position) under
 * the import's random stage id, with no foreign key: the session row does not exist yet, and no read ever looks at
 * that table. Publishing is ONE statement that deletes the stage's rows (RETURNING them), inserts the session row
 * ON CONFLICT DO NOTHING, and inserts the messages only when that row was inserted: a create or import of the same
 * id racing it never makes a mixed session, and the staging rows go in every case. No connection is held between
 * the calls and no transaction stays open, so that imports work behind a transaction pooler; every statement goes
 * through the backend's `#run` (prepared once, serialization failures run again).
 *
 * A crashed import leaves its rows: every `begin` drops rows staged over a day ago (by `import_stages_staged_idx`).
 * An import still running after a day has lost its first chunks then, and its publish fails (nothing written). A
 * chunk sent again after a dropped connection lands on the same positions, and is skipped (ON CONFLICT DO NOTHING).
 * Internal to `agentix/postgres`.
 * @module
 */
import { type SQL, type SQLWrapper, sql } from "drizzle-orm";
import { AgentixStorageError } from "./core/errors.js";
import type { MessageRecord, StagedImport } from "./core/types.js";
import { sessionValues } from "./postgres-rows.js";
import type { PgTables } from "./schema/pg.js";

const p = sql.placeholder;

/** How old staged rows are when a later import drops them as a crashed import's. */
const STAGE_EXPIRY = "1 day";

/** The backend's statement runner (its `#run`): a prepared statement per `key`, rendered once by `build`. */
export type Run = <R>(key: string, build: () => SQLWrapper, values: Record<string, unknown>) => Promise<R[]>;

/** Drops expired staging, and tells whether the id is free: one row, `[free]`. Placeholders: `id`. */
export function beginImport(t: PgTables): SQL {
  const st = t.importStages;
  return sql`
    with expired as (
      delete from ${st} where ${st.stagedAt} < now() - interval ${sql.raw(`'${STAGE_EXPIRY}'`)}
    )
    select not exists (select from ${t.sessions} where ${t.sessions.id} = ${p("id")})`;
}

/**
 * Stages one chunk at positions `offset …`, unless the id is taken meanwhile: one row, `[free]`. The messages
 * travel as one JSON text parameter, `[[role, content, timestamp]]`, as in an import's insert.
 * Placeholders: `id`, `stage`, `offset`, `batch`.
 */
export function stageMessages(t: PgTables): SQL {
  const st = t.importStages;
  return sql`
    with taken as (
      select exists (select from ${t.sessions} where ${t.sessions.id} = ${p("id")}) as taken
    ), staged as (
      insert into ${st} (${sql.identifier(st.stage.name)}, ${sql.identifier(st.position.name)},
                         ${sql.identifier(st.role.name)}, ${sql.identifier(st.content.name)},
                         ${sql.identifier(st.createdAt.name)})
      select ${p("stage")}::uuid, ${p("offset")}::int + m.ordinality - 1, m.value->>0, m.value->>1,
             (m.value->>2)::timestamptz
      from json_array_elements(${p("batch")}::text::json) with ordinality m
      where not (select taken from taken)
      on conflict do nothing
    )
    select not taken from taken`;
}

/**
 * Publishes a stage: one row, `[whole, published]`. `whole` says whether the staged rows are exactly positions
 * 0 … length-1 (else nothing is written: staging expired); `published` whether the session was inserted (not when
 * the id was taken). The stage's rows are deleted in every case. Data-modifying CTEs run once each, whatever reads
 * them. Placeholders: `stage`, `length`, `id`, `agent`, `cwd`, `metadata`, `createdAt`, `updatedAt`.
 */
export function publishImport(t: PgTables): SQL {
  const st = t.importStages;
  const s = t.sessions;
  const m = t.messages;
  const col = (c: { name: string }) => sql.identifier(c.name);
  return sql`
    with staged as (
      delete from ${st} where ${st.stage} = ${p("stage")}::uuid
      returning ${col(st.position)} as position, ${col(st.role)} as role, ${col(st.content)} as content,
                ${col(st.createdAt)} as created_at
    ), whole as (
      select count(*) = ${p("length")}::int and coalesce(max(position), -1) = ${p("length")}::int - 1 as whole
      from staged
    ), session as (
      insert into ${s} (${col(s.id)}, ${col(s.agentId)}, ${col(s.cwd)}, ${col(s.metadata)}, ${col(s.createdAt)},
                        ${col(s.updatedAt)}, ${col(s.messageCount)})
      select ${p("id")}::uuid, ${p("agent")}::text, ${p("cwd")}::text, ${p("metadata")}::text,
             ${p("createdAt")}::timestamptz, ${p("updatedAt")}::timestamptz, ${p("length")}::int
      from whole where whole.whole
      on conflict (${col(s.id)}) do nothing
      returning ${col(s.id)} as id
    ), imported as (
      insert into ${m} (${col(m.sessionId)}, ${col(m.position)}, ${col(m.role)}, ${col(m.content)},
                        ${col(m.createdAt)})
      select session.id, staged.position, staged.role, staged.content, staged.created_at
      from session, staged order by staged.position
    )
    select (select whole from whole), exists (select from session)`;
}

/** Drops a stage's rows. Placeholders: `stage`. */
export function discardImport(t: PgTables): SQL {
  const st = t.importStages;
  return sql`delete from ${st} where ${st.stage} = ${p("stage")}::uuid`;
}

/** The four import primitives of one backend, on its statement runner and tables. */
export class PostgresImports {
  constructor(
    readonly run: Run,
    readonly tables: PgTables,
  ) {}

  async begin(staged: StagedImport): Promise<boolean> {
    const [row] = await this.run<[boolean]>("import:begin", () => beginImport(this.tables), {
      id: staged.record.session_id,
    });
    return row?.[0] === true;
  }

  async stage(staged: StagedImport, offset: number, messages: MessageRecord[]): Promise<boolean> {
    const batch = JSON.stringify(messages.map((m) => [m.role, JSON.stringify(m.content), m.timestamp]));
    const [row] = await this.run<[boolean]>("import:stage", () => stageMessages(this.tables), {
      id: staged.record.session_id,
      stage: staged.stage,
      offset,
      batch,
    });
    return row?.[0] === true;
  }

  async publish(staged: StagedImport, length: number): Promise<boolean> {
    const [row] = await this.run<[boolean, boolean]>("import:publish", () => publishImport(this.tables), {
      ...sessionValues(staged.record),
      id: staged.record.session_id,
      stage: staged.stage,
      length,
    });
    if (row?.[0] !== true) {
      throw new AgentixStorageError(
        `PostgresStorageBackend: the staged messages of session ${staged.record.session_id} are not those sent ` +
          `(staging expired after ${STAGE_EXPIRY}): nothing was published, import again`,
      );
    }
    return row[1] === true;
  }

  async discard(staged: StagedImport): Promise<void> {
    await this.run("import:discard", () => discardImport(this.tables), { stage: staged.stage });
  }
}
