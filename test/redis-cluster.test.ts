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

describe.skipIf(!url)("RedisStorageBackend in cluster mode, while slots move", () => {
  const clusterUrl = url as string;
  const movePrefix = `agentix-test-${randomUUID().slice(0, 8)}`;
  let raw: Cluster;
  beforeAll(async () => {
    raw = new Cluster(parseClusterUrl(clusterUrl)?.nodes ?? []);
    await raw.ping();
  });
  afterAll(async () => {
    for (const key of await clusterKeysOf(raw, movePrefix)) await raw.unlink(key);
    await raw.quit();
  });

  it("loses and duplicates no append of 32 writers while redis-cli --cluster reshard moves their sessions' slots", async () => {
    // The masters and their slot ranges; sessions whose slots are among the first 64 of one master, which a reshard
    // of 64 slots from it moves.
    type Slots = Array<[number, number, [string, number, string]]>;
    const slots = (await raw.cluster("SLOTS")) as Slots;
    const byNode = new Map<string, { port: number; first: number }>();
    for (const [start, , [, port, nodeId]] of slots) {
      const known = byNode.get(nodeId);
      if (!known || start < known.first) byNode.set(nodeId, { port, first: start });
    }
    const [[fromId, from], [toId]] = [...byNode.entries()] as Array<[string, { port: number; first: number }]>;
    const moved = 64;
    const sessions: string[] = [];
    const sessionSlots: number[] = [];
    while (sessions.length < 4) {
      const id = randomUUID();
      const slot = (await raw.cluster("KEYSLOT", id)) as number;
      if (slot >= from.first && slot < from.first + moved) sessions.push(id), sessionSlots.push(slot);
    }
    const backends = Array.from({ length: 8 }, () => new RedisStorageBackend({ url: clusterUrl, prefix: movePrefix }));
    const agent = `movers-${randomUUID()}`;
    // Long lists, so that migrating their keys takes a while.
    const prefill = Array.from({ length: 5_000 }, (_, i) => ({ role: "user" as const, content: `pre:${i}` }));
    for (const id of sessions) {
      await (backends[0] as RedisStorageBackend).createSession(agent, null, { sessionId: id });
      for (let k = 0; k < 4; k++) await (backends[0] as RedisStorageBackend).saveMessages(id, prefill);
    }

    let resharding = true;
    let duringReshard = 0;
    const acked: string[] = [];
    const failed: unknown[] = [];
    const writers = Array.from({ length: 32 }, async (_, w) => {
      const b = backends[w % backends.length] as RedisStorageBackend;
      for (let i = 0; resharding || i < 20; i++) {
        const content = `${w}:${i}`;
        try {
          await b.saveMessage(sessions[w % sessions.length] as string, "user", content);
          acked.push(content);
          if (started && resharding) duringReshard++;
        } catch (error) {
          failed.push(error);
        }
      }
    });
    let started = false;
    const reshard = (async () => {
      while (acked.length < 200) await new Promise((resolve) => setTimeout(resolve, 5));
      started = true;
      try {
        const { execFile } = await import("node:child_process");
        const { promisify } = await import("node:util");
        // biome-ignore format: one option per line
        await promisify(execFile)("redis-cli", [
          "--cluster", "reshard", `127.0.0.1:${from.port}`, "--cluster-from", fromId, "--cluster-to", toId,
          "--cluster-slots", String(moved), "--cluster-yes",
        ]);
      } finally {
        resharding = false;
      }
    })();
    await Promise.all([reshard, ...writers]);

    // The sessions' slots did move, every acknowledged append is there once, nothing else is.
    const after = (await raw.cluster("SLOTS")) as Slots;
    for (const slot of sessionSlots) {
      expect(after.find(([start, end]) => start <= slot && slot <= end)?.[2][2]).toBe(toId);
    }
    expect(failed).toEqual([]);
    const stored: string[] = [];
    for (const id of sessions) {
      const contents = (await (backends[1] as RedisStorageBackend).loadMessages(id)).map((m) => m.content as string);
      expect(contents.slice(0, 20_000)).toEqual([0, 1, 2, 3].flatMap(() => prefill.map((m) => m.content)));
      stored.push(...contents.slice(20_000));
    }
    expect(stored.length).toBe(acked.length);
    expect(new Set(stored).size).toBe(stored.length);
    expect([...stored].sort()).toEqual([...acked].sort());
    expect(duringReshard).toBeGreaterThan(100);
    for (const b of backends) await b.close();
  });
});
