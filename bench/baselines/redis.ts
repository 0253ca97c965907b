// The Redis baseline: the workloads written by hand against ioredis on the backend's key layout, one Lua script
// (or one command) per operation, the fastest correct way we found.
import { randomBytes } from "node:crypto";
import { Redis, type RedisOptions } from "ioredis";
import { uuidv7 } from "uuidv7";
import type {
  MessageContent,
  MessageRecord,
  NewMessage,
  Role,
  SessionCursor,
  SessionRecord,
} from "../../src/core/types.js";
import { RedisStorageBackend } from "../../src/redis.js";
import { packageVersion } from "../machine.js";
import {
  agentixSubject,
  type BenchTarget,
  type Namespace,
  type Side,
  type Subject,
  type WireCounter,
} from "../workloads.js";

// Plain `<` on strings: Lua compares them with strcoll, which orders our fixed-shape ISO timestamps and lowercase
// UUIDs as bytes do in any locale (same characters at the same places, digits and a-f in their usual order).
const cwdKey =
  "local function cwdKey(agent, cwd) return ARGV[1] .. ':cwd:' .. #agent .. ':' .. agent .. ':' .. cwd end\n";

const scripts = {
  // KEYS: session hash, messages list, cwds hash. ARGV: prefix, id, message JSON up to the timestamp, timestamp, score
  rawAppend: `${cwdKey}
local s = redis.call('HMGET', KEYS[1], 'agent_id', 'updated_at')
if not s[1] then return 0 end
local ts = ARGV[4]
if ts < s[2] then
  redis.call('RPUSH', KEYS[2], ARGV[3] .. s[2] .. '"}')
  return 1
end
redis.call('RPUSH', KEYS[2], ARGV[3] .. ts .. '"}')
redis.call('HSET', KEYS[1], 'updated_at', ts)
redis.call('ZADD', ARGV[1] .. ':index:' .. s[1], ARGV[5], ARGV[2])
local cwd = redis.call('HGET', KEYS[3], ARGV[2])
if cwd then redis.call('ZADD', cwdKey(s[1], cwd), ARGV[5], ARGV[2]) end
return 1`,
  // A batch, with compare-and-swap on the list's length. KEYS: session hash, messages list, cwds hash.
  // ARGV: prefix, id, timestamp, score, expected length ('' for none), then each message's JSON up to the timestamp.
  // Returns the new length, -1 when there is no session, -2 when the length is not the expected one.
  rawSave: `${cwdKey}
local s = redis.call('HMGET', KEYS[1], 'agent_id', 'updated_at')
if not s[1] then return -1 end
if ARGV[5] ~= '' and redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[5]) then return -2 end
local ts, bump = ARGV[3], true
if ts < s[2] then ts, bump = s[2], false end
local length
for i = 6, #ARGV, 1000 do
  local lines = {}
  for j = i, math.min(i + 999, #ARGV) do lines[#lines + 1] = ARGV[j] .. ts .. '"}' end
  length = redis.call('RPUSH', KEYS[2], unpack(lines))
end
if bump then
  redis.call('HSET', KEYS[1], 'updated_at', ts)
  redis.call('ZADD', ARGV[1] .. ':index:' .. s[1], ARGV[4], ARGV[2])
  local cwd = redis.call('HGET', KEYS[3], ARGV[2])
  if cwd then redis.call('ZADD', cwdKey(s[1], cwd), ARGV[4], ARGV[2]) end
end
return length`,
  // KEYS: the agent's index. ARGV: prefix, limit, cursor score ('' : first page), cursor id
  rawList: `
local limit, score, before = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local ids
if score == '' then
  ids = redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', '-inf', 'LIMIT', 0, limit)
else
  ids = {}
  for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], score, score)) do
    if #ids < limit and id < before then ids[#ids + 1] = id end
  end
  if #ids < limit then
    for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', KEYS[1], '(' .. score, '-inf', 'LIMIT', 0, limit - #ids)) do
      ids[#ids + 1] = id
    end
  end
end
for i, id in ipairs(ids) do
  ids[i] = redis.call('HMGET', ARGV[1] .. ':session:' .. id, 'session_id', 'agent_id', 'created_at', 'updated_at', 'metadata')
end
return ids`,
  // KEYS: source hash, source messages, new hash, new messages, cwds hash, all sessions. ARGV: prefix, source id, new id, now, score
  rawFork: `${cwdKey}
local s = redis.call('HMGET', KEYS[1], 'agent_id', 'metadata')
if not s[1] then return 0 end
local to, at = ARGV[3], ARGV[4]
redis.call('HSET', KEYS[3], 'session_id', to, 'agent_id', s[1], 'created_at', at, 'updated_at', at, 'metadata', s[2])
redis.call('COPY', KEYS[2], KEYS[4])
redis.call('ZADD', KEYS[6], 0, to)
redis.call('ZADD', ARGV[1] .. ':index:' .. s[1], ARGV[5], to)
local cwd = redis.call('HGET', KEYS[5], ARGV[2])
if cwd then
  redis.call('HSET', KEYS[5], to, cwd)
  redis.call('ZADD', cwdKey(s[1], cwd), ARGV[5], to)
end
return 1`,
};

type Client = Redis & {
  rawAppend(...args: Array<string | number>): Promise<number>;
  rawList(...args: Array<string | number>): Promise<Array<Array<string | null>>>;
  rawFork(...args: Array<string | number>): Promise<number>;
  rawSave(...args: Array<string | number>): Promise<number>;
};

export class RawRedis implements Subject {
  readonly #redis: Client;
  readonly #prefix: string;

  constructor(redis: Redis, prefix: string) {
    for (const [name, lua] of Object.entries(scripts)) {
      redis.defineCommand(name, { lua, numberOfKeys: name === "rawList" ? 1 : name === "rawFork" ? 6 : 3 });
    }
    this.#redis = redis as Client;
    this.#prefix = prefix;
  }

  async saveMessage(sessionId: string, role: Role, content: MessageContent): Promise<void> {
    const p = this.#prefix;
    const ts = new Date().toISOString();
    const head = `${JSON.stringify({ role, content }).slice(0, -1)},"timestamp":"`;
    const keys = [`${p}:session:${sessionId}`, `${p}:messages:${sessionId}`, `${p}:cwds`];
    if ((await this.#redis.rawAppend(...keys, p, sessionId, head, ts, Date.parse(ts))) !== 1) {
      throw new Error(`session not found: ${sessionId}`);
    }
  }

  async loadMessages(sessionId: string, last?: number): Promise<MessageRecord[]> {
    // One LRANGE; only an empty list needs a second look, to tell "no session" from "no messages".
    const lines = await this.#redis.lrange(`${this.#prefix}:messages:${sessionId}`, last === undefined ? 0 : -last, -1);
    if (lines.length === 0 && (await this.#redis.exists(`${this.#prefix}:session:${sessionId}`)) === 0) {
      throw new Error(`session not found: ${sessionId}`);
    }
    return lines.map((line) => JSON.parse(line) as MessageRecord);
  }

  async saveMessages(sessionId: string, messages: NewMessage[], expectedLength?: number): Promise<number | null> {
    const p = this.#prefix;
    const ts = new Date().toISOString();
    const heads = messages.map(
      (m) => `${JSON.stringify({ role: m.role, content: m.content }).slice(0, -1)},"timestamp":"`,
    );
    const keys = [`${p}:session:${sessionId}`, `${p}:messages:${sessionId}`, `${p}:cwds`];
    const expected = expectedLength === undefined ? "" : expectedLength;
    const length = await this.#redis.rawSave(...keys, p, sessionId, ts, Date.parse(ts), expected, ...heads);
    if (length === -1) throw new Error(`session not found: ${sessionId}`);
    return length === -2 ? null : length;
  }

  async countMessages(sessionId: string): Promise<number> {
    // A list's length is its count; only 0 needs a second look, to tell "no session" from "no messages".
    const length = await this.#redis.llen(`${this.#prefix}:messages:${sessionId}`);
    if (length === 0 && (await this.#redis.exists(`${this.#prefix}:session:${sessionId}`)) === 0) {
      throw new Error(`session not found: ${sessionId}`);
    }
    return length;
  }

  async loadPage(sessionId: string, offset: number, limit: number): Promise<MessageRecord[]> {
    const lines = await this.#redis.lrange(`${this.#prefix}:messages:${sessionId}`, offset, offset + limit - 1);
    if (lines.length === 0 && (await this.#redis.exists(`${this.#prefix}:session:${sessionId}`)) === 0) {
      throw new Error(`session not found: ${sessionId}`);
    }
    return lines.map((line) => JSON.parse(line) as MessageRecord);
  }

  /** LRANGE pages of `batchSize`, by index: Redis has no cursor over a list. */
  async *iterateMessages(sessionId: string, batchSize: number): AsyncIterable<MessageRecord> {
    for (let offset = 0; ; offset += batchSize) {
      const page = await this.loadPage(sessionId, offset, batchSize);
      yield* page;
      if (page.length < batchSize) return;
    }
  }

  async listSessions(agentId: string, limit: number, before?: SessionCursor): Promise<SessionRecord[]> {
    const p = this.#prefix;
    const cursor = before ? [Date.parse(before.updated_at), before.session_id] : ["", ""];
    const rows = await this.#redis.rawList(`${p}:index:${agentId}`, p, limit, ...cursor);
    return rows.flatMap(([session_id, agent_id, created_at, updated_at, metadata]) =>
      session_id
        ? [
            {
              session_id,
              agent_id: agent_id as string,
              created_at: created_at as string,
              updated_at: updated_at as string,
              metadata: JSON.parse(metadata ?? "null"),
            },
          ]
        : [],
    );
  }

  async forkSession(sessionId: string): Promise<string> {
    const p = this.#prefix;
    const id = uuidv7();
    const at = new Date().toISOString();
    const keys = [
      `${p}:session:${sessionId}`,
      `${p}:messages:${sessionId}`,
      `${p}:session:${id}`,
      `${p}:messages:${id}`,
      `${p}:cwds`,
      `${p}:sessions`,
    ];
    if ((await this.#redis.rawFork(...keys, p, sessionId, id, at, Date.parse(at))) !== 1) {
      throw new Error(`session not found: ${sessionId}`);
    }
    return id;
  }
}

/**
 * Counts what the client sends: every command, and as one round trip all commands sent in one turn of the event
 * loop (a MULTI block or a pipeline is one write and one wait). A resend after NOSCRIPT counts again.
 */
function countCommands(client: Redis): WireCounter {
  const wire = { roundTrips: 0, commands: 0 };
  let inBatch = false;
  const send = client.sendCommand.bind(client) as (...args: unknown[]) => unknown;
  (client as unknown as { sendCommand: (...args: unknown[]) => unknown }).sendCommand = (...args: unknown[]) => {
    wire.commands++;
    if (!inBatch) {
      inBatch = true;
      wire.roundTrips++;
      setImmediate(() => {
        inBatch = false;
      });
    }
    return send(...args);
  };
  return wire;
}

/** `floor` makes the floor side's subject (bench/baselines/floor-redis.ts, which builds on this module). */
export function redisTarget(
  url: string,
  floor: (client: Redis, prefix: string) => Subject,
  options: Pick<RedisOptions, "enableAutoPipelining"> = {},
): BenchTarget {
  const root = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 1 });
  root.on("error", () => {});
  return {
    name: "redis",
    floor: true,
    async probe() {
      try {
        await root.ping();
        return null;
      } catch (error) {
        return `no Redis at ${url}: ${(error as Error).message}`;
      }
    },
    async versions() {
      const info = await root.info("server");
      return { Redis: /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown", ioredis: packageVersion("ioredis") };
    },
    async open(side: Side, count = false): Promise<Namespace> {
      const prefix = `agentix-bench-${randomBytes(5).toString("hex")}`;
      const admin = new RedisStorageBackend({ url, prefix });
      const client = new Redis(url, options);
      // Only when counting: the wrapper and its setImmediate per batch cost both sides CPU on every command.
      const wire = count ? countCommands(client) : undefined;
      const backend = side === "agentix" ? new RedisStorageBackend({ client, prefix }) : undefined;
      return {
        subject: backend
          ? agentixSubject(backend)
          : side === "floor"
            ? floor(client, prefix)
            : new RawRedis(client, prefix),
        ...(backend ? { backend } : {}),
        admin,
        ...(wire ? { wire } : {}),
        pingTarget: { host: client.options.host ?? "127.0.0.1", port: client.options.port ?? 6379 },
        async seedSessions(records: SessionRecord[]) {
          // Imports sent without waiting for each other: ioredis writes them back to back, a pipeline in effect.
          for (let i = 0; i < records.length; i += 500) {
            await Promise.all(records.slice(i, i + 500).map((r) => admin.importSession(r, [])));
          }
        },
        async drop() {
          await backend?.close();
          await client.quit();
          await admin.close();
          let cursor = "0";
          do {
            const [next, keys] = await root.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
            if (keys.length > 0) await root.unlink(...keys);
            cursor = next;
          } while (cursor !== "0");
        },
      };
    },
    async close() {
      await root.quit();
    },
  };
}
