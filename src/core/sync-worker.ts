// The sync worker: runs the async methods of backend twins for the `...Sync` methods (see sync.ts).
import { runAsWorker } from "synckit";
import type { StorageBackend } from "./backend.js";
import { type SyncRequest, type SyncResponse, type SyncTwin, serializeError } from "./sync.js";

const twins = new Map<string, Promise<StorageBackend>>();

type BackendModule = Record<string, new (options: unknown) => StorageBackend>;

let tsx: Promise<void> | undefined;

/** Registers tsx's loader in this worker, once; fails with what to install when tsx is missing. */
function registerTsx(specifier: string): Promise<void> {
  tsx ??= import("tsx/esm/api").then(
    ({ register }) => {
      register();
    },
    (error: unknown) => {
      tsx = undefined;
      throw new Error(
        `${specifier} is TypeScript: install tsx (npm install -D tsx) so that the sync worker can load it`,
        { cause: error },
      );
    },
  );
  return tsx;
}

/** What Node says of TypeScript it cannot run: without type stripping (Node 20) a .ts file; with it, enums and the like. */
const NEEDS_TSX = new Set<unknown>([
  "ERR_UNKNOWN_FILE_EXTENSION",
  "ERR_UNSUPPORTED_TYPESCRIPT_SYNTAX",
  "ERR_UNSUPPORTED_NODE_MODULES_TYPE_STRIPPING",
]);

/** Imports a backend's module; one written in TypeScript (a custom backend run from its sources) through tsx. */
async function load(specifier: string): Promise<BackendModule> {
  try {
    return await import(specifier);
  } catch (error) {
    if (!NEEDS_TSX.has((error as { code?: unknown } | null)?.code)) throw error;
    await registerTsx(specifier);
    // Node keeps the failed load of that URL in its module cache and would fail again: load the file under
    // another URL. Only the entry gets the query, so the modules it imports (agentix itself) are the worker's own.
    const url = new URL(import.meta.resolve(specifier));
    url.searchParams.set("agentix-tsx", "");
    return await import(url.href);
  }
}

async function build(twin: SyncTwin): Promise<StorageBackend> {
  const module = await load(twin.module);
  const Backend = module[twin.exportName];
  if (typeof Backend !== "function") throw new Error(`${twin.module} does not export ${twin.exportName}`);
  return new Backend(twin.options);
}

runAsWorker(async (request: SyncRequest): Promise<SyncResponse> => {
  try {
    if (request.method === "close") {
      const twin = twins.get(request.twinId);
      twins.delete(request.twinId);
      if (twin) await (await twin).close();
      return { ok: true, value: undefined };
    }
    let twin = twins.get(request.twinId);
    if (!twin) {
      twin = build(request.twin);
      twins.set(request.twinId, twin);
      twin.catch(() => twins.delete(request.twinId));
    }
    const backend = (await twin) as unknown as Record<string, (...args: unknown[]) => Promise<unknown>>;
    const method = backend[request.method];
    if (typeof method !== "function") throw new Error(`unknown method ${request.method}`);
    return { ok: true, value: await method.apply(backend, request.args) };
  } catch (error) {
    return { ok: false, error: serializeError(error) };
  }
});
