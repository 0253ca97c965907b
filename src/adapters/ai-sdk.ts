/**
 * agentix as the chat store of the Vercel AI SDK (`ai`): {@link loadChat} and {@link saveChat} for its `UIMessage[]`
 * persistence pattern, on any agentix {@link StorageBackend}, with `saveChat` a compare-and-swap write so that two
 * tabs saving one chat never silently overwrite each other.
 * @module agentix/ai-sdk
 */
import type { UIMessage } from "ai";
import type { StorageBackend } from "../core/backend.js";
import { ConflictError, SessionNotFoundError } from "../core/errors.js";
import type { JsonObject, MessageRecord, NewMessage } from "../core/types.js";
import { canonicalJson, loadOrEmpty, sessionIdOfName } from "./shared.js";

/** The agent chats are created under when no `agentId` is given. */
const DEFAULT_AGENT = "ai-sdk";

/** Options of {@link createChat}. */
export interface CreateChatOptions {
  /**
   * The agent the chat is stored under (what `listSessions` lists it by).
   * @default "ai-sdk"
   */
  agentId?: string;
  /**
   * The chat's session metadata (`cwd` is indexed; a `title`, a user id).
   * @default null
   */
  metadata?: JsonObject | null;
}

/** What {@link saveChat} saves. */
export interface SaveChatOptions<MESSAGE extends UIMessage = UIMessage> {
  /**
   * The chat: an id from {@link createChat} (a UUID, the agentix session id itself) or any other string (stored as
   * the session `sessionIdFor(chatId)`).
   */
  chatId: string;
  /** The whole chat as the client has it now, oldest first: what `toUIMessageStreamResponse`'s `onFinish` gives. */
  messages: MESSAGE[];
  /**
   * The number of stored messages `messages` was made from, when the caller knows it (e.g. the length it loaded,
   * plus one when the client regenerates its last answer). The save then writes only if the chat has exactly that
   * many messages, whatever they are, and may drop or replace any of them. Without it, the stored messages must be
   * the first ones of `messages`, by `id`, so that a chat can grow and its messages change but none the caller has
   * not seen is lost.
   */
  expectedLength?: number;
  /**
   * The agent the chat is created under when it does not exist yet.
   * @default "ai-sdk"
   */
  agentId?: string;
  /**
   * The session metadata of a chat created by this save; an existing chat keeps its own.
   * @default null
   */
  metadata?: JsonObject | null;
}

/**
 * Creates an empty chat and returns its id (a new UUIDv7, also its agentix session id): the AI SDK's `createChat()`.
 * @throws {ValidationError} on a bad `agentId` or `metadata`.
 */
export function createChat(storage: StorageBackend, options: CreateChatOptions = {}): Promise<string> {
  return storage.createSession(options.agentId ?? DEFAULT_AGENT, options.metadata ?? null);
}

/**
 * The chat's messages, oldest first, exactly as they were saved; `[]` for a chat never saved. One read.
 * Validate them with the AI SDK's `validateUIMessages` before use when they carry tools, data parts or metadata
 * whose schemas may have changed since.
 */
export async function loadChat<MESSAGE extends UIMessage = UIMessage>(
  storage: StorageBackend,
  chatId: string,
): Promise<MESSAGE[]> {
  const records = await loadOrEmpty(storage, sessionIdOfName(chatId, "global"));
  return records.map((record) => record.content as unknown as MESSAGE);
}

/**
 * Saves the chat: the messages from the first one that changed on replace the stored ones, in one atomic
 * compare-and-swap step (`replaceMessages` with `expectedLength`), so that nothing another writer saved meanwhile is
 * overwritten. Creates the chat on its first save. Two round trips: a read and the write (none when nothing
 * changed).
 * @throws {ConflictError} when the chat holds messages the caller has not seen (another tab saved first): see
 * {@link SaveChatOptions.expectedLength}. Nothing written; load the chat again and redo the change.
 * @throws {ValidationError} when a message is not JSON (nothing written).
 */
export async function saveChat<MESSAGE extends UIMessage>(
  storage: StorageBackend,
  options: SaveChatOptions<MESSAGE>,
): Promise<void> {
  const { chatId, messages, expectedLength } = options;
  const id = sessionIdOfName(chatId, "global");
  const stored = await loadCreating(storage, id, options.agentId ?? DEFAULT_AGENT, options.metadata ?? null);
  if (expectedLength !== undefined && stored.length !== expectedLength) {
    throw new ConflictError(`chat ${chatId} has ${stored.length} messages, not the expected ${expectedLength}`, {
      expectedLength,
      actualLength: stored.length,
    });
  }
  if (expectedLength === undefined) {
    const unseen = stored.findIndex((record, i) => idOf(record) !== messages[i]?.id);
    if (unseen !== -1) {
      throw new ConflictError(
        `chat ${chatId}: its message ${JSON.stringify(idOf(stored[unseen] as MessageRecord))} at position ${unseen} ` +
          "is not in the messages saved: another writer saved the chat since these messages were loaded",
      );
    }
  }
  let from = 0;
  while (
    from < stored.length &&
    from < messages.length &&
    canonicalJson((stored[from] as MessageRecord).content) === canonicalJson(messages[from])
  )
    from++;
  if (from === stored.length && from === messages.length) return;
  await storage.replaceMessages(id, from, messages.slice(from).map(toMessage), { expectedLength: stored.length });
}

/** The stored messages, the chat created (empty) when it does not exist. */
async function loadCreating(
  storage: StorageBackend,
  id: string,
  agentId: string,
  metadata: JsonObject | null,
): Promise<MessageRecord[]> {
  try {
    return await storage.loadMessages(id);
  } catch (error) {
    if (!(error instanceof SessionNotFoundError)) throw error;
    const { created } = await storage.openSession(agentId, id, metadata);
    // Another save created it in between: what it wrote is checked like any stored message.
    return created ? [] : loadOrEmpty(storage, id);
  }
}

function idOf(record: MessageRecord): unknown {
  const content = record.content;
  return typeof content === "object" && content !== null && !Array.isArray(content) ? content.id : undefined;
}

function toMessage(message: UIMessage): NewMessage {
  return { role: message.role, content: message as unknown as JsonObject };
}
