// The Redis floor: the least work that still keeps the contract's durability and index on the backend's key layout,
// written plainly against ioredis. An append is one script doing RPUSH + HSET updated_at + ZADD (after the HMGET
// that finds the agent's index and the clamp), nothing else: no op bitmap for resent appends, no cwd index. A
// listing is one ZREVRANGE + HMGETs; a fork is COPY + HSET + ZADDs. Reads are the mirror's (one LRANGE).
import type { Redis } from "ioredis";
import { uuidv7 } from "uuidv7";
import type { MessageContent, NewMessage, Role, SessionCursor, SessionRecord } from "../../src/core/types.js";
import { RawRedis } from "./redis.js";

const scripts = {
  // KEYS: session hash, messages list. ARGV: prefix, id, timestamp, score, expected length ('' for none), lines up
  // to the timestamp's value. Returns the new length, -1: no session, -2: the length was not the expected one.
  floorAppend: `
local s = redis.call('HMGET', KEYS[1], 'agent_id', 'updated_at')
if not s[1] then return -1 end
if ARGV[5] ~= '' and redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[5]) then return -2 end
local ts = ARGV[3]
if ts < s[2] then ts = s[2] end
local lines = {}
for i = 6, #ARGV do lines[#lines + 1] = ARGV[i] .. ts .. '"}' end
local length = redis.call('RPUSH', KEYS[2], unpack(lines))
if ts == ARGV[3] then
  redis.call('HSET', KEYS[1], 'updated_at', ts)
  redis.call('ZADD', ARGV[1] .. ':index:' .. s[1], ARGV[4], ARGV[2])
end
return length`,
  // KEYS: the agent's index. ARGV: prefix, limit. Equal scores come greatest id first from ZREVRANGE: the order.
  floorList: `
local ids = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for i, id in ipairs(ids) do
  ids[i] = redis.call('HMGET', ARGV[1] .. ':session:' .. id, 'session_id', 'agent_id', 'created_at', 'updated_at', 'metadata')
end
return ids`,
  // KEYS: source hash, source messages, new hash, new messages, all sessions. ARGV: prefix, new id, now, score
  floorFork: `
local s = redis.call('HMGET', KEYS[1], 'agent_id', 'metadata')
if not s[1] then return 0 end
redis.call('HSET', KEYS[3], 'session_id', ARGV[2], 'agent_id', s[1], 'created_at', ARGV[3], 'updated_at', ARGV[3], 'metadata', s[2])
redis.call('COPY', KEYS[2], KEYS[4])
redis.call('ZADD', KEYS[5], 0, ARGV[2])
redis.call('ZADD', ARGV[1] .. ':index:' .. s[1], ARGV[4], ARGV[2])
return 1`,
};

type Client = Redis & {
  floorAppend(...args: Array<string | number>): Promise<number>;
  floorList(...args: Array<string | number>): Promise<Array<Array<string | null>>>;
  floorFork(...args: Array<string | number>): Promise<number>;
};

/** A message's JSON up to its timestamp's value, which the script appends. */
const head = (role: Role, content: MessageContent) => `${JSON.stringify({ role, content }).slice(0, -1)},"timestamp":"`;

export class FloorRedis extends RawRedis {
  readonly #redis: Client;
  readonly #prefix: string;

  constructor(redis: Redis, prefix: string) {
    super(redis, prefix);
    redis.defineCommand("floorAppend", { lua: scripts.floorAppend, numberOfKeys: 2 });
    redis.defineCommand("floorList", { lua: scripts.floorList, numberOfKeys: 1 });
    redis.defineCommand("floorFork", { lua: scripts.floorFork, numberOfKeys: 5 });
    this.#redis = redis as Client;
    this.#prefix = prefix;
  }

  override async saveMessage(sessionId: string, role: Role, content: MessageContent): Promise<void> {
    const p = this.#prefix;
    const ts = new Date().toISOString();
    const keys = [`${p}:session:${sessionId}`, `${p}:messages:${sessionId}`];
    const length = await this.#redis.floorAppend(...keys, p, sessionId, ts, Date.parse(ts), "", head(role, content));
    if (length === -1) throw new Error(`session not found: ${sessionId}`);
  }

  override async saveMessages(
    sessionId: string,
    messages: NewMessage[],
    expectedLength?: number,
  ): Promise<number | null> {
    const p = this.#prefix;
    const ts = new Date().toISOString();
    const keys = [`${p}:session:${sessionId}`, `${p}:messages:${sessionId}`];
    const lines = messages.map((m) => head(m.role, m.content));
    const expected = expectedLength === undefined ? "" : expectedLength;
    const length = await this.#redis.floorAppend(...keys, p, sessionId, ts, Date.parse(ts), expected, ...lines);
    if (length === -1) throw new Error(`session not found: ${sessionId}`);
    return length === -2 ? null : length;
  }

  override async listSessions(agentId: string, limit: number, before?: SessionCursor): Promise<SessionRecord[]> {
    // A page after a cursor needs the cursor's score and ties: the mirror's script is already that least.
    if (before) return super.listSessions(agentId, limit, before);
    const p = this.#prefix;
    const rows = await this.#redis.floorList(`${p}:index:${agentId}`, p, limit);
    return rows.map(([session_id, agent_id, created_at, updated_at, metadata]) => ({
      session_id: session_id as string,
      agent_id: agent_id as string,
      created_at: created_at as string,
      updated_at: updated_at as string,
      metadata: JSON.parse(metadata ?? "null"),
    }));
  }

  override async forkSession(sessionId: string): Promise<string> {
    const p = this.#prefix;
    const id = uuidv7();
    const at = new Date().toISOString();
    const keys = [
      `${p}:session:${sessionId}`,
      `${p}:messages:${sessionId}`,
      `${p}:session:${id}`,
      `${p}:messages:${id}`,
      `${p}:sessions`,
    ];
    if ((await this.#redis.floorFork(...keys, p, id, at, Date.parse(at))) !== 1) {
      throw new Error(`session not found: ${sessionId}`);
    }
    return id;
  }
}
