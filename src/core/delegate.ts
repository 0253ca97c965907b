import { type ForkTarget, type MaybePromise, StorageBackend } from "./backend.js";
import type {
  CopyOutcome,
  EditOutcome,
  JsonObject,
  MessageEdit,
  MessageRange,
  MessageRecord,
  SessionQuery,
  SessionRecord,
  StagedImport,
} from "./types.js";

type Primitives = Record<string, (...args: unknown[]) => MaybePromise<unknown>>;

/**
 * A backend whose primitives are those of another backend, reached once it has
 * loaded: validation happens here once, the target only stores. `close()` closes the target.
 */
export abstract class DelegatingStorageBackend extends StorageBackend {
  readonly #target: Promise<StorageBackend>;

  constructor(target: Promise<StorageBackend>) {
    super();
    target.catch(() => {}); // reported by the first call that needs it, not as an unhandled rejection
    this.#target = target;
  }

  /** The backend the primitives go to. */
  protected target(): Promise<StorageBackend> {
    return this.#target;
  }

  async #call<T>(name: string, ...args: unknown[]): Promise<T> {
    // The target's primitives are protected: same base class, reached by name.
    const target = (await this.#target) as unknown as Primitives;
    return (await target[name]?.apply(target, args)) as T;
  }

  protected insertSession(record: SessionRecord) {
    return this.#call<SessionRecord | null>("insertSession", record);
  }
  protected readSession(id: string) {
    return this.#call<SessionRecord | null>("readSession", id);
  }
  protected querySessions(agentId: string, query: SessionQuery) {
    return this.#call<SessionRecord[]>("querySessions", agentId, query);
  }
  protected replaceMetadata(id: string, metadata: JsonObject | null, at: string) {
    return this.#call<SessionRecord | null>("replaceMetadata", id, metadata, at);
  }
  protected copySession(id: string, target: ForkTarget) {
    return this.#call<CopyOutcome>("copySession", id, target);
  }
  protected removeSession(id: string) {
    return this.#call<void>("removeSession", id);
  }
  protected appendMessages(id: string, messages: MessageRecord[]) {
    return this.#call<number | null>("appendMessages", id, messages);
  }
  protected editMessages(id: string, edit: MessageEdit) {
    return this.#call<EditOutcome>("editMessages", id, edit);
  }
  protected readLength(id: string) {
    return this.#call<number | null>("readLength", id);
  }
  protected readMessages(id: string, range: MessageRange) {
    return this.#call<MessageRecord[] | null>("readMessages", id, range);
  }
  protected override scanPage(after: string | null, limit: number, agentId: string | undefined) {
    return this.#call<SessionRecord[]>("scanPage", after, limit, agentId);
  }
  protected override insertImported(record: SessionRecord, messages: MessageRecord[]) {
    return this.#call<boolean>("insertImported", record, messages);
  }
  protected override beginImport(staged: StagedImport) {
    return this.#call<boolean>("beginImport", staged);
  }
  protected override stageMessages(staged: StagedImport, offset: number, messages: MessageRecord[]) {
    return this.#call<boolean>("stageMessages", staged, offset, messages);
  }
  protected override publishImport(staged: StagedImport, length: number) {
    return this.#call<boolean>("publishImport", staged, length);
  }
  protected override discardImport(staged: StagedImport) {
    return this.#call<void>("discardImport", staged);
  }
  protected async dispose() {
    await (await this.#target.catch(() => undefined))?.close();
  }
}
