/**
 * The Lua scripts of the Redis backend (src/redis.ts), each one atomic call. Keys are built inside the scripts from
 * the namespace in ARGV[1], so the scripts declare no KEYS (standalone Redis or Sentinel, never Cluster).
 * @internal
 */
import { cwdOf, sessionRecord } from "./core/records.js";
import type { CopyOutcome, EditOutcome, JsonObject, MessageRecord, SessionRecord } from "./core/types.js";

/**
 * A writer's op bitmaps: one key per hour (and per 2^20 ops, 128 KiB at most), which expires an hour after its
 * hour ends, far longer than any reconnect. Only a block's first successful write sets the TTL, so that an
 * append costs one SETBIT and not also a PEXPIRE.
 */
export const OP_BLOCK_MS = 3_600_000;
const OP_TTL_MS = 2 * OP_BLOCK_MS;
export const OPS_PER_KEY = 2 ** 20;
/**
 * A read of more than PAGE messages goes in pages (LRANGE in C: about a ms for 4096 messages of 300 bytes), each of
 * as many as fit in PAGE_BYTES (characters, as JS counts them) at the size of the messages read, at most PAGE. (Pages
 * of 2 MiB, ~7,900 of the stall bench's messages, had 9 of ~130 LRANGEs over 10 ms at load 20; 4,096 had none.)
 */
export const PAGE = 4096;
export const PAGE_BYTES = 1024 * 1024;
/**
 * Most messages per chunk of a fork (see src/redis-fork.ts), and per fork that cluster mode copies through its start
 * and publish scripts.
 */
export const CHUNK = 1024;
/**
 * Most bytes of messages per LRANGE or RPUSH of a fork's chunk (a longer message goes alone): about a millisecond of
 * Redis time at most, whatever the messages' size (bench/redis-fork-cost.ts).
 */
export const CHUNK_BYTES = 512 * 1024;
/**
 * A standalone fork whose source list takes at most this much memory (MEMORY USAGE, an estimate from a sample) is
 * one COPY in the fork's script: COPY duplicates the list's nodes in C, about 1-6 ms for 4 MiB
 * (bench/redis-fork-cost.ts). Larger ones are copied in chunks.
 */
export const COPY_BYTES = 4 * 1024 * 1024;
/** A chunked fork's publish script copies at most this many messages appended since the last chunk (through Lua). */
export const PUBLISH_TAIL = 16;
/** A fork's temp key expires this long after its last chunk, so that a crash mid-fork leaves nothing behind. */
export const TEMP_TTL_MS = 600_000;
/** How many idempotency keys a session remembers (the contract's minimum). */
const KEYS_KEPT = 1000;

/** Lua helpers shared with the cluster mode's scripts (src/redis-cluster-scripts.ts). */
export const luaLess = `-- Byte order, as in JS for our ASCII ids and fixed-shape timestamps (Lua's '<' follows Redis's LC_COLLATE).
local function less(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = a:byte(i), b:byte(i)
    if x ~= y then return x < y end
  end
  return #a < #b
end
`;
export const luaPush = `-- Appends lines (each message's JSON up to its timestamp's value) with the timestamp ts; the list's new length.
-- unpack is bounded by Lua's stack: RPUSH in chunks, still in one atomic script.
local function push(list, heads, first, ts)
  local tail = ts .. '"}'
  if first == #heads then return redis.call('RPUSH', list, heads[first] .. tail) end
  local lines, length = {}, 0
  for i = first, #heads do lines[#lines + 1] = heads[i] .. tail end
  for i = 1, #lines, 1000 do length = redis.call('RPUSH', list, unpack(lines, i, math.min(i + 999, #lines))) end
  return length
end
`;

// Every script gets the key namespace as ARGV[1] and builds its keys from it (see `key` and `cwdKey`).
export const prelude = `
local base = ARGV[1]
local FIELDS = {'session_id', 'agent_id', 'created_at', 'updated_at', 'metadata'}
local function key(kind, id) return base .. ':' .. kind .. ':' .. id end
-- The agent id's byte length makes (agent, cwd) -> key one-to-one although both may contain ':'.
local function cwdKey(agent, cwd) return base .. ':cwd:' .. #agent .. ':' .. agent .. ':' .. cwd end
${luaLess}local function index(agent, id, score, cwd)
  redis.call('ZADD', key('index', agent), score, id)
  if cwd then redis.call('ZADD', cwdKey(agent, cwd), score, id) end
end
-- The agent's id-ordered set {base}:ids:{agent} (scans by agent) exists once a scan built it; while one builds it,
-- {base}:idsbuild:{agent}. Writers keep whichever exists up to date.
local function idSets(agent, command, id)
  for _, k in ipairs({key('ids', agent), key('idsbuild', agent)}) do
    if redis.call('EXISTS', k) == 1 then
      if command == 'ZADD' then redis.call('ZADD', k, 0, id) else redis.call('ZREM', k, id) end
    end
  end
end
${luaPush}-- The session's keys besides its hash, deleted with it and never inherited by a new session of the same id.
local function extraKeys(id) return key('messages', id), key('keys', id), key('keyorder', id), key('edits', id) end
-- What a chunked read or fork checks to know that positions it already read did not change: appends only add
-- positions, so the session (its created_at) and its count of edits that removed messages.
local function stamp(id, created) return created .. ':' .. (redis.call('GET', key('edits', id)) or '0') end
-- A fork's metadata and cwd (ARGV 7-10 of agentixCopy and agentixPublish): the source's, or the ones given.
local function forkMeta(from, metadata)
  local cwd = redis.call('HGET', base .. ':cwds', from) or nil
  if ARGV[7] == '1' then metadata, cwd = ARGV[8], ARGV[9] == '1' and ARGV[10] or nil end
  return metadata, cwd
end
-- Makes the fork visible, its messages in place: its hash, cwd and index entries.
local function register(agent, to, at, score, metadata, cwd)
  redis.call('HSET', key('session', to), 'session_id', to, 'agent_id', agent, 'created_at', at, 'updated_at', at,
    'metadata', metadata)
  if cwd then redis.call('HSET', base .. ':cwds', to, cwd) else redis.call('HDEL', base .. ':cwds', to) end
  redis.call('ZADD', base .. ':sessions', 0, to)
  index(agent, to, score, cwd)
  idSets(agent, 'ZADD', to)
end
-- Replaces a session's metadata and cwd (agentixMeta, and agentixEdit given metadata): the cwd hash entry and the
-- cwd index follow; updated_at moves to at (its score) only when moved (never backwards).
local function setMeta(id, agent, metadata, cwd, moved, at, score)
  if moved then
    redis.call('HSET', key('session', id), 'metadata', metadata, 'updated_at', at)
  else
    redis.call('HSET', key('session', id), 'metadata', metadata)
  end
  local old = redis.call('HGET', base .. ':cwds', id)
  if old then redis.call('ZREM', cwdKey(agent, old), id) end
  if cwd then redis.call('HSET', base .. ':cwds', id, cwd) else redis.call('HDEL', base .. ':cwds', id) end
  if moved then
    index(agent, id, score, cwd)
  elseif cwd then
    -- updated_at stays: so does the session's score, which the index holds.
    local kept = redis.call('ZSCORE', key('index', agent), id)
    if kept then redis.call('ZADD', cwdKey(agent, cwd), kept, id) end
  end
end
`;

/** The scripts, each one atomic call (EVALSHA, falling back to EVAL on NOSCRIPT: defineCommand). */
export const scripts = {
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
idSets(agent, 'ZADD', id)
redis.call('UNLINK', extraKeys(id))
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
-- Each write (a whole batch: one op) carries its writer's op number. ioredis resends the commands in flight when
-- a connection drops, so an append whose reply was lost arrives twice: its bit is set already, and it is not
-- applied again, but still answered with the length.
local ops = base .. ':op:' .. ARGV[5]
local seen = redis.call('SETBIT', ops, ARGV[6], 1)
if ARGV[7] == '1' then redis.call('PEXPIRE', ops, ${OP_TTL_MS}) end
if seen == 1 then return redis.call('LLEN', list) end
-- Fixed-shape ISO timestamps differ only in digits, which every collation orders like bytes.
local clamped = ts < s[2]
if clamped then ts = s[2] end
local length = push(list, ARGV, 8, ts)
if not clamped then
  redis.call('HSET', key('session', id), 'updated_at', ts)
  index(s[1], id, ARGV[4], redis.call('HGET', base .. ':cwds', id) or nil)
end
return length`,
  // ARGV: base, id, at, at's score, op block, op number, expected length ('': none), from ('': none), pop ('1'),
  // idempotency key ('': none), fingerprint, metadata given ('1'; then the metadata, has cwd, cwd), then each
  // message's JSON up to the timestamp's value. Given metadata is written with the edit (see setMeta).
  // Returns nil (not found), {'conflict' | 'out-of-range', length}, or {'written' | 'replayed', outcome}: the JSON
  // {"fingerprint", "length", "popped"} of the write (popped: the message's JSON as stored, or null).
  agentixEdit: `
local id, at, op, name = ARGV[2], ARGV[3], ARGV[6], ARGV[10]
local meta = ARGV[12] == '1'
-- An edit is an op like an append (see agentixAppend), but a resent one must answer with what the first did (a
-- pop, the message it popped): instead of a bit, its outcome is kept under its op number, and it is not applied
-- again (a pop would pop twice).
local done = base .. ':op:' .. ARGV[5] .. ':edits'
local outcome = redis.call('HGET', done, op)
if outcome then return {'written', outcome} end
local s = redis.call('HMGET', key('session', id), 'agent_id', 'updated_at')
if not s[1] then return false end
if name ~= '' then
  local remembered = redis.call('HGET', key('keys', id), name)
  if remembered then return {'replayed', remembered} end
end
local list = key('messages', id)
local length = redis.call('LLEN', list)
if ARGV[7] ~= '' and tonumber(ARGV[7]) ~= length then return {'conflict', length} end
local from = ARGV[8] ~= '' and tonumber(ARGV[8]) or nil
if from and from > length then return {'out-of-range', length} end
local popped, changed = false, false
if ARGV[9] == '1' then
  if length > 0 then popped, length, changed = redis.call('RPOP', list), length - 1, true end
  if popped then redis.call('INCR', key('edits', id)) end
elseif from and from < length then
  redis.call('INCR', key('edits', id))
  -- LTRIM 0 -1 would keep everything: from 0 is a DEL.
  if from == 0 then redis.call('UNLINK', list) else redis.call('LTRIM', list, 0, from - 1) end
  length, changed = from, true
end
local clamped = at < s[2]
local first = meta and 16 or 13
if #ARGV >= first then length, changed = push(list, ARGV, first, clamped and s[2] or at), true end
if meta then
  -- Written, even if the list did not change: updated_at moves too (never backwards).
  setMeta(id, s[1], ARGV[13], ARGV[14] == '1' and ARGV[15] or nil, not clamped, at, ARGV[4])
elseif changed and not clamped then
  redis.call('HSET', key('session', id), 'updated_at', at)
  index(s[1], id, ARGV[4], redis.call('HGET', base .. ':cwds', id) or nil)
end
-- Built, not encoded: the popped message goes in as the JSON it is stored as, never decoded by Lua.
outcome = '{"fingerprint":' .. (name ~= '' and cjson.encode(ARGV[11]) or 'null') .. ',"length":' .. length ..
  ',"popped":' .. (popped or 'null') .. '}'
if name ~= '' then
  redis.call('HSET', key('keys', id), name, outcome)
  -- A key is pushed once (a remembered one is replayed above): the list holds the keys in the order written.
  if redis.call('RPUSH', key('keyorder', id), name) > ${KEYS_KEPT} then
    redis.call('HDEL', key('keys', id), redis.call('LPOP', key('keyorder', id)))
  end
end
redis.call('HSET', done, op, outcome)
redis.call('PEXPIRE', done, ${OP_TTL_MS})
return {'written', outcome}`,
  // ARGV: base, id, metadata, has cwd, cwd, at, at's score. The updated FIELDS, nil when the session does not exist.
  agentixMeta: `
local id, at = ARGV[2], ARGV[6]
local s = redis.call('HMGET', key('session', id), 'agent_id', 'updated_at')
if not s[1] then return false end
setMeta(id, s[1], ARGV[3], ARGV[4] == '1' and ARGV[5] or nil, s[2] < at, at, ARGV[7])
return redis.call('HMGET', key('session', id), unpack(FIELDS))`,
  // ARGV: base, id. The list's length, nil when the session does not exist (an empty list is no key at all).
  agentixLength: `
local id = ARGV[2]
if redis.call('EXISTS', key('session', id)) == 0 then return false end
return redis.call('LLEN', key('messages', id))`,
  // ARGV: base, source id, new id, created_at, score, length ('': all), metadata given ('1'), metadata, has cwd, cwd,
  // most bytes (MEMORY USAGE of the source list) to copy in this script ('': any number). Returns {'copied'},
  // {'not-found'}, {'exists'}, {'out-of-range', the source's length} or, over the limit, {'chunked', length, stamp,
  // the source's bytes per message (0: unknown)} with nothing written:
  // the caller copies in chunks (LRANGE, RPUSH: see copySession) and publishes (agentixPublish).
  agentixCopy: `
local from, to, at = ARGV[2], ARGV[3], ARGV[4]
local s = redis.call('HMGET', key('session', from), 'agent_id', 'metadata', 'created_at')
if not s[1] then return {'not-found'} end
if redis.call('EXISTS', key('session', to)) == 1 then return {'exists'} end
local source, target = key('messages', from), key('messages', to)
local total = redis.call('LLEN', source)
local length = ARGV[6] == '' and total or tonumber(ARGV[6])
if length > total then return {'out-of-range', total} end
if ARGV[11] ~= '' and length > 0 then
  -- pcall: a service may refuse MEMORY; then every fork of messages is chunked, its chunks sized as it goes.
  local bytes = redis.pcall('MEMORY', 'USAGE', source)
  if type(bytes) ~= 'number' or bytes > tonumber(ARGV[11]) then
    return {'chunked', length, stamp(from, s[3]), type(bytes) == 'number' and math.ceil(bytes / total) or 0}
  end
end
local metadata, cwd = forkMeta(from, s[2])
-- Keys left under the new id without its hash (deleted by hand, say) must not become the fork's.
redis.call('UNLINK', extraKeys(to))
if length > 0 and (ARGV[11] ~= '' or length * 2 >= total) then
  -- COPY and LTRIM run in C: cheaper than moving the messages through Lua, unless (in a fork of any size, when the
  -- chunked one was restarted too often) most are left behind.
  redis.call('COPY', source, target)
  if length < total then redis.call('LTRIM', target, 0, length - 1) end
else
  for i = 0, length - 1, 1000 do
    redis.call('RPUSH', target, unpack(redis.call('LRANGE', source, i, math.min(i + 999, length - 1))))
  end
end
register(s[1], to, at, ARGV[5], metadata, cwd)
return {'copied'}`,
  // ARGV: as agentixCopy's 1-10, then temp name, stamp, messages copied. Makes a chunked fork visible in one short
  // step: the temp key renamed to the fork's list (with the source's newer messages when the whole source is
  // forked and at most PUBLISH_TAIL were appended meanwhile), its hash and index entries. Returns agentixCopy's replies,
  // {'behind', the source's length} (more appended: copy more, publish again) or {'retry'} (the source
  // was edited, or the temp key is not what was copied: the temp key is gone).
  agentixPublish: `
local from, to, at, tmp = ARGV[2], ARGV[3], ARGV[4], key('tmp', ARGV[11])
local s = redis.call('HMGET', key('session', from), 'agent_id', 'metadata', 'created_at')
local copied = tonumber(ARGV[13])
local outcome
if not s[1] then outcome = {'not-found'}
elseif stamp(from, s[3]) ~= ARGV[12] or redis.call('LLEN', tmp) ~= copied then outcome = {'retry'}
elseif redis.call('EXISTS', key('session', to)) == 1 then outcome = {'exists'} end
if outcome then
  redis.call('UNLINK', tmp)
  return outcome
end
if ARGV[6] == '' then
  local total = redis.call('LLEN', key('messages', from))
  if total - copied > ${PUBLISH_TAIL} then return {'behind', total} end
  for i = copied, total - 1, 1000 do
    redis.call('RPUSH', tmp, unpack(redis.call('LRANGE', key('messages', from), i, math.min(i + 999, total - 1))))
  end
end
local metadata, cwd = forkMeta(from, s[2])
redis.call('UNLINK', extraKeys(to))
redis.call('RENAME', tmp, key('messages', to))
redis.call('PERSIST', key('messages', to))
register(s[1], to, at, ARGV[5], metadata, cwd)
return {'copied'}`,
  // ARGV: base, id
  agentixRemove: `
local id = ARGV[2]
local agent = redis.call('HGET', key('session', id), 'agent_id')
redis.call('UNLINK', key('session', id), extraKeys(id))
if not agent then return 0 end
local cwd = redis.call('HGET', base .. ':cwds', id)
if cwd then redis.call('ZREM', cwdKey(agent, cwd), id) end
redis.call('HDEL', base .. ':cwds', id)
redis.call('ZREM', base .. ':sessions', id)
redis.call('ZREM', key('index', agent), id)
idSets(agent, 'ZREM', id)
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
  // ARGV: base, agent, after ('': from the start), limit. A page of the agent's sessions in id order from its id set,
  // or nil when the set must be built first (agentixIdsBuild, agentixIdsPublish).
  agentixScanAgent: `
local agent, limit = ARGV[2], tonumber(ARGV[4])
local ids = key('ids', agent)
if redis.call('EXISTS', ids) == 0 then
  if redis.call('EXISTS', key('index', agent)) == 0 then return {} end
  return false
end
local page = redis.call('ZRANGEBYLEX', ids, ARGV[3] == '' and '-' or '(' .. ARGV[3], '+', 'LIMIT', 0, limit)
for i, id in ipairs(page) do page[i] = redis.call('HMGET', key('session', id), unpack(FIELDS)) end
return page`,
  // ARGV: base, agent, ids from the agent's index... Adds those still the agent's sessions to the set being built,
  // which it creates first (with the member '', never an id, so that writers keep it even while empty). 0 when the
  // set is built already.
  agentixIdsBuild: `
local agent = ARGV[2]
if redis.call('EXISTS', key('ids', agent)) == 1 then return 0 end
local build = key('idsbuild', agent)
redis.call('ZADD', build, 0, '')
for i = 3, #ARGV do
  if redis.call('HGET', key('session', ARGV[i]), 'agent_id') == agent then redis.call('ZADD', build, 0, ARGV[i]) end
end
return 1`,
  // ARGV: base, agent. Publishes the set built (all of the index scanned since it was created).
  agentixIdsPublish: `
local build = key('idsbuild', ARGV[2])
if redis.call('EXISTS', build) == 0 then return 0 end
redis.call('ZREM', build, '')
if redis.call('EXISTS', build) == 1 then redis.call('RENAME', build, key('ids', ARGV[2])) end
return 1`,
  // ARGV: base, after ('' : from the start), limit
  agentixScan: `
local from = ARGV[2] == '' and '-' or '(' .. ARGV[2]
local ids = redis.call('ZRANGEBYLEX', base .. ':sessions', from, '+', 'LIMIT', 0, ARGV[3])
for i, id in ipairs(ids) do ids[i] = redis.call('HMGET', key('session', id), unpack(FIELDS)) end
return ids`,
};

// ---- the scripts' arguments and replies, in and out of Node ----

/** A session's FIELDS as a script returns them (nil for a missing field). */
export type Fields = Array<string | null>;

/**
 * Each message's JSON up to its timestamp's value: the script appends the (possibly raised) timestamp, so content
 * goes through Lua as an opaque string.
 */
export function heads(messages: MessageRecord[]): string[] {
  return messages.map((m) => `${JSON.stringify({ role: m.role, content: m.content }).slice(0, -1)},"timestamp":"`);
}

/**
 * An edit's metadata as the edit scripts take it after their flag (both modes): the metadata's JSON, has cwd ('1'),
 * cwd. Only for an edit given metadata: one without passes the flag 0 alone.
 */
export function metaArgs(metadata: JsonObject | null): string[] {
  const cwd = cwdOf(metadata);
  return ["1", JSON.stringify(metadata), cwd === null ? "0" : "1", cwd ?? ""];
}

/** A copy script's reply as the core's outcome. */
export function copyOutcome([status, total]: [string, number?, ...unknown[]]): CopyOutcome {
  return status === "out-of-range" ? { status, length: total as number } : ({ status } as CopyOutcome);
}

/** An edit script's status and value (a length, or the JSON of what was written) as the core's outcome. */
export function editOutcome(status: EditOutcome["status"], value: string | number): EditOutcome {
  if (status === "conflict" || status === "out-of-range") return { status, length: value as number };
  const written = JSON.parse(value as string) as { fingerprint: string; length: number; popped: MessageRecord | null };
  return status === "replayed"
    ? { status, ...written }
    : { status: "written", length: written.length, popped: written.popped };
}

/** A session hash as a record, or `null` for a missing (empty) hash. */
export function toRecord(hash: Record<string, string>): SessionRecord | null {
  const { session_id, agent_id, created_at, updated_at, metadata } = hash;
  return fieldsRecord([session_id, agent_id, created_at, updated_at, metadata].map((value) => value ?? null));
}

/** A session from the values of `FIELDS` in their order, or `null` when they are not a session's (deleted). */
export function fieldsRecord([session_id, agent_id, created_at, updated_at, metadata]: Fields): SessionRecord | null {
  return session_id && agent_id && created_at && updated_at
    ? sessionRecord(session_id, agent_id, created_at, updated_at, JSON.parse(metadata ?? "null") as JsonObject | null)
    : null;
}

/** Records from a script's replies: per session, the values of `FIELDS` (skipped when deleted meanwhile). */
export function records(reply: unknown): SessionRecord[] {
  return (reply as Fields[]).flatMap((fields) => fieldsRecord(fields) ?? []);
}
