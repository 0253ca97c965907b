/**
 * The Redis backend (ioredis).
 * @module agentix/redis
 */
import { randomUUID } from "node:crypto";
import type { Cluster, Redis as RedisClient, RedisOptions } from "ioredis";
import { type ForkTarget, StorageBackend } from "./core/backend.js";
import { AgentixStorageError } from "./core/errors.js";
import { cwdOf } from "./core/records.js";
import type { SyncTwin } from "./core/sync.js";
import type {
  CopyOutcome,
  EditOutcome,
  JsonObject,
  MessageEdit,
  MessageRange,
  MessageRecord,
  SessionQuery,
  SessionRecord,
  StagedImport,
} from "./core/types.js";
import { parseOptions } from "./core/validation.js";
import { type ClusterClient, ClusterKeys, ClusterStore, defineClusterCommands, openCluster } from "./redis-cluster.js";
import { Chunks, copyChunks } from "./redis-fork.js";
import { RedisImports } from "./redis-import.js";
import {
  ClusterClass,
  CONNECT_TIMEOUT_MS,
  MAX_RETRIES_PER_REQUEST,
  optionsSchema,
  Redis,
  type RedisStorageOptions,
} from "./redis-options.js";
import { buildIds, type IdScripts, readRange } from "./redis-reads.js";
import {
  COPY_BYTES,
  copyOutcome,
  editOutcome,
  type Fields,
  fieldsRecord,
  heads,
  metaArgs,
  OP_BLOCK_MS,
  OPS_PER_KEY,
  prelude,
  records,
  scripts,
  toRecord,
} from "./redis-scripts.js";
import { checkServer, isClusterUrl } from "./redis-server.js";

export type { RedisStorageOptions } from "./redis-options.js";

/** A script argument; ioredis flattens an array into the arguments, so a batch needs no spread call. */
type Arg = string | number | string[];
type ScriptCommands = { [name in keyof typeof scripts]: (...args: Arg[]) => Promise<unknown> };

/**
 * Sessions in Redis, with exactly the reference's key layout (`{prefix}:session:{id}` hash,
 * `{prefix}:messages:{id}` list, `{prefix}:index:{agent_id}` sorted set by `updated_at` in epoch ms) and
 * a few documented extra keys. Every write is one Lua script call, atomic and one round trip.
 */
export class RedisStorageBackend extends StorageBackend {
  readonly #options: { url?: string | undefined; redisOptions?: RedisOptions | undefined; prefix: string };
  readonly #external: RedisClient | Cluster | undefined;
  /** Cluster mode (a `Cluster` client or a cluster URL): the primitives whose keys span slots are #store's. */
  readonly #clusterMode: boolean;
  readonly #clusterKeys: ClusterKeys;
  #store: ClusterStore | undefined;
  /** This backend as a writer: its writes are numbered, so that a resent one is applied once (see agentixAppend). */
  readonly #writer = randomUUID();
  #ops = { hour: -1, count: 0, expiring: "" };
  #client: (RedisClient & ScriptCommands) | undefined;
  /** The first-use check of the server (see #ready), memoised once it passed. */
  #checked: Promise<RedisClient & ScriptCommands> | undefined;
  #clusterClient: ClusterClient | undefined;
  /** The last error the connection reported (ioredis only emits a failed SELECT on connect). */
  #lastError: unknown;

  constructor(options: RedisStorageOptions) {
    super();
    const { client, ...rest } = parseOptions(optionsSchema, options, "RedisStorageBackend");
    this.#options = rest;
    this.#external = client;
    this.#clusterMode = client ? (client as { isCluster?: boolean }).isCluster === true : isClusterUrl(rest.url ?? "");
    this.#clusterKeys = new ClusterKeys(rest.prefix);
  }

  /** The cluster mode's primitives, `undefined` in standalone mode (checked, connected on first use). */
  async #cluster(): Promise<ClusterStore | undefined> {
    if (!this.#clusterMode) return undefined;
    await this.#ready();
    return this.#store;
  }

  protected async insertSession(record: SessionRecord): Promise<SessionRecord | null> {
    const existing = await ((await this.#cluster())?.insert(record, []) ?? this.#insert(record, []));
    if (existing === null) return null;
    const found = fieldsRecord(existing);
    // A hash that exists but is not a session (fields missing): neither stored nor a record to return.
    if (!found)
      throw new AgentixStorageError(`RedisStorageBackend: the hash of session ${record.session_id} is not a session`);
    return found;
  }

  protected async readSession(sessionId: string): Promise<SessionRecord | null> {
    const redis = await this.#ready();
    return toRecord(await redis.hgetall(this.#key("session", sessionId)));
  }

  protected async querySessions(agentId: string, query: SessionQuery): Promise<SessionRecord[]> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.query(agentId, query);
    const redis = await this.#ready();
    const { cwd, limit, before } = query;
    const reply = await redis.agentixList(
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
    const cluster = await this.#cluster();
    if (cluster) return cluster.replaceMetadata(sessionId, metadata, at);
    const redis = await this.#ready();
    const cwd = cwdOf(metadata);
    const reply = (await redis.agentixMeta(
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

  protected async copySession(sessionId: string, target: ForkTarget): Promise<CopyOutcome> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.copy(sessionId, target);
    const redis = await this.#ready();
    const { session_id, created_at, length, metadata } = target;
    const cwd = metadata === undefined ? null : cwdOf(metadata);
    const args = [
      this.#base(),
      sessionId,
      session_id,
      created_at,
      Date.parse(created_at),
      length ?? "",
      metadata === undefined ? 0 : 1,
      JSON.stringify(metadata ?? null),
      cwd === null ? 0 : 1,
      cwd ?? "",
    ];
    // A fork of a large list is copied in chunks into a temp key and published in one short script, so that no
    // script blocks Redis for long. An edit of the source meanwhile restarts it; after a few, one script does it.
    for (let attempt = 0; attempt < 3; attempt++) {
      const reply = (await redis.agentixCopy(...args, COPY_BYTES)) as [string, number?, string?, number?];
      if (reply[0] !== "chunked") return copyOutcome(reply);
      const [, total, stamp, bytesPerMessage] = reply as [string, number, string, number];
      const outcome = await this.#copyChunked(redis, args, total, stamp, new Chunks(bytesPerMessage));
      if (outcome) return outcome;
    }
    return copyOutcome((await redis.agentixCopy(...args, "")) as [string, number?]);
  }

  /** A chunked fork (see copySession): its outcome, or `null` when the source changed and it must start again. */
  async #copyChunked(
    redis: RedisClient & ScriptCommands,
    args: Array<string | number>,
    length: number,
    stamp: string,
    chunks: Chunks,
  ): Promise<CopyOutcome | null> {
    const temp = `${String(args[2])}:${randomUUID()}`;
    const source = args[1] as string;
    const keys = {
      session: this.#key("session", source),
      messages: this.#key("messages", source),
      edits: this.#key("edits", source),
      temp: this.#key("tmp", temp),
    };
    let copied = 0;
    let total = length;
    for (;;) {
      copied = await copyChunks(redis, keys, stamp, chunks, copied, total);
      if (copied === -1) return null;
      const reply = (await redis.agentixPublish(...args, temp, stamp, copied)) as [string, number?];
      if (reply[0] === "retry") return null;
      if (reply[0] !== "behind") return copyOutcome(reply);
      total = reply[1] as number;
    }
  }

  protected async removeSession(sessionId: string): Promise<void> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.remove(sessionId);
    const redis = await this.#ready();
    await redis.agentixRemove(this.#base(), sessionId);
  }

  protected async appendMessages(sessionId: string, messages: MessageRecord[]): Promise<number | null> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.append(sessionId, messages);
    const redis = await this.#ready();
    const ts = (messages[0] as MessageRecord).timestamp;
    const { key, bit, setTtl } = this.#nextOp();
    const reply = (await redis.agentixAppend(
      this.#base(),
      sessionId,
      ts,
      Date.parse(ts),
      key,
      bit,
      setTtl,
      heads(messages),
    )) as number | null;
    // Once an append of this block succeeded with the TTL flag, its key expires: later appends skip the PEXPIRE.
    if (reply !== null && setTtl === 1) this.#ops.expiring = key;
    return reply;
  }

  protected async editMessages(sessionId: string, edit: MessageEdit): Promise<EditOutcome> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.edit(sessionId, edit);
    const redis = await this.#ready();
    const { messages, at, expectedLength, from, pop, idempotency, metadata } = edit;
    const { key, bit } = this.#nextOp();
    const reply = (await redis.agentixEdit(
      this.#base(),
      sessionId,
      messages[0]?.timestamp ?? at,
      Date.parse(messages[0]?.timestamp ?? at),
      key,
      bit,
      expectedLength ?? "",
      from ?? "",
      pop ? 1 : 0,
      idempotency?.key ?? "",
      idempotency?.fingerprint ?? "",
      metadata === undefined ? 0 : metaArgs(metadata),
      heads(messages),
    )) as [EditOutcome["status"], string | number] | null;
    if (reply === null) return { status: "not-found" };
    const [status, value] = reply;
    return editOutcome(status, value);
  }

  protected async readLength(sessionId: string): Promise<number | null> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.length(sessionId);
    const redis = await this.#ready();
    return (await redis.agentixLength(this.#base(), sessionId)) as number | null;
  }

  protected async readMessages(sessionId: string, range: MessageRange): Promise<MessageRecord[] | null> {
    const redis = await this.#ready();
    const keys = { session: this.#key("session", sessionId), messages: this.#key("messages", sessionId) };
    return readRange(redis, { ...keys, edits: this.#key("edits", sessionId) }, range);
  }

  protected override async scanPage(
    after: string | null,
    limit: number,
    agentId: string | undefined,
  ): Promise<SessionRecord[]> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.scan(after, limit, agentId);
    const redis = await this.#ready();
    if (agentId === undefined) return records(await redis.agentixScan(this.#base(), after ?? "", limit));
    // The agent's id-ordered set: a page is O(page). The first scan of an agent builds it from the agent's index.
    for (let attempt = 0; attempt < 3; attempt++) {
      const page = await redis.agentixScanAgent(this.#base(), agentId, after ?? "", limit);
      if (page !== null) return records(page);
      await buildIds(redis as RedisClient & IdScripts, this.#base(), this.#key("index", agentId), agentId);
    }
    throw new AgentixStorageError(`RedisStorageBackend: the id set of agent ${JSON.stringify(agentId)} was not built`);
  }

  protected override async insertImported(record: SessionRecord, messages: MessageRecord[]): Promise<boolean> {
    const cluster = await this.#cluster();
    return (await (cluster ? cluster.insert(record, messages) : this.#insert(record, messages))) === null;
  }

  // A streamed import: chunks in a temp key, published by one short script (see src/redis-import.ts; cluster
  // mode: ClusterStore.importBegin and on, the temp key under the session's hash tag).
  readonly #imports = new RedisImports(
    (kind, id) => this.#key(kind, id),
    () => this.#base(),
  );
  protected override async beginImport(staged: StagedImport): Promise<boolean> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.importBegin(staged);
    return this.#imports.begin(await this.#ready(), staged);
  }
  protected override async stageMessages(staged: StagedImport, offset: number, messages: MessageRecord[]) {
    const cluster = await this.#cluster();
    if (cluster) return cluster.importStage(staged, offset, messages);
    return this.#imports.stage(await this.#ready(), staged, offset, messages);
  }
  protected override async publishImport(staged: StagedImport, length: number): Promise<boolean> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.importPublish(staged, length);
    return this.#imports.publish(await this.#ready(), staged, length);
  }
  protected override async discardImport(staged: StagedImport): Promise<void> {
    const cluster = await this.#cluster();
    if (cluster) return cluster.importDiscard(staged);
    return this.#imports.discard(await this.#ready(), staged);
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
    const cluster = this.#clusterClient;
    this.#clusterClient = undefined;
    this.#store = undefined;
    if (cluster && !this.#external) {
      if (cluster.status === "wait") cluster.disconnect();
      else await cluster.quit().catch(() => cluster.disconnect());
    }
    const client = this.#client;
    this.#client = undefined;
    this.#checked = undefined;
    if (!client || this.#external) return;
    // Never connected (lazyConnect): nothing to say goodbye to. Otherwise QUIT waits for pending replies.
    if (client.status === "wait") return client.disconnect();
    await client.quit().catch(() => client.disconnect());
  }

  /** Insert-if-absent: `null` when stored, else the existing session's fields (nothing written). */
  async #insert(record: SessionRecord, messages: MessageRecord[]): Promise<Fields | null> {
    const redis = await this.#ready();
    const { session_id, agent_id, created_at, updated_at, metadata } = record;
    const cwd = cwdOf(metadata);
    const reply = await redis.agentixInsert(
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

  /**
   * The client, checked on first use: a cluster node or a database that could not be selected is an error before
   * anything is written (the scripts would write keys of other slots; ioredis goes on in database 0 when SELECT
   * fails). A check that could not reach the server is retried on the next call.
   */
  #ready(): Promise<RedisClient & ScriptCommands> {
    if (this.#checked) return this.#checked;
    if (this.#clusterMode) {
      // Only the plain commands on one session's keys (reads) go through this client as a Redis: they are the same
      // commands on a Cluster, which routes each to its slot's node.
      const cluster = this.#cluster$();
      this.#checked = Promise.resolve(cluster as unknown as RedisClient & ScriptCommands);
      return this.#checked;
    }
    const client = this.#redis();
    this.#checked = checkServer(client, () => this.#lastError).then(
      () => client,
      (error: unknown) => {
        this.#checked = undefined;
        throw error;
      },
    );
    return this.#checked;
  }

  /** The cluster client, created on first use (cluster mode), its scripts defined. */
  #cluster$(): ClusterClient {
    if (this.#clusterClient) return this.#clusterClient;
    let client = this.#external as Cluster | undefined;
    if (!client) {
      client = openCluster(ClusterClass, this.#options.url as string, {
        connectTimeout: CONNECT_TIMEOUT_MS,
        maxRetriesPerRequest: MAX_RETRIES_PER_REQUEST,
        ...this.#options.redisOptions,
      });
      client.on("error", (error: unknown) => {
        this.#lastError = error;
      });
      // Ended (unreachable past the retries): the next call opens a new client.
      const ended = client;
      ended.once("end", () => {
        if (this.#clusterClient !== ended) return;
        this.#clusterClient = undefined;
        this.#store = undefined;
        this.#checked = undefined;
      });
    }
    this.#clusterClient = defineClusterCommands(client);
    this.#store = new ClusterStore(this.#clusterClient, this.#options.prefix);
    return this.#clusterClient;
  }

  /** The client, created on first use; with `lazyConnect` a backend that is never used opens nothing. */
  #redis(): RedisClient & ScriptCommands {
    if (this.#client) return this.#client;
    let client = this.#external;
    if (!client) {
      // Fail fast when the server is unreachable: ioredis's defaults (10 s connectTimeout, 20 retries per request)
      // hold a call for over a minute against an address that does not answer. Overridable by redisOptions.
      const options = {
        lazyConnect: true,
        connectTimeout: CONNECT_TIMEOUT_MS,
        maxRetriesPerRequest: MAX_RETRIES_PER_REQUEST,
        ...this.#options.redisOptions,
      } as RedisOptions & {
        // The cast: ioredis's constructor types reject `replyMapping: undefined` under exactOptionalPropertyTypes.
        replyMapping?: "legacy";
      };
      client = new Redis(this.#options.url as string, options);
      // Failures reach the caller through the command's rejection; without a listener ioredis also logs them.
      client.on("error", (error: unknown) => {
        this.#lastError = error;
      });
    }
    for (const [name, lua] of Object.entries(scripts)) {
      client.defineCommand(name, { lua: prelude + lua, numberOfKeys: 0 });
    }
    this.#client = client as RedisClient & ScriptCommands;
    return this.#client;
  }

  /** The op number of the next write (an append or an edit): its key (writer, hour, block of 2^20) and bit. */
  #nextOp(): { key: string; bit: number; setTtl: 0 | 1 } {
    const hour = Math.floor(Date.now() / OP_BLOCK_MS);
    if (hour !== this.#ops.hour) this.#ops = { hour, count: 0, expiring: "" };
    const n = this.#ops.count++;
    const key = `${this.#writer}:${hour}:${Math.floor(n / OPS_PER_KEY)}`;
    return { key, bit: n % OPS_PER_KEY, setTtl: this.#ops.expiring === key ? 0 : 1 };
  }

  /** A key for a plain command (ioredis adds the client's own `keyPrefix` to it). */
  #key(kind: "session" | "messages" | "index" | "edits" | "tmp", id: string): string {
    if (this.#clusterMode && kind !== "index" && kind !== "tmp") return this.#clusterKeys.session(kind, id);
    return `${this.#options.prefix}:${kind}:${id}`;
  }

  /** The namespace scripts build keys from: they get no KEYS, so ioredis cannot add `keyPrefix` for them. */
  #base(): string {
    return `${this.#client?.options.keyPrefix ?? ""}${this.#options.prefix}`;
  }
}
