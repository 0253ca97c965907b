/**
 * agentix: session storage for AI agents. The contract (`StorageBackend`), the errors, the Memory and File
 * backends, `AgentixClient` and `createStorageBackend`.
 * @module agentix
 */
export { AgentixAgentOptions, AgentixClient } from "./client.js";
export { type ForkTarget, type MaybePromise, StorageBackend, SyncStorageBackend } from "./core/backend.js";
export { AGENTIX_NAMESPACE } from "./core/clock.js";
export {
  AgentixStorageError,
  BackendClosedError,
  ConflictError,
  CorruptSessionError,
  SessionExistsError,
  SessionNotFoundError,
  ValidationError,
} from "./core/errors.js";
export { DEFAULT_BASE_PATH, expandHome } from "./core/paths.js";
export { compareSessions, cwdOf, isAfter, sessionRecord } from "./core/records.js";
export type { SyncTwin } from "./core/sync.js";
export type {
  CopyOutcome,
  CreateOptions,
  EditOutcome,
  ForkOptions,
  ImportOptions,
  IterateOptions,
  JsonObject,
  JsonValue,
  ListOptions,
  LoadOptions,
  MessageContent,
  MessageEdit,
  MessageRange,
  MessageRecord,
  NewMessage,
  OpenedSession,
  Role,
  SessionCursor,
  SessionPatch,
  SessionQuery,
  SessionRecord,
  StagedImport,
  WriteOptions,
  WriteResult,
} from "./core/types.js";
export {
  isSessionId,
  MAX_AGENT_ID_LENGTH,
  MAX_JSON_DEPTH,
  parseOptions,
  type ScanOptions,
  sessionIdFor,
} from "./core/validation.js";
export { FileStorageBackend, type FileStorageOptions } from "./file.js";
export { MemoryStorageBackend } from "./memory.js";
export { createStorageBackend, STORAGE_URL_ENV } from "./url.js";
