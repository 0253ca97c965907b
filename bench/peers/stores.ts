// The stores of `npm run bench:peers`, each behind one small interface: agentix (and its floor) next to LangChain
// JS's Postgres and Redis chat histories, Mastra's Postgres store, and the raw drivers those use (node-postgres,
// node-redis) written the plain way. The peer packages live in bench/peers/node_modules (their own package.json,
// not the root install) and are imported by name at run time, so that the root type check and `npm run bench`
// need none of them; a peer that is not installed or fails to load is skipped with its reason.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { uuidv7 } from "uuidv7";
import type { JsonObject, NewMessage } from "../../src/core/types.js";
import { FloorPostgres } from "../baselines/floor-postgres.js";
import { FloorRedis } from "../baselines/floor-redis.js";
import { postgresTarget } from "../baselines/postgres.js";
import { redisTarget } from "../baselines/redis.js";
import { history, type Namespace, sessionSet } from "../workloads.js";

/** What a peer workload times, per store: messages in, messages out, a listing where the store has one. */
export interface PeerStore {
  name: string;
  /** What it runs on, for the report: the package and version. */
  version: string;
  createSession(): Promise<string>;
  append(sessionId: string, message: NewMessage): Promise<void>;
  /** A turn of messages in the store's own batch call (LangChain: `addMessages`; Mastra: `saveMessages`). */
  appendTurn(sessionId: string, messages: NewMessage[]): Promise<void>;
  /** Every message of the session, oldest first as the store returns them: their `seq`s, for the check. */
  load(sessionId: string): Promise<number[]>;
  /** A session of `n` messages (seq 0 … n - 1), written the fastest way the store allows: untimed seeding. */
  seed(n: number): Promise<string>;
  /** The newest `limit` of one agent's sessions, when the store lists sessions; `seedList` makes that agent's. */
  list?(limit: number): Promise<number>;
  seedList?(sessions: number): Promise<void>;
  /** Drops its tables, schema or keys and closes its connections. */
  close(): Promise<void>;
}

const here = new URL("./", import.meta.url);

function version(pkg: string): string {
  const path = new URL(`node_modules/${pkg}/package.json`, here);
  return `${pkg} ${(JSON.parse(readFileSync(path, "utf8")) as { version: string }).version}`;
}

/** A peer package by name, from bench/peers/node_modules; typed by the caller's interface of what it uses. */
async function peer<T>(name: string): Promise<T> {
  return (await import(name)) as T;
}

const seqOf = (text: string): number => (JSON.parse(text) as { seq: number }).seq;
const text = (m: NewMessage): string => JSON.stringify(m.content);
const AGENT = "peer-agent";

// ---- agentix and its floor, through the bench's own namespaces ----

async function agentixStore(name: string, ns: Namespace, extra: string, close: () => Promise<void>) {
  const { subject, admin } = ns;
  const store: PeerStore = {
    name,
    version: extra,
    createSession: () => admin.createSession(AGENT, { cwd: "/bench" }),
    append: async (id, m) => {
      await subject.saveMessage(id, m.role, m.content);
    },
    appendTurn: async (id, messages) => {
      await subject.saveMessages(id, messages);
    },
    load: async (id) => (await subject.loadMessages(id)).map((m) => (m.content as JsonObject).seq as number),
    async seed(n) {
      const id = await admin.createSession(AGENT, { cwd: "/bench" });
      const messages = history(n).map(({ role, content }) => ({ role, content }));
      for (let i = 0; i < n; i += 5000) await admin.saveMessages(id, messages.slice(i, i + 5000));
      return id;
    },
    list: async (limit) => (await subject.listSessions(AGENT, limit)).length,
    async seedList(sessions) {
      await ns.seedSessions(
        sessionSet(1, sessions).map((r) => ({ ...r, agent_id: AGENT, metadata: { cwd: "/bench" } })),
      );
      await ns.settle?.();
    },
    async close() {
      await ns.drop();
      await close();
    },
  };
  return store;
}

export async function agentixPostgres(url: string, side: "agentix" | "floor"): Promise<PeerStore> {
  const target = postgresTarget(url, (client, schema) => new FloorPostgres(client, schema));
  const ns = await target.open(side);
  const name = side === "agentix" ? "agentix" : "floor (postgres.js)";
  return agentixStore(name, ns, "postgres.js", () => target.close());
}

export async function agentixRedis(url: string, side: "agentix" | "floor" | "autopipelining"): Promise<PeerStore> {
  const target = redisTarget(url, (client, prefix) => new FloorRedis(client, prefix), {
    enableAutoPipelining: side === "autopipelining",
  });
  const ns = await target.open(side === "floor" ? "floor" : "agentix");
  const name = side === "agentix" ? "agentix" : side === "floor" ? "floor (ioredis)" : "agentix, enableAutoPipelining";
  return agentixStore(name, ns, "ioredis", () => target.close());
}

// ---- LangChain JS ----

interface LangChainMessage {
  content: unknown;
}
interface LangChainHistory {
  addMessage(message: LangChainMessage): Promise<void>;
  addMessages(messages: LangChainMessage[]): Promise<void>;
  getMessages(): Promise<LangChainMessage[]>;
}
interface LangChainMessages {
  HumanMessage: new (content: string) => LangChainMessage;
  AIMessage: new (content: string) => LangChainMessage;
  ToolMessage: new (fields: { content: string; tool_call_id: string }) => LangChainMessage;
}

async function langChainMessage(): Promise<(m: NewMessage) => LangChainMessage> {
  const { HumanMessage, AIMessage, ToolMessage } = await peer<LangChainMessages>("@langchain/core/messages");
  return (m) =>
    m.role === "user"
      ? new HumanMessage(text(m))
      : m.role === "tool"
        ? new ToolMessage({ content: text(m), tool_call_id: "call" })
        : new AIMessage(text(m));
}

interface PgPool {
  query(text: string, params?: unknown[]): Promise<{ rows: Array<Record<string, unknown>> }>;
  end(): Promise<void>;
}
interface Pg {
  default: { Pool: new (config: { connectionString: string; max: number }) => PgPool };
}

/** LangChain's PostgresChatMessageHistory (@langchain/community, on node-postgres): one history per session id. */
export async function langChainPostgres(url: string): Promise<PeerStore> {
  const { PostgresChatMessageHistory } = await peer<{
    PostgresChatMessageHistory: new (fields: {
      sessionId: string;
      pool: PgPool;
      tableName: string;
    }) => LangChainHistory;
  }>("@langchain/community/stores/message/postgres");
  const toMessage = await langChainMessage();
  const { Pool } = (await peer<Pg>("pg")).default;
  const pool = new Pool({ connectionString: url, max: 10 });
  const tableName = `agentix_peer_langchain_${randomBytes(5).toString("hex")}`;
  const histories = new Map<string, LangChainHistory>();
  const createSession = async () => {
    const id = uuidv7();
    await history(id).getMessages(); // creates the table on first use, as LangChain does: untimed
    return id;
  };
  const history = (id: string) => {
    let h = histories.get(id);
    if (!h) {
      h = new PostgresChatMessageHistory({ sessionId: id, pool, tableName });
      histories.set(id, h);
    }
    return h;
  };
  return {
    name: "LangChain PostgresChatMessageHistory",
    version: `${version("@langchain/community")}, ${version("pg")}`,
    createSession,
    append: (id, m) => history(id).addMessage(toMessage(m)),
    appendTurn: (id, messages) => history(id).addMessages(messages.map(toMessage)),
    load: async (id) => (await history(id).getMessages()).map((m) => seqOf(m.content as string)),
    async seed(n) {
      const id = await createSession();
      // One after another (addMessages): ids are taken in the order the inserts arrive, and so is the order.
      for (let i = 0; i < n; i += 500) {
        const batch = Array.from({ length: Math.min(500, n - i) }, (_, j) => toMessage(seedMessage(i + j)));
        await history(id).addMessages(batch);
      }
      return id;
    },
    async close() {
      await pool.query(`drop table if exists ${tableName}`);
      await pool.end();
    },
  };
}

/** Seeding sends many appends at once: each with its own seq, so that the order check can tell them apart. */
function seedMessage(seq: number): NewMessage {
  return { role: seq % 2 === 0 ? "user" : "assistant", content: { type: "text", text: "seeded", seq } };
}

interface NodeRedis {
  connect(): Promise<unknown>;
  quit(): Promise<unknown>;
  rPush(key: string, value: string | string[]): Promise<number>;
  lRange(key: string, start: number, stop: number): Promise<string[]>;
  scanIterator(options: { MATCH: string; COUNT: number }): AsyncIterable<string>;
  unlink(keys: string[]): Promise<number>;
}

async function nodeRedis(url: string): Promise<NodeRedis> {
  const { createClient } = await peer<{ createClient(options: { url: string }): NodeRedis }>("redis");
  const client = createClient({ url });
  await client.connect();
  return client;
}

async function dropKeys(client: NodeRedis, prefix: string): Promise<void> {
  const keys: string[] = [];
  for await (const key of client.scanIterator({ MATCH: `${prefix}:*`, COUNT: 1000 })) keys.push(key);
  for (let i = 0; i < keys.length; i += 1000) await client.unlink(keys.slice(i, i + 1000));
}

/** LangChain's RedisChatMessageHistory (@langchain/redis, on node-redis, which pipelines on its own): LPUSH. */
export async function langChainRedis(url: string): Promise<PeerStore> {
  const { RedisChatMessageHistory } = await peer<{
    RedisChatMessageHistory: new (fields: { sessionId: string; client: NodeRedis }) => LangChainHistory;
  }>("@langchain/redis");
  const toMessage = await langChainMessage();
  const client = await nodeRedis(url);
  const prefix = `agentix-peer-langchain-${randomBytes(5).toString("hex")}`;
  const histories = new Map<string, LangChainHistory>();
  const history = (id: string) => {
    let h = histories.get(id);
    if (!h) {
      h = new RedisChatMessageHistory({ sessionId: `${prefix}:${id}`, client });
      histories.set(id, h);
    }
    return h;
  };
  return {
    name: "LangChain RedisChatMessageHistory",
    version: `${version("@langchain/redis")}, ${version("redis")}`,
    createSession: async () => uuidv7(),
    append: (id, m) => history(id).addMessage(toMessage(m)),
    appendTurn: (id, messages) => history(id).addMessages(messages.map(toMessage)),
    load: async (id) => (await history(id).getMessages()).map((m) => seqOf(m.content as string)),
    async seed(n) {
      const id = uuidv7();
      for (let i = 0; i < n; i += 500) {
        const batch = Array.from({ length: Math.min(500, n - i) }, (_, j) => i + j);
        // LPUSH from many calls at once lands in any order: one after another, pipelined by node-redis anyway.
        for (const seq of batch) void history(id).addMessage(toMessage(seedMessage(seq)));
        await history(id).getMessages();
      }
      return id;
    },
    async close() {
      await dropKeys(client, prefix);
      await client.quit();
    },
  };
}

// ---- Mastra ----

interface MastraStore {
  init(): Promise<void>;
  saveThread(args: { thread: Record<string, unknown> }): Promise<unknown>;
  saveMessages(args: { messages: Array<Record<string, unknown>>; format: "v2" }): Promise<unknown>;
  getMessages(args: { threadId: string; selectBy: { last: number }; format: "v2" }): Promise<MastraMessage[]>;
  getThreadsByResourceIdPaginated(args: {
    resourceId: string;
    page: number;
    perPage: number;
    orderBy: "updatedAt";
    sortDirection: "DESC";
  }): Promise<{ threads: unknown[] }>;
  close(): Promise<void>;
}
interface MastraMessage {
  content: { parts: Array<{ text: string }> };
}

/** Mastra's PostgresStore (@mastra/pg on pg-promise), threads and v2 messages in a schema of its own. */
export async function mastraPostgres(url: string): Promise<PeerStore> {
  const { PostgresStore } = await peer<{
    PostgresStore: new (config: { connectionString: string; schemaName: string; max: number }) => MastraStore;
  }>("@mastra/pg");
  const { Pool } = (await peer<Pg>("pg")).default;
  const admin = new Pool({ connectionString: url, max: 1 });
  const schemaName = `agentix_peer_mastra_${randomBytes(5).toString("hex")}`;
  await admin.query(`create schema ${schemaName}`);
  const store = new PostgresStore({ connectionString: url, schemaName, max: 10 });
  await store.init();
  const thread = async (resourceId: string, at = new Date()) => {
    const id = uuidv7();
    await store.saveThread({
      thread: { id, resourceId, title: "bench", metadata: { cwd: "/bench" }, createdAt: at, updatedAt: at },
    });
    return id;
  };
  // Mastra orders a thread by createdAt alone, which the caller gives: strictly increasing here (a millisecond
  // apart at least), so that the order it reads back is not this harness's doing.
  let last = 0;
  const stamp = () => {
    last = Math.max(Date.now(), last + 1);
    return new Date(last);
  };
  const message = (threadId: string, m: NewMessage, createdAt = stamp()) => ({
    id: uuidv7(),
    threadId,
    resourceId: AGENT,
    role: m.role === "user" ? "user" : "assistant",
    content: { format: 2, parts: [{ type: "text", text: text(m) }] },
    createdAt,
    type: "v2",
  });
  return {
    name: "Mastra PostgresStore",
    version: `${version("@mastra/pg")}, ${version("@mastra/core")}`,
    createSession: () => thread(AGENT),
    append: async (id, m) => {
      await store.saveMessages({ messages: [message(id, m)], format: "v2" });
    },
    appendTurn: async (id, messages) => {
      const batch = messages.map((m) => message(id, m));
      await store.saveMessages({ messages: batch, format: "v2" });
    },
    load: async (id) =>
      (await store.getMessages({ threadId: id, selectBy: { last: 1_000_000 }, format: "v2" })).map((m) =>
        seqOf(m.content.parts[0]?.text ?? "{}"),
      ),
    async seed(n) {
      const id = await thread(AGENT);
      const start = Date.now() - 86_400_000;
      for (let i = 0; i < n; i += 500) {
        const batch = Array.from({ length: Math.min(500, n - i) }, (_, j) =>
          message(id, seedMessage(i + j), new Date(start + (i + j) * 5)),
        );
        await store.saveMessages({ messages: batch, format: "v2" });
      }
      return id;
    },
    list: async (limit) =>
      (
        await store.getThreadsByResourceIdPaginated({
          resourceId: "peer-lister",
          page: 0,
          perPage: limit,
          orderBy: "updatedAt",
          sortDirection: "DESC",
        })
      ).threads.length,
    async seedList(sessions) {
      const start = Date.now() - 30 * 86_400_000;
      for (let i = 0; i < sessions; i += 100) {
        const ids = Array.from({ length: Math.min(100, sessions - i) }, (_, j) => i + j);
        await Promise.all(ids.map((k) => thread("peer-lister", new Date(start + k * 1000))));
      }
    },
    async close() {
      await store.close();
      await admin.query(`drop schema if exists ${schemaName} cascade`);
      await admin.end();
    },
  };
}

// ---- the raw drivers, the plain way: one row or one list entry per message, nothing else ----

/** node-postgres: one INSERT per message into a table of (session, role, content), one SELECT to load. */
export async function rawPg(url: string): Promise<PeerStore> {
  const { Pool } = (await peer<Pg>("pg")).default;
  const pool = new Pool({ connectionString: url, max: 10 });
  const table = `agentix_peer_pg_${randomBytes(5).toString("hex")}`;
  await pool.query(
    `create table ${table} (id bigint generated always as identity primary key, session_id uuid not null,
       role text not null, content jsonb not null, created_at timestamptz not null default now());
     create index on ${table} (session_id, id)`,
  );
  const insert = `insert into ${table} (session_id, role, content) values ($1, $2, $3)`;
  const insertMany = `insert into ${table} (session_id, role, content)
    select $1, r, c::jsonb from unnest($2::text[], $3::text[]) with ordinality as m(r, c, n) order by n`;
  const many = (id: string, ms: NewMessage[]) =>
    pool.query(insertMany, [id, ms.map((m) => m.role), ms.map((m) => text(m))]);
  return {
    name: "node-postgres, plain INSERT",
    version: version("pg"),
    createSession: async () => uuidv7(),
    append: async (id, m) => {
      await pool.query(insert, [id, m.role, text(m)]);
    },
    appendTurn: async (id, messages) => {
      await many(id, messages);
    },
    load: async (id) =>
      (
        await pool.query(`select role, content, created_at from ${table} where session_id = $1 order by id`, [id])
      ).rows.map((r) => (r.content as { seq: number }).seq),
    async seed(n) {
      const id = uuidv7();
      for (let i = 0; i < n; i += 1000) {
        await many(
          id,
          Array.from({ length: Math.min(1000, n - i) }, (_, j) => seedMessage(i + j)),
        );
      }
      return id;
    },
    async close() {
      await pool.query(`drop table if exists ${table}`);
      await pool.end();
    },
  };
}

/** node-redis: one RPUSH per message (a turn: one RPUSH of all), one LRANGE to load. */
export async function rawNodeRedis(url: string): Promise<PeerStore> {
  const client = await nodeRedis(url);
  const prefix = `agentix-peer-redis-${randomBytes(5).toString("hex")}`;
  const line = (m: NewMessage) =>
    JSON.stringify({ role: m.role, content: m.content, timestamp: new Date().toISOString() });
  return {
    name: "node-redis, plain RPUSH",
    version: version("redis"),
    createSession: async () => uuidv7(),
    append: async (id, m) => {
      await client.rPush(`${prefix}:${id}`, line(m));
    },
    appendTurn: async (id, messages) => {
      await client.rPush(`${prefix}:${id}`, messages.map(line));
    },
    load: async (id) =>
      (await client.lRange(`${prefix}:${id}`, 0, -1)).map(
        (l) => (JSON.parse(l) as { content: { seq: number } }).content.seq,
      ),
    async seed(n) {
      const id = uuidv7();
      for (let i = 0; i < n; i += 1000) {
        const batch = Array.from({ length: Math.min(1000, n - i) }, (_, j) => line(seedMessage(i + j)));
        await client.rPush(`${prefix}:${id}`, batch);
      }
      return id;
    },
    async close() {
      await dropKeys(client, prefix);
      await client.quit();
    },
  };
}
