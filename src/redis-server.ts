// What the Redis backend checks of its server: the database in its URL, and on first use, before anything is written,
// the server itself.
import type { Redis } from "ioredis";
import { AgentixStorageError } from "./core/errors.js";

/**
 * Throws when `client` is connected to a Redis Cluster node (the scripts would write keys of other nodes' slots)
 * or could not select its database (ioredis goes on in database 0 when SELECT fails; `lastError` is the
 * connection's last error, kept as the cause). A command the server refuses says nothing either way.
 */
export async function checkServer(client: Redis, lastError: () => unknown): Promise<void> {
  const [[infoError, info] = [], [dbError, self] = []] =
    (await client.pipeline().info("cluster").client("INFO").exec()) ?? [];
  // A command the server refuses (renamed, ACL) says nothing either way; a connection error reaches the caller.
  const refused = (error: Error | null | undefined) => error && error.name !== "ReplyError";
  if (refused(infoError)) throw infoError;
  if (refused(dbError)) throw dbError;
  if (/^cluster_enabled:1\b/m.test(String(info ?? ""))) {
    throw new AgentixStorageError(
      `RedisStorageBackend: ${describe(client)} is a Redis Cluster node; a standalone connection would write ` +
        "keys of other nodes' slots. Pass { client: new Cluster([...]) } instead, or use a standalone server",
    );
  }
  const db = /\bdb=(\d+)/.exec(String(self ?? ""))?.[1];
  const wanted = client.options.db ?? 0;
  if (db !== undefined && Number(db) !== wanted) {
    throw new AgentixStorageError(
      `RedisStorageBackend: could not select database ${wanted} on ${describe(client)} (the connection is in ` +
        `database ${db}); is the index below the server's "databases" setting?`,
      { cause: lastError() },
    );
  }
}

/** host:port of a client, for messages (never its password). */
function describe(client: Redis): string {
  const { host, port, path } = client.options;
  return path ? String(path) : `${host ?? "localhost"}:${port ?? 6379}`;
}

/** A URL's path is empty or a database index (ioredis would read `/abc` as NaN and `/1x` as 1). */
export function validDatabase(url: string): boolean {
  try {
    return /^\/?(\d{1,5})?$/.test(new URL(url).pathname);
  } catch {
    return false;
  }
}

/** A `redis+cluster://` URL's parts: the seed nodes, credentials and TLS. */
export interface ClusterUrl {
  nodes: Array<{ host: string; port: number }>;
  username: string | undefined;
  password: string | undefined;
  tls: boolean;
}

const CLUSTER_URL = /^(rediss?)\+cluster:\/\/(?:([^@/?#]*)@)?([^/?#]+)(\/0?)?$/i;

/** Whether a URL names a Redis Cluster (`redis+cluster://` or `rediss+cluster://`). */
export function isClusterUrl(url: string): boolean {
  return /^rediss?\+cluster:\/\//i.test(url);
}

/**
 * Parses `redis+cluster://[user:password@]host:port,host:port[/0]` (`rediss+cluster://` for TLS); `undefined` when
 * malformed. WHATWG URLs cannot hold several hosts, hence this parser; the path may only be database 0.
 */
export function parseClusterUrl(url: string): ClusterUrl | undefined {
  const match = CLUSTER_URL.exec(url);
  if (!match) return undefined;
  const [, scheme, auth, hosts] = match as unknown as [string, string, string | undefined, string];
  const nodes: ClusterUrl["nodes"] = [];
  for (const node of hosts.split(",")) {
    const parts = /^(\[[0-9a-f:.]+\]|[^:[\]]+)(?::(\d{1,5}))?$/i.exec(node);
    if (!parts) return undefined;
    const port = Number(parts[2] ?? 6379);
    if (port < 1 || port > 65_535) return undefined;
    nodes.push({ host: (parts[1] as string).replace(/^\[(.*)\]$/, "$1"), port });
  }
  const [user, ...rest] = (auth ?? "").split(":");
  const decode = (s: string | undefined) => (s ? decodeURIComponent(s) : undefined);
  return {
    nodes,
    username: decode(user),
    password: rest.length > 0 ? decode(rest.join(":")) : undefined,
    tls: scheme.toLowerCase() === "rediss",
  };
}
