/**
 * The Redis backend (ioredis).
 * @module agentix/redis
 */
import { randomUUID } from "node:crypto";
import type { Redis as RedisClient, RedisOptions } from "ioredis";
import { z } from "zod";
import { type ForkTarget, StorageBackend } from "./core/backend.js";
import { importDriver } from "./core/driver.js";
import { AgentixStorageError } from "./core/errors.js";
import { cwdOf, sessionRecord } from "./core/records.js";
import type { SyncTwin } from "./core/sync.js";
import type { JsonObject, MessageRecord, SessionQuery, SessionRecord } from "./core/types.js";
import { isPlainObject, parseOptions } from "./core/validation.js";

const { Redis } = await importDriver<typeof import("ioredis")>("ioredis", "agentix/redis", ["ioredis"]);

/** Options of {@link RedisStorageBackend}: `url` or `client`, and `prefix`. */
export type RedisStorageOptions = (
  | {
      /** `redis://` or `rediss://` URL; the backend opens (lazily, on first use) and closes its own connection. */
      url: string;
      /** Passed to `new Redis(url, redisOptions)`, e.g. `{ tls: {...}, connectTimeout: 5000 }`. */
      redisOptions?: RedisOptions;
      /** @hidden */
      client?: never;
    }
  | {
      /** An ioredis client of yours (standalone or Sentinel, not Cluster). `close()` leaves it open; the `...Sync` methods need `url`. */
      client: RedisClient;
      /** @hidden */
      url?: never;
      /** @hidden */
      redisOptions?: never;
    }
) & {
  /**
   * Namespace of every key: `{prefix}:session:{id}`, ... Letters, digits, `_`, `-` and `.` only, so that no
   * tenant's key can be another's and `SCAN MATCH {prefix}:*` selects exactly this tenant's keys.
   * @default "agentix"
   */
  prefix?: string;
};

const optionsSchema = z
  .strictObject({
    url: z
      .string()
      .regex(/^rediss?:\/\//, "must be a redis:// or rediss:// URL")
      .optional(),
    client: z.custom<RedisClient>(isClient, { message: "must be an ioredis client (Redis, not Cluster)" }).optional(),
    redisOptions: z.custom<RedisOptions>(isPlainObject, { message: "must be a plain object" }).optional(),
    prefix: z
      .string()
      .regex(/^[A-Za-z0-9_.-]{1,128}$/, "must be 1-128 letters, digits, '_', '-' or '.'")
      .default("agentix"),
  })
  .refine((o) => (o.url === undefined) !== (o.client === undefined), { message: "pass either url or client" })
  .refine((o) => o.client === undefined || o.redisOptions === undefined, {
    message: "redisOptions apply only with url",
    path: ["redisOptions"],
  });

// Every script gets the key namespace as ARGV[1] and builds its keys from it (see `key` and `cwdKey`).
const prelude = `
local base = ARGV[1]
local FIELDS = {'session_id', 'agent_id', 'created_at', 'updated_at', 'metadata'}
local function key(kind, id) return base .. ':' .. kind .. ':' .. id end
-- The agent id's byte length makes (agent, cwd) -> key one-to-one although both may contain ':'.
local function cwdKey(agent, cwd) return base .. ':cwd:' .. #agent .. ':' .. agent .. ':' .. cwd end
-- Byte order, as in JS for our ASCII ids and fixed-shape timestamps (Lua's '<' follows Redis's LC_COLLATE).
local function less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
local function index(agent, id, score, cwd)
  redis.call('ZADD', key('index', agent), score, id)
  if cwd then redis.call('ZADD', cwdKey(agent, cwd), score, id) end
end
`;

/**
 * A writer's op bitmaps: one key per hour (and per 2^20 ops, 128 KiB at most), which expires an hour after its
 * hour ends, far longer than any reconnect. Only a block's first successful append sets the TTL, so that an
 * append costs one SETBIT and not also a PEXPIRE.
 */
const OP_BLOCK_MS = 3_600_000;
const OP_TTL_MS = 2 * OP_BLOCK_MS;
const OPS_PER_KEY = 2 ** 20;

/** The scripts, each one atomic call (EVALSHA, falling back to EVAL on NOSCRIPT: defineCommand). */
const scripts = {
  // ARGV: base, id, agent, created_at, updated_at, metadata, score, has cwd, cwd, messages...
  // Insert-if-absent: nil when stored; when the id is taken, the existing session's FIELDS and nothing written.
  agentixInsert: `
local id, agent = ARGV[2], ARGV[3]
if redis.call('EXISTS', key('session', id)) == 1 then return redis.call('HMGET', key('session', id), unpack(FIELDS)) end
redis.call('HSET', key('session', id), 'session_id', id, 'agent_id', agent, 'created_at', ARGV[4],
  'updated_at', ARGV[5], 'metadata', ARGV[6])
local cwd = ARGV[8] == '1' and ARGV[9] or nil
if cwd then redis.call('HSET', base .. ':cwds', id, cwd) end
redis.call('ZADD', base .. ':sessions', 0, id)
index(agent, id, ARGV[7], cwd)
redis.call('DEL', key('messages', id))
for i = 10, #ARGV, 1000 do
  redis.call('RPUSH', key('messages', id), unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
return false`,
  // ARGV: base, id, timestamp, score, op block, op bit, set the TTL, then each message's JSON up to the timestamp's
  // value. Returns the list's length after the batch, nil when the session does not exist.
  agentixAppend: `
local id, ts = ARGV[2], ARGV[3]
local s = redis.call('HMGET', key('session', id), 'agent_id', 'updated_at')
if not s[1] then return false end
local list = key('messages', id)
-- Each append (a whole batch: one op) carries its writer's op number. ioredis resends the commands in flight when
-- a connection drops, so an append whose reply was lost arrives twice: its bit is set already, and it is not
-- applied again, but still answered with the length.
local ops = base .. ':op:' .. ARGV[5]
local seen = redis.call('SETBIT', ops, ARGV[6], 1)
if ARGV[7] == '1' then redis.call('PEXPIRE', ops, ${OP_TTL_MS}) end
if seen == 1 then return redis.call('LLEN', list) end
-- Fixed-shape ISO timestamps differ only in digits, which every collation orders like bytes.
local clamped = ts < s[2]
if clamped then ts = s[2] end
local tail = ts .. '"}'
local length
if #ARGV == 8 then
  length = redis.call('RPUSH', list, ARGV[8] .. tail)
else
  local lines = {}
  for i = 8, #ARGV do lines[i - 7] = ARGV[i] .. tail end
  -- unpack is bounded by Lua's stack: RPUSH in chunks, still in this one atomic script.
  for i = 1, #lines, 1000 do length = redis.call('RPUSH', list, unpack(lines, i, math.min(i + 999, #lines))) end
end
if not clamped then
  redis.call('HSET', key('session', id), 'updated_at', ts)
  index(s[1], id, ARGV[4], redis.call('HGET', base .. ':cwds', id) or nil)
end
return length`,
  // ARGV: base, id, metadata, has cwd, cwd, at, at's score. The updated FIELDS, nil when the session does not exist.
  agentixMeta: `
local id, at = ARGV[2], ARGV[6]
local s = redis.call('HMGET', key('session', id), 'agent_id', 'updated_at')
if not s[1] then return false end
local agent = s[1]
local moved = s[2] < at
if moved then
  redis.call('HSET', key('session', id), 'metadata', ARGV[3], 'updated_at', at)
else
  redis.call('HSET', key('session', id), 'metadata', ARGV[3])
end
local old = redis.call('HGET', base .. ':cwds', id)
if old then redis.call('ZREM', cwdKey(agent, old), id) end
local cwd = ARGV[4] == '1' and ARGV[5] or nil
if cwd then redis.call('HSET', base .. ':cwds', id, cwd) else redis.call('HDEL', base .. ':cwds', id) end
if moved then
  index(agent, id, ARGV[7], cwd)
elseif cwd then
  -- updated_at stays: so does the session's score, which the index holds.
  local score = redis.call('ZSCORE', key('index', agent), id)
  if score then redis.call('ZADD', cwdKey(agent, cwd), score, id) end
end
return redis.call('HMGET', key('session', id), unpack(FIELDS))`,
  // ARGV: base, id. The list's length, nil when the session does not exist (an empty list is no key at all).
  agentixLength: `
local id = ARGV[2]
if redis.call('EXISTS', key('session', id)) == 0 then return false end
return redis.call('LLEN', key('messages', id))`,
  // ARGV: base, source id, new id, created_at, score
  agentixCopy: `
local from, to, at = ARGV[2], ARGV[3], ARGV[4]
local s = redis.call('HMGET', key('session', from), 'agent_id', 'metadata')
if not s[1] then return 0 end
redis.call('HSET', key('session', to), 'session_id', to, 'agent_id', s[1], 'created_at', at, 'updated_at', at,
  'metadata', s[2])
redis.call('COPY', key('messages', from), key('messages', to))
local cwd = redis.call('HGET', base .. ':cwds', from) or nil
if cwd then redis.call('HSET', base .. ':cwds', to, cwd) end
redis.call('ZADD', base .. ':sessions', 0, to)
index(s[1], to, ARGV[5], cwd)
return 1`,
  // ARGV: base, id
  agentixRemove: `
local id = ARGV[2]
local agent = redis.call('HGET', key('session', id), 'agent_id')
redis.call('DEL', key('session', id), key('messages', id))
if not agent then return 0 end
local cwd = redis.call('HGET', base .. ':cwds', id)
if cwd then redis.call('ZREM', cwdKey(agent, cwd), id) end
redis.call('HDEL', base .. ':cwds', id)
redis.call('ZREM', base .. ':sessions', id)
redis.call('ZREM', key('index', agent), id)
return 1`,
  // ARGV: base, agent, has cwd, cwd, limit (-1: all), before score ('' : none), before id
  agentixList: `
local agent, limit, score, before = ARGV[2], tonumber(ARGV[5]), ARGV[6], ARGV[7]
local k = ARGV[3] == '1' and cwdKey(agent, ARGV[4]) or key('index', agent)
local ids = {}
local function room() return limit < 0 or #ids < limit end
if score == '' then
  ids = redis.call('ZREVRANGEBYSCORE', k, '+inf', '-inf', 'LIMIT', 0, limit)
else
  -- Same score as the cursor: only smaller ids (they come greatest first), then every lower score.
  for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', k, score, score)) do
    if room() and less(id, before) then ids[#ids + 1] = id end
  end
  if room() then
    local rest = limit < 0 and -1 or limit - #ids
    for _, id in ipairs(redis.call('ZREVRANGEBYSCORE', k, '(' .. score, '-inf', 'LIMIT', 0, rest)) do
      ids[#ids + 1] = id
    end
  end
end
for i, id in ipairs(ids) do ids[i] = redis.call('HMGET', key('session', id), unpack(FIELDS)) end
return ids`,
  // ARGV: base, after ('' : from the start), limit
  agentixScan: `
local from = ARGV[2] == '' and '-' or '(' .. ARGV[2]
local ids = redis.call('ZRANGEBYLEX', base .. ':sessions', from, '+', 'LIMIT', 0, ARGV[3])
for i, id in ipairs(ids) do ids[i] = redis.call('HMGET', key('session', id), unpack(FIELDS)) end
return ids`,
};

/** A script argument; ioredis flattens an array into the arguments, so a batch needs no spread call. */
type Arg = string | number | string[];
type ScriptCommands = { [name in keyof typeof scripts]: (...args: Arg[]) => Promise<unknown> };
/** A session's FIELDS as a script returns them (nil for a missing field). */
type Fields = Array<string | null>;

/**
 * Sessions in Redis, with exactly the reference's key layout (`{prefix}:session:{id}` hash,
 * `{prefix}:messages:{id}` list, `{prefix}:index:{agent_id}` sorted set by `updated_at` in epoch ms) and
 * a few documented extra keys. Every write is one Lua script call, atomic and one round trip.
 */
export class RedisStorageBackend extends StorageBackend {
  readonly #options: { url?: string | undefined; redisOptions?: RedisOptions | undefined; prefix: string };
  readonly #external: RedisClient | undefined;
  /** This backend as a writer: its appends are numbered, so that a resent one is applied once (see agentixAppend). */
  readonly #writer = randomUUID();
  #ops = { hour: -1, count: 0, expiring: "" };
  #client: (RedisClient & ScriptCommands) | undefined;

  constructor(options: RedisStorageOptions) {
    super();
    const { client, ...rest } = parseOptions(optionsSchema, options, "RedisStorageBackend");
    this.#options = rest;
    this.#external = client;
  }

  protected async insertSession(record: SessionRecord): Promise<SessionRecord | null> {
    const existing = await this.#insert(record, []);
    if (existing === null) return null;
    const found = fieldsRecord(existing);
    // A hash that exists but is not a session (fields missing): neither stored nor a record to return.
    if (!found)
      throw new AgentixStorageError(`RedisStorageBackend: the hash of session ${record.session_id} is not a session`);
    return found;
  }

  protected async readSession(sessionId: string): Promise<SessionRecord | null> {
    return toRecord(await this.#redis().hgetall(this.#key("session", sessionId)));
  }

  protected async querySessions(agentId: string, query: SessionQuery): Promise<SessionRecord[]> {
    const { cwd, limit, before } = query;
    const reply = await this.#redis().agentixList(
      this.#base(),
      agentId,
      cwd === undefined ? 0 : 1,
      cwd ?? "",
      limit ?? -1,
      before ? Date.parse(before.updated_at) : "",
      before?.session_id ?? "",
    );
    return records(reply);
  }

  protected async replaceMetadata(
    sessionId: string,
    metadata: JsonObject | null,
    at: string,
  ): Promise<SessionRecord | null> {
    const cwd = cwdOf(metadata);
    const reply = (await this.#redis().agentixMeta(
      this.#base(),
      sessionId,
      JSON.stringify(metadata),
      cwd === null ? 0 : 1,
      cwd ?? "",
      at,
      Date.parse(at),
    )) as Fields | null;
    return reply === null ? null : fieldsRecord(reply);
  }

  protected async copySession(sessionId: string, target: ForkTarget): Promise<boolean> {
    const { session_id, created_at } = target;
    const base = this.#base();
    return (await this.#redis().agentixCopy(base, sessionId, session_id, created_at, Date.parse(created_at))) === 1;
  }

  protected async removeSession(sessionId: string): Promise<void> {
    await this.#redis().agentixRemove(this.#base(), sessionId);
  }

  protected async appendMessages(sessionId: string, messages: MessageRecord[]): Promise<number | null> {
    // The script appends the (possibly raised) timestamp: content goes through Lua as an opaque string.
    const heads = messages.map(
      (m) => `${JSON.stringify({ role: m.role, content: m.content }).slice(0, -1)},"timestamp":"`,
    );
    const ts = (messages[0] as MessageRecord).timestamp;
    const { key, bit, setTtl } = this.#nextOp();
    const reply = (await this.#redis().agentixAppend(
      this.#base(),
      sessionId,
      ts,
      Date.parse(ts),
      key,
      bit,
      setTtl,
      heads,
    )) as number | null;
    // Once an append of this block succeeded with the TTL flag, its key expires: later appends skip the PEXPIRE.
    if (reply !== null && setTtl === 1) this.#ops.expiring = key;
    return reply;
  }

  protected async readLength(sessionId: string): Promise<number | null> {
    return (await this.#redis().agentixLength(this.#base(), sessionId)) as number | null;
  }

  protected async readMessages(sessionId: string, last: number | undefined): Promise<MessageRecord[] | null> {
    const redis = this.#redis();
    const messages = this.#key("messages", sessionId);
    const from = last === undefined ? 0 : -last;
    // The scripts write and delete a session's list together with its hash, so a non-empty list means the
    // session exists: one LRANGE. Only an empty one needs the atomic check that tells "empty" from "not found".
    let lines = await redis.lrange(messages, from, -1);
    if (lines.length === 0) {
      const reply = await redis.multi().exists(this.#key("session", sessionId)).lrange(messages, from, -1).exec();
      const [[existsError, exists] = [], [rangeError, range] = []] = reply ?? [];
      if (existsError || rangeError) throw existsError ?? rangeError;
      if (exists !== 1) return null;
      lines = range as string[];
    }
    return lines.map((line) => JSON.parse(line) as MessageRecord);
  }

  protected override async scanPage(
    after: string | null,
    limit: number,
    agentId: string | undefined,
  ): Promise<SessionRecord[]> {
    const redis = this.#redis();
    if (agentId === undefined) return records(await redis.agentixScan(this.#base(), after ?? "", limit));
    // The agent's index is ordered by time: sort its ids here rather than in Lua, which would block Redis.
    const ids = (await redis.zrange(this.#key("index", agentId), 0, "-1"))
      .filter((id) => after === null || id > after)
      .sort()
      .slice(0, limit);
    const pipeline = redis.pipeline();
    for (const id of ids) pipeline.hgetall(this.#key("session", id));
    const hashes = (await pipeline.exec()) ?? [];
    return hashes.flatMap(([error, hash]) => {
      if (error) throw error;
      return toRecord(hash as Record<string, string>) ?? []; // deleted meanwhile
    });
  }

  protected override async insertImported(record: SessionRecord, messages: MessageRecord[]): Promise<boolean> {
    return (await this.#insert(record, messages)) === null;
  }

  protected override syncTwin(): SyncTwin {
    if (this.#external) {
      throw new AgentixStorageError(
        "RedisStorageBackend: the ...Sync methods run on a worker thread with a connection of its own, " +
          "so they need a backend built from { url } rather than { client }",
      );
    }
    try {
      return { module: import.meta.url, exportName: "RedisStorageBackend", options: structuredClone(this.#options) };
    } catch (error) {
      throw new AgentixStorageError(
        "RedisStorageBackend: the ...Sync methods rebuild the backend on a worker thread, so redisOptions must " +
          "survive structuredClone (no functions such as retryStrategy)",
        { cause: error },
      );
    }
  }

  protected async dispose(): Promise<void> {
    const client = this.#client;
    this.#client = undefined;
    if (!client || this.#external) return;
    // Never connected (lazyConnect): nothing to say goodbye to. Otherwise QUIT waits for pending replies.
    if (client.status === "wait") return client.disconnect();
    await client.quit().catch(() => client.disconnect());
  }

  /** Insert-if-absent: `null` when stored, else the existing session's fields (nothing written). */
  async #insert(record: SessionRecord, messages: MessageRecord[]): Promise<Fields | null> {
    const { session_id, agent_id, created_at, updated_at, metadata } = record;
    const cwd = cwdOf(metadata);
    const reply = await this.#redis().agentixInsert(
      this.#base(),
      session_id,
      agent_id,
      created_at,
      updated_at,
      JSON.stringify(metadata),
      Date.parse(updated_at),
      cwd === null ? 0 : 1,
      cwd ?? "",
      messages.map((m) => JSON.stringify({ role: m.role, content: m.content, timestamp: m.timestamp })),
    );
    return reply as Fields | null;
  }

  /** The client, created on first use; with `lazyConnect` a backend that is never used opens nothing. */
  #redis(): RedisClient & ScriptCommands {
    if (this.#client) return this.#client;
    let client = this.#external;
    if (!client) {
      // The cast: ioredis's constructor types reject `replyMapping: undefined` under exactOptionalPropertyTypes.
      const options = { lazyConnect: true, ...this.#options.redisOptions } as RedisOptions & {
        replyMapping?: "legacy";
      };
      client = new Redis(this.#options.url as string, options);
      // Failures reach the caller through the command's rejection; without a listener ioredis also logs them.
      client.on("error", () => {});
    }
    for (const [name, lua] of Object.entries(scripts)) {
      client.defineCommand(name, { lua: prelude + lua, numberOfKeys: 0 });
    }
    this.#client = client as RedisClient & ScriptCommands;
    return this.#client;
  }

  /** The op number of the next append: its bitmap key (writer, hour, block of 2^20) and bit. */
  #nextOp(): { key: string; bit: number; setTtl: 0 | 1 } {
    const hour = Math.floor(Date.now() / OP_BLOCK_MS);
    if (hour !== this.#ops.hour) this.#ops = { hour, count: 0, expiring: "" };
    const n = this.#ops.count++;
    const key = `${this.#writer}:${hour}:${Math.floor(n / OPS_PER_KEY)}`;
    return { key, bit: n % OPS_PER_KEY, setTtl: this.#ops.expiring === key ? 0 : 1 };
  }

  /** A key for a plain command (ioredis adds the client's own `keyPrefix` to it). */
  #key(kind: "session" | "messages" | "index", id: string): string {
    return `${this.#options.prefix}:${kind}:${id}`;
  }

  /** The namespace scripts build keys from: they get no KEYS, so ioredis cannot add `keyPrefix` for them. */
  #base(): string {
    return `${this.#redis().options.keyPrefix ?? ""}${this.#options.prefix}`;
  }
}

/** An ioredis `Redis` (also from another copy of ioredis); a `Cluster` cannot run scripts across slots. */
function isClient(value: unknown): value is RedisClient {
  if (value instanceof Redis) return true;
  const v = value as { defineCommand?: unknown; isCluster?: unknown } | null;
  return typeof v?.defineCommand === "function" && v.isCluster !== true;
}

/** A session hash as a record, or `null` for a missing (empty) hash. */
function toRecord(hash: Record<string, string>): SessionRecord | null {
  const { session_id, agent_id, created_at, updated_at, metadata } = hash;
  return fieldsRecord([session_id, agent_id, created_at, updated_at, metadata].map((value) => value ?? null));
}

/** A session from the values of `FIELDS` in their order, or `null` when they are not a session's (deleted). */
function fieldsRecord([session_id, agent_id, created_at, updated_at, metadata]: Fields): SessionRecord | null {
  return session_id && agent_id && created_at && updated_at
    ? sessionRecord(session_id, agent_id, created_at, updated_at, JSON.parse(metadata ?? "null") as JsonObject | null)
    : null;
}

/** Records from a script's replies: per session, the values of `FIELDS` (skipped when deleted meanwhile). */
function records(reply: unknown): SessionRecord[] {
  return (reply as Fields[]).flatMap((fields) => fieldsRecord(fields) ?? []);
}
