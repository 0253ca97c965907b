import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { createSyncFn } from "synckit";
import {
  AgentixStorageError,
  BackendClosedError,
  ConflictError,
  SessionExistsError,
  SessionNotFoundError,
  ValidationError,
} from "./errors.js";

/**
 * How to rebuild a backend on the sync worker thread: `new (await import(module))[exportName](options)`.
 * `module` is a URL or an importable specifier; `options` must survive `structuredClone`.
 */
export interface SyncTwin {
  /** The module that exports the backend class, usually `import.meta.url`. */
  module: string;
  /** The class's name among that module's exports. */
  exportName: string;
  /** The constructor's options; they must survive `structuredClone` (no clients, no functions). */
  options: unknown;
}

/** One call to the worker. `twin` travels with every call so that the worker can build it on first use. */
export interface SyncRequest {
  twinId: string;
  twin: SyncTwin;
  method: string;
  args: unknown[];
}

export interface SerializedError {
  name: string;
  message: string;
  field?: string;
  sessionId?: string;
  expectedLength?: number;
  actualLength?: number;
  cause?: { name: string; message: string };
}

export type SyncResponse = { ok: true; value: unknown } | { ok: false; error: SerializedError };

// The worker sits beside this file: sync-worker.js once built; from the
// TypeScript sources (tests, bench) a bootstrap that loads it through tsx.
const here = fileURLToPath(import.meta.url);
const workerPath = here.replace(/sync\.(ts|js)$/, here.endsWith(".ts") ? "sync-worker-dev.mjs" : "sync-worker.js");

let callWorker: ((request: SyncRequest) => SyncResponse) | undefined;

/** A backend's twin on the shared sync worker: every call blocks the caller until the twin answers. */
export class SyncTwinHandle {
  readonly #id = randomUUID();
  readonly #twin: SyncTwin;

  constructor(twin: SyncTwin) {
    this.#twin = twin;
  }

  call(method: string, args: unknown[]): unknown {
    // One worker for the whole process, started on the first sync call (synckit unrefs it).
    callWorker ??= createSyncFn<(request: SyncRequest) => Promise<SyncResponse>>(workerPath);
    const response = callWorker({ twinId: this.#id, twin: this.#twin, method, args });
    if (response.ok) return response.value;
    throw reviveError(response.error);
  }

  close(): void {
    this.call("close", []);
  }
}

export function serializeError(error: unknown): SerializedError {
  if (!(error instanceof Error)) return { name: "Error", message: String(error) };
  const out: SerializedError = { name: error.name, message: error.message };
  if (error instanceof ValidationError) out.field = error.field;
  if (error instanceof SessionNotFoundError || error instanceof SessionExistsError) out.sessionId = error.sessionId;
  if (error instanceof ConflictError && error.expectedLength !== undefined && error.actualLength !== undefined) {
    out.expectedLength = error.expectedLength;
    out.actualLength = error.actualLength;
  }
  if (error.cause instanceof Error) out.cause = { name: error.cause.name, message: error.cause.message };
  return out;
}

/** The worker's error as the class the async method would have thrown. */
function reviveError(e: SerializedError): AgentixStorageError {
  const cause = e.cause ? Object.assign(new Error(e.cause.message), { name: e.cause.name }) : undefined;
  let error: AgentixStorageError;
  switch (e.name) {
    case "SessionNotFoundError":
      error = new SessionNotFoundError(e.sessionId ?? "");
      break;
    case "SessionExistsError":
      error = new SessionExistsError(e.sessionId ?? "");
      break;
    case "ConflictError":
      error =
        e.expectedLength === undefined || e.actualLength === undefined
          ? new ConflictError("")
          : new ConflictError("", { expectedLength: e.expectedLength, actualLength: e.actualLength });
      break;
    case "ValidationError":
      error = new ValidationError(e.field ?? "", "");
      break;
    case "BackendClosedError":
      error = new BackendClosedError("");
      break;
    default:
      error = new AgentixStorageError("", cause ? { cause } : undefined);
  }
  error.message = e.message;
  return error;
}
