import { connect } from "node:net";
import { type Command, InvalidArgumentError } from "commander";
import type { StorageBackend } from "../core/backend.js";
import { AgentixStorageError, SessionNotFoundError } from "../core/errors.js";
import { DEFAULT_BASE_PATH } from "../core/paths.js";
import type { MessageRecord, SessionRecord } from "../core/types.js";
import { createStorageBackend, STORAGE_URL_ENV } from "../url.js";
import { requireStore } from "./probe.js";

/** An error whose message is all a person needs: printed as one line, without a stack. */
export class CliError extends Error {
  override name = "CliError";
}

/** The options every command inherits from the program. */
export interface GlobalOptions {
  storage?: string;
  debug?: boolean;
}

/** `--storage`, else `AGENTIX_STORAGE_URL`, else the default File store. */
export function selectStorage(command: Command): string {
  const { storage } = command.optsWithGlobals<GlobalOptions>();
  return storage ?? (process.env[STORAGE_URL_ENV] || DEFAULT_BASE_PATH);
}

/** A storage URL fit to print: the password of `postgres://user:secret@host` is masked. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password === "") return url;
    parsed.password = "***";
    return parsed.toString();
  } catch {
    return url;
  }
}

/** Network failures: the server named by the URL could not be reached. */
const UNREACHABLE = new Set(["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "ETIMEDOUT", "EHOSTUNREACH"]);

/** The network failure behind `error` (itself or a cause), if that is what it is. */
export function unreachable(error: unknown): Error | undefined {
  for (let e = error; e instanceof Error; e = e.cause) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && UNREACHABLE.has(code)) return e;
    // postgres.js reports a refused pool connection as an AggregateError of the per-address attempts.
    if (e instanceof AggregateError && e.errors.some((inner) => unreachable(inner))) return e;
  }
  return undefined;
}

/**
 * Fails fast when a Redis server does not answer: ioredis, left to its defaults, retries for over a minute before a
 * command fails. One TCP handshake (5 s at most) before the backend is built. Postgres fails fast by itself.
 */
async function preflight(url: string): Promise<void> {
  if (!/^rediss?:\/\//i.test(url)) return;
  let host: string;
  let port: number;
  try {
    const parsed = new URL(url);
    host = parsed.hostname.replace(/^\[(.*)\]$/, "$1") || "localhost";
    port = Number(parsed.port || 6379);
  } catch {
    return; // the backend reports a malformed URL itself
  }
  await new Promise<void>((resolve, reject) => {
    const socket = connect({ host, port, timeout: 5000 });
    socket.once("connect", () => {
      socket.destroy();
      resolve();
    });
    socket.once("timeout", () => {
      socket.destroy();
      reject(new CliError(`cannot reach ${redact(url)}: no answer within 5 s`));
    });
    socket.once("error", (error) => {
      socket.destroy();
      reject(new CliError(`cannot reach ${redact(url)}: ${error.message}`, { cause: error }));
    });
  });
}

/**
 * Opens the backend named by `url`, runs `use` and closes it, also when `use` fails. A failure to reach the
 * server becomes one line naming the (redacted) URL. `readOnly`: a store that does not exist is an error, and
 * nothing is created (see requireStore).
 */
export async function withStorage<T>(
  url: string,
  use: (storage: StorageBackend) => Promise<T>,
  { readOnly = false }: { readOnly?: boolean } = {},
): Promise<T> {
  if (readOnly) {
    await requireStore(url).catch((error: unknown) => {
      const network = error instanceof CliError ? undefined : unreachable(error);
      if (network) throw new CliError(`cannot reach ${redact(url)}: ${network.message || String(network)}`);
      throw error;
    });
  }
  const storage = await createStorageBackend(url);
  await preflight(url).catch(async (error: unknown) => {
    await storage.close().catch(() => {});
    throw error;
  });
  try {
    return await use(storage);
  } catch (error) {
    const network = error instanceof CliError ? undefined : unreachable(error);
    if (network)
      throw new CliError(`cannot reach ${redact(url)}: ${network.message || String(network)}`, { cause: error });
    throw error;
  } finally {
    await storage.close().catch(() => {});
  }
}

/** {@link withStorage} for the commands that only read: a missing store is a one-line error, never created. */
export function readStorage<T>(url: string, use: (storage: StorageBackend) => Promise<T>): Promise<T> {
  return withStorage(url, use, { readOnly: true });
}

/** The session or a `SessionNotFoundError`, for commands that name one. */
export async function requireSession(storage: StorageBackend, sessionId: string): Promise<SessionRecord> {
  const record = await storage.getSession(sessionId);
  if (!record) throw new SessionNotFoundError(sessionId);
  return record;
}

/** A session with its messages: one line of an export, the `--json` form of `sessions show`. */
export interface SessionDump {
  session: SessionRecord;
  messages: MessageRecord[];
}

const PAGE = 200;

/** Every session (of `agentId` when given) in `session_id` order, page by page. */
export async function* scanAll(storage: StorageBackend, agentId?: string): AsyncGenerator<SessionRecord> {
  let after: string | undefined;
  for (;;) {
    const page = await storage.scanSessions({
      limit: PAGE,
      ...(agentId === undefined ? {} : { agentId }),
      ...(after === undefined ? {} : { after }),
    });
    yield* page;
    const last = page.at(-1);
    if (!last || page.length < PAGE) return;
    after = last.session_id;
  }
}

/** How many messages export and copy read at a time (`iterateMessages`' `batchSize`). */
export const BATCH_SIZE = 1000;

/**
 * Copies one session into `target` as it was at one moment (see {@link settledHead}: the record, and the messages
 * up to the length counted with it), streamed: read through `iterateMessages` and written by the target's streamed
 * `importSession`, which stages BATCH_SIZE at a time and waits for the target before reading on (so about that many
 * messages are in memory, whatever the session's size), then publishes the whole session at once. `true` when
 * copied, `false` when the target has the id already, `null` when the session was deleted meanwhile (nothing is
 * written then). A history edited while it is read may be copied in part, as `iterateMessages` says.
 */
export async function streamSession(
  source: StorageBackend,
  record: SessionRecord,
  target: StorageBackend,
): Promise<boolean | null> {
  const head = await settledHead(source, record);
  if (!head) return null;
  async function* upTo(length: number): AsyncGenerator<MessageRecord> {
    if (length === 0) return;
    let read = 0;
    for await (const message of source.iterateMessages(record.session_id, { batchSize: BATCH_SIZE })) {
      yield message;
      if (++read === length) return;
    }
  }
  try {
    return await target.importSession(head.session, upTo(head.length), { batchSize: BATCH_SIZE });
  } catch (error) {
    if (error instanceof SessionNotFoundError && error.sessionId === record.session_id) return null;
    throw error;
  }
}

/**
 * The session's record and its number of messages at one moment, or `null` when it was deleted meanwhile: what
 * `export` writes before it streams the messages. The record is read again after the count: when a writer appended
 * in between, `updated_at` moved and the count is taken again (a few times at most).
 */
export async function settledHead(
  storage: StorageBackend,
  record: SessionRecord,
): Promise<{ session: SessionRecord; length: number } | null> {
  let current: SessionRecord | null = record;
  for (let attempt = 0; current; attempt++) {
    let length: number;
    try {
      length = await storage.countMessages(current.session_id);
    } catch (error) {
      if (error instanceof SessionNotFoundError) return null;
      throw error;
    }
    const after: SessionRecord | null = await storage.getSession(current.session_id);
    if (!after) return null;
    if (after.updated_at === current.updated_at || attempt >= 4) return { session: after, length };
    current = after;
  }
  return null;
}

/** Runs `work` on every item with at most `concurrency` in flight; the first failure stops the run. */
export async function pool<T>(
  items: AsyncIterable<T>,
  concurrency: number,
  work: (item: T) => Promise<void>,
): Promise<void> {
  const running = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  try {
    for await (const item of items) {
      if (failure) break;
      const task: Promise<void> = work(item).then(
        () => {
          running.delete(task);
        },
        (error: unknown) => {
          running.delete(task);
          failure ??= { error };
        },
      );
      running.add(task);
      if (running.size >= concurrency) await Promise.race(running);
    }
  } finally {
    // Also when `items` throws: nothing may still be running when the caller closes the backend.
    await Promise.all(running);
  }
  if (failure) throw failure.error;
}

/** A commander parser for `--limit N` and the like. */
export function positiveInt(value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) {
    throw new InvalidArgumentError("expected a positive integer");
  }
  return n;
}

/** Prints an error as one line on stderr (the whole stack and causes with `--debug`) and sets a failing exit code. */
export function reportError(error: unknown, debug: boolean): void {
  process.exitCode = 1;
  if (debug) {
    let prefix = "";
    for (let e: unknown = error; e !== undefined; e = e instanceof Error ? e.cause : undefined) {
      process.stderr.write(`${prefix}${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
      prefix = "caused by: ";
    }
    return;
  }
  const known = error instanceof CliError || error instanceof AgentixStorageError;
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`agentix: ${known ? message : `unexpected error: ${message}`}\n`);
  if (!known) process.stderr.write("(run again with --debug for the stack trace)\n");
}
