/**
 * `agentix/langchain`: a LangChain chat message history on any agentix backend.
 * @module agentix/langchain
 */
import { BaseListChatMessageHistory } from "@langchain/core/chat_history";
import { load } from "@langchain/core/load";
import {
  AIMessage,
  type BaseMessage,
  ChatMessage,
  HumanMessage,
  mapChatMessagesToStoredMessages,
  mapStoredMessagesToChatMessages,
  type StoredMessage,
  SystemMessage,
} from "@langchain/core/messages";
import { z } from "zod";
import type { StorageBackend } from "../core/backend.js";
import { AgentixStorageError, SessionNotFoundError, ValidationError } from "../core/errors.js";
import type { JsonObject, JsonValue, MessageContent, MessageRecord, NewMessage, Role } from "../core/types.js";
import { parseOptions } from "../core/validation.js";
import { agentIdOption, appendCreating, asJson, nameScope, sessionIdOfName, storageOption } from "./shared.js";

/** Options of {@link AgentixChatMessageHistory}. */
export interface AgentixChatMessageHistoryOptions {
  /** The agentix backend the history lives in: any of the five, or your own. */
  storage: StorageBackend;
  /**
   * LangChain's session id (what `RunnableWithMessageHistory` passes as `configurable.sessionId`): any string.
   * The agentix session is {@link AgentixChatMessageHistory.agentixSessionId}, derived from it and `agentId`.
   */
  sessionId: string;
  /**
   * The agentix agent the sessions belong to, and their scope, as the file history's `userId` is: the same
   * `sessionId` under two agents is two sessions; {@link AgentixChatMessageHistory.getAllSessions} and
   * {@link AgentixChatMessageHistory.clearAllSessions} see this agent's sessions only.
   * @default "langchain"
   */
  agentId?: string;
}

/** A session as {@link AgentixChatMessageHistory.getAllSessions} lists it (the file history's `FileChatSession`). */
export interface AgentixChatSession {
  /** LangChain's session id. */
  id: string;
  /** What {@link AgentixChatMessageHistory.setContext} stored (`{}` when nothing was). */
  context: JsonObject;
}

const OPTIONS = z.strictObject({
  storage: storageOption,
  sessionId: z.string().refine((s) => s.isWellFormed(), "must be well-formed Unicode"),
  agentId: agentIdOption.optional(),
});

/** The metadata key that holds LangChain's session id, beside `context`. */
const SESSION_KEY = "langchain_session_id";

/**
 * The classes a stored message may name: LangChain's own message classes. Anything else found in the store is
 * refused rather than instantiated (`load` can build any `langchain_core` class from its JSON).
 */
const MESSAGE_CLASSES = new Set(
  ["AI", "Human", "System", "Tool", "Chat", "Function", "Remove"].flatMap((kind) => [
    `${kind}Message`,
    `${kind}MessageChunk`,
  ]),
);

/**
 * A LangChain `BaseListChatMessageHistory` stored in an agentix session: `RunnableWithMessageHistory`,
 * LangGraph's message helpers and anything else that takes a chat history work on every agentix backend.
 *
 * Each message is one agentix message whose content is LangChain's own serialization of it (`toJSON()`, read
 * back with `load()` from `@langchain/core/load`), so every message comes back as the class it was stored as —
 * `ToolMessage` with its `tool_call_id` and `artifact`, `AIMessage` with its `tool_calls` and `usage_metadata`,
 * `AIMessageChunk` and the other chunks — with the same fields. Its role is `user` (human), `assistant` (ai),
 * `system` or `tool` (tool, function), so that agentix's own tools read the history too.
 *
 * The session is created on the first write (`addMessages` or `setContext`), not by reading.
 */
export class AgentixChatMessageHistory extends BaseListChatMessageHistory {
  /** LangChain's serialization namespace of this class. */
  lc_namespace = ["agentix", "langchain"];
  /** LangChain's session id, as given. */
  readonly sessionId: string;
  /** The agentix agent the session belongs to. */
  readonly agentId: string;
  /**
   * The agentix session id the history is stored under:
   * `sessionIdFor(sessionId, sessionIdFor(JSON.stringify(["agentix/langchain", agentId])))`, the same in every
   * process. Read or fork the history with agentix's own methods through it.
   */
  readonly agentixSessionId: string;
  readonly #storage: StorageBackend;

  /** @throws {ValidationError} on a missing or mistyped option (`storage` must be an agentix backend). */
  constructor(options: AgentixChatMessageHistoryOptions) {
    super();
    const o = parseOptions(OPTIONS, options, "AgentixChatMessageHistory");
    this.#storage = o.storage;
    this.sessionId = o.sessionId;
    this.agentId = o.agentId ?? "langchain";
    this.agentixSessionId = idOf(this.agentId, this.sessionId);
  }

  /** The messages, oldest first: one read (`[]` when the session does not exist). */
  async getMessages(): Promise<BaseMessage[]> {
    let records: MessageRecord[];
    try {
      records = await this.#storage.loadMessages(this.agentixSessionId);
    } catch (error) {
      if (error instanceof SessionNotFoundError) return [];
      throw error;
    }
    return Promise.all(records.map((record, i) => toMessage(record, i, this.agentixSessionId)));
  }

  /** Appends one message: a batch of one. */
  async addMessage(message: BaseMessage): Promise<void> {
    await this.addMessages([message]);
  }

  /**
   * Appends the messages as one atomic batch (all or none, one round trip once the session exists): what
   * `RunnableWithMessageHistory` calls with a turn's input and output messages.
   * @throws {ValidationError} naming the first message JSON cannot carry (a `BigInt`, a cycle); nothing written.
   */
  override async addMessages(messages: BaseMessage[]): Promise<void> {
    if (messages.length === 0) return;
    const batch = messages.map((message, i) => {
      try {
        return toNewMessage(message);
      } catch (error) {
        // JSON.stringify's own refusals (a BigInt, a cycle) are bad input like any other: nothing is written.
        if (error instanceof TypeError) throw new ValidationError(`messages[${i}]`, error.message, { cause: error });
        throw error;
      }
    });
    const session = { agentId: this.agentId, sessionId: this.agentixSessionId, metadata: this.#metadata({}) };
    await appendCreating(this.#storage, session, batch);
  }

  /**
   * Removes every message, in one atomic step: an append racing it is kept whole or dropped whole. The session
   * and its context stay (unlike the file history's `clear`); {@link AgentixChatMessageHistory.clearAllSessions}
   * deletes sessions.
   */
  override async clear(): Promise<void> {
    try {
      await this.#storage.replaceMessages(this.agentixSessionId, 0, []);
    } catch (error) {
      if (!(error instanceof SessionNotFoundError)) throw error;
    }
  }

  /** The session's context (what {@link AgentixChatMessageHistory.setContext} stored), `{}` if none. */
  async getContext(): Promise<JsonObject> {
    const session = await this.#storage.getSession(this.agentixSessionId);
    return contextOf(session?.metadata ?? null);
  }

  /**
   * Replaces the session's context (any JSON object: a title, tags, a user id), keeping its messages; creates the
   * session, without messages, when it does not exist. One round trip to create, two on an existing session.
   * @throws {ValidationError} when `context` is not JSON (nothing written).
   */
  async setContext(context: JsonObject): Promise<void> {
    const metadata = this.#metadata(context);
    const { created } = await this.#storage.openSession(this.agentId, this.agentixSessionId, metadata);
    if (!created) await this.#storage.updateSession(this.agentixSessionId, { metadata });
  }

  /**
   * This agent's LangChain sessions with their context, most recently updated first (one listing). Sessions the
   * agent has that were not written through this class are left out.
   */
  async getAllSessions(): Promise<AgentixChatSession[]> {
    const sessions = await this.#storage.listSessions(this.agentId);
    const found: AgentixChatSession[] = [];
    for (const session of sessions) {
      const id = session.metadata?.[SESSION_KEY];
      // Only a session whose id is the one its name maps to: metadata is data, not a claim to another session.
      if (typeof id !== "string" || idOf(this.agentId, id) !== session.session_id) continue;
      found.push({ id, context: contextOf(session.metadata) });
    }
    return found;
  }

  /**
   * Deletes every LangChain session of this agent, messages and context, one session at a time (each deletion
   * is atomic; the whole is not: a session created meanwhile may remain).
   */
  async clearAllSessions(): Promise<void> {
    for (const { id } of await this.getAllSessions()) await this.#storage.deleteSession(idOf(this.agentId, id));
  }

  #metadata(context: JsonObject): JsonObject {
    return { [SESSION_KEY]: this.sessionId, context };
  }
}

function idOf(agentId: string, sessionId: string): string {
  return sessionIdOfName(sessionId, nameScope("agentix/langchain", agentId));
}

function contextOf(metadata: JsonObject | null): JsonObject {
  const context = metadata?.context;
  return typeof context === "object" && context !== null && !Array.isArray(context) ? context : {};
}

const ROLES: Record<string, Role> = {
  human: "user",
  ai: "assistant",
  system: "system",
  tool: "tool",
  function: "tool",
};

/** A LangChain message as an agentix message: its role, and LangChain's serialization of it as content. */
function toNewMessage(message: BaseMessage): NewMessage {
  const serialized = asJson<JsonObject>(message.toJSON());
  // LangChain's own classes serialize as a constructor call; a class of another package is kept as LangChain's
  // StoredMessage instead (its type and fields), since load() would not know the class.
  const content = isCoreMessage(serialized)
    ? serialized
    : asJson<JsonObject>(mapChatMessagesToStoredMessages([message])[0]);
  const unserializable = findUnserializable(content);
  if (unserializable !== null) {
    throw new TypeError(`LangChain cannot serialize ${unserializable} (a cycle, or an object it has no JSON for)`);
  }
  return { role: roleOf(message), content };
}

/**
 * Where LangChain's serializer left a `not_implemented` marker (what it writes for a cycle or an object it cannot
 * serialize, and what `load()` refuses to read): a message stored so could never be read back. `null` if none.
 * User data that looks like a marker is escaped by the serializer (`__lc_escaped__`), so a marker is always its own.
 */
function findUnserializable(value: JsonValue, path = "the message"): string | null {
  if (typeof value !== "object" || value === null) return null;
  if (!Array.isArray(value) && value.lc === 1 && value.type === "not_implemented") return path;
  for (const [key, child] of Object.entries(value)) {
    if (!Array.isArray(value) && key === "__lc_escaped__") continue;
    const found = findUnserializable(child, Array.isArray(value) ? `${path}[${key}]` : `${path}.${key}`);
    if (found !== null) return found;
  }
  return null;
}

function roleOf(message: BaseMessage): Role {
  if (ChatMessage.isInstance(message)) {
    const role = message.role.toLowerCase();
    return ROLES[role] ?? (["user", "assistant", "system", "tool"].includes(role) ? (role as Role) : "user");
  }
  return ROLES[message.type] ?? "system";
}

function isCoreMessage(json: JsonValue | undefined): json is JsonObject {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return false;
  const id = json.id;
  return (
    json.lc === 1 &&
    json.type === "constructor" &&
    Array.isArray(id) &&
    id.length === 3 &&
    id[0] === "langchain_core" &&
    id[1] === "messages" &&
    typeof id[2] === "string" &&
    MESSAGE_CLASSES.has(id[2])
  );
}

/** A stored message back as the LangChain message it was. */
async function toMessage(record: MessageRecord, position: number, sessionId: string): Promise<BaseMessage> {
  const content = record.content;
  if (isCoreMessage(content)) {
    try {
      return await load<BaseMessage>(JSON.stringify(content));
    } catch (error) {
      throw new AgentixStorageError(`session ${sessionId}: message ${position} could not be loaded by LangChain`, {
        cause: error,
      });
    }
  }
  if (isStoredMessage(content)) return mapStoredMessagesToChatMessages([content])[0] as BaseMessage;
  // Written by something else (agentix's own API, the CLI's import): plain text or content blocks, by role.
  const text = plainContent(content);
  if (text !== null) {
    if (record.role === "user") return new HumanMessage({ content: text });
    if (record.role === "assistant") return new AIMessage({ content: text });
    if (record.role === "system") return new SystemMessage({ content: text });
    return new ChatMessage({ content: text, role: record.role });
  }
  throw new AgentixStorageError(
    `session ${sessionId}: message ${position} is not a LangChain message (a ${record.role} message whose content is an object)`,
  );
}

function isStoredMessage(content: MessageContent): content is JsonObject & StoredMessage {
  if (typeof content !== "object" || content === null || Array.isArray(content)) return false;
  const data = content.data;
  return typeof content.type === "string" && typeof data === "object" && data !== null && !Array.isArray(data);
}

/** Text, or content blocks (each an object with a string `type`), as LangChain's message content; else `null`. */
function plainContent(content: MessageContent): BaseMessage["content"] | null {
  if (typeof content === "string") return content;
  const isBlock = (b: JsonValue) =>
    typeof b === "object" && b !== null && !Array.isArray(b) && typeof b.type === "string";
  return Array.isArray(content) && content.every(isBlock) ? (content as BaseMessage["content"]) : null;
}
