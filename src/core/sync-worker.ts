// The sync worker: runs the async methods of backend twins for the `...Sync` methods (see sync.ts).
import { runAsWorker } from "synckit";
import type { StorageBackend } from "./backend.js";
import { type SyncRequest, type SyncResponse, type SyncTwin, serializeError } from "./sync.js";

const twins = new Map<string, Promise<StorageBackend>>();

/** Imports a backend's module; one written in TypeScript (a custom backend run from its sources) through tsx. */
async function load(specifier: string): Promise<Record<string, new (options: unknown) => StorageBackend>> {
  try {
    return await import(specifier);
  } catch (error) {
    if ((error as { code?: string }).code !== "ERR_UNKNOWN_FILE_EXTENSION") throw error;
    try {
      const { register } = await import("tsx/esm/api");
      register();
    } catch {
      throw new Error(
        `${specifier} is TypeScript: install tsx (npm install -D tsx) so that the sync worker can load it`,
      );
    }
    return await import(specifier);
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
