// Round trips per framework operation on Postgres (statements, seen by the client's `debug` hook) and Redis
// (commands, seen by sendCommand; a MULTI … EXEC block is sent as one write and answered as one: one round trip).
// Each operation is measured warm (its statements prepared, its scripts loaded), on a session that exists.
import { randomUUID } from "node:crypto";
import type { AgentInputItem } from "@openai/agents-core";
import type { UIMessage } from "ai";
import { Redis } from "ioredis";
import postgres from "postgres";
import { afterAll, describe, expect, inject, it } from "vitest";
import { createChat, loadChat, saveChat } from "../src/adapters/ai-sdk.js";
import { AgentixSession } from "../src/adapters/openai-agents.js";
import type { StorageBackend } from "../src/core/backend.js";
import { PostgresStorageBackend } from "../src/postgres.js";
import { RedisStorageBackend } from "../src/redis.js";

const postgresUrl = inject("postgresUrl");
const redisUrl = inject("redisUrl");

interface Counted {
  storage: StorageBackend;
  /** How many round trips `run` makes. */
  count: (run: () => Promise<unknown>) => Promise<number>;
  close: () => Promise<void>;
}

function postgresCounted(url: string): Counted {
  const schema = `agentix_rt_${randomUUID().slice(0, 8)}`;
  let sent = 0;
  const client = postgres(url, { onnotice: () => {}, debug: () => void sent++ });
  const storage = new PostgresStorageBackend({ client, schema });
  return {
    storage,
    count: async (run) => {
      sent = 0;
      await run();
      return sent;
    },
    close: async () => {
      await storage.close();
      await client.unsafe(`drop schema if exists "${schema}" cascade`);
      await client.end();
    },
  };
}

function redisCounted(url: string): Counted {
  const prefix = `agentix-rt-${randomUUID().slice(0, 8)}`;
  const client = new Redis(url);
  let trips = 0;
  let inMulti = false;
  const send = client.sendCommand.bind(client);
  client.sendCommand = ((command: Parameters<typeof send>[0]) => {
    if (command.name === "multi") inMulti = true;
    if (!inMulti) trips++;
    if (command.name === "exec") {
      inMulti = false;
      trips++;
    }
    return send(command);
  }) as typeof client.sendCommand;
  const storage = new RedisStorageBackend({ client, prefix });
  return {
    storage,
    count: async (run) => {
      trips = 0;
      await run();
      return trips;
    },
    close: async () => {
      await storage.close();
      let cursor = "0";
      do {
        const [next, keys] = await client.scan(cursor, "MATCH", `${prefix}:*`, "COUNT", 1000);
        if (keys.length > 0) await client.unlink(...keys);
        cursor = next;
      } while (cursor !== "0");
      await client.quit();
    },
  };
}

const stores: Array<[string, () => Counted]> = [];
if (postgresUrl) stores.push(["Postgres", () => postgresCounted(postgresUrl)]);
if (redisUrl) stores.push(["Redis", () => redisCounted(redisUrl)]);
const opened: Counted[] = [];
afterAll(async () => {
  for (const c of opened) await c.close();
});

const items = (n: number, tag: string): AgentInputItem[] =>
  Array.from({ length: n }, (_, i) => ({ role: "user", content: `${tag} ${i}` }));
const ui = (id: string): UIMessage => ({ id, role: "user", parts: [{ type: "text", text: id }] });

describe.skipIf(stores.length === 0).each(stores)("round trips on %s", (name, make) => {
  it("AgentixSession: addItems of 10 = 1, getItems(limit) = 1, getItems() = 1, popItem = 1, clearSession = 1", async () => {
    const c = make();
    opened.push(c);
    const warm = new AgentixSession({ storage: c.storage });
    await warm.addItems(items(10, "warm"));
    await warm.getItems(5);
    await warm.getItems();
    await warm.popItem();
    await warm.replaceHistoryWithCompaction(items(2, "warm"));
    await warm.applyHistoryTransaction({
      operationId: "w",
      transaction: { type: "append_items", items: items(1, "w") },
    });
    await warm.clearSession();

    const session = new AgentixSession({ storage: c.storage });
    // The first write of a session: the append finds no session, opens it, appends again.
    expect(await c.count(() => session.addItems(items(10, "first")))).toBe(3);
    expect(await c.count(() => session.addItems(items(10, "second")))).toBe(1);
    expect(await c.count(() => session.getItems(5))).toBe(1);
    expect(await c.count(() => session.getItems())).toBe(1);
    expect(await c.count(() => session.popItem())).toBe(1);
    const append = { operationId: "op-1", transaction: { type: "append_items" as const, items: items(10, "tx") } };
    expect(await c.count(() => session.applyHistoryTransaction(append))).toBe(1);
    expect(await c.count(() => session.applyHistoryTransaction(append))).toBe(1); // the retry: replayed
    const suffix = (await session.getItems(2)) as AgentInputItem[];
    const replace = {
      operationId: "op-2",
      transaction: { type: "replace_suffix" as const, expectedSuffix: suffix, replacement: items(3, "r") },
    };
    expect(await c.count(() => session.applyHistoryTransaction(replace))).toBe(3); // count, read the suffix, replace
    expect(await c.count(() => session.replaceHistoryWithCompaction(items(3, "c")))).toBe(1);
    expect(await c.count(() => session.clearSession())).toBe(1);
  });

  it("agentix/ai-sdk: loadChat = 1, saveChat = 2 (a read and one compare-and-swap write), createChat = 1", async () => {
    const c = make();
    opened.push(c);
    const warmId = await createChat(c.storage);
    await saveChat(c.storage, { chatId: warmId, messages: [ui("w1")] });
    await saveChat(c.storage, { chatId: warmId, messages: [ui("w1"), ui("w2")] });
    await loadChat(c.storage, warmId);

    let chatId = "";
    expect(await c.count(async () => (chatId = await createChat(c.storage)))).toBe(1);
    const first = Array.from({ length: 10 }, (_, i) => ui(`m${i}`));
    // The save of an empty chat: its read finds no message, which Redis tells from an unknown session by a second look.
    expect(await c.count(() => saveChat(c.storage, { chatId, messages: first }))).toBe(name === "Redis" ? 3 : 2);
    expect(await c.count(() => loadChat(c.storage, chatId))).toBe(1);
    const next = [...first, ui("m10"), ui("m11")];
    expect(await c.count(() => saveChat(c.storage, { chatId, messages: next }))).toBe(2);
    expect(await c.count(() => saveChat(c.storage, { chatId, messages: next }))).toBe(1); // unchanged: the read only
  });
});
