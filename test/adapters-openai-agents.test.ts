// agentix/openai-agents: AgentixSession against the SDK's own reference session (MemorySession, same calls, same
// results), each method on the five backends, the SDK's real runner with a local model (turn 2 on a new backend
// instance), and writes racing each other.
import { randomUUID } from "node:crypto";
import {
  Agent,
  type AgentInputItem,
  isSessionHistoryRewriteAwareSession,
  isSessionHistoryTransactionAwareSession,
  MemorySession,
  Runner,
  type Session,
  setTracingDisabled,
  tool,
} from "@openai/agents-core";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { z } from "zod";
import { AgentixSession } from "../src/adapters/openai-agents.js";
import type { StorageBackend } from "../src/core/backend.js";
import { ConflictError, ValidationError } from "../src/core/errors.js";
import { sessionIdFor } from "../src/core/validation.js";
import { adapterBackends } from "./support/backends.js";
import { FakeModel } from "./support/fake-agents-model.js";

setTracingDisabled(true);

const { backends, closeOpened, cleanUp } = await adapterBackends("openai");
const kinds = backends.filter((backend) => backend.available);
afterEach(closeOpened);
afterAll(cleanUp);

/** One of each kind of item the runner stores, with nested provider data and text no encoding may change. */
const ITEMS: AgentInputItem[] = [
  { role: "system", content: "Be brief." },
  { type: "message", role: "user", content: 'Wetter in Lisboa? ☀️ \u{1F600} "quoted" \\ back' },
  {
    role: "user",
    content: [
      { type: "input_text", text: "and this image" },
      { type: "input_image", image: "https://example.com/a.png", detail: "low" },
    ],
  },
  { type: "reasoning", id: "rs_1", content: [{ type: "input_text", text: "think" }], providerData: { a: [1, 2.5] } },
  { type: "function_call", callId: "call_1", name: "weather", arguments: '{"city":"Lisbon"}', status: "completed" },
  {
    type: "function_call_result",
    callId: "call_1",
    name: "weather",
    status: "completed",
    output: { type: "text", text: "18°C" },
  },
  { type: "hosted_tool_call", name: "web_search", status: "completed", providerData: { nested: { deep: null } } },
  {
    type: "message",
    role: "assistant",
    status: "completed",
    id: "msg_1",
    content: [{ type: "output_text", text: "18°C and sunny." }],
  },
];

const user = (text: string): AgentInputItem => ({ role: "user", content: text });
const weatherTool = () =>
  tool({
    name: "weather",
    description: "The weather in a city",
    parameters: z.object({ city: z.string() }),
    execute: async ({ city }) => `18°C in ${city}`,
  });

describe.each(kinds)("AgentixSession on $name", (kind) => {
  let storage: StorageBackend;
  beforeEach(() => {
    storage = kind.open();
  });
  const session = (options: { sessionId?: string; agentId?: string } = {}) =>
    new AgentixSession({ storage, sessionId: options.sessionId ?? `s-${randomUUID()}`, ...options });

  it("is a session of the SDK, with its history rewrites and transactions", () => {
    const s = session();
    expect(isSessionHistoryRewriteAwareSession(s)).toBe(true);
    expect(isSessionHistoryTransactionAwareSession(s)).toBe(true);
  });

  it("getSessionId: the name given, or a new UUID that is also the agentix session id", async () => {
    const name = `chat-${randomUUID()}`;
    const named = session({ sessionId: name });
    expect(await named.getSessionId()).toBe(name);
    expect(named.storageSessionId).toBe(sessionIdFor(name));
    const fresh = new AgentixSession({ storage });
    const id = await fresh.getSessionId();
    expect(fresh.storageSessionId).toBe(id);
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });

  it("getItems of a session never written: [], and nothing is created by reading", async () => {
    const s = session();
    expect(await s.getItems()).toEqual([]);
    expect(await s.getItems(3)).toEqual([]);
    expect(await s.popItem()).toBeUndefined();
    expect(await storage.getSession(s.storageSessionId)).toBeNull();
  });

  it("addItems: one batch, every item back exactly, each under the role it maps to", async () => {
    const s = session({ agentId: "my-agent" });
    await s.addItems(ITEMS);
    expect(await s.getItems()).toEqual(ITEMS);
    const records = await storage.loadMessages(s.storageSessionId);
    expect(records.map((r) => r.role)).toEqual([
      "system",
      "user",
      "user",
      "assistant",
      "assistant",
      "tool",
      "assistant",
      "assistant",
    ]);
    expect(new Set(records.map((r) => r.timestamp)).size).toBe(1); // one batch: one timestamp
    expect((await storage.getSession(s.storageSessionId))?.agent_id).toBe("my-agent");
    await s.addItems([]);
    expect(await storage.countMessages(s.storageSessionId)).toBe(ITEMS.length);
  });

  it("addItems: all or none: an item that is not JSON is a ValidationError naming it, nothing written", async () => {
    const s = session();
    await s.addItems([user("first")]);
    const bad = { role: "user", content: [{ type: "input_image", image: new Uint8Array([1, 2]) }] } as never;
    const error = await s.addItems([user("kept out"), bad]).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as ValidationError).field).toBe("messages[1].content.content[0].image");
    expect(await s.getItems()).toEqual([user("first")]);
  });

  it("getItems(limit): the newest `limit`, oldest first; 0 or less: none", async () => {
    const s = session();
    await s.addItems(ITEMS);
    expect(await s.getItems(3)).toEqual(ITEMS.slice(-3));
    expect(await s.getItems(100)).toEqual(ITEMS);
    expect(await s.getItems(0)).toEqual([]);
    expect(await s.getItems(-1)).toEqual([]);
  });

  it("popItem: the newest item, removed; clearSession: no items, and the next write starts a new history", async () => {
    const s = session();
    await s.addItems(ITEMS.slice(0, 3));
    expect(await s.popItem()).toEqual(ITEMS[2]);
    expect(await s.getItems()).toEqual(ITEMS.slice(0, 2));
    await s.clearSession();
    expect(await s.getItems()).toEqual([]);
    await s.clearSession();
    await s.addItems([user("again")]);
    expect(await s.getItems()).toEqual([user("again")]);
  });

  it("two objects with one name share one history, created under the first writer's agent id", async () => {
    const name = `shared-${randomUUID()}`;
    await session({ sessionId: name, agentId: "first" }).addItems([user("one")]);
    await session({ sessionId: name, agentId: "second" }).addItems([user("two")]);
    expect(await session({ sessionId: name }).getItems()).toEqual([user("one"), user("two")]);
    expect((await storage.getSession(sessionIdFor(name)))?.agent_id).toBe("first");
  });

  it("replaceHistoryWithCompaction: the whole history replaced in one step, the session created if need be", async () => {
    const s = session();
    const compacted: AgentInputItem[] = [
      { type: "compaction", encrypted_content: "opaque" } as AgentInputItem,
      user("kept"),
    ];
    await s.replaceHistoryWithCompaction(compacted);
    expect(await s.getItems()).toEqual(compacted);
    await s.addItems(ITEMS);
    await s.replaceHistoryWithCompaction(compacted.slice(0, 1));
    expect(await s.getItems()).toEqual(compacted.slice(0, 1));
  });

  it("applyHistoryMutations: replace_function_call as the SDK's MemorySession does it", async () => {
    const s = session();
    const reference = new MemorySession();
    const replacement = { ...(ITEMS[4] as object), arguments: '{"city":"Porto"}' } as AgentInputItem;
    for (const target of [s, reference] as Session[]) {
      await target.addItems([...ITEMS, ITEMS[4] as AgentInputItem]); // the call twice: the second copy goes
      await (target as MemorySession).applyHistoryMutations({
        mutations: [{ type: "replace_function_call", callId: "call_1", replacement: replacement as never }],
      });
      await (target as MemorySession).applyHistoryMutations({ mutations: [] });
    }
    expect(await s.getItems()).toEqual(await reference.getItems());
    expect((await s.getItems())[4]).toEqual(replacement);
  });

  it("applyHistoryTransaction append_items: once per operation id; other items under it are a ConflictError", async () => {
    const s = session();
    const tx = { operationId: `op-${"x".repeat(400)}`, transaction: { type: "append_items" as const, items: ITEMS } };
    await s.applyHistoryTransaction(tx);
    await s.applyHistoryTransaction(structuredClone(tx)); // a retry: nothing written
    expect(await s.getItems()).toEqual(ITEMS);
    const other = { ...tx, transaction: { type: "append_items" as const, items: [user("other")] } };
    await expect(s.applyHistoryTransaction(other)).rejects.toBeInstanceOf(ConflictError);
    await expect(s.applyHistoryTransaction({ operationId: " ", transaction: tx.transaction })).rejects.toBeInstanceOf(
      ValidationError,
    );
    expect(await s.getItems()).toEqual(ITEMS);
    await s.clearSession(); // forgets the operation ids, as MemorySession does
    await s.applyHistoryTransaction(tx);
    expect(await s.getItems()).toEqual(ITEMS);
  });

  it("applyHistoryTransaction replace_suffix: replaces a matching suffix once; a suffix that does not match is a ConflictError, nothing written", async () => {
    const s = session();
    await s.addItems(ITEMS);
    const replace = {
      operationId: "op-replace",
      transaction: {
        type: "replace_suffix" as const,
        expectedSuffix: ITEMS.slice(-2),
        replacement: [user("replaced 1"), user("replaced 2"), user("replaced 3")],
      },
    };
    const mismatch = {
      operationId: "op-mismatch",
      transaction: { ...replace.transaction, expectedSuffix: [user("not there")] },
    };
    await expect(s.applyHistoryTransaction(mismatch)).rejects.toBeInstanceOf(ConflictError);
    expect(await s.getItems()).toEqual(ITEMS);
    const expected = [...ITEMS.slice(0, -2), ...replace.transaction.replacement];
    await s.applyHistoryTransaction(replace);
    expect(await s.getItems()).toEqual(expected);
    await s.applyHistoryTransaction(structuredClone(replace)); // a retry: the suffix is gone, but it was this one
    await s.addItems([user("later")]);
    await s.applyHistoryTransaction(structuredClone(replace)); // also after later appends
    expect(await s.getItems()).toEqual([...expected, user("later")]);
    const longer = {
      operationId: "op-long",
      transaction: { ...replace.transaction, expectedSuffix: [...ITEMS, ...ITEMS] },
    };
    await expect(s.applyHistoryTransaction(longer)).rejects.toBeInstanceOf(ConflictError);
    // On a session never written, an empty expected suffix is an append that creates it.
    const empty = session();
    const create = { type: "replace_suffix" as const, expectedSuffix: [], replacement: [user("new")] };
    await empty.applyHistoryTransaction({ operationId: "op-new", transaction: create });
    expect(await empty.getItems()).toEqual([user("new")]);
  });

  it("behaves as the SDK's MemorySession over one sequence of every call", async () => {
    const s = session();
    const reference = new MemorySession();
    const results = async (target: Session) => {
      const out: unknown[] = [];
      await target.addItems(ITEMS.slice(0, 4));
      out.push(await target.getItems(2));
      out.push(await target.popItem());
      await target.addItems(ITEMS.slice(4));
      out.push(await target.getItems());
      out.push(await target.popItem(), await target.popItem());
      await (target as MemorySession).applyHistoryTransaction({
        operationId: "op",
        transaction: { type: "append_items", items: [user("tx")] },
      });
      out.push(await target.getItems(1));
      await target.clearSession();
      out.push(await target.getItems(), await target.popItem());
      return out;
    };
    expect(await results(s)).toEqual(await results(reference));
  });

  it("a pop and a rewrite racing appends lose nothing", async () => {
    const name = `race-${randomUUID()}`;
    const s = session({ sessionId: name });
    await s.addItems([user("base"), ITEMS[4] as AgentInputItem]);
    const replacement = { ...(ITEMS[4] as object), arguments: "{}" } as never;
    // The pop and the rewrite start first; the appends follow one by one, each a turn of the event loop later, so
    // that some land between the pop's or the rewrite's read and its write (where a read-then-write would lose them).
    const popping = session({ sessionId: name }).popItem();
    const rewriting = session({ sessionId: name }).applyHistoryMutations({
      mutations: [{ type: "replace_function_call", callId: "call_1", replacement }],
    });
    const writers: Array<Promise<void>> = [];
    for (let i = 0; i < 8; i++) {
      writers.push(session({ sessionId: name }).addItems([user(`w${i}`)]));
      await new Promise((resolve) => setImmediate(resolve));
    }
    const [popped] = await Promise.all([popping, rewriting, ...writers]);
    const items = await s.getItems();
    const written = Array.from({ length: 8 }, (_, i) => JSON.stringify(user(`w${i}`)));
    const all = [...items, popped].map((item) => JSON.stringify(item));
    for (const w of written) expect(all).toContain(w); // every append is there, or is the one item popped
    expect(items.length + 1).toBe(10);
  });

  it("an output guardrail tripping after a tool ran: the runner persists the turn through applyHistoryTransaction, as with MemorySession", async () => {
    const outcome = async (session: Session) => {
      const calls: string[] = [];
      // Records which methods the runner calls, passing every call through.
      const watched = new Proxy(session, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver);
          if (typeof value !== "function") return value;
          return (...args: unknown[]) => {
            calls.push(String(property));
            return value.apply(target, args);
          };
        },
      });
      const agent = new Agent({
        name: "guarded",
        model: new FakeModel(),
        tools: [weatherTool()],
        outputGuardrails: [{ name: "block", execute: async () => ({ tripwireTriggered: true, outputInfo: {} }) }],
      });
      const error = await new Runner({ tracingDisabled: true })
        .run(agent, "What is the weather?", { session: watched })
        .catch((e: unknown) => e);
      return { error: (error as Error).name, calls, items: await session.getItems() };
    };
    const ours = await outcome(session());
    expect(ours.calls).toContain("applyHistoryTransaction");
    expect(ours.items.length).toBeGreaterThan(1);
    expect(ours).toEqual(await outcome(new MemorySession()));
  });

  it("runs the SDK's Runner for two turns, the second on a new backend instance that sees the first", async () => {
    const model = new FakeModel();
    const agent = new Agent({ name: "assistant", instructions: "Be brief.", model, tools: [weatherTool()] });
    const runner = new Runner({ tracingDisabled: true });
    const name = `run-${randomUUID()}`;
    const first = await runner.run(agent, "What is the weather in Lisbon?", {
      session: new AgentixSession({ storage, sessionId: name }),
    });
    expect(first.finalOutput).toMatch(/^reply 2:/);

    // Turn 2 in "another process": a new backend instance over the same store (Memory: the one instance).
    const second = kind.open();
    try {
      const session2 = new AgentixSession({ storage: second, sessionId: name });
      const turn1 = await session2.getItems();
      expect(turn1.map((i) => (i as { type?: string }).type ?? "message")).toEqual([
        "message",
        "function_call",
        "function_call_result",
        "message",
      ]);
      const result = await runner.run(agent, "Thanks!", { session: session2 });
      expect(result.finalOutput).toBe("reply 3: I saw 5 items"); // turn 1's four items and the new question
      const seen = model.requests[2]?.input as AgentInputItem[];
      expect(seen.slice(0, 4)).toEqual(turn1);
      expect(await session2.getItems()).toHaveLength(6);
    } finally {
      if (kind.shared) await second.close();
    }
  });
});
