// `agentix doctor` on Postgres (postgres.js, node-postgres, PGlite) and Redis (standalone and cluster mode): each
// store damaged in each way the layout allows by raw SQL or raw commands, checked, repaired, checked again (clean),
// and the sessions read back through the public API.
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { Cluster, Redis } from "ioredis";
import { afterAll, describe, expect, inject, it } from "vitest";
import { checkPostgresStore, QUARANTINE_TABLE } from "../src/cli/doctor/postgres.js";
import { checkRedisStore, globEscape } from "../src/cli/doctor/redis.js";
import type { Finding } from "../src/cli/doctor/report.js";
import { PostgresStorageBackend } from "../src/postgres.js";
import { RedisStorageBackend } from "../src/redis.js";
import { pgDrivers } from "./support/pg-drivers.js";

const postgresUrl = inject("postgresUrl");
const redisUrl = inject("redisUrl");
const clusterUrl = inject("redisClusterUrl");
const CLI = fileURLToPath(new URL("../src/cli/index.ts", import.meta.url));
const root = mkdtempSync(join(tmpdir(), "agentix-doctor-servers-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** Every key of one node that matches `pattern`. */
async function scanKeys(node: Redis, pattern: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = "0";
  do {
    const [next, page] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
    cursor = next;
    keys.push(...page);
  } while (cursor !== "0");
  return keys;
}

const text = (findings: Finding[]) => findings.map((f) => `${f.where}: ${f.problem}`).join("\n");
const cli = (storage: string, ...args: string[]) =>
  promisify(execFile)(process.execPath, ["--import", "tsx", CLI, "--storage", storage, "doctor", ...args]).then(
    (r) => ({ code: 0, stdout: r.stdout }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout + e.stderr }),
  );

describe.each(pgDrivers(postgresUrl))("agentix doctor on Postgres through $name", (driver) => {
  it("finds each kind of damage, repairs it (orphan rows quarantined), and finds nothing the second time", async () => {
    const conn = await driver.open(postgresUrl);
    const schema = `agentix_doctor_${randomUUID().slice(0, 8)}`;
    const b = new PostgresStorageBackend({ ...conn.options, schema } as ConstructorParameters<
      typeof PostgresStorageBackend
    >[0]);
    const q = conn.admin.query;
    const t = (name: string) => `"${schema}"."${name}"`;
    try {
      const ids: string[] = [];
      for (let i = 0; i < 7; i++) {
        const id = await b.createSession("a", i === 3 ? { cwd: "/w" } : { i });
        await b.saveMessages(id, [
          { role: "user", content: `q${i}` },
          { role: "assistant", content: `a${i}` },
          { role: "user", content: `r${i}` },
        ]);
        ids.push(id);
      }
      const [count, gap, stale, cwd, keys, orphan, fine] = ids as [
        string,
        string,
        string,
        string,
        string,
        string,
        string,
      ];
      await b.saveMessages(keys, [{ role: "user", content: "keyed" }], { idempotencyKey: "k1" });
      await b.saveMessages(orphan, [{ role: "user", content: "keyed" }], { idempotencyKey: "k1" });
      // Nothing is created by a check: a schema that does not exist is reported and stays absent.
      const missing = `${schema}_none`;
      expect(text(await checkPostgresStore(conn.admin, missing, false))).toContain(
        `schema ${missing}: no agentix tables`,
      );
      expect(await q("select 1 from pg_namespace where nspname = $1", [missing])).toEqual([]);
      expect(await checkPostgresStore(conn.admin, schema, false)).toEqual([]);

      await q(`update ${t("sessions")} set message_count = 9 where id = $1`, [count]);
      await q(`delete from ${t("messages")} where session_id = $1 and position = 1`, [gap]);
      await q(`update ${t("sessions")} set updated_at = updated_at - interval '1 hour' where id = $1`, [stale]);
      await q(`update ${t("sessions")} set cwd = '/elsewhere' where id = $1`, [cwd]);
      await q(`update ${t("sessions")} set key_seq = 0 where id = $1`, [keys]);
      // A restore without its foreign keys (replica role: no triggers) leaves rows whose session is gone.
      await conn.admin.exec(
        `set session_replication_role = replica; delete from ${t("sessions")} where id = '${orphan}';
         set session_replication_role = origin`,
      );

      const found = await checkPostgresStore(conn.admin, schema, false);
      const report = text(found);
      expect(report).toContain(`session ${count}: message_count 9, but 3 messages`);
      expect(report).toContain(`session ${gap}: positions of its 2 messages are not 0..1`);
      expect(report).toMatch(new RegExp(`session ${stale}: updated_at older than its newest message`));
      expect(report).toContain(`session ${cwd}: cwd column "/elsewhere", metadata.cwd "/w"`);
      expect(report).toContain(`session ${keys}: key_seq 0 behind its newest idempotency key (1)`);
      expect(report).toContain(`session ${orphan}: 4 messages without their session (table messages)`);
      expect(report).toContain(`session ${orphan}: 1 idempotency keys without their session (table idempotency_keys)`);
      expect(report).not.toContain(fine);
      expect(found).toHaveLength(7);
      expect(found.every((f) => f.repaired === undefined)).toBe(true);
      expect(await q("select to_regclass($1) as t", [`${schema}.${QUARANTINE_TABLE}`])).toEqual([{ t: null }]);

      const repaired = await checkPostgresStore(conn.admin, schema, true);
      expect(repaired.map((f) => f.problem)).toEqual(found.map((f) => f.problem));
      expect(repaired.every((f) => f.repaired !== undefined)).toBe(true);
      expect(await checkPostgresStore(conn.admin, schema, false)).toEqual([]);
      expect(await checkPostgresStore(conn.admin, schema, true)).toEqual([]);

      // Through the API: every session whole and writable.
      expect(await b.countMessages(count)).toBe(3);
      expect((await b.loadMessages(gap)).map((m) => m.content)).toEqual(["q1", "r1"]);
      await b.saveMessage(gap, "assistant", "after");
      expect((await b.loadMessages(gap, { offset: 2 })).map((m) => m.content)).toEqual(["after"]);
      const last = (await b.loadMessages(stale)).at(-1);
      expect((await b.getSession(stale))?.updated_at).toBe(last?.timestamp);
      expect((await b.listSessions("a", { cwd: "/w" })).map((s) => s.session_id)).toEqual([cwd]);
      await b.saveMessages(keys, [{ role: "user", content: "keyed 2" }], { idempotencyKey: "k2" });
      const retried = await b.saveMessages(keys, [{ role: "user", content: "keyed" }], { idempotencyKey: "k1" });
      expect(retried.length).toBe(4);
      expect(await b.countMessages(keys)).toBe(5);
      expect(await b.getSession(orphan)).toBeNull();
      // The orphan rows are kept aside, each as its JSON.
      const kept = await q(`select from_table, session_id::text as id, row from ${t(QUARANTINE_TABLE)} order by id`);
      expect(kept.map((r) => [r.from_table, r.id])).toEqual([
        ...Array.from({ length: 4 }, () => ["messages", orphan]),
        ["idempotency_keys", orphan],
      ]);
      const contents = kept
        .slice(0, 4)
        .map((r) => JSON.parse((JSON.parse(String(r.row)) as { content: string }).content));
      expect(contents.sort()).toEqual(["a5", "keyed", "q5", "r5"]);
    } finally {
      await b.close();
      await conn.admin.exec(`drop schema if exists "${schema}" cascade`);
      await conn.close();
    }
  }, 60_000);

  it("reports a missing constraint, and pending migrations (and stops there)", async () => {
    const conn = await driver.open(postgresUrl);
    const schema = `agentix_doctor_${randomUUID().slice(0, 8)}`;
    const b = new PostgresStorageBackend({ ...conn.options, schema } as ConstructorParameters<
      typeof PostgresStorageBackend
    >[0]);
    try {
      await b.migrate();
      await conn.admin.exec(`alter table "${schema}"."messages" drop constraint messages_session_id_sessions_id_fk`);
      const dropped = await checkPostgresStore(conn.admin, schema, true);
      expect(text(dropped)).toBe(
        `schema ${schema}: constraint or unique index messages_session_id_sessions_id_fk missing or not valid (rows may lose their session or collide)`,
      );
      expect(dropped[0]?.repaired).toBeUndefined(); // reported only
      await conn.admin.query(
        `delete from "${schema}"."__agentix_migrations" where created_at = (select max(created_at) from "${schema}"."__agentix_migrations")`,
      );
      expect(text(await checkPostgresStore(conn.admin, schema, true))).toMatch(
        new RegExp(`schema ${schema}: migrations pending .*agentix migrate`),
      );
    } finally {
      await b.close();
      await conn.admin.exec(`drop schema if exists "${schema}" cascade`);
      await conn.close();
    }
  }, 30_000);

  it("pages through a store larger than a page (keyset by id) and finds damage on the last page", async () => {
    const conn = await driver.open(postgresUrl);
    const schema = `agentix_doctor_${randomUUID().slice(0, 8)}`;
    const b = new PostgresStorageBackend({ ...conn.options, schema } as ConstructorParameters<
      typeof PostgresStorageBackend
    >[0]);
    const t = (name: string) => `"${schema}"."${name}"`;
    try {
      await b.migrate();
      // 450 sessions of one message each (more than two pages of 200), written as the backend writes them.
      await conn.admin.exec(`
        insert into ${t("sessions")} (id, agent_id, metadata, created_at, updated_at, message_count)
          select ('00000000-0000-7000-8000-' || lpad(i::text, 12, '0'))::uuid, 'bulk', 'null', now(), now(), 1
            from generate_series(1, 450) i;
        insert into ${t("messages")} (session_id, position, role, content, created_at)
          select id, 0, 'user', '"x"', created_at from ${t("sessions")};`);
      expect(await checkPostgresStore(conn.admin, schema, false)).toEqual([]);
      const last = "00000000-0000-7000-8000-000000000450";
      const before = "00000000-0000-7000-8000-000000000449";
      await conn.admin.query(`update ${t("sessions")} set message_count = 3 where id = $1`, [last]);
      await conn.admin.exec(
        `set session_replication_role = replica; delete from ${t("sessions")} where id = '${before}';
         set session_replication_role = origin`,
      );
      expect(text(await checkPostgresStore(conn.admin, schema, false)).split("\n")).toEqual([
        `session ${last}: message_count 3, but 1 messages`,
        `session ${before}: 1 messages without their session (table messages)`,
      ]);
      await checkPostgresStore(conn.admin, schema, true);
      expect(await checkPostgresStore(conn.admin, schema, false)).toEqual([]);
      expect(await b.countMessages(last)).toBe(1);
    } finally {
      await b.close();
      await conn.admin.exec(`drop schema if exists "${schema}" cascade`);
      await conn.close();
    }
  }, 60_000);
});

describe("agentix doctor --storage pglite:<dir>?schema=", () => {
  it("checks, repairs and exits 0 once clean, with exit code 1 while problems are left", async () => {
    const dir = mkdtempSync(join(root, "pglite-"));
    const url = `pglite:${dir}?schema=tenant`;
    const b = new PostgresStorageBackend({ url: `pglite:${dir}`, schema: "tenant" });
    const id = await b.createSession("a");
    await b.saveMessages(id, [
      { role: "user", content: "x" },
      { role: "user", content: "y" },
    ]);
    await b.close();
    const { PGlite } = await import("@electric-sql/pglite");
    const db = await PGlite.create(dir);
    await db.query(`update tenant.sessions set message_count = 5 where id = $1`, [id]);
    await db.close();
    const checked = await cli(url);
    expect(checked.code).toBe(1);
    expect(checked.stdout).toContain(`session ${id}: message_count 5, but 2 messages`);
    expect(checked.stdout).toContain("run with --repair");
    expect((await cli(url, "--repair")).code).toBe(0);
    expect(await cli(url)).toEqual({ code: 0, stdout: `Postgres schema tenant at pglite:${dir}: no problems found\n` });
    const again = new PostgresStorageBackend({ url: `pglite:${dir}`, schema: "tenant" });
    expect(await again.countMessages(id)).toBe(2);
    await again.close();
  }, 90_000);
});

describe.skipIf(!postgresUrl)("agentix doctor --storage postgres://", () => {
  it("never creates a schema, and names the schema it checked", async () => {
    const schema = `agentix_doctor_${randomUUID().slice(0, 8)}`;
    const url = `${postgresUrl as string}?schema=${schema}`;
    const checked = await cli(url);
    expect(checked.code).toBe(1);
    expect(checked.stdout).toContain(`schema ${schema}: no agentix tables: run \`agentix migrate\``);
    const b = new PostgresStorageBackend({ url: postgresUrl as string, schema });
    try {
      expect(await b.getSession(randomUUID())).toBeNull(); // the backend itself migrates on first use
      expect((await cli(url)).stdout).toContain(`Postgres schema ${schema} at`);
    } finally {
      await b.close();
      const postgres = (await import("postgres")).default;
      const sql = postgres(postgresUrl as string, { onnotice: () => {} });
      await sql.unsafe(`drop schema if exists "${schema}" cascade`);
      await sql.end();
    }
  }, 60_000);
});

it("globEscape makes SCAN MATCH patterns literal", () => {
  expect(globEscape("a*b?c[d]e\\f")).toBe("a\\*b\\?c\\[d\\]e\\\\f");
});

/** Damage every kind of key the layout has, as raw commands would; what to find afterwards. */
describe.each([
  { mode: "standalone", url: redisUrl },
  { mode: "cluster", url: clusterUrl },
])("agentix doctor on Redis ($mode)", ({ mode, url }) => {
  it.skipIf(!url)(
    "finds each kind of damage, repairs it (orphan messages renamed aside), clean the second time",
    async () => {
      const cluster = mode === "cluster";
      const prefix = `doctor-${randomUUID().slice(0, 8)}`;
      const raw: Redis | Cluster = cluster
        ? new Cluster(
            (url as string)
              .replace(/^redis\+cluster:\/\//, "")
              .split(",")
              .map((hp) => ({ host: hp.split(":")[0] as string, port: Number(hp.split(":")[1]) })),
          )
        : new Redis(url as string);
      const b = new RedisStorageBackend({ url: url as string, prefix });
      const k = (kind: string, id: string) => (cluster ? `${prefix}:${kind}:{${id}}` : `${prefix}:${kind}:${id}`);
      const agentKey = (kind: string, agent: string) =>
        cluster ? `${prefix}:${kind}:{${agent}}` : `${prefix}:${kind}:${agent}`;
      const cwdKey = (agent: string, cwd: string) =>
        cluster ? `${prefix}:cwd:{${agent}}:${cwd}` : `${prefix}:cwd:${agent.length}:${agent}:${cwd}`;
      try {
        const ids: string[] = [];
        for (let i = 0; i < 8; i++) {
          const id = await b.createSession("a", i === 4 ? { cwd: "/w" } : { i });
          await b.saveMessages(id, [
            { role: "user", content: `q${i}` },
            { role: "assistant", content: `a${i}` },
          ]);
          ids.push(id);
        }
        const [noEntry, lagging, orphan, stale, cwd, notInSet, notInIds, fine] = ids as string[] as [
          string,
          string,
          string,
          string,
          string,
          string,
          string,
          string,
        ];
        await b.saveMessages(orphan, [{ role: "user", content: "keyed" }], { idempotencyKey: "k1" });
        await b.scanSessions({ agentId: "a" }); // builds the agent's id set (standalone: lazily)
        expect(await checkRedisStore(raw, prefix, false)).toEqual([]);
        const orphanMessages = await raw.lrange(k("messages", orphan), 0, -1);
        const ghost = randomUUID();
        const tmp = cluster ? `${prefix}:tmp:{${ghost}}:${randomUUID()}` : `${prefix}:tmp:${ghost}:${randomUUID()}`;

        await raw.zrem(agentKey("index", "a"), noEntry);
        await raw.zadd(agentKey("index", "a"), 1, lagging);
        await raw.unlink(k("session", orphan)); // its messages, idempotency keys, cwd stay behind
        const older = new Date(Date.parse((await b.getSession(stale))?.updated_at as string) - 60_000).toISOString();
        await raw.hset(k("session", stale), "updated_at", older);
        if (cluster) await raw.unlink(k("sessioncwd", cwd));
        else await raw.hdel(`${prefix}:cwds`, cwd);
        await raw.zrem(cwdKey("a", "/w"), cwd);
        await raw.zadd(cwdKey("a", "/old"), 5, fine); // an entry under a cwd the session does not have
        await raw.zrem(`${prefix}:sessions`, notInSet);
        await raw.zrem(agentKey("ids", "a"), notInIds);
        await raw.zadd(agentKey("index", "a"), 7, ghost); // entries whose session never existed
        await raw.zadd(`${prefix}:sessions`, 0, ghost);
        if (cluster)
          await raw.set(k("sessioncwd", ghost), "/g"); // a cwd whose session never existed
        else await raw.hset(`${prefix}:cwds`, ghost, "/g");
        await raw.rpush(tmp, "a fork's chunk"); // a failed fork's temp key, without its expiry
        const opPattern = cluster ? `${prefix}:op:{${fine}}:*` : `${prefix}:op:*`;
        const nodes = cluster ? (raw as Cluster).nodes("master") : [raw as Redis];
        const ops = (await Promise.all(nodes.map((n) => scanKeys(n, opPattern)))).flat();
        const op = ops.find((key) => !key.endsWith(":edits")) as string;
        await raw.persist(op); // an op bitmap that lost its expiry
        const badMeta = randomUUID();
        await raw.hset(
          k("session", badMeta),
          "session_id",
          badMeta,
          "agent_id",
          "a",
          "created_at",
          older,
          "updated_at",
          older,
          "metadata",
          "{not json",
        );
        await raw.zadd(agentKey("index", "a"), Date.parse(older), badMeta);
        await raw.zadd(`${prefix}:sessions`, 0, badMeta);
        await raw.zadd(agentKey("ids", "a"), 0, badMeta);
        // Another tenant's damage is not this prefix's.
        await raw.zadd(`${prefix}x:index:${cluster ? "{a}" : "a"}`, 1, ghost);

        const found = await checkRedisStore(raw, prefix, false);
        const report = text(found);
        const expected = [
          `session ${noEntry}: no entry in the agent's index ${agentKey("index", "a")}`,
          `session ${lagging}: index entry's score 1 is not updated_at`,
          `session ${orphan}: 3 messages without their session hash (${k("messages", orphan)})`,
          `session ${orphan}: ${k("keys", orphan)} without its session hash`,
          `session ${orphan}: ${k("keyorder", orphan)} without its session hash`,
          `session ${orphan}: an index entry without its session (${agentKey("index", "a")})`,
          `session ${orphan}: an id-set entry without its session (${prefix}:sessions)`,
          `session ${orphan}: an id-set entry without its session (${agentKey("ids", "a")})`,
          `session ${stale}: updated_at ${older} older than its newest message`,
          `session ${cwd}: cwd in`,
          `session ${cwd}: no entry in the cwd index ${cwdKey("a", "/w")}`,
          `session ${fine}: a cwd index entry whose session is gone or has another cwd (${cwdKey("a", "/old")})`,
          `session ${notInSet}: not in the id set ${prefix}:sessions`,
          `session ${notInIds}: not in the agent's id set ${agentKey("ids", "a")}`,
          `session ${ghost}: an index entry without its session (${agentKey("index", "a")})`,
          `session ${ghost}: an id-set entry without its session (${prefix}:sessions)`,
          `session ${ghost}: a fork's temp key without expiry (${tmp})`,
          `key ${op}: an op bitmap without expiry`,
          `session ${badMeta}: metadata is not a JSON object or null`,
          cluster
            ? `session ${ghost}: ${k("sessioncwd", ghost)} without its session hash`
            : `session ${ghost}: a cwd without its session (${prefix}:cwds)`,
        ];
        for (const line of expected) expect(report).toContain(line);
        expect(found.length).toBe(expected.length);
        expect(found.every((f) => f.repaired === undefined)).toBe(true);

        const repaired = await checkRedisStore(raw, prefix, true);
        expect(repaired.map((f) => f.problem).sort()).toEqual(found.map((f) => f.problem).sort());
        // Everything repaired but the session whose metadata is not JSON (reported only; it stays as it is).
        const left = repaired.filter((f) => f.repaired === undefined);
        expect(text(left)).toBe(`session ${badMeta}: metadata is not a JSON object or null`);
        expect(await checkRedisStore(raw, prefix, true)).toEqual(left);
        await raw.hset(k("session", badMeta), "metadata", "null");
        expect(await checkRedisStore(raw, prefix, false)).toEqual([]);
        expect(await raw.pttl(op)).toBeGreaterThan(3_600_000);

        // Through the API: listings whole and in order, the cwd listing right, the orphan's messages kept aside.
        const listed = (await b.listSessions("a")).map((s) => s.session_id);
        expect(listed.sort()).toEqual([...ids.filter((id) => id !== orphan), badMeta].sort());
        const records = await b.listSessions("a");
        expect(records.map((r) => r.updated_at)).toEqual(
          records
            .map((r) => r.updated_at)
            .sort()
            .reverse(),
        );
        expect((await b.listSessions("a", { cwd: "/w" })).map((s) => s.session_id)).toEqual([cwd]);
        expect(await b.listSessions("a", { cwd: "/old" })).toEqual([]);
        expect((await b.getSession(stale))?.updated_at).toBe((await b.loadMessages(stale)).at(-1)?.timestamp);
        const scanned = (await b.scanSessions({ agentId: "a" })).map((s) => s.session_id);
        expect(scanned.sort()).toEqual(listed.sort());
        const all = (await b.scanSessions()).map((s) => s.session_id);
        expect(all.sort()).toEqual(listed.sort());
        expect(await b.getSession(orphan)).toBeNull();
        const aside = repaired
          .find((f) => f.problem.includes("messages without"))
          ?.repaired?.replace("renamed to ", "");
        expect(aside).toMatch(new RegExp(`^${prefix}:quarantine:`));
        expect(await raw.lrange(aside as string, 0, -1)).toEqual(orphanMessages);
        expect(await raw.exists(tmp)).toBe(0);
        expect(await (cluster ? raw.exists(k("sessioncwd", ghost)) : raw.hexists(`${prefix}:cwds`, ghost))).toBe(0);
      } finally {
        await b.close();
        const nodes = cluster ? (raw as Cluster).nodes("master") : [raw as Redis];
        for (const node of nodes) {
          for (const p of [prefix, `${prefix}x`]) {
            let cursor = "0";
            do {
              const [next, keys] = await node.scan(cursor, "MATCH", `${p}:*`, "COUNT", 1000);
              cursor = next;
              for (const key of keys) await raw.unlink(key);
            } while (cursor !== "0");
          }
        }
        raw.disconnect();
      }
    },
    60_000,
  );
  it.skipIf(!url)(
    "pages through more keys and index entries than a SCAN/ZSCAN page",
    async () => {
      const cluster = mode === "cluster";
      const prefix = `doctor-${randomUUID().slice(0, 8)}`;
      const raw: Redis | Cluster = cluster
        ? new Cluster(
            (url as string)
              .replace(/^redis\+cluster:\/\//, "")
              .split(",")
              .map((hp) => ({ host: hp.split(":")[0] as string, port: Number(hp.split(":")[1]) })),
          )
        : new Redis(url as string);
      const b = new RedisStorageBackend({ url: url as string, prefix });
      const index = cluster ? `${prefix}:index:{a}` : `${prefix}:index:a`;
      try {
        const ghosts = Array.from({ length: 1500 }, () => randomUUID());
        await Promise.all(ghosts.map((id, i) => raw.zadd(index, i, id)));
        const id = await b.createSession("a");
        await raw.zrem(index, id);
        const found = await checkRedisStore(raw, prefix, false);
        expect(found.filter((f) => f.problem.startsWith("an index entry without its session")).length).toBe(1500);
        expect(text(found)).toContain(`session ${id}: no entry in the agent's index ${index}`);
        expect(found.length).toBe(1501);
        expect((await checkRedisStore(raw, prefix, true)).length).toBe(1501);
        expect(await checkRedisStore(raw, prefix, false)).toEqual([]);
        expect(await (raw as Redis).zrange(index, "0", "-1")).toEqual([id]);
      } finally {
        await b.close();
        const nodes = cluster ? (raw as Cluster).nodes("master") : [raw as Redis];
        for (const node of nodes) {
          let cursor = "0";
          do {
            const [next, keys] = await node.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
            cursor = next;
            for (const key of keys) await raw.unlink(key);
          } while (cursor !== "0");
        }
        raw.disconnect();
      }
    },
    60_000,
  );
});

describe.skipIf(!clusterUrl)("agentix doctor --storage redis+cluster://…?prefix=", () => {
  it("checks every master; a cluster node given as redis:// is refused", async () => {
    const prefix = `doctor-${randomUUID().slice(0, 8)}`;
    const b = new RedisStorageBackend({ url: clusterUrl as string, prefix });
    try {
      const id = await b.createSession("a");
      await b.saveMessage(id, "user", "x");
      const ok = await cli(`${clusterUrl as string}?prefix=${prefix}`);
      expect(ok).toEqual({ code: 0, stdout: `Redis prefix ${prefix} at ${clusterUrl}: no problems found\n` });
      const node = (clusterUrl as string).replace("redis+cluster://", "redis://").split(",")[0] as string;
      const refused = await cli(`${node}?prefix=${prefix}`);
      expect(refused.code).toBe(1);
      expect(refused.stdout).toContain("is a Redis Cluster node");
    } finally {
      await b.deleteSession((await b.listSessions("a"))[0]?.session_id as string);
      await b.close();
    }
  }, 60_000);
});

describe.skipIf(!redisUrl)("agentix doctor --storage redis://…?prefix=", () => {
  it("exit code 1 while problems are left, 0 once repaired", async () => {
    const prefix = `doctor-${randomUUID().slice(0, 8)}`;
    const url = `${redisUrl as string}?prefix=${prefix}`;
    const b = new RedisStorageBackend({ url: redisUrl as string, prefix });
    const raw = new Redis(redisUrl as string);
    try {
      const id = await b.createSession("a");
      await raw.zrem(`${prefix}:index:a`, id);
      const checked = await cli(url);
      expect(checked.code).toBe(1);
      expect(checked.stdout).toContain(`session ${id}: no entry in the agent's index ${prefix}:index:a`);
      expect((await cli(url, "--repair")).code).toBe(0);
      expect(await cli(url)).toEqual({ code: 0, stdout: `Redis prefix ${prefix} at ${redisUrl}: no problems found\n` });
      expect((await b.listSessions("a")).map((s) => s.session_id)).toEqual([id]);
    } finally {
      await b.close();
      let cursor = "0";
      do {
        const [next, keys] = await raw.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
        cursor = next;
        if (keys.length > 0) await raw.unlink(...keys);
      } while (cursor !== "0");
      raw.disconnect();
    }
  }, 60_000);
});
