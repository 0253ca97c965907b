/**
 * Streamed imports into standalone Redis (`importSession` given an iterable): each chunk is pushed to a temp key
 * (`{prefix}:tmp:import:{stage}`, its own per import, expiring TEMP_TTL_MS after its last chunk, so that a crash
 * leaves nothing for long), and one short script publishes the session: the hash, cwd and index entries as an
 * import's insert writes them, and the temp list RENAMEd to the session's list (O(1): no script ever holds a big
 * session's messages). The id taken meanwhile: the temp key is dropped and the import returns `false`. Internal to
 * `agentix/redis`; cluster mode does the same with the temp key in the session's slot (ClusterStore.importStage and on).
 * @module
 */
import type { Redis as RedisClient } from "ioredis";
import { AgentixStorageError } from "./core/errors.js";
import { cwdOf } from "./core/records.js";
import type { MessageRecord, StagedImport } from "./core/types.js";
import { exec } from "./redis-reads.js";
import { prelude, TEMP_TTL_MS } from "./redis-scripts.js";

// ARGV: base, id, agent, created_at, updated_at, metadata, score, has cwd, cwd, temp name, length.
// 1 when published, 0 when the id is taken (the temp key dropped), -1 when the temp list is not the whole import.
const PUBLISH = `
local id, agent = ARGV[2], ARGV[3]
local tmp, length = key('tmp', ARGV[10]), tonumber(ARGV[11])
if redis.call('EXISTS', key('session', id)) == 1 then
  redis.call('UNLINK', tmp)
  return 0
end
if redis.call('LLEN', tmp) ~= length then return -1 end
redis.call('HSET', key('session', id), 'session_id', id, 'agent_id', agent, 'created_at', ARGV[4],
  'updated_at', ARGV[5], 'metadata', ARGV[6])
local cwd = ARGV[8] == '1' and ARGV[9] or nil
if cwd then redis.call('HSET', base .. ':cwds', id, cwd) end
redis.call('ZADD', base .. ':sessions', 0, id)
index(agent, id, ARGV[7], cwd)
idSets(agent, 'ZADD', id)
redis.call('UNLINK', extraKeys(id))
if length > 0 then
  redis.call('RENAME', tmp, key('messages', id))
  redis.call('PERSIST', key('messages', id))
end
return 1`;

type Client = RedisClient & { agentixImportPublish?: (...args: Array<string | number>) => Promise<number> };

/** The temp key's name (under `{prefix}:tmp:`) of an import. */
const tempName = (staged: StagedImport) => `import:${staged.stage}`;

/**
 * The import primitives on one standalone client. `key(kind, id)` names a key for a plain command (ioredis adds
 * its keyPrefix), `base` is the namespace the scripts build keys from (keyPrefix included).
 */
export class RedisImports {
  constructor(
    readonly key: (kind: "session" | "tmp", id: string) => string,
    readonly base: () => string,
  ) {}

  async begin(redis: Client, staged: StagedImport): Promise<boolean> {
    return (await redis.exists(this.key("session", staged.record.session_id))) === 0;
  }

  async stage(redis: Client, staged: StagedImport, offset: number, messages: MessageRecord[]): Promise<boolean> {
    const temp = this.key("tmp", tempName(staged));
    const lines = messages.map((m) => JSON.stringify({ role: m.role, content: m.content, timestamp: m.timestamp }));
    const [taken, length] = (await exec(
      redis
        .multi()
        .exists(this.key("session", staged.record.session_id))
        .rpush(temp, ...lines)
        .pexpire(temp, TEMP_TTL_MS),
    )) as [number, number];
    if (taken === 1) return false;
    // A chunk resent after a dropped connection is there twice; an expired temp key lost the first ones.
    if (length !== offset + messages.length) throw incomplete(staged);
    return true;
  }

  async publish(redis: Client, staged: StagedImport, length: number): Promise<boolean> {
    if (!redis.agentixImportPublish)
      redis.defineCommand("agentixImportPublish", { lua: prelude + PUBLISH, numberOfKeys: 0 });
    const { session_id, agent_id, created_at, updated_at, metadata } = staged.record;
    const cwd = cwdOf(metadata);
    const reply = await (redis.agentixImportPublish as NonNullable<Client["agentixImportPublish"]>)(
      this.base(),
      session_id,
      agent_id,
      created_at,
      updated_at,
      JSON.stringify(metadata),
      Date.parse(updated_at),
      cwd === null ? 0 : 1,
      cwd ?? "",
      tempName(staged),
      length,
    );
    if (reply === -1) throw incomplete(staged);
    return reply === 1;
  }

  async discard(redis: Client, staged: StagedImport): Promise<void> {
    await redis.unlink(this.key("tmp", tempName(staged)));
  }
}

function incomplete(staged: StagedImport): AgentixStorageError {
  return new AgentixStorageError(
    `RedisStorageBackend: the staged messages of session ${staged.record.session_id} are not those sent ` +
      "(a chunk resent after a dropped connection, or staging expired): nothing was published, import again",
  );
}
