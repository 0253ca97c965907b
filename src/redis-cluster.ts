/**
 * The Redis backend's cluster mode (an ioredis `Cluster`): the storage primitives whose keys span hash slots.
 * A session's keys share its slot (the id is their hash tag); an agent's index keys share the agent's slot. A write
 * is one script in the session's slot, then one in the agent's slot (and the global id set): session first, index
 * after, so that a crash between the two leaves a whole session whose index entry lags or is missing, never an index
 * entry of a half-made session. Readers skip and repair index entries that disagree with their session.
 * @internal
 */
import { createHash, randomUUID } from "node:crypto";
import type { Cluster, ClusterOptions, RedisOptions } from "ioredis";
import type { ForkTarget } from "./core/backend.js";
import { AgentixStorageError } from "./core/errors.js";
import { compareSessions, cwdOf, isAfter } from "./core/records.js";
import type {
  CopyOutcome,
  EditOutcome,
  JsonObject,
  MessageEdit,
  MessageRecord,
  SessionQuery,
  SessionRecord,
  StagedImport,
} from "./core/types.js";
import { clusterCommands, type clusterScripts, type EditReply } from "./redis-cluster-scripts.js";
import { Chunks, copyChunks } from "./redis-fork.js";
import { exec } from "./redis-reads.js";
import {
  CHUNK,
  CHUNK_BYTES,
  editOutcome,
  type Fields,
  fieldsRecord,
  heads,
  metaArgs,
  TEMP_TTL_MS,
  toRecord,
} from "./redis-scripts.js";
import { parseClusterUrl } from "./redis-server.js";

type Arg = string | number | string[];
type Commands = {
  [name in keyof typeof clusterScripts]: (...args: Arg[]) => Promise<unknown>;
};
export type ClusterClient = Cluster & Commands;

/** Ops per bitmap key and how long a key takes new ops (as the standalone bitmaps: 2^20 ops, an hour). */
const OPS_PER_KEY = 2 ** 20;
const OP_KEY_MS = 3_600_000;
/** Sessions whose op bitmap a backend remembers; an evicted one starts a new bitmap key on its next write. */
const OP_SESSIONS = 10_000;
/** A fork of at most CHUNK messages and this many bytes goes through its start and publish scripts (through Lua). */
const INLINE_BYTES = CHUNK_BYTES / 2;
/** Attempts of a chunked fork whose source is edited meanwhile. */
const FORK_ATTEMPTS = 5;

/** Attempts to reach the cluster before its pending calls fail (see openCluster). */
const CLUSTER_RETRIES = 3;

/** A lazily connecting Cluster client for a `redis+cluster://` URL (validated), each node's options `redisOptions`. */
export function openCluster(ClusterClass: typeof Cluster, url: string, redisOptions: RedisOptions): Cluster {
  const { nodes, username, password, tls } = parseClusterUrl(url) as NonNullable<ReturnType<typeof parseClusterUrl>>;
  const options = {
    lazyConnect: true,
    // Fail fast, as standalone connections do: after 3 failed attempts to reach any node the client ends and its
    // pending calls fail (ioredis's default retries forever, holding every call); the backend then opens a new one.
    clusterRetryStrategy: (times: number) => (times > CLUSTER_RETRIES ? null : Math.min(100 * times, 1000)),
    redisOptions: {
      ...(username === undefined ? {} : { username }),
      ...(password === undefined ? {} : { password }),
      ...(tls ? { tls: {} } : {}),
      ...redisOptions,
    },
    // The cast: ioredis's constructor types reject an optional redisOptions under exactOptionalPropertyTypes.
  } as ClusterOptions & { redisOptions: RedisOptions & { replyMapping?: "legacy" } };
  return new ClusterClass(nodes, options);
}

/** Defines the cluster mode's scripts on a client (once per client). */
export function defineClusterCommands(client: Cluster): ClusterClient {
  for (const [name, definition] of clusterCommands()) client.defineCommand(name, definition);
  return client as ClusterClient;
}

/**
 * The cluster layout. Session keys: `{prefix}:session:{<id>}` and `messages`, `keys`, `keyorder`, `edits`,
 * `sessioncwd` (the session's cwd), `op:{<id>}:<bitmap>`, `tmp:{<id>}:<uuid>`. Agent keys: `{prefix}:index:<agent>`,
 * `{prefix}:cwd:<agent>:<cwd>`, `{prefix}:ids:<agent>`, where <agent> is `{agent id}`, or for an agent id that
 * contains a brace or starts with `#`, `{#<sha1 of it>}<UTF-8 length>:<agent id>`. Global: `{prefix}:sessions`.
 */
export class ClusterKeys {
  constructor(readonly prefix: string) {}

  session(kind: "session" | "messages" | "keys" | "keyorder" | "edits" | "sessioncwd", id: string): string {
    return `${this.prefix}:${kind}:{${id}}`;
  }
  /** All of a session's data keys, in the order the scripts take them. */
  sessionKeys(id: string): string[] {
    return (["session", "messages", "keys", "keyorder", "edits", "sessioncwd"] as const).map((k) =>
      this.session(k, id),
    );
  }
  agent(agentId: string): string {
    if (!/[{}]/.test(agentId) && !agentId.startsWith("#")) return `{${agentId}}`;
    const digest = createHash("sha1").update(agentId).digest("hex");
    return `{#${digest}}${Buffer.byteLength(agentId)}:${agentId}`;
  }
  index(agentId: string): string {
    return `${this.prefix}:index:${this.agent(agentId)}`;
  }
  cwd(agentId: string, cwd: string): string {
    return `${this.prefix}:cwd:${this.agent(agentId)}:${cwd}`;
  }
  ids(agentId: string): string {
    return `${this.prefix}:ids:${this.agent(agentId)}`;
  }
  sessions(): string {
    return `${this.prefix}:sessions`;
  }
}

/** The primitives of cluster mode (see the module comment); reads of one session are the backend's own. */
export class ClusterStore {
  readonly keys: ClusterKeys;
  /** Per session, this backend's current op bitmap (see agentixAppend) and its next bit: bounded, oldest out. */
  readonly #ops = new Map<string, { key: string; count: number; since: number }>();

  constructor(
    readonly redis: ClusterClient,
    prefix: string,
  ) {
    this.keys = new ClusterKeys(prefix);
  }

  /** Insert-if-absent: `null` when stored, else the existing session's fields (nothing written but its index). */
  async insert(record: SessionRecord, messages: MessageRecord[]): Promise<Fields | null> {
    const { session_id: id, agent_id, created_at, updated_at, metadata } = record;
    const cwd = cwdOf(metadata);
    const lines = messages.map((m) => JSON.stringify({ role: m.role, content: m.content, timestamp: m.timestamp }));
    const reply = (await this.redis.agentixInsert(
      ...this.keys.sessionKeys(id),
      id,
      agent_id,
      created_at,
      updated_at,
      JSON.stringify(metadata),
      cwd === null ? 0 : 1,
      cwd ?? "",
      lines,
    )) as Array<string | null> | null;
    if (reply === null) {
      await this.#indexed(id, agent_id, updated_at, cwd, true);
      return null;
    }
    // The id is taken: its index entries may be missing (a create that stopped after its first step); complete them.
    const [, agent, , updated] = reply;
    if (agent && updated) await this.#indexed(id, agent, updated, reply[5] ?? null, true);
    return reply.slice(0, 5);
  }

  async append(id: string, messages: MessageRecord[]): Promise<number | null> {
    const ts = (messages[0] as MessageRecord).timestamp;
    const { key, bit } = this.#nextOp(id);
    const reply = (await this.redis.agentixAppend(
      this.keys.session("session", id),
      this.keys.session("messages", id),
      key,
      this.keys.session("sessioncwd", id),
      ts,
      bit,
      heads(messages),
    )) as [number, string, string | null, string, number] | null;
    if (reply === null) return null;
    const [length, agent, cwd, updated, moved] = reply;
    if (moved === 1) await this.#indexed(id, agent, updated, cwd, false);
    return length;
  }

  async edit(id: string, edit: MessageEdit): Promise<EditOutcome> {
    const { messages, at, expectedLength, from, pop, idempotency, metadata } = edit;
    const { key, bit } = this.#nextOp(id);
    const reply = (await this.redis.agentixEdit(
      ...this.keys.sessionKeys(id).slice(0, 5),
      `${key}:edits`,
      this.keys.session("sessioncwd", id),
      messages[0]?.timestamp ?? at,
      bit,
      expectedLength ?? "",
      from ?? "",
      pop ? 1 : 0,
      idempotency?.key ?? "",
      idempotency?.fingerprint ?? "",
      metadata === undefined ? 0 : metaArgs(metadata),
      heads(messages),
    )) as EditReply | null;
    if (reply === null) return { status: "not-found" };
    const [status, value, agent, cwd, updated, moved] = reply;
    // Metadata written with the edit: the index step is a metadata update's (the old cwd's entry moves).
    if (reply.length > 6 && agent && updated) await this.#movedCwd(id, agent, reply[6] ?? null, cwd, updated, moved);
    else if (moved === 1 && agent && updated) await this.#indexed(id, agent, updated, cwd, false);
    return editOutcome(status, value);
  }

  async replaceMetadata(id: string, metadata: JsonObject | null, at: string): Promise<SessionRecord | null> {
    const cwd = cwdOf(metadata);
    const reply = (await this.redis.agentixMeta(
      this.keys.session("session", id),
      this.keys.session("sessioncwd", id),
      JSON.stringify(metadata),
      cwd === null ? 0 : 1,
      cwd ?? "",
      at,
    )) as [...Fields, string | null, number] | null;
    if (reply === null) return null;
    const record = fieldsRecord(reply.slice(0, 5) as Fields);
    if (!record) return null;
    await this.#movedCwd(id, record.agent_id, reply[5] as string | null, cwd, record.updated_at, reply[6] as number);
    return record;
  }

  /** A metadata update's index step: the entry from the old cwd's index to the new one's, forward when moved. */
  async #movedCwd(id: string, agent: string, old: string | null, cwd: string | null, updatedAt: string, moved: number) {
    if (old === cwd && moved !== 1) return;
    const index = this.keys.index(agent);
    await this.redis.agentixMoveCwd(
      old === null ? index : this.keys.cwd(agent, old),
      cwd === null ? index : this.keys.cwd(agent, cwd),
      index,
      id,
      Date.parse(updatedAt),
      old === null ? 0 : 1,
      cwd === null ? 0 : 1,
      moved,
    );
  }

  async length(id: string): Promise<number | null> {
    return (await this.redis.agentixLength(this.keys.session("session", id), this.keys.session("messages", id))) as
      | number
      | null;
  }

  async remove(id: string): Promise<void> {
    const reply = (await this.redis.agentixRemove(...this.keys.sessionKeys(id))) as [string, string | null] | null;
    if (reply === null) return;
    const [agent, cwd] = reply;
    const index = this.keys.index(agent);
    await Promise.all([
      this.redis.agentixUnindex(
        index,
        cwd === null ? index : this.keys.cwd(agent, cwd),
        this.keys.ids(agent),
        id,
        cwd === null ? 0 : 1,
      ),
      this.redis.zrem(this.keys.sessions(), id),
    ]);
  }

  /**
   * A fork into another slot: the source's positions read in chunks (each checked against the source's stamp, so
   * that they are one state of the source), pushed into a temp key in the fork's slot that nothing indexes, and
   * published by one script there. A fork of at most a chunk is one read and one publish.
   */
  async copy(sourceId: string, target: ForkTarget): Promise<CopyOutcome> {
    const { session_id: to, created_at, length: wanted, metadata: given } = target;
    const source = this.keys.sessionKeys(sourceId);
    for (let attempt = 0; attempt < FORK_ATTEMPTS; attempt++) {
      const start = (await this.redis.agentixCopyStart(
        ...[0, 1, 4, 5].map((i) => source[i] as string),
        wanted ?? "",
        CHUNK,
        INLINE_BYTES,
      )) as [string, ...unknown[]];
      if (start[0] === "not-found") return { status: "not-found" };
      if (start[0] === "out-of-range") return { status: "out-of-range", length: start[1] as number };
      const [, agent, metadata, stamp, length, sourceCwd, bytesPerMessage, ...lines] = start as [
        string,
        string,
        string,
        string,
        number,
        string | null,
        number,
        ...string[],
      ];
      const meta = given === undefined ? metadata : JSON.stringify(given);
      const cwd = given === undefined ? sourceCwd : cwdOf(given);
      const temp = `${this.keys.prefix}:tmp:{${to}}:${randomUUID()}`;
      let copied: number | "" = "";
      if (length > 0 && lines.length === 0) {
        if ((await this.redis.exists(this.keys.session("session", to))) === 1) return { status: "exists" };
        copied = await this.#copyChunks(source, temp, stamp, length, new Chunks(bytesPerMessage));
        if (copied === -1) continue;
      }
      const reply = await this.redis.agentixPublish(
        ...this.keys.sessionKeys(to),
        temp,
        to,
        agent,
        created_at,
        meta,
        cwd === null ? 0 : 1,
        cwd ?? "",
        copied,
        copied === "" ? lines : [],
      );
      if (reply === "exists") return { status: "exists" };
      if (reply === "retry") continue;
      await this.#indexed(to, agent, created_at, cwd, true);
      return { status: "copied" };
    }
    throw new AgentixStorageError(
      `RedisStorageBackend: the fork of session ${sourceId} was restarted ${FORK_ATTEMPTS} times because the ` +
        "session was edited meanwhile (cluster mode copies a large fork in chunks); try again",
    );
  }

  /** The chunks of a fork into `temp`: how many were copied, or -1 (temp gone) when the source changed. */
  async #copyChunks(source: string[], temp: string, stamp: string, length: number, chunks: Chunks): Promise<number> {
    const [session, messages, , , edits] = source as [string, string, string, string, string];
    // MULTIs in the source's slot and in the fork's, not scripts: LRANGE and RPUSH copy in C.
    const copied = await copyChunks(this.redis, { session, messages, edits, temp }, stamp, chunks, 0, length);
    if (copied === -1) return -1;
    // The last chunk read after the first one was checked: no edit since the start, so one state of the source.
    if ((await this.redis.agentixCopyChunk(session, messages, edits, stamp, 1, 0)) === null) {
      await this.redis.unlink(temp);
      return -1;
    }
    return copied;
  }

  /** The agent's sessions in the listing order, from its index, skipping (and repairing) entries that lag. */
  async query(agentId: string, { cwd, limit, before }: SessionQuery): Promise<SessionRecord[]> {
    const key = cwd === undefined ? this.keys.index(agentId) : this.keys.cwd(agentId, cwd);
    let out: SessionRecord[] = [];
    for (let attempt = 0; attempt < 3; attempt++) {
      out = [];
      let repaired = false;
      let cursor: [number | "", string] = before ? [Date.parse(before.updated_at), before.session_id] : ["", ""];
      for (;;) {
        const want = limit === undefined ? -1 : limit - out.length;
        const flat = (await this.redis.agentixList(key, want, ...cursor)) as string[];
        const entries = pairs(flat);
        const found = await this.#records(entries.map(([id]) => id));
        for (const [i, [id, score]] of entries.entries()) {
          const record = found[i];
          if (!record || record.agent_id !== agentId || (cwd !== undefined && cwdOf(record.metadata) !== cwd)) {
            await this.#repair(key, id, score, agentId, cwd);
            continue;
          }
          const actual = Date.parse(record.updated_at);
          if (actual !== score) {
            // A write whose index step has not run yet (or never will: a crash): the entry takes the session's time.
            await this.redis.agentixRepair(key, id, score, actual);
            repaired = true;
          }
          out.push(record);
        }
        const last = entries.at(-1);
        if (!last || limit === undefined || entries.length < want || out.length >= limit) break;
        cursor = [last[1], last[0]];
      }
      if (!repaired) return out;
    }
    // Entries kept moving: the page in the listing order of what was read.
    return out.filter((r) => !before || isAfter(r, before)).sort(compareSessions);
  }

  /** Sessions by id after `after`: all of them, or one agent's (its id-ordered set), skipping stale entries. */
  async scan(after: string | null, limit: number, agentId: string | undefined): Promise<SessionRecord[]> {
    const key = agentId === undefined ? this.keys.sessions() : this.keys.ids(agentId);
    const out: SessionRecord[] = [];
    let from = after;
    while (out.length < limit) {
      const want = limit - out.length;
      const ids = await this.redis.zrangebylex(key, from === null ? "-" : `(${from}`, "+", "LIMIT", 0, want);
      const found = await this.#records(ids);
      for (const [i, id] of ids.entries()) {
        const record = found[i];
        if (record && (agentId === undefined || record.agent_id === agentId)) out.push(record);
        else await this.#repair(key, id, 0, agentId, undefined);
      }
      if (ids.length < want) break;
      from = ids.at(-1) as string;
    }
    return out;
  }

  /** The sessions of `ids`, each `null` when it does not exist. */
  async #records(ids: string[]): Promise<Array<SessionRecord | null>> {
    return Promise.all(ids.map(async (id) => toRecord(await this.redis.hgetall(this.keys.session("session", id)))));
  }

  /**
   * Removes an index entry whose session does not exist or is not listed there (a delete or a metadata update whose
   * index step has not run), if it is still what the reader saw; then looks again, and puts it back should the
   * session have been created meanwhile (a create's index step may have run before the removal).
   */
  async #repair(key: string, id: string, score: number, agentId: string | undefined, cwd: string | undefined) {
    if ((await this.redis.agentixRepair(key, id, score, "")) !== 1) return;
    const record = toRecord(await this.redis.hgetall(this.keys.session("session", id)));
    if (!record || (agentId !== undefined && record.agent_id !== agentId)) return;
    if (cwd !== undefined && cwdOf(record.metadata) !== cwd) return;
    await this.redis.zadd(
      key,
      "GT",
      key === this.keys.sessions() || key === this.keys.ids(record.agent_id) ? 0 : Date.parse(record.updated_at),
      id,
    );
  }

  /** A session's index step: its index (and cwd index) entries moved forward, and when new, its id in the id sets. */
  async #indexed(id: string, agent: string, updatedAt: string, cwd: string | null, added: boolean): Promise<void> {
    const index = this.keys.index(agent);
    const steps: Array<Promise<unknown>> = [
      this.redis.agentixIndex(
        index,
        cwd === null ? index : this.keys.cwd(agent, cwd),
        this.keys.ids(agent),
        id,
        Date.parse(updatedAt),
        cwd === null ? 0 : 1,
        added ? 1 : 0,
      ),
    ];
    if (added) steps.push(this.redis.zadd(this.keys.sessions(), 0, id));
    await Promise.all(steps);
  }

  /**
   * A streamed import (`importSession` given an iterable), as standalone mode does it (src/redis-import.ts): each
   * chunk pushed to a temp key under the session's hash tag (`tmp:{<id>}:import:<stage>`, expiring TEMP_TTL_MS
   * after its last chunk), so that the publish script's keys share a slot; then the index step, as for a create
   * (session first, index after; readers repair an entry that is missing).
   */
  async importBegin(staged: StagedImport): Promise<boolean> {
    return (await this.redis.exists(this.keys.session("session", staged.record.session_id))) === 0;
  }

  async importStage(staged: StagedImport, offset: number, messages: MessageRecord[]): Promise<boolean> {
    const temp = this.#importTemp(staged);
    const lines = messages.map((m) => JSON.stringify({ role: m.role, content: m.content, timestamp: m.timestamp }));
    // One slot (the session's hash tag): one MULTI on its node.
    const [taken, length] = (await exec(
      this.redis
        .multi()
        .exists(this.keys.session("session", staged.record.session_id))
        .rpush(temp, ...lines)
        .pexpire(temp, TEMP_TTL_MS),
    )) as [number, number];
    if (taken === 1) return false;
    // A chunk resent after a dropped connection is there twice; an expired temp key lost the first ones.
    if (length !== offset + messages.length) throw importIncomplete(staged);
    return true;
  }

  async importPublish(staged: StagedImport, length: number): Promise<boolean> {
    const { session_id: id, agent_id, created_at, updated_at, metadata } = staged.record;
    const cwd = cwdOf(metadata);
    const reply = (await this.redis.agentixImportPublish(
      ...this.keys.sessionKeys(id),
      this.#importTemp(staged),
      id,
      agent_id,
      created_at,
      updated_at,
      JSON.stringify(metadata),
      cwd === null ? 0 : 1,
      cwd ?? "",
      length,
    )) as number;
    if (reply === -1) throw importIncomplete(staged);
    if (reply === 0) return false;
    await this.#indexed(id, agent_id, updated_at, cwd, true);
    return true;
  }

  async importDiscard(staged: StagedImport): Promise<void> {
    await this.redis.unlink(this.#importTemp(staged));
  }

  #importTemp(staged: StagedImport): string {
    return `${this.keys.prefix}:tmp:{${staged.record.session_id}}:import:${staged.stage}`;
  }

  /** The op bitmap of this backend's next write to `id` (slot-local: in the session's slot) and its bit. */
  #nextOp(id: string): { key: string; bit: number } {
    let entry = this.#ops.get(id);
    this.#ops.delete(id);
    if (!entry || entry.count >= OPS_PER_KEY || Date.now() - entry.since > OP_KEY_MS) {
      entry = { key: `${this.keys.prefix}:op:{${id}}:${randomUUID()}`, count: 0, since: Date.now() };
    }
    this.#ops.set(id, entry);
    if (this.#ops.size > OP_SESSIONS) this.#ops.delete(this.#ops.keys().next().value as string);
    return { key: entry.key, bit: entry.count++ };
  }
}

/** `[id, score, id, score, ...]` as pairs. */
function pairs(flat: string[]): Array<[string, number]> {
  const out: Array<[string, number]> = [];
  for (let i = 0; i < flat.length; i += 2) out.push([flat[i] as string, Number(flat[i + 1])]);
  return out;
}

function importIncomplete(staged: StagedImport): AgentixStorageError {
  return new AgentixStorageError(
    `RedisStorageBackend: the staged messages of session ${staged.record.session_id} are not those sent ` +
      "(a chunk resent after a dropped connection, or staging expired): nothing was published, import again",
  );
}
