import { z } from "zod";
import { type Op, StorageBackend } from "./core/backend.js";
import { DelegatingStorageBackend } from "./core/delegate.js";
import { AgentixStorageError } from "./core/errors.js";
import { parseOptions } from "./core/validation.js";
import { FileStorageBackend } from "./file.js";
import { MemoryStorageBackend } from "./memory.js";
import { createEmbeddedBackend, createStorageBackend, STORAGE_URL_ENV } from "./url.js";

/** Options of an agent's storage, validated with zod (the reference's `AgentixAgentOptions`). */
export const AgentixAgentOptions = z
  .strictObject({
    /** Keep sessions beyond the client's life. @default true */
    persistenceEnabled: z.boolean().optional(),
    /** Where the File backend stores sessions. @default "~/.agentix/projects" */
    storageBasePath: z.string().min(1).optional(),
    /** A backend to use instead of the File store. It stays yours: `client.close()` does not close it. */
    storageBackend: z.instanceof(StorageBackend).optional(),
  })
  .refine((o) => !(o.persistenceEnabled === false && o.storageBackend), {
    message: "persistenceEnabled: false keeps sessions in memory; it cannot be combined with a storageBackend",
    path: ["storageBackend"],
  });
export type AgentixAgentOptions = z.input<typeof AgentixAgentOptions>;

/**
 * The entry point of an agent's storage. `client.storage` is the resolved backend:
 * - `persistenceEnabled: false` → a {@link MemoryStorageBackend}, gone with the client (wins over `AGENTIX_STORAGE_URL`);
 * - `storageBackend` → that backend;
 * - `storageBasePath` → a {@link FileStorageBackend} there;
 * - else `AGENTIX_STORAGE_URL` when set (see `createStorageBackend`), else the File store under `~/.agentix/projects`.
 *
 * @example
 * await using client = new AgentixClient();
 * const id = await client.storage.createSession("my-agent", { cwd: process.cwd() });
 */
export class AgentixClient implements AsyncDisposable {
  /** The backend this client stores sessions in. */
  readonly storage: StorageBackend;
  readonly #owned: boolean;

  constructor(options: AgentixAgentOptions = {}) {
    // Named after the class the user wrote: "AgentixClient options.persistenceEnabld".
    const o = parseOptions(AgentixAgentOptions, options, "AgentixClient");
    this.#owned = !o.storageBackend;
    const url = process.env[STORAGE_URL_ENV];
    if (o.persistenceEnabled === false) this.storage = new MemoryStorageBackend();
    else if (o.storageBackend) this.storage = o.storageBackend;
    else if (o.storageBasePath === undefined && url) {
      this.storage = createEmbeddedBackend(url) ?? new DeferredStorageBackend(createStorageBackend(url));
    } else {
      // The File backend expands `~` and knows the default directory.
      this.storage = new FileStorageBackend(o.storageBasePath === undefined ? {} : { basePath: o.storageBasePath });
    }
  }

  /** Resolves once the storage is ready (only a backend from `AGENTIX_STORAGE_URL` needs loading). Rejects if it cannot load. */
  async ready(): Promise<StorageBackend> {
    if (this.storage instanceof DeferredStorageBackend) await this.storage.loaded();
    return this.storage;
  }

  /** Closes the storage if the client created it (a `storageBackend` you passed in stays open). */
  async close(): Promise<void> {
    if (this.#owned) await this.storage.close();
  }

  /** Same as {@link AgentixClient.close}: what `await using` calls. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * A backend that is still loading its driver (`AGENTIX_STORAGE_URL` from a
 * synchronous constructor): async calls wait for it; sync calls need `await client.ready()` first.
 */
class DeferredStorageBackend extends DelegatingStorageBackend {
  #loaded: StorageBackend | undefined;

  constructor(pending: Promise<StorageBackend>) {
    super(
      pending.then((b) => {
        this.#loaded = b;
        return b;
      }),
    );
  }

  /** Resolves once the backend has loaded. */
  loaded(): Promise<StorageBackend> {
    return this.target();
  }

  /** @internal */
  protected override runSync<A extends unknown[], P, R>(method: string, op: Op<A, P, R>, args: A): R {
    if (this.closed) return super.runSync(method, op, args);
    if (!this.#loaded) {
      throw new AgentixStorageError(
        `the storage from ${STORAGE_URL_ENV} is still loading: await client.ready() before calling ${method}Sync`,
      );
    }
    const target = this.#loaded as unknown as Record<string, (...a: unknown[]) => R>;
    return (target[`${method}Sync`] as (...a: unknown[]) => R).apply(target, args);
  }
}
