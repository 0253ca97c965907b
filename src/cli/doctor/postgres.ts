// `agentix doctor` on a Postgres store (a server or PGlite), one schema. The database keeps most invariants itself
// (foreign keys, the unique (session_id, position) index), so the checks are what it cannot keep: every migration
// applied and the constraints in place; per session, `message_count` equal to its rows, positions 0..n-1,
// `updated_at` not older than its newest message, `cwd` equal to `metadata.cwd`, `key_seq` not behind its keys; and
// rows whose session is gone (possible only with the foreign keys off, e.g. a restore with
// session_replication_role = replica). Read only unless `repair`: without it, nothing is created or changed.
import { readFileSync } from "node:fs";
import { cwdOf } from "../../core/records.js";
import type { JsonObject } from "../../core/types.js";
import type { Finding } from "./report.js";

/** What the checks need of a connection: one statement with `$n` parameters, its rows. */
export interface PgQuery {
  query(text: string, params?: unknown[]): Promise<Record<string, unknown>[]>;
}

/** Where `--repair` moves rows whose session is gone: one row each, as its JSON, with the table it came from. */
export const QUARANTINE_TABLE = "agentix_quarantine";
/** Sessions checked per query (keyset pages by id), and distinct session ids looked up per orphan query. */
const PAGE = 200;

const quote = (identifier: string) => `"${identifier.replaceAll('"', '""')}"`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The newest migration this release ships (migrations/postgres/meta/_journal.json). */
function newestMigration(): { when: number; tag: string } {
  const url = new URL("../../../migrations/postgres/meta/_journal.json", import.meta.url);
  const journal = JSON.parse(readFileSync(url, "utf8")) as { entries: Array<{ when: number; tag: string }> };
  return journal.entries.at(-1) as { when: number; tag: string };
}

/** Checks (and with `repair`, repairs) the agentix tables in `schema`. */
export async function checkPostgresStore(db: PgQuery, schema: string, repair: boolean): Promise<Finding[]> {
  const findings: Finding[] = [];
  const found = async (where: string, problem: string, fix: () => Promise<string>) => {
    findings.push({ where, problem, repaired: repair ? await fix() : undefined });
  };
  const s = quote(schema);
  const t = (name: string) => `${s}.${quote(name)}`;

  // Migrations first: on a schema without every migration the other checks would read columns that are not there.
  const [present] = await db.query(
    `select to_regclass(format('%I.%I', $1::text, 'sessions')) is not null as sessions,
            to_regclass(format('%I.%I', $1::text, '__agentix_migrations')) is not null as journal`,
    [schema],
  );
  const newest = newestMigration();
  const migrate = "run `agentix migrate` (doctor never migrates)";
  if (present?.sessions !== true || present.journal !== true) {
    findings.push({ where: `schema ${schema}`, problem: `no agentix tables: ${migrate}`, repaired: undefined });
    return findings;
  }
  const [journal] = await db.query(
    `select coalesce(max(created_at), 0)::text as newest from ${t("__agentix_migrations")}`,
  );
  if (Number(journal?.newest) < newest.when) {
    findings.push({
      where: `schema ${schema}`,
      problem: `migrations pending (this release's newest is ${newest.tag}): ${migrate}`,
      repaired: undefined,
    });
    return findings;
  }
  const constraints = await db.query(
    `select c.conname as name from pg_constraint c join pg_namespace n on n.oid = c.connamespace
      where n.nspname = $1 and c.contype = 'f' and c.convalidated
     union all
     select i.relname from pg_index x join pg_class i on i.oid = x.indexrelid join pg_namespace n on n.oid = i.relnamespace
      where n.nspname = $1 and x.indisvalid and x.indisunique`,
    [schema],
  );
  const names = new Set(constraints.map((row) => String(row.name)));
  for (const name of [
    "messages_session_id_sessions_id_fk",
    "idempotency_keys_session_id_sessions_id_fk",
    "messages_session_idx",
    "idempotency_keys_pkey",
  ]) {
    if (!names.has(name)) {
      findings.push({
        where: `schema ${schema}`,
        problem: `constraint or unique index ${name} missing or not valid (rows may lose their session or collide)`,
        repaired: undefined,
      });
    }
  }

  // Each session against its rows, a page of sessions per query.
  let after = "00000000-0000-0000-0000-000000000000";
  for (;;) {
    const page = await db.query(
      `select s.id::text as id, s.message_count as count, s.metadata, s.cwd, m.n, m.dense,
              s.updated_at < m.newest as stale, m.newest::text as newest, s.key_seq < k.seq as keys_behind,
              s.key_seq as key_seq, k.seq
         from ${t("sessions")} s
         cross join lateral (
           select count(*)::int as n, max(created_at) as newest,
                  coalesce(min(position) = 0 and max(position) = count(*) - 1
                           and count(distinct position) = count(*), true) as dense
             from ${t("messages")} where session_id = s.id) m
         cross join lateral (select max(seq) as seq from ${t("idempotency_keys")} where session_id = s.id) k
        where s.id > $1::uuid order by s.id limit ${PAGE}`,
      [after],
    );
    for (const row of page) {
      const id = String(row.id);
      const where = `session ${id}`;
      if (row.dense !== true) {
        await found(where, `positions of its ${row.n} messages are not 0..${Number(row.n) - 1}`, async () => {
          await renumber(db, t, id);
          return "renumbered 0..n-1 in their order, message_count set";
        });
      } else if (row.count !== row.n) {
        await found(where, `message_count ${row.count}, but ${row.n} messages`, async () => {
          await locked(db, t, id, [
            `update ${t("sessions")} set message_count = (select count(*) from ${t("messages")} where session_id = $id)
              where id = $id`,
          ]);
          return `message_count set to the rows' count`;
        });
      }
      if (row.stale === true) {
        await found(where, `updated_at older than its newest message (${row.newest})`, async () => {
          await locked(db, t, id, [
            `update ${t("sessions")} s set updated_at = m.newest
               from (select max(created_at) as newest from ${t("messages")} where session_id = $id) m
              where s.id = $id and s.updated_at < m.newest`,
          ]);
          return "updated_at set to the newest message's time";
        });
      }
      if (row.keys_behind === true) {
        await found(where, `key_seq ${row.key_seq} behind its newest idempotency key (${row.seq})`, async () => {
          await locked(db, t, id, [
            `update ${t("sessions")} set key_seq = greatest(key_seq,
               (select max(seq) from ${t("idempotency_keys")} where session_id = $id)) where id = $id`,
          ]);
          return "key_seq set to the newest key's";
        });
      }
      const metadata = row.metadata === null ? null : parseJson(String(row.metadata));
      if (metadata === undefined) {
        findings.push({ where, problem: "metadata is not a JSON object or null", repaired: undefined });
      } else if (cwdOf(metadata) !== row.cwd) {
        const cwd = cwdOf(metadata);
        await found(where, `cwd column ${JSON.stringify(row.cwd)}, metadata.cwd ${JSON.stringify(cwd)}`, async () => {
          // Only while the metadata is still the one read: a concurrent update sets both itself.
          await db.query(`update ${t("sessions")} set cwd = $2 where id = $1 and metadata is not distinct from $3`, [
            id,
            cwd,
            row.metadata,
          ]);
          return "cwd set from metadata.cwd";
        });
      }
    }
    if (page.length < PAGE) break;
    after = String(page.at(-1)?.id);
  }

  // Rows whose session is gone: the distinct session ids of each table, walked along its index a page at a time.
  for (const table of ["messages", "idempotency_keys"]) {
    let from = "00000000-0000-0000-0000-000000000000";
    for (;;) {
      const ids = await db.query(
        `with recursive d(id, k) as (
           (select session_id, 1 from ${t(table)} where session_id > $1::uuid order by session_id limit 1)
           union all
           select (select session_id from ${t(table)} where session_id > d.id order by session_id limit 1), d.k + 1
             from d where d.id is not null and d.k < ${PAGE})
         select o.id::text as id, o.orphan,
                case when o.orphan then (select count(*)::int from ${t(table)} x where x.session_id = o.id) end as n
           from (select d.id, not exists (select from ${t("sessions")} s where s.id = d.id) as orphan
                   from d where d.id is not null) o
          order by o.id`,
        [from],
      );
      for (const row of ids.filter((r) => r.orphan === true)) {
        const id = String(row.id);
        const what = table === "messages" ? "messages" : "idempotency keys";
        await found(`session ${id}`, `${row.n} ${what} without their session (table ${table})`, async () => {
          const moved = await quarantine(db, t, table, id);
          return `${moved} rows moved to ${schema}.${QUARANTINE_TABLE}`;
        });
      }
      if (ids.length < PAGE) break;
      from = String(ids.at(-1)?.id);
    }
  }
  return findings;
}

/** The metadata as stored: a JSON object or null; `undefined` if it is neither. */
function parseJson(text: string): JsonObject | null | undefined {
  try {
    const value = JSON.parse(text) as unknown;
    return value === null || (typeof value === "object" && !Array.isArray(value))
      ? (value as JsonObject | null)
      : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Runs `statements` (`$id`: the session id) in one DO block after taking the session row's lock, which every write
 * of the session takes too: each statement then reads the session as no writer is changing it (READ COMMITTED: a
 * statement inside the block sees what committed before it started).
 */
async function locked(db: PgQuery, t: (name: string) => string, id: string, statements: string[]): Promise<void> {
  if (!UUID.test(id)) throw new Error(`not a session id: ${id}`);
  const body = statements.map((statement) => `${statement.replaceAll("$id", `'${id}'::uuid`)};`).join("\n");
  await db.query(`do $agentix$ begin
    perform 1 from ${t("sessions")} where id = '${id}'::uuid for update;
    ${body}
  end $agentix$`);
}

/**
 * Numbers a session's messages 0..n-1 in their present order (position, then id) and sets its message_count, under
 * the session row's lock (appends assign positions under it). Two passes, through negative positions, as the unique
 * (session_id, position) index is checked row by row.
 */
async function renumber(db: PgQuery, t: (name: string) => string, id: string): Promise<void> {
  await locked(db, t, id, [
    `update ${t("messages")} m set position = -1 - n.rn
       from (select id, row_number() over (order by position, id) - 1 as rn from ${t("messages")}
              where session_id = $id) n
      where m.id = n.id`,
    `update ${t("messages")} set position = -1 - position where session_id = $id`,
    `update ${t("sessions")} set message_count = (select count(*) from ${t("messages")} where session_id = $id)
      where id = $id`,
  ]);
}

/** Moves the rows of `table` whose session `id` is gone into the quarantine table (made on first use); how many. */
async function quarantine(db: PgQuery, t: (name: string) => string, table: string, id: string): Promise<number> {
  const q = t(QUARANTINE_TABLE);
  await db.query(
    `create table if not exists ${q} (id bigint generated always as identity primary key,
       quarantined_at timestamptz not null default now(), from_table text not null, session_id uuid not null,
       row text not null)`,
  );
  const [moved] = await db.query(
    `with moved as (delete from ${t(table)} x where x.session_id = $1
                      and not exists (select from ${t("sessions")} s where s.id = $1) returning x.*),
          kept as (insert into ${q} (from_table, session_id, row)
                   select $2, moved.session_id, row_to_json(moved)::text from moved returning 1)
     select count(*)::int as n from kept`,
    [id, table],
  );
  return Number(moved?.n ?? 0);
}
