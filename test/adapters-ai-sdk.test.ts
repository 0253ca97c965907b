// agentix/ai-sdk: loadChat/saveChat/createChat on the five backends, the AI SDK's own streamText with its published
// mock model (ai/test) persisting through toUIMessageStreamResponse's onFinish (turn 2 on a new backend instance),
// and two tabs saving one chat.
import { randomUUID } from "node:crypto";
import { convertToModelMessages, simulateReadableStream, streamText, type UIMessage, validateUIMessages } from "ai";
import { MockLanguageModelV3 } from "ai/test";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { createChat, loadChat, saveChat } from "../src/adapters/ai-sdk.js";
import { sessionIdOfName } from "../src/adapters/shared.js";
import type { StorageBackend } from "../src/core/backend.js";
import { ConflictError, ValidationError } from "../src/core/errors.js";
import { sessionIdFor } from "../src/core/validation.js";
import { adapterBackends, pastMillisecond } from "./support/backends.js";

const { backends, closeOpened, cleanUp } = await adapterBackends("aisdk");
const kinds = backends.filter((backend) => backend.available);
afterEach(closeOpened);
afterAll(cleanUp);

const text = (id: string, role: UIMessage["role"], value: string): UIMessage => ({
  id,
  role,
  parts: [{ type: "text", text: value }],
});

/** Messages with every kind of part a chat stores, nested metadata and text no encoding may change. */
const CHAT: UIMessage[] = [
  { ...text("u1", "user", 'Wetter in Lisboa? ☀️ \u{1F600} "q" \\'), metadata: { createdAt: 1, tags: ["a"] } },
  {
    id: "a1",
    role: "assistant",
    metadata: { model: "mock", usage: { total: 3.5 } },
    parts: [
      { type: "step-start" },
      { type: "reasoning", text: "think", state: "done" },
      {
        type: "tool-weather",
        toolCallId: "t1",
        state: "output-available",
        input: { city: "Lisbon" },
        output: { celsius: 18 },
      },
      { type: "source-url", sourceId: "s1", url: "https://example.com" },
      { type: "file", mediaType: "image/png", url: "data:image/png;base64,AAAA" },
      { type: "data-weather", id: "d1", data: { nested: { deep: null } } },
      { type: "text", text: "18°C and sunny.", state: "done" },
    ],
  },
];

function mockModel(reply: (n: number) => string): MockLanguageModelV3 {
  let calls = 0;
  return new MockLanguageModelV3({
    doStream: async () => {
      const answer = reply(++calls);
      return {
        stream: simulateReadableStream({
          chunks: [
            { type: "stream-start", warnings: [] },
            { type: "text-start", id: "t" },
            { type: "text-delta", id: "t", delta: answer },
            { type: "text-end", id: "t" },
            {
              type: "finish",
              finishReason: { unified: "stop", raw: undefined },
              usage: {
                inputTokens: { total: 1, noCache: 1, cacheRead: undefined, cacheWrite: undefined },
                outputTokens: { total: 1, text: 1, reasoning: undefined },
              },
            },
          ],
        }),
      };
    },
  });
}

describe.each(kinds)("agentix/ai-sdk on $name", (kind) => {
  let storage: StorageBackend;
  beforeEach(() => {
    storage = kind.open();
  });

  it("createChat: an empty chat under its agent; loadChat of a chat never saved: [] (nothing created)", async () => {
    const id = await createChat(storage, { agentId: "chat-app", metadata: { title: "t" } });
    expect(await loadChat(storage, id)).toEqual([]);
    expect(await storage.getSession(id)).toMatchObject({ agent_id: "chat-app", metadata: { title: "t" } });
    const name = `never-${randomUUID()}`;
    expect(await loadChat(storage, name)).toEqual([]);
    expect(await storage.getSession(sessionIdFor(name))).toBeNull();
  });

  it("saveChat then loadChat: every message back exactly, one message a row under its role", async () => {
    const chatId = `chat-${randomUUID()}`;
    await saveChat(storage, { chatId, messages: CHAT });
    expect(await storage.countMessages(sessionIdOfName(chatId, "global"))).toBe(2);
    expect(await loadChat(storage, chatId)).toEqual(CHAT);
    expect(await validateUIMessages({ messages: await loadChat(storage, chatId) })).toEqual(CHAT);
    const records = await storage.loadMessages(sessionIdFor(chatId));
    expect(records.map((r) => r.role)).toEqual(["user", "assistant"]);
    expect((await storage.getSession(sessionIdFor(chatId)))?.agent_id).toBe("ai-sdk");
  });

  it("saveChat writes only from the first changed message on: kept messages keep their timestamps", async () => {
    const chatId = await createChat(storage);
    await saveChat(storage, { chatId, messages: CHAT });
    const before = await storage.loadMessages(chatId);
    await pastMillisecond(before.at(-1)?.timestamp ?? ""); // a message written again would have a later timestamp
    const next = [...CHAT, text("u2", "user", "And tomorrow?")];
    await saveChat(storage, { chatId, messages: next });
    expect(await storage.countMessages(sessionIdOfName(chatId, "global"))).toBe(3);
    const after = await storage.loadMessages(chatId);
    expect(after.slice(0, 2)).toEqual(before);
    // The last message changed in place (same id, as a continued answer is): allowed, written from there.
    const edited = [...CHAT.slice(0, 1), { ...(CHAT[1] as UIMessage), parts: [{ type: "text" as const, text: "x" }] }];
    const grown = [...edited, next[2] as UIMessage];
    await saveChat(storage, { chatId, messages: grown });
    expect(await storage.countMessages(sessionIdOfName(chatId, "global"))).toBe(3);
    expect(await loadChat(storage, chatId)).toEqual(grown);
    const stored = await storage.loadMessages(chatId);
    await pastMillisecond(stored.at(-1)?.timestamp ?? "");
    await saveChat(storage, { chatId, messages: grown });
    expect(await storage.loadMessages(chatId)).toEqual(stored); // unchanged: nothing written, timestamps kept
    expect((await storage.loadMessages(chatId))[0]).toEqual(before[0]);
  });

  it("saveChat refuses to drop a stored message the caller has not seen; expectedLength allows deliberate edits", async () => {
    const chatId = await createChat(storage);
    await saveChat(storage, { chatId, messages: CHAT });
    const regenerated = [CHAT[0] as UIMessage, text("a2", "assistant", "Regenerated.")];
    const refused = await saveChat(storage, { chatId, messages: regenerated }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ConflictError);
    expect((refused as Error).message).toMatch(/"a1" at position 1/);
    await expect(saveChat(storage, { chatId, messages: [] })).rejects.toBeInstanceOf(ConflictError);
    expect(await loadChat(storage, chatId)).toEqual(CHAT);
    // The client regenerated its last answer: it knows the chat had 2 messages.
    const stale = await saveChat(storage, { chatId, messages: regenerated, expectedLength: 1 }).catch(
      (e: unknown) => e,
    );
    expect(stale).toBeInstanceOf(ConflictError);
    expect(stale).toMatchObject({ expectedLength: 1, actualLength: 2 });
    await saveChat(storage, { chatId, messages: regenerated, expectedLength: 2 });
    expect(await loadChat(storage, chatId)).toEqual(regenerated);
  });

  it("saveChat: a message that is not JSON is a ValidationError, nothing written", async () => {
    const chatId = await createChat(storage);
    const bad = { ...text("u9", "user", "x"), metadata: { at: new Date() } } as UIMessage;
    await expect(saveChat(storage, { chatId, messages: [text("u1", "user", "ok"), bad] })).rejects.toBeInstanceOf(
      ValidationError,
    );
    expect(await loadChat(storage, chatId)).toEqual([]);
  });

  it("two tabs: the second save of a chat both loaded gets a ConflictError, never overwrites the first", async () => {
    const chatId = `tabs-${randomUUID()}`;
    await saveChat(storage, { chatId, messages: CHAT });
    const tabA = await loadChat(storage, chatId);
    const tabB = await loadChat(storage, chatId);
    const fromA = [...tabA, text("ua", "user", "from A"), text("aa", "assistant", "to A")];
    const fromB = [...tabB, text("ub", "user", "from B"), text("ab", "assistant", "to B")];
    await saveChat(storage, { chatId, messages: fromA });
    await expect(saveChat(storage, { chatId, messages: fromB })).rejects.toBeInstanceOf(ConflictError);
    expect(await loadChat(storage, chatId)).toEqual(fromA);
    // At the same moment: exactly one save wins, the other is a ConflictError; the winner is stored whole.
    const base = await loadChat(storage, chatId);
    const saves = ["x", "y", "z"].map((tab) =>
      saveChat(storage, { chatId, messages: [...base, text(`u${tab}`, "user", tab)] }),
    );
    const outcomes = await Promise.allSettled(saves);
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
    for (const o of outcomes) if (o.status === "rejected") expect(o.reason).toBeInstanceOf(ConflictError);
    const stored = await loadChat(storage, chatId);
    expect(stored).toHaveLength(base.length + 1);
    expect(stored.slice(0, -1)).toEqual(base);
  });

  it("a first save racing another: both see the created chat, one wins", async () => {
    const chatId = `first-${randomUUID()}`;
    const outcomes = await Promise.allSettled([
      saveChat(storage, { chatId, messages: [text("p", "user", "p")] }),
      saveChat(storage, { chatId, messages: [text("q", "user", "q")] }),
    ]);
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(1);
    expect(await loadChat(storage, chatId)).toHaveLength(1);
  });

  it("runs streamText with the AI SDK's mock model for two turns, persisting in onFinish; turn 2 on a new backend instance sees turn 1", async () => {
    const model = mockModel((n) => `Answer ${n}.`);
    const chatId = await createChat(storage);
    const turn = async (backend: StorageBackend, question: string, id: string) => {
      const messages = [...(await loadChat(backend, chatId)), text(id, "user", question)];
      const result = streamText({ model, messages: await convertToModelMessages(messages) });
      let saved: Promise<unknown> = Promise.resolve();
      const response = result.toUIMessageStreamResponse({
        originalMessages: messages,
        generateMessageId: () => `m-${randomUUID()}`,
        onFinish: ({ messages: all }) => {
          saved = saveChat(backend, { chatId, messages: all });
        },
      });
      await response.text();
      await saved;
    };
    await turn(storage, "Hello?", "q1");
    const second = kind.open();
    try {
      await turn(second, "And again?", "q2");
      const chat = await loadChat(second, chatId);
      expect(chat.map((m) => [m.role, m.parts.filter((p) => p.type === "text").map((p) => p.text)])).toEqual([
        ["user", ["Hello?"]],
        ["assistant", ["Answer 1."]],
        ["user", ["And again?"]],
        ["assistant", ["Answer 2."]],
      ]);
      // The model's second call had the first turn in its prompt.
      const prompt = JSON.stringify(model.doStreamCalls[1]?.prompt);
      expect(prompt).toContain("Hello?");
      expect(prompt).toContain("Answer 1.");
    } finally {
      if (kind.shared) await second.close();
    }
  });
});
