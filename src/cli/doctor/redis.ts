// `agentix doctor` on a Redis store (standalone or cluster mode), one prefix. Every key of the prefix is visited
// once, by SCAN on every master (a page of keys at a time: memory stays bounded, however big the store), and
// checked against the layout of src/redis.ts / src/redis-cluster.ts: each session hash against its index entries
// (agent index, global id set, cwd and its index, the agent's id set) and its newest message; each index entry
// against its session; each per-session key against its session hash; fork temp keys and op bitmaps against their
// expiry. Repairs re-check what they change, so that a write racing the doctor is not undone: an index entry is
// added with ZADD GT, and one that is removed is put back if its session turns out to be there after all.
import type { Cluster, Redis } from "ioredis";
import { cwdOf } from "../../core/records.js";
import type { JsonObject } from "../../core/types.js";
import { isSessionId } from "../../core/validation.js";
import { ClusterKeys } from "../../redis-cluster.js";
import type { Finding } from "./report.js";

/** Keys per SCAN page, and members per ZSCAN/HSCAN page. */
const COUNT = 1000;
/** An op bitmap's expiry (src/redis-scripts.ts: two hours), given back to one that lost it. */
const OP_TTL_MS = 7_200_000;

const SESSION_FIELDS = ["session_id", "agent_id", "created_at", "updated_at", "metadata"] as const;

/** A key of the prefix, by what it holds. */
type Parsed =
  | { kind: "session" | "messages" | "keys" | "keyorder" | "edits" | "sessioncwd" | "tmp" | "op"; id: string }
  | { kind: "index" | "ids" | "idsbuild"; agent: string }
  | { kind: "cwd"; agent: string; cwd: string }
  | { kind: "sessions" | "cwds" | "other" };

/** The key names of one layout (standalone or cluster mode), both ways. */
interface Layout {
  cluster: boolean;
  prefix: string;
  session(kind: "session" | "messages" | "keys" | "keyorder" | "edits", id: string): string;
  index(agent: string): string;
  ids(agent: string): string;
  cwd(agent: string, cwd: string): string;
  sessions(): string;
  parse(key: string): Parsed;
}

const SESSION_KINDS = new Set(["session", "messages", "keys", "keyorder", "edits", "sessioncwd"]);

function standaloneLayout(prefix: string): Layout {
  return {
    cluster: false,
    prefix,
    session: (kind, id) => `${prefix}:${kind}:${id}`,
    index: (agent) => `${prefix}:index:${agent}`,
    ids: (agent) => `${prefix}:ids:${agent}`,
    cwd: (agent, cwd) => `${prefix}:cwd:${Buffer.byteLength(agent)}:${agent}:${cwd}`,
    sessions: () => `${prefix}:sessions`,
    parse(key) {
      const rest = key.slice(prefix.length + 1);
      const kind = rest.slice(0, rest.indexOf(":") === -1 ? rest.length : rest.indexOf(":"));
      const tail = rest.slice(kind.length + 1);
      if (rest === "sessions" || rest === "cwds") return { kind: rest };
      if (SESSION_KINDS.has(kind) && kind !== "sessioncwd") return isSessionId(tail) ? sessionKey(kind, tail) : other;
      if (kind === "tmp") return { kind, id: tail.slice(0, 36) };
      if (kind === "op") return { kind, id: "" };
      if (kind === "index" || kind === "ids" || kind === "idsbuild") return { kind, agent: tail };
      if (kind === "cwd") {
        // cwd:<n>:<agent: n bytes>:<cwd>
        const n = /^(\d+):/.exec(tail);
        if (!n) return other;
        const bytes = Buffer.from(tail.slice((n[1] as string).length + 1));
        const length = Number(n[1]);
        if (bytes.length <= length || bytes[length] !== 0x3a) return other;
        return { kind, agent: bytes.subarray(0, length).toString(), cwd: bytes.subarray(length + 1).toString() };
      }
      return other;
    },
  };
}

function clusterLayout(prefix: string): Layout {
  const keys = new ClusterKeys(prefix);
  /** The agent id of a tag `{agent}` or `{#sha1}n:agent` at the start of `text`, and what follows it. */
  const agentTag = (text: string): { agent: string; tail: string } | undefined => {
    const hashed = /^\{#[0-9a-f]{40}\}(\d+):/.exec(text);
    if (hashed) {
      const bytes = Buffer.from(text.slice(hashed[0].length));
      const length = Number(hashed[1]);
      if (bytes.length < length) return undefined;
      return { agent: bytes.subarray(0, length).toString(), tail: bytes.subarray(length).toString() };
    }
    const plain = /^\{([^{}#][^{}]*)\}/.exec(text);
    return plain ? { agent: plain[1] as string, tail: text.slice(plain[0].length) } : undefined;
  };
  return {
    cluster: true,
    prefix,
    session: (kind, id) => keys.session(kind, id),
    index: (agent) => keys.index(agent),
    ids: (agent) => keys.ids(agent),
    cwd: (agent, cwd) => keys.cwd(agent, cwd),
    sessions: () => keys.sessions(),
    parse(key) {
      const rest = key.slice(prefix.length + 1);
      if (rest === "sessions") return { kind: rest };
      const colon = rest.indexOf(":");
      if (colon === -1) return other;
      const kind = rest.slice(0, colon);
      const tail = rest.slice(colon + 1);
      const tagged = /^\{([0-9a-f-]{36})\}/.exec(tail)?.[1];
      if (SESSION_KINDS.has(kind))
        return tagged && tail.length === 38 && isSessionId(tagged) ? sessionKey(kind, tagged) : other;
      if ((kind === "tmp" || kind === "op") && tagged) return { kind, id: tagged };
      if (kind === "index" || kind === "ids" || kind === "cwd") {
        const tag = agentTag(tail);
        if (!tag) return other;
        if (kind !== "cwd") return tag.tail === "" ? { kind, agent: tag.agent } : other;
        return tag.tail.startsWith(":") ? { kind, agent: tag.agent, cwd: tag.tail.slice(1) } : other;
      }
      return other;
    },
  };
}

const other: Parsed = { kind: "other" };
const sessionKey = (kind: string, id: string): Parsed => ({ kind: kind as "session", id });

/** A glob pattern that matches `text` literally (SCAN MATCH): ids and prefixes are data, never patterns. */
export function globEscape(text: string): string {
  return text.replace(/[*?[\]\\]/g, "\\$&");
}

// Conditional repairs, each one script over keys of one slot. KEYS[1] is always the session hash.
/** Renames an orphan key (KEYS[2]) to its quarantine name (KEYS[3]) while the session is still missing. */
const QUARANTINE = `if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('RENAME', KEYS[2], KEYS[3]) return 1`;
/** Removes a session's bookkeeping key (KEYS[2]) while the session is still missing. */
const DROP = `if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end return redis.call('UNLINK', KEYS[2])`;
/** Sets updated_at (ARGV[1]) while it is older. */
const TOUCH = `local u = redis.call('HGET', KEYS[1], 'updated_at')
if not u or u >= ARGV[1] then return 0 end redis.call('HSET', KEYS[1], 'updated_at', ARGV[1]) return 1`;

/** A session as its hash holds it, with what its index entries should say. */
interface Session {
  id: string;
  agent: string;
  updatedAt: string;
  cwd: string | null;
}

/**
 * Checks (and with `repair`, repairs) the keys of `prefix` through `client` (a `Redis`, or a `Cluster`: then every
 * master is scanned). Messages whose session hash is gone are renamed to `{prefix}:quarantine:<time>:<key>` (same
 * slot), never deleted; bookkeeping keys of a gone session (idempotency keys, edit counter, cwd) are removed, as a
 * delete would have; dead fork temp keys (no expiry) are removed.
 */
export async function checkRedisStore(client: Redis | Cluster, prefix: string, repair: boolean): Promise<Finding[]> {
  const cluster = (client as { isCluster?: boolean }).isCluster === true;
  const layout = cluster ? clusterLayout(prefix) : standaloneLayout(prefix);
  const findings: Finding[] = [];
  const found = async (where: string, problem: string, fix: () => Promise<string>) => {
    findings.push({ where, problem, repaired: repair ? await fix() : undefined });
  };
  const stamp = new Date().toISOString().replaceAll(":", "-");
  const sessionOf = async (id: string): Promise<Session | null> => {
    if (!isSessionId(id)) return null;
    const [agent, updatedAt, metadata] = await client.hmget(
      layout.session("session", id),
      "agent_id",
      "updated_at",
      "metadata",
    );
    if (agent == null || updatedAt == null) return null;
    return { id, agent, updatedAt, cwd: cwdOf(parseObject(metadata) ?? null) };
  };
  const score = (s: Session) => Date.parse(s.updatedAt);
  const cwdKeyOf = (id: string) => (cluster ? `${prefix}:sessioncwd:{${id}}` : undefined);

  const checkSession = async (id: string) => {
    const where = `session ${id}`;
    const hash = await client.hgetall(layout.session("session", id));
    const missing = SESSION_FIELDS.filter((f) => hash[f] === undefined);
    if (missing.length > 0 || hash.session_id !== id || Number.isNaN(Date.parse(hash.updated_at as string))) {
      findings.push({ where, problem: `hash ${layout.session("session", id)} is not a session`, repaired: undefined });
      return;
    }
    const metadata = parseObject(hash.metadata as string);
    if (metadata === undefined)
      findings.push({ where, problem: "metadata is not a JSON object or null", repaired: undefined });
    let s: Session = {
      id,
      agent: hash.agent_id as string,
      updatedAt: hash.updated_at as string,
      cwd: cwdOf(metadata ?? null),
    };
    // The newest message's time: appends move updated_at up to it, so it is never later.
    const newest = await client.lindex(layout.session("messages", id), -1);
    const newestAt = newest === null ? undefined : timestampOf(newest);
    if (newestAt !== undefined && newestAt > s.updatedAt) {
      await found(where, `updated_at ${s.updatedAt} older than its newest message (${newestAt})`, async () => {
        await client.eval(TOUCH, 1, layout.session("session", id), newestAt);
        return "updated_at set to the newest message's time";
      });
      // The index entries are checked against updated_at as it is after the repair (an append's index step has it).
      s = { ...s, updatedAt: newestAt };
    }
    const indexScore = await client.zscore(layout.index(s.agent), id);
    if (indexScore === null || Number(indexScore) !== score(s)) {
      const problem =
        indexScore === null
          ? `no entry in the agent's index ${layout.index(s.agent)}`
          : `index entry's score ${indexScore} is not updated_at (${score(s)})`;
      await found(where, problem, async () => {
        if (indexScore !== null && Number(indexScore) > score(s))
          await client.zadd(layout.index(s.agent), "XX", score(s), id);
        else await client.zadd(layout.index(s.agent), "GT", score(s), id);
        // Put forward again if a write moved updated_at meanwhile; out again if a delete came between.
        const now = await sessionOf(id);
        if (now) await client.zadd(layout.index(now.agent), "GT", score(now), id);
        else await client.zrem(layout.index(s.agent), id);
        return "index entry set";
      });
    }
    if ((await client.zscore(layout.sessions(), id)) === null) {
      await found(where, `not in the id set ${layout.sessions()}`, async () => {
        await client.zadd(layout.sessions(), 0, id);
        return "added";
      });
    }
    const storedCwd = cluster ? await client.get(cwdKeyOf(id) as string) : await client.hget(`${prefix}:cwds`, id);
    if (storedCwd !== s.cwd) {
      const what = cluster ? (cwdKeyOf(id) as string) : `${prefix}:cwds`;
      await found(
        where,
        `cwd in ${what} is ${JSON.stringify(storedCwd)}, metadata.cwd ${JSON.stringify(s.cwd)}`,
        async () => {
          const key = cluster ? (cwdKeyOf(id) as string) : `${prefix}:cwds`;
          if (s.cwd === null) await (cluster ? client.unlink(key) : client.hdel(key, id));
          else await (cluster ? client.set(key, s.cwd) : client.hset(key, id, s.cwd));
          return "set from metadata.cwd";
        },
      );
    }
    if (s.cwd !== null) {
      const cwdKey = layout.cwd(s.agent, s.cwd);
      const cwdScore = await client.zscore(cwdKey, id);
      if (cwdScore === null || Number(cwdScore) < score(s)) {
        await found(
          where,
          `${cwdScore === null ? "no entry" : "a lagging entry"} in the cwd index ${cwdKey}`,
          async () => {
            await client.zadd(cwdKey, "GT", score(s), id);
            return "entry set";
          },
        );
      }
    }
    // Standalone mode keeps an agent's id set once a scan made it; cluster mode always.
    const ids = layout.ids(s.agent);
    if ((cluster || (await client.exists(ids)) === 1) && (await client.zscore(ids, id)) === null) {
      await found(where, `not in the agent's id set ${ids}`, async () => {
        await client.zadd(ids, 0, id);
        return "added";
      });
    }
  };

  /** Entries of an index-like key whose session does not say they should be there: removed, put back if wrong. */
  const checkMembers = async (
    key: string,
    type: "zset" | "hash",
    belongs: (s: Session | null) => boolean,
    what: string,
    putBack: (s: Session) => Promise<unknown>,
  ) => {
    let cursor = "0";
    do {
      const [next, flat] =
        type === "zset"
          ? await client.zscan(key, cursor, "COUNT", COUNT)
          : await client.hscan(key, cursor, "COUNT", COUNT);
      cursor = next;
      const members = flat.filter((_, i) => i % 2 === 0);
      await Promise.all(
        members.map(async (member) => {
          if (belongs(await sessionOf(member))) return;
          await found(
            isSessionId(member) ? `session ${member}` : `member ${JSON.stringify(member)}`,
            `${what} (${key})`,
            async () => {
              await (type === "zset" ? client.zrem(key, member) : client.hdel(key, member));
              const now = await sessionOf(member);
              if (now && belongs(now)) {
                await putBack(now);
                return "kept: the session is there now";
              }
              return "entry removed";
            },
          );
        }),
      );
    } while (cursor !== "0");
  };

  const checkKey = async (key: string) => {
    const parsed = layout.parse(key);
    switch (parsed.kind) {
      case "session":
        return checkSession(parsed.id);
      case "messages":
      case "keys":
      case "keyorder":
      case "edits":
      case "sessioncwd": {
        const hash = layout.session("session", parsed.id);
        if ((await client.exists(hash)) === 1) return;
        const where = `session ${parsed.id}`;
        if (parsed.kind === "messages") {
          const n = await client.llen(key);
          const aside = `${prefix}:quarantine:${stamp}:${key.slice(prefix.length + 1)}`;
          return found(where, `${n} messages without their session hash (${key})`, async () => {
            return (await client.eval(QUARANTINE, 3, hash, key, aside)) === 1
              ? `renamed to ${aside}`
              : "kept: the session is there now";
          });
        }
        return found(where, `${key} without its session hash`, async () =>
          (await client.eval(DROP, 2, hash, key)) === 1
            ? "removed (a delete would have)"
            : "kept: the session is there now",
        );
      }
      case "tmp":
      case "op": {
        if ((await client.pttl(key)) !== -1) return; // expiring: a fork in progress, or a bitmap in use
        const where = parsed.kind === "tmp" ? `session ${parsed.id}` : `key ${key}`;
        if (parsed.kind === "tmp") {
          return found(where, `a fork's temp key without expiry (${key})`, async () => {
            await client.unlink(key);
            return "removed (a failed fork's copy)";
          });
        }
        return found(where, "an op bitmap without expiry", async () => {
          await client.pexpire(key, OP_TTL_MS);
          return "expires in two hours";
        });
      }
      case "index": {
        const agent = parsed.agent;
        return checkMembers(
          key,
          "zset",
          (s) => s?.agent === agent,
          "an index entry without its session",
          (s) => client.zadd(key, "GT", score(s), s.id),
        );
      }
      case "ids": {
        const agent = parsed.agent;
        return checkMembers(
          key,
          "zset",
          (s) => s?.agent === agent,
          "an id-set entry without its session",
          (s) => client.zadd(key, 0, s.id),
        );
      }
      case "cwd": {
        const { agent, cwd } = parsed;
        return checkMembers(
          key,
          "zset",
          (s) => s?.agent === agent && s.cwd === cwd,
          "a cwd index entry whose session is gone or has another cwd",
          (s) => client.zadd(key, "GT", score(s), s.id),
        );
      }
      case "sessions":
        return checkMembers(
          key,
          "zset",
          (s) => s !== null,
          "an id-set entry without its session",
          (s) => client.zadd(key, 0, s.id),
        );
      case "cwds":
        return checkMembers(
          key,
          "hash",
          (s) => s !== null,
          "a cwd without its session",
          async (s) => {
            if (s.cwd !== null) await client.hset(key, s.id, s.cwd);
          },
        );
      default:
        return; // idsbuild (a scan by agent half-way: the next one finishes it), quarantined keys, other programs'
    }
  };

  const nodes: Redis[] = cluster ? (client as Cluster).nodes("master") : [client as Redis];
  const pattern = `${globEscape(prefix)}:*`;
  for (const node of nodes) {
    let cursor = "0";
    do {
      const [next, keys] = await node.scan(cursor, "MATCH", pattern, "COUNT", COUNT);
      cursor = next;
      await Promise.all(keys.map(checkKey));
    } while (cursor !== "0");
  }
  return findings.sort((a, b) => (a.where === b.where ? (a.problem < b.problem ? -1 : 1) : a.where < b.where ? -1 : 1));
}

/** Metadata as stored: a JSON object or null (`undefined`: neither). */
function parseObject(text: string | null | undefined): JsonObject | null | undefined {
  if (text === null || text === undefined) return undefined;
  try {
    const value = JSON.parse(text) as unknown;
    return value === null || (typeof value === "object" && !Array.isArray(value))
      ? (value as JsonObject | null)
      : undefined;
  } catch {
    return undefined;
  }
}

/** The timestamp of a stored message line (`{ role, content, timestamp }`), if it has one. */
function timestampOf(line: string): string | undefined {
  try {
    const timestamp = (JSON.parse(line) as { timestamp?: unknown }).timestamp;
    return typeof timestamp === "string" ? timestamp : undefined;
  } catch {
    return undefined;
  }
}
