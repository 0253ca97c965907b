// agentix/langchain on the five backends: every method of AgentixChatMessageHistory, checked against LangChain's own
// InMemoryChatMessageHistory and against what is stored; a real RunnableWithMessageHistory chain with LangChain's
// fake chat models (@langchain/core/utils/testing) resuming on a new backend instance; clear racing appends; and the
// round trips of addMessages and getMessages on Postgres and Redis.
import { InMemoryChatMessageHistory } from "@langchain/core/chat_history";
import {
  AIMessage,
  AIMessageChunk,
  type AIMessageFields,
  type BaseMessage,
  ChatMessage,
  FunctionMessage,
  HumanMessage,
  HumanMessageChunk,
  SystemMessage,
  ToolMessage,
  ToolMessageChunk,
} from "@langchain/core/messages";
import { ChatPromptTemplate, MessagesPlaceholder } from "@langchain/core/prompts";
import { RunnableWithMessageHistory } from "@langchain/core/runnables";
import { FakeChatModel, FakeListChatModel } from "@langchain/core/utils/testing";
import { Redis } from "ioredis";
import postgres from "postgres";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import { AgentixChatMessageHistory } from "../src/adapters/langchain.js";
import type { StorageBackend } from "../src/core/backend.js";
import { AgentixStorageError, ValidationError } from "../src/core/errors.js";
import { sessionIdFor } from "../src/core/validation.js";
import { MemoryStorageBackend } from "../src/memory.js";
import { PostgresStorageBackend } from "../src/postgres.js";
import { RedisStorageBackend } from "../src/redis.js";
import { adapterBackends, dropPrefix, pastMillisecond } from "./support/backends.js";

const { backends, closeOpened, cleanUp } = await adapterBackends("langchain");
afterEach(closeOpened);
afterAll(cleanUp);

let sessions = 0;
/** A session name of its own for each test (the stores are shared by the tests of a file). */
const freshName = () => `chat-${++sessions}-${Math.random().toString(36).slice(2)}`;

/** One message of each class LangChain has, with the fields that make each one what it is. */
function everyKind(): BaseMessage[] {
  return [
    new SystemMessage("You are terse."),
    new HumanMessage({ content: "Weather in Lisbon?", id: "h1", name: "ana", additional_kwargs: { lc: 1, x: [1] } }),
    new AIMessage({
      content: [{ type: "text", text: "Let me look." }],
      id: "a1",
      tool_calls: [{ id: "call-1", name: "weather", args: { city: "Lisbon" }, type: "tool_call" }],
      usage_metadata: { input_tokens: 12, output_tokens: 7, total_tokens: 19 },
      response_metadata: { model_name: "fake", finish_reason: "tool_calls" },
    } as unknown as AIMessageFields), // usage_metadata: the 1.x field types infer `never` here
    new ToolMessage({
      content: "18°C",
      tool_call_id: "call-1",
      name: "weather",
      artifact: { raw: [18] },
      status: "success",
    }),
    new AIMessageChunk({
      content: "It is 18",
      id: "a2",
      tool_call_chunks: [{ id: "call-2", name: "forecast", args: '{"days":', index: 0, type: "tool_call_chunk" }],
    }),
    new HumanMessageChunk({ content: "and tomorrow?" }),
    new ToolMessageChunk({ content: "20°C", tool_call_id: "call-2" }),
    new FunctionMessage({ content: "{}", name: "legacy_fn" }),
    new ChatMessage({ content: "Looks right.", role: "critic" }),
    new HumanMessage({ content: "" }),
  ];
}

/** What LangChain's serialization makes of the messages: equal exactly when class and fields are. */
const serialized = (messages: BaseMessage[]) => messages.map((m) => ({ class: m.constructor.name, json: m.toJSON() }));

describe.each(backends)("AgentixChatMessageHistory on $name", (backend) => {
  describe.skipIf(!backend.available)("", () => {
    const history = (sessionId: string, storage: StorageBackend = backend.open(), agentId?: string) =>
      new AgentixChatMessageHistory({ storage, sessionId, ...(agentId === undefined ? {} : { agentId }) });

    it("reads an unknown session as empty, creating nothing", async () => {
      const storage = backend.open();
      const h = history(freshName(), storage);
      expect(await h.getMessages()).toEqual([]);
      expect(await h.getContext()).toEqual({});
      expect(await storage.getSession(h.agentixSessionId)).toBeNull();
      await h.clear();
      expect(await storage.getSession(h.agentixSessionId)).toBeNull();
    });

    it("gives back every kind of message as the class and fields it was stored with, as LangChain's in-memory history does", async () => {
      const name = freshName();
      const reference = new InMemoryChatMessageHistory();
      const h = history(name);
      const messages = everyKind();
      await reference.addMessages(messages);
      await h.addMessages(messages);
      const resumed = history(name); // another instance (on the same store): what a second process reads
      const back = await resumed.getMessages();
      expect(serialized(back)).toEqual(serialized(await reference.getMessages()));
      expect(back[4]).toBeInstanceOf(AIMessageChunk);
      expect((back[3] as ToolMessage).artifact).toEqual({ raw: [18] });
      expect((back[2] as AIMessage).tool_calls).toEqual([
        { id: "call-1", name: "weather", args: { city: "Lisbon" }, type: "tool_call" },
      ]);
    });

    it("stores a batch as one agentix batch: one message each, one timestamp, roles agentix knows", async () => {
      const storage = backend.open();
      const h = history(freshName(), storage);
      await h.addMessages(everyKind());
      const stored = await storage.loadMessages(h.agentixSessionId);
      expect(stored.map((m) => m.role)).toEqual([
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "tool",
        "tool",
        "user",
        "user",
      ]);
      expect(new Set(stored.map((m) => m.timestamp)).size).toBe(1);
      expect(stored[1]?.content).toMatchObject({
        lc: 1,
        type: "constructor",
        id: ["langchain_core", "messages", "HumanMessage"],
      });
      const session = await storage.getSession(h.agentixSessionId);
      expect(session).toMatchObject({
        agent_id: "langchain",
        metadata: { langchain_session_id: h.sessionId, context: {} },
      });
      expect(h.agentixSessionId).toBe(
        sessionIdFor(h.sessionId, sessionIdFor(JSON.stringify(["agentix/langchain", "langchain"]))),
      );
    });

    it("appends with addMessage, addUserMessage and addAIMessage, in order, after earlier batches", async () => {
      const name = freshName();
      const h = history(name);
      await h.addMessages([new HumanMessage("one"), new AIMessage("two")]);
      await h.addMessage(new HumanMessage("three"));
      await h.addUserMessage("four");
      await h.addAIMessage("five");
      await h.addMessages([]);
      const back = await history(name).getMessages();
      expect(back.map((m) => [m.constructor.name, m.content])).toEqual([
        ["HumanMessage", "one"],
        ["AIMessage", "two"],
        ["HumanMessage", "three"],
        ["HumanMessage", "four"],
        ["AIMessage", "five"],
      ]);
    });

    it("refuses a batch with a message JSON cannot carry, writing none of it", async () => {
      const storage = backend.open();
      const h = history(freshName(), storage);
      await h.addMessages([new HumanMessage("kept")]);
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const bad = [new HumanMessage("lost"), new AIMessage({ content: "x", additional_kwargs: { n: 10n } as never })];
      const error = await h.addMessages(bad).catch((e: unknown) => e);
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).field).toBe("messages[1]");
      await expect(
        h.addMessages([new AIMessage({ content: "y", additional_kwargs: cyclic as never })]),
      ).rejects.toThrow(ValidationError);
      let deep: unknown = "bottom";
      for (let i = 0; i < 600; i++) deep = [deep];
      await expect(
        h.addMessages([
          new HumanMessage("z"),
          new HumanMessage({ content: "w", additional_kwargs: { deep } as never }),
        ]),
      ).rejects.toThrow(ValidationError);
      expect((await h.getMessages()).map((m) => m.content)).toEqual(["kept"]);
      expect(await storage.countMessages(h.agentixSessionId)).toBe(1);
    });

    it("clears the messages and keeps the session and its context; a new batch starts a new history", async () => {
      const storage = backend.open();
      const name = freshName();
      const h = history(name, storage);
      await h.setContext({ title: "Lisbon" });
      await h.addMessages([new HumanMessage("a"), new AIMessage("b")]);
      await h.clear();
      expect(await history(name).getMessages()).toEqual([]);
      expect(await history(name).getContext()).toEqual({ title: "Lisbon" });
      await h.addMessages([new HumanMessage("c")]);
      expect((await history(name).getMessages()).map((m) => m.content)).toEqual(["c"]);
    });

    it("sets the context of a new session (creating it, without messages) and of an existing one (keeping them)", async () => {
      const storage = backend.open();
      const name = freshName();
      const h = history(name, storage);
      await h.setContext({ title: "first", tags: ["a"] });
      expect(await storage.countMessages(h.agentixSessionId)).toBe(0);
      expect(await history(name).getContext()).toEqual({ title: "first", tags: ["a"] });
      await h.addMessages([new HumanMessage("hello")]);
      await h.setContext({ title: "second" });
      const again = history(name);
      expect(await again.getContext()).toEqual({ title: "second" });
      expect((await again.getMessages()).map((m) => m.content)).toEqual(["hello"]);
      expect((await storage.getSession(h.agentixSessionId))?.metadata).toEqual({
        langchain_session_id: name,
        context: { title: "second" },
      });
      await expect(h.setContext({ bad: Number.NaN })).rejects.toThrow(ValidationError);
      expect(await again.getContext()).toEqual({ title: "second" });
    });

    it("lists this agent's sessions with their context, newest first, leaving out other agents' and foreign sessions", async () => {
      const storage = backend.open();
      const agent = `lc-agent-${freshName()}`;
      const one = history("one", storage, agent);
      const two = history("two", storage, agent);
      await one.setContext({ title: "Best vocalist" });
      await one.addMessages([new HumanMessage("Who is the best vocalist?")]);
      // "Newest first" by updated_at: two writes in one millisecond would tie, and ties go by session id.
      await pastMillisecond((await storage.getSession(one.agentixSessionId))?.updated_at ?? "");
      await two.addMessages([new HumanMessage("Who is the best guitarist?")]);
      await history("one", storage, `${agent}-other`).addMessages([new HumanMessage("elsewhere")]);
      // Sessions of the agent written otherwise: one without the LangChain key, one claiming a name it is not.
      await storage.createSession(agent, { langchain_session_id: "nobody" });
      await storage.createSession(agent, null);
      const all = await history("any", storage, agent).getAllSessions();
      expect(all).toEqual([
        { id: "two", context: {} },
        { id: "one", context: { title: "Best vocalist" } },
      ]);
      // The same name under another agent is another session.
      expect(history("one", storage, agent).agentixSessionId).not.toBe(
        history("one", storage, `${agent}-other`).agentixSessionId,
      );
    });

    it("clears all of this agent's sessions, and only those", async () => {
      const storage = backend.open();
      const agent = `lc-agent-${freshName()}`;
      for (const name of ["a", "b", "c"]) await history(name, storage, agent).addMessages([new HumanMessage(name)]);
      const other = history("a", storage, `${agent}-other`);
      await other.addMessages([new HumanMessage("stays")]);
      await history("x", storage, agent).clearAllSessions();
      expect(await history("x", storage, agent).getAllSessions()).toEqual([]);
      for (const name of ["a", "b", "c"]) {
        const h = history(name, storage, agent);
        expect(await h.getMessages()).toEqual([]);
        expect(await storage.getSession(h.agentixSessionId)).toBeNull();
      }
      expect((await other.getMessages()).map((m) => m.content)).toEqual(["stays"]);
    });

    it("reads messages written through agentix's own API by role, and refuses what is no message", async () => {
      const storage = backend.open();
      const h = history(freshName(), storage);
      await h.addMessages([new HumanMessage("via LangChain")]);
      await storage.saveMessages(h.agentixSessionId, [
        { role: "user", content: "plain" },
        { role: "assistant", content: [{ type: "text", text: "blocks" }] },
        { role: "system", content: "rules" },
        { role: "tool", content: "out" },
      ]);
      const back = await history(h.sessionId).getMessages();
      expect(back.map((m) => [m.constructor.name, m.content])).toEqual([
        ["HumanMessage", "via LangChain"],
        ["HumanMessage", "plain"],
        ["AIMessage", [{ type: "text", text: "blocks" }]],
        ["SystemMessage", "rules"],
        ["ChatMessage", "out"],
      ]);
      await storage.saveMessage(h.agentixSessionId, "user", { not: "a message" });
      const error = await h.getMessages().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(AgentixStorageError);
      expect(String(error)).toMatch(/message 5 is not a LangChain message/);
      // A serialized LangChain class other than a message is refused, never instantiated.
      const other = history(freshName(), storage);
      await other.addMessages([new HumanMessage("x")]);
      await storage.saveMessage(other.agentixSessionId, "user", {
        lc: 1,
        type: "constructor",
        id: ["langchain_core", "prompts", "PromptTemplate"],
        kwargs: { template: "{x}", inputVariables: ["x"] },
      });
      await expect(other.getMessages()).rejects.toThrow(/message 1 is not a LangChain message/);
      // A message LangChain cannot build again (a secret it is not given): an agentix error naming it.
      const broken = history(freshName(), storage);
      await broken.addMessages([new HumanMessage("x")]);
      await storage.saveMessage(broken.agentixSessionId, "user", {
        lc: 1,
        type: "constructor",
        id: ["langchain_core", "messages", "HumanMessage"],
        kwargs: { content: { lc: 1, type: "secret", id: ["AGENTIX_TEST_NO_SUCH_SECRET"] } },
      });
      const loadError = await broken.getMessages().catch((e: unknown) => e);
      expect(loadError).toBeInstanceOf(AgentixStorageError);
      expect(String(loadError)).toMatch(/message 1 could not be loaded by LangChain/);
    });

    it("runs a RunnableWithMessageHistory chain for two turns, the second on a new backend instance", async () => {
      const prompt = ChatPromptTemplate.fromMessages([
        ["system", "You are a weather bot."],
        new MessagesPlaceholder("history"),
        ["human", "{question}"],
      ]);
      const chain = (model: FakeChatModel | FakeListChatModel, storage: StorageBackend) =>
        new RunnableWithMessageHistory({
          runnable: prompt.pipe(model),
          getMessageHistory: (sessionId: string) => new AgentixChatMessageHistory({ storage, sessionId }),
          inputMessagesKey: "question",
          historyMessagesKey: "history",
        });
      const sessionId = freshName();
      const config = { configurable: { sessionId } };
      // Turn 1, streamed: the history stores the reply as the AIMessageChunk the stream made of it.
      const first = backend.open();
      const turn1 = chain(new FakeListChatModel({ responses: ["Sunny, 18°C."] }), first);
      let streamed = "";
      for await (const chunk of await turn1.stream({ question: "Weather in Lisbon?" }, config)) {
        streamed += chunk.content as string;
      }
      expect(streamed).toBe("Sunny, 18°C.");
      if (backend.shared) await first.close();
      // Turn 2 on a new instance (Memory: the same one): FakeChatModel answers with every message it was sent.
      const second = backend.open();
      const turn2 = chain(new FakeChatModel({}), second);
      const reply = await turn2.invoke({ question: "And tomorrow?" }, config);
      expect(reply.content).toBe("You are a weather bot.\nWeather in Lisbon?\nSunny, 18°C.\nAnd tomorrow?");
      const stored = await new AgentixChatMessageHistory({ storage: second, sessionId }).getMessages();
      expect(stored.map((m) => [m.constructor.name, m.content])).toEqual([
        ["HumanMessage", "Weather in Lisbon?"],
        ["AIMessageChunk", "Sunny, 18°C."],
        ["HumanMessage", "And tomorrow?"],
        ["AIMessage", reply.content],
      ]);
      // Each turn was one batch (input and output together): two timestamps.
      const records = await second.loadMessages(
        new AgentixChatMessageHistory({ storage: second, sessionId }).agentixSessionId,
      );
      expect(records.map((r) => r.timestamp)).toEqual([
        records[0]?.timestamp,
        records[0]?.timestamp,
        records[2]?.timestamp,
        records[2]?.timestamp,
      ]);
    });

    it("loses no acknowledged batch to a clear racing the appends: what remains is whole batches, the ones after it", async () => {
      const storage = backend.open();
      const h = history(freshName(), storage);
      const racer = history(h.sessionId, backend.open());
      const BATCHES = 30;
      let clearDone = false;
      let firstAfter = -1; // the first batch appended after the clear returned
      let clearing: Promise<void> | undefined;
      for (let i = 0; i < BATCHES; i++) {
        // Sequential batches of three; once ten are acknowledged, a clear (on another instance) runs meanwhile.
        if (i === 10)
          clearing = racer.clear().then(() => {
            clearDone = true;
          });
        if (clearDone && firstAfter === -1) firstAfter = i;
        await h.addMessages([0, 1, 2].map((j) => new HumanMessage(`${i}.${j}`)));
      }
      await clearing;
      const contents = (await history(h.sessionId).getMessages()).map((m) => m.content as string);
      expect(contents.length % 3).toBe(0);
      const first = contents.length === 0 ? BATCHES : Number(contents[0]?.split(".")[0]);
      // A suffix of the batches, each whole, in order: every batch appended after the clear returned is there.
      expect(contents).toEqual(
        Array.from({ length: BATCHES - first }, (_, k) => [0, 1, 2].map((j) => `${first + k}.${j}`)).flat(),
      );
      expect(first).toBeGreaterThanOrEqual(10);
      if (firstAfter !== -1) expect(first).toBeLessThanOrEqual(firstAfter);
    });
  });
});

describe("AgentixChatMessageHistory options", () => {
  it("rejects a missing storage, a non-string session id and unknown options", () => {
    const storage = new MemoryStorageBackend();
    const rejected = (options: unknown) => () => new AgentixChatMessageHistory(options as never);
    expect(rejected({ sessionId: "s" })).toThrow(ValidationError);
    expect(rejected({ storage: {}, sessionId: "s" })).toThrow(/must be an agentix StorageBackend/);
    expect(rejected({ storage, sessionId: 42 })).toThrow(ValidationError);
    expect(rejected({ storage, sessionId: "\ud800" })).toThrow(ValidationError);
    expect(rejected({ storage, sessionId: "s", agentId: "" })).toThrow(ValidationError);
    expect(rejected({ storage, sessionId: "s", userId: "u" })).toThrow(ValidationError);
    expect(new AgentixChatMessageHistory({ storage, sessionId: "" }).agentId).toBe("langchain");
  });
});

// Round trips: counted on a client passed in (postgres.js's debug hook; ioredis's sendCommand), once the session
// exists. addMessages of 10 is one statement / one script; getMessages one read.
const pgUrl = inject("postgresUrl");
const redisUrl = inject("redisUrl");

describe.skipIf(!pgUrl)("AgentixChatMessageHistory round trips on Postgres", () => {
  it("addMessages of 10: one statement; getMessages: one", async () => {
    const sent: string[] = [];
    const client = postgres(pgUrl as string, { onnotice: () => {}, debug: (_c, query) => sent.push(query) });
    const schema = `agentix_test_lcrt_${Math.random().toString(36).slice(2, 8)}`;
    const storage = new PostgresStorageBackend({ client, schema });
    try {
      const h = new AgentixChatMessageHistory({ storage, sessionId: "round-trips" });
      await h.addMessages([new HumanMessage("warm-up")]); // migrations, the session, prepared statements
      const ten = Array.from({ length: 10 }, (_, i) => new HumanMessage(`m${i}`));
      sent.length = 0;
      await h.addMessages(ten);
      expect(sent).toHaveLength(1);
      sent.length = 0;
      expect(await h.getMessages()).toHaveLength(11);
      expect(sent).toHaveLength(1);
      // The first write of a session: the append finds none, the session is opened, the append is sent again.
      sent.length = 0;
      await new AgentixChatMessageHistory({ storage, sessionId: "new" }).addMessages(ten);
      expect(sent).toHaveLength(3);
    } finally {
      await storage.close();
      await client.unsafe(`drop schema if exists "${schema}" cascade`);
      await client.end();
    }
  });
});

describe.skipIf(!redisUrl)("AgentixChatMessageHistory round trips on Redis", () => {
  it("addMessages of 10: one script call; getMessages: one read", async () => {
    const client = new Redis(redisUrl as string);
    const sent: string[] = [];
    const send = client.sendCommand.bind(client);
    client.sendCommand = ((command: Parameters<typeof send>[0]) => {
      sent.push(command.name);
      return send(command);
    }) as typeof client.sendCommand;
    const prefix = `agentix-test-lcrt-${Math.random().toString(36).slice(2, 8)}`;
    const storage = new RedisStorageBackend({ client, prefix });
    try {
      const h = new AgentixChatMessageHistory({ storage, sessionId: "round-trips" });
      await h.addMessages([new HumanMessage("warm-up")]); // loads the scripts
      const ten = Array.from({ length: 10 }, (_, i) => new HumanMessage(`m${i}`));
      sent.length = 0;
      await h.addMessages(ten);
      expect(sent).toEqual(["evalsha"]);
      sent.length = 0;
      expect(await h.getMessages()).toHaveLength(11);
      expect(sent).toHaveLength(1);
    } finally {
      await storage.close();
      await client.quit();
      await dropPrefix(redisUrl as string, prefix);
    }
  });
});
