/**
 * The Lua scripts of the Redis backend's cluster mode (src/redis-cluster.ts). Unlike the standalone scripts, each
 * declares every key it touches (KEYS), and all of one script's keys share a hash slot: a session's keys carry its
 * id as their hash tag, an agent's index keys carry the agent. What spans slots (a session and its agent's index, a
 * fork's source and target) is several scripts, in an order documented in the README ("Redis Cluster").
 * @internal
 */
import type { EditOutcome } from "./core/types.js";
import { luaLess, luaPush } from "./redis-scripts.js";

/** A session's op bitmap and edit outcomes expire this long after its writer's last op on it. */
const OP_TTL_MS = 2 * 3_600_000;
/** How many idempotency keys a session remembers (the contract's minimum). */
const KEYS_KEPT = 1000;

const prelude = `
local FIELDS = {'session_id', 'agent_id', 'created_at', 'updated_at', 'metadata'}
${luaLess}${luaPush}local function stamp(created, edits) return created .. ':' .. (redis.call('GET', edits) or '0') end
`;

/** Each script: its number of KEYS and its Lua. */
export const clusterScripts = {
  // KEYS: session, messages, keys, keyorder, edits, cwd. ARGV: id, agent, created_at, updated_at, metadata, has cwd,
  // cwd, messages... nil when stored; when the id is taken, the existing FIELDS and its cwd, nothing written.
  agentixInsert: [
    6,
    `
if redis.call('EXISTS', KEYS[1]) == 1 then
  local f = redis.call('HMGET', KEYS[1], unpack(FIELDS))
  f[6] = redis.call('GET', KEYS[6])
  return f
end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[1], 'session_id', ARGV[1], 'agent_id', ARGV[2], 'created_at', ARGV[3], 'updated_at', ARGV[4],
  'metadata', ARGV[5])
if ARGV[6] == '1' then redis.call('SET', KEYS[6], ARGV[7]) else redis.call('DEL', KEYS[6]) end
for i = 8, #ARGV, 1000 do redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
return false`,
  ],
  // KEYS: session, messages, op bitmap, cwd. ARGV: timestamp, op bit, then each message's JSON up to the timestamp's
  // value. nil when the session does not exist, else {length, agent, cwd, updated_at, moved}: moved is 1 when the
  // index must follow (updated_at moved, or a resent op whose first reply, and so its index step, was lost).
  agentixAppend: [
    4,
    `
local s = redis.call('HMGET', KEYS[1], 'agent_id', 'updated_at')
if not s[1] then return false end
local cwd = redis.call('GET', KEYS[4])
-- The op bitmap is this session's and this writer's (see agentixAppend in redis-scripts.ts): slot-local.
local seen = redis.call('SETBIT', KEYS[3], ARGV[2], 1)
redis.call('PEXPIRE', KEYS[3], ${OP_TTL_MS})
if seen == 1 then return {redis.call('LLEN', KEYS[2]), s[1], cwd, s[2], 1} end
local ts = ARGV[1]
local clamped = ts < s[2]
if clamped then ts = s[2] end
local length = push(KEYS[2], ARGV, 3, ts)
if not clamped then redis.call('HSET', KEYS[1], 'updated_at', ts) end
return {length, s[1], cwd, ts, clamped and 0 or 1}`,
  ],
  // KEYS: session, messages, keys, keyorder, edits, op outcomes, cwd. ARGV: at, op number, expected length ('':
  // none), from ('': none), pop ('1'), idempotency key ('': none), fingerprint, metadata given ('1'; then the
  // metadata, has cwd, cwd), then each message's JSON up to the timestamp's value. nil (not found) or {status,
  // value, agent, cwd, updated_at, moved}; status and value as in the standalone agentixEdit. An edit given
  // metadata writes it (and the cwd, and updated_at as agentixMeta does) and, written, adds the old cwd: its index
  // step is agentixMoveCwd's.
  agentixEdit: [
    7,
    `
local at, op, name = ARGV[1], ARGV[2], ARGV[6]
local meta = ARGV[8] == '1'
local s = redis.call('HMGET', KEYS[1], 'agent_id', 'updated_at')
local outcome = redis.call('HGET', KEYS[6], op)
if outcome then return {'written', outcome, s[1], redis.call('GET', KEYS[7]), s[2], s[1] and 1 or 0} end
if not s[1] then return false end
local cwd = redis.call('GET', KEYS[7])
if name ~= '' then
  local remembered = redis.call('HGET', KEYS[3], name)
  if remembered then return {'replayed', remembered, s[1], cwd, s[2], 0} end
end
local length = redis.call('LLEN', KEYS[2])
if ARGV[3] ~= '' and tonumber(ARGV[3]) ~= length then return {'conflict', length, s[1], cwd, s[2], 0} end
local from = ARGV[4] ~= '' and tonumber(ARGV[4]) or nil
if from and from > length then return {'out-of-range', length, s[1], cwd, s[2], 0} end
local popped, changed = false, false
if ARGV[5] == '1' then
  if length > 0 then popped, length, changed = redis.call('RPOP', KEYS[2]), length - 1, true end
  if popped then redis.call('INCR', KEYS[5]) end
elseif from and from < length then
  redis.call('INCR', KEYS[5])
  if from == 0 then redis.call('UNLINK', KEYS[2]) else redis.call('LTRIM', KEYS[2], 0, from - 1) end
  length, changed = from, true
end
local clamped = at < s[2]
local first = meta and 12 or 9
if #ARGV >= first then length, changed = push(KEYS[2], ARGV, first, clamped and s[2] or at), true end
local moved = (changed or meta) and not clamped
local old = cwd
if meta then
  if moved then
    redis.call('HSET', KEYS[1], 'metadata', ARGV[9], 'updated_at', at)
  else
    redis.call('HSET', KEYS[1], 'metadata', ARGV[9])
  end
  if ARGV[10] == '1' then cwd = ARGV[11] else cwd = false end
  if cwd then redis.call('SET', KEYS[7], cwd) else redis.call('DEL', KEYS[7]) end
elseif moved then
  redis.call('HSET', KEYS[1], 'updated_at', at)
end
outcome = '{"fingerprint":' .. (name ~= '' and cjson.encode(ARGV[7]) or 'null') .. ',"length":' .. length ..
  ',"popped":' .. (popped or 'null') .. '}'
if name ~= '' then
  redis.call('HSET', KEYS[3], name, outcome)
  if redis.call('RPUSH', KEYS[4], name) > ${KEYS_KEPT} then redis.call('HDEL', KEYS[3], redis.call('LPOP', KEYS[4])) end
end
redis.call('HSET', KEYS[6], op, outcome)
redis.call('PEXPIRE', KEYS[6], ${OP_TTL_MS})
local reply = {'written', outcome, s[1], cwd, moved and at or s[2], moved and 1 or 0}
if meta then reply[7] = old end
return reply`,
  ],
  // KEYS: session, cwd. ARGV: metadata, has cwd, cwd, at. nil when not found, else the updated FIELDS, then the old
  // cwd and whether updated_at moved.
  agentixMeta: [
    2,
    `
local s = redis.call('HMGET', KEYS[1], 'agent_id', 'updated_at')
if not s[1] then return false end
local moved = s[2] < ARGV[4]
if moved then
  redis.call('HSET', KEYS[1], 'metadata', ARGV[1], 'updated_at', ARGV[4])
else
  redis.call('HSET', KEYS[1], 'metadata', ARGV[1])
end
local old = redis.call('GET', KEYS[2])
if ARGV[2] == '1' then redis.call('SET', KEYS[2], ARGV[3]) else redis.call('DEL', KEYS[2]) end
local f = redis.call('HMGET', KEYS[1], unpack(FIELDS))
f[6], f[7] = old, moved and 1 or 0
return f`,
  ],
  // KEYS: session, messages. The list's length, nil when the session does not exist.
  agentixLength: [
    2,
    `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('LLEN', KEYS[2])`,
  ],
  // KEYS: session, messages, keys, keyorder, edits, cwd. Deletes the session's keys; {agent, cwd} (for its index
  // entries, removed next), or nil when it did not exist.
  agentixRemove: [
    6,
    `
local agent = redis.call('HGET', KEYS[1], 'agent_id')
local cwd = redis.call('GET', KEYS[6])
redis.call('UNLINK', unpack(KEYS))
if not agent then return false end
return {agent, cwd}`,
  ],
  // KEYS: source session, messages, edits, cwd. ARGV: length ('': all), most messages to return, most bytes of them
  // (estimated). {'not-found'}, {'out-of-range', length} or {'ok', agent, metadata, stamp, length, cwd, bytes per
  // message (0: unknown), messages...}, the messages (positions 0..length-1) only when within both limits.
  agentixCopyStart: [
    4,
    `
local s = redis.call('HMGET', KEYS[1], 'agent_id', 'metadata', 'created_at')
if not s[1] then return {'not-found'} end
local total = redis.call('LLEN', KEYS[2])
local length = ARGV[1] == '' and total or tonumber(ARGV[1])
if length > total then return {'out-of-range', total} end
-- pcall: a service may refuse MEMORY; then the chunks are sized as they are read.
local bytes = total > 0 and redis.pcall('MEMORY', 'USAGE', KEYS[2]) or 0
local each = type(bytes) == 'number' and total > 0 and math.ceil(bytes / total) or 0
local reply = {'ok', s[1], s[2], stamp(s[3], KEYS[3]), length, redis.call('GET', KEYS[4]), each}
if length > 0 and length <= tonumber(ARGV[2]) and each > 0 and each * length <= tonumber(ARGV[3]) then
  for _, line in ipairs(redis.call('LRANGE', KEYS[2], 0, length - 1)) do reply[#reply + 1] = line end
end
return reply`,
  ],
  // KEYS: source session, messages, edits. ARGV: stamp, start, stop. The source's positions start..stop, or nil when
  // the source was deleted or edited since the stamp (start > stop: just the check).
  agentixCopyChunk: [
    3,
    `
local created = redis.call('HGET', KEYS[1], 'created_at')
if not created or stamp(created, KEYS[3]) ~= ARGV[1] then return false end
return redis.call('LRANGE', KEYS[2], ARGV[2], ARGV[3])`,
  ],
  // KEYS: fork's session, messages, keys, keyorder, edits, cwd, temp key. ARGV: id, agent, created_at, metadata, has
  // cwd, cwd, messages in the temp key ('': the messages follow in ARGV), messages... Makes the fork visible in one
  // step: 'copied', 'exists' (nothing written) or 'retry' (the temp key is not what was copied; it is gone).
  agentixPublish: [
    7,
    `
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('UNLINK', KEYS[7])
  return 'exists'
end
if ARGV[7] ~= '' and redis.call('LLEN', KEYS[7]) ~= tonumber(ARGV[7]) then
  redis.call('UNLINK', KEYS[7])
  return 'retry'
end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
if ARGV[7] == '' then
  for i = 8, #ARGV, 1000 do redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV))) end
elseif tonumber(ARGV[7]) > 0 then
  redis.call('RENAME', KEYS[7], KEYS[2])
  redis.call('PERSIST', KEYS[2])
end
redis.call('HSET', KEYS[1], 'session_id', ARGV[1], 'agent_id', ARGV[2], 'created_at', ARGV[3], 'updated_at', ARGV[3],
  'metadata', ARGV[4])
if ARGV[5] == '1' then redis.call('SET', KEYS[6], ARGV[6]) else redis.call('DEL', KEYS[6]) end
return 'copied'`,
  ],
  // KEYS: session, messages, keys, keyorder, edits, cwd, temp (a streamed import's staged list, in the session's
  // slot). ARGV: id, agent, created_at, updated_at, metadata, has cwd, cwd, length. A streamed import's publish: 1
  // when published (the temp list RENAMEd into place: O(1)), 0 when the id is taken, -1 when the temp list is not
  // the whole import; the temp key is gone in every case. The index step follows, as for a create.
  agentixImportPublish: [
    7,
    `
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('UNLINK', KEYS[7])
  return 0
end
local length = tonumber(ARGV[8])
if redis.call('LLEN', KEYS[7]) ~= length then
  redis.call('UNLINK', KEYS[7])
  return -1
end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
if length > 0 then
  redis.call('RENAME', KEYS[7], KEYS[2])
  redis.call('PERSIST', KEYS[2])
end
redis.call('HSET', KEYS[1], 'session_id', ARGV[1], 'agent_id', ARGV[2], 'created_at', ARGV[3], 'updated_at', ARGV[4],
  'metadata', ARGV[5])
if ARGV[6] == '1' then redis.call('SET', KEYS[6], ARGV[7]) else redis.call('DEL', KEYS[6]) end
return 1`,
  ],
  // KEYS: index, cwd index (or the index again), ids. ARGV: id, score, has cwd, in ids ('1'). Adds or moves a
  // session's entries forward (GT: steps of concurrent writes may arrive in any order).
  agentixIndex: [
    3,
    `
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
if ARGV[3] == '1' then redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1]) end
if ARGV[4] == '1' then redis.call('ZADD', KEYS[3], 0, ARGV[1]) end
return 1`,
  ],
  // KEYS: old cwd index, new cwd index, index. ARGV: id, score, has old, has new, moved. A metadata update's index
  // step: the entry moves from the old cwd index to the new one, and forward in the index when updated_at moved.
  agentixMoveCwd: [
    3,
    `
if ARGV[3] == '1' and (ARGV[4] ~= '1' or KEYS[1] ~= KEYS[2]) then redis.call('ZREM', KEYS[1], ARGV[1]) end
if ARGV[4] == '1' then redis.call('ZADD', KEYS[2], 'GT', ARGV[2], ARGV[1]) end
if ARGV[5] == '1' then redis.call('ZADD', KEYS[3], 'GT', ARGV[2], ARGV[1]) end
return 1`,
  ],
  // KEYS: index, cwd index (or the index again), ids. ARGV: id, has cwd. A delete's index step.
  agentixUnindex: [
    3,
    `
redis.call('ZREM', KEYS[1], ARGV[1])
if ARGV[2] == '1' then redis.call('ZREM', KEYS[2], ARGV[1]) end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1`,
  ],
  // KEYS: a sorted set. ARGV: id, the score a reader saw, the new score ('': remove). A reader's repair of an entry
  // that disagrees with its session: applied only when the entry is still what the reader saw. 1 when applied.
  agentixRepair: [
    1,
    `
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1]) else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end
return 1`,
  ],
  // KEYS: index or cwd index. ARGV: limit (-1: all), before score ('': none), before id. {id, score, ...} in the
  // listing order (greatest score, then greatest id, first).
  agentixList: [
    1,
    `
local k, limit, score, before = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
local out = {}
local function room() return limit < 0 or #out / 2 < limit end
if score == '' then
  out = redis.call('ZREVRANGEBYSCORE', k, '+inf', '-inf', 'WITHSCORES', 'LIMIT', 0, limit)
else
  local same = redis.call('ZREVRANGEBYSCORE', k, score, score, 'WITHSCORES')
  for i = 1, #same, 2 do
    if room() and less(same[i], before) then out[#out + 1], out[#out + 2] = same[i], same[i + 1] end
  end
  if room() then
    local rest = limit < 0 and -1 or limit - #out / 2
    for _, v in ipairs(redis.call('ZREVRANGEBYSCORE', k, '(' .. score, '-inf', 'WITHSCORES', 'LIMIT', 0, rest)) do
      out[#out + 1] = v
    end
  end
end
return out`,
  ],
} as const satisfies Record<string, readonly [number, string]>;

/** The scripts as ioredis defines them: the prelude before each. */
export function clusterCommands(): Array<[string, { numberOfKeys: number; lua: string }]> {
  return Object.entries(clusterScripts).map(([name, [numberOfKeys, lua]]) => [
    name,
    { numberOfKeys, lua: prelude + lua },
  ]);
}

/** agentixEdit's reply: status, value, agent, cwd, updated_at, moved, and the old cwd when given metadata. */
export type EditReply = [
  EditOutcome["status"],
  string | number,
  string | null,
  string | null,
  string | null,
  number,
  old?: string | null,
];
