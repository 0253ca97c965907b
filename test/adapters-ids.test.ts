// The agentix session ids the framework adapters store under, pinned as literals: the ids of the first release of
// the adapters. A change to how a framework's name becomes a session id would orphan every session stored before
// it, so each id here is written through the adapter and must be found under the literal id, and a session stored
// under the literal id (as by the previous release) must be read back through the adapter.
import type { SessionKey } from "@anthropic-ai/claude-agent-sdk";
import { HumanMessage } from "@langchain/core/messages";
import { describe, expect, it } from "vitest";
import { loadChat, saveChat } from "../src/adapters/ai-sdk.js";
import { AgentixSessionStore } from "../src/adapters/claude-agent-sdk.js";
import { AgentixChatMessageHistory } from "../src/adapters/langchain.js";
import { AgentixSession } from "../src/adapters/openai-agents.js";
import { MemoryStorageBackend } from "../src/memory.js";

const UUID = "0b6a1e9c-3c3f-4d55-9a51-1f2f1a0c7e10";

describe("the session ids the adapters store under (as the previous release did)", () => {
  it("agentix/openai-agents: a lowercase UUID as it is, any other name by sessionIdFor in agentix's namespace", async () => {
    const pinned: Array<[string, string]> = [
      ["user-42", "e5cb7315-3127-57e9-a518-8a40d0ca36e1"],
      [UUID, UUID],
      [UUID.toUpperCase(), "6803f5c6-a311-55ec-824b-288f5f5e21e8"],
    ];
    for (const [name, id] of pinned) {
      const storage = new MemoryStorageBackend();
      const session = new AgentixSession({ storage, sessionId: name });
      expect(session.storageSessionId).toBe(id);
      await session.addItems([{ role: "user", content: name }]);
      expect((await storage.loadMessages(id)).map((m) => m.content)).toEqual([{ role: "user", content: name }]);
      // Stored under the id by someone else (the previous release): found by the name.
      const other = new MemoryStorageBackend();
      await other.openSession("openai-agents", id, null);
      await other.saveMessages(id, [{ role: "user", content: { role: "user", content: "before" } }]);
      expect(await new AgentixSession({ storage: other, sessionId: name }).getItems()).toEqual([
        { role: "user", content: "before" },
      ]);
    }
  });

  it("agentix/ai-sdk: chat ids map as the openai-agents names do", async () => {
    const storage = new MemoryStorageBackend();
    const message = { id: "m1", role: "user" as const, parts: [{ type: "text" as const, text: "hi" }] };
    await saveChat(storage, { chatId: "chat-7", messages: [message] });
    expect((await storage.loadMessages("d3e2bd78-2430-5cd9-b543-539b8a704c43")).map((m) => m.content)).toEqual([
      message,
    ]);
    await saveChat(storage, { chatId: UUID, messages: [message] });
    expect(await storage.countMessages(UUID)).toBe(1);
    expect(await loadChat(storage, UUID)).toEqual([message]);
  });

  it("agentix/langchain: every session id (UUIDs too) by sessionIdFor in the namespace of the adapter and agent", async () => {
    const pinned: Array<[string, string | undefined, string]> = [
      ["user-42", undefined, "deae898d-067e-562f-a635-f8d8be0e230e"],
      ["user-42", "team-a", "af86f5ab-9c67-5cff-9200-f65bf3c299f0"],
      [UUID, undefined, "4f445871-a02f-5907-95dc-c004856824f4"],
    ];
    for (const [sessionId, agentId, id] of pinned) {
      const storage = new MemoryStorageBackend();
      const options = { storage, sessionId, ...(agentId === undefined ? {} : { agentId }) };
      const history = new AgentixChatMessageHistory(options);
      expect(history.agentixSessionId).toBe(id);
      await history.addMessage(new HumanMessage(sessionId));
      expect(await storage.countMessages(id)).toBe(1);
      expect((await new AgentixChatMessageHistory(options).getMessages()).map((m) => m.content)).toEqual([sessionId]);
    }
  });

  it("agentix/claude-agent-sdk: [projectKey, sessionId, subpath] by sessionIdFor in the namespace of the adapter and agent", async () => {
    const main: SessionKey = { projectKey: "-home-me-app", sessionId: UUID };
    const pinned: Array<[SessionKey, string | undefined, string]> = [
      [main, undefined, "b6d2ff61-921f-5e82-9762-743acf9ffdde"],
      [{ ...main, subpath: "subagents/agent-a1" }, undefined, "c551347e-032d-56ab-bb6d-3243721b5868"],
      [main, "team-a", "067e6971-fc8d-5aa3-bbf4-5f11ad0d91b4"],
    ];
    for (const [key, agentId, id] of pinned) {
      const storage = new MemoryStorageBackend();
      const store = new AgentixSessionStore({ storage, ...(agentId === undefined ? {} : { agentId }) });
      expect(store.sessionIdOf(key)).toBe(id);
      await store.append(key, [{ type: "user", uuid: "u1" }]);
      expect((await storage.loadMessages(id)).map((m) => m.content)).toEqual([{ type: "user", uuid: "u1" }]);
      const again = new AgentixSessionStore({ storage, ...(agentId === undefined ? {} : { agentId }) });
      expect(await again.load(key)).toEqual([{ type: "user", uuid: "u1" }]);
    }
  });
});
