/**
 * How the Postgres backend runs one statement: serialization failures and deadlocks are retried, and the errors a
 * transaction pooler causes say so. Internal to `agentix/postgres`.
 * @module
 */
import { AgentixStorageError } from "./core/errors.js";

/**
 * SQLSTATEs after which the server has rolled the statement back entirely, so that running it again is safe:
 * serialization_failure (under REPEATABLE READ or SERIALIZABLE, e.g. `default_transaction_isolation`) and
 * deadlock_detected. Every operation of the backend is one statement in its own transaction.
 */
const RETRIED = new Set(["40001", "40P01"]);

/** How many times a statement runs at most (the first run included). */
export const STATEMENT_ATTEMPTS = 16;

/** Backoff before retry `n` (1-based): "full jitter", a random wait up to 5 ms × 2^(n-1), at most 1 s. */
const backoff = (retry: number) => Math.random() * Math.min(1000, 5 * 2 ** (retry - 1));

/** The SQLSTATE of a driver error, if it has one. */
export function sqlState(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * Runs `statement` (a function, so that each attempt sends a fresh query) and retries it after a serialization
 * failure or a deadlock, up to {@link STATEMENT_ATTEMPTS} runs with jittered backoff, so that colliding writers do
 * not collide again in lockstep. Only for work that is one statement (one implicit transaction): a retry never
 * repeats part of a transaction. A missing prepared statement becomes an error that names the likely cause.
 * The first run is the statement's own promise with a handler for its failure (every call takes this path, so it
 * adds no async function of its own); the retries are in {@link retried}.
 */
export function runStatement<T>(statement: () => Promise<T>): Promise<T> {
  try {
    return statement().catch((error: unknown) => retried(statement, error));
  } catch (error) {
    return retried(statement, error);
  }
}

/** The retries of {@link runStatement} after its first run failed with `error`. */
async function retried<T>(statement: () => Promise<T>, error: unknown): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    const code = sqlState(error);
    if (code === undefined || !RETRIED.has(code) || attempt >= STATEMENT_ATTEMPTS) throw explained(error);
    await new Promise((resolve) => setTimeout(resolve, backoff(attempt)));
    try {
      return await statement();
    } catch (next) {
      error = next;
    }
  }
}

/**
 * postgres.js names its prepared statements per connection; a pooler that hands each transaction to any server
 * connection (PgBouncer in transaction mode, RDS Proxy, Supavisor) loses them: 26000 (does not exist) or 42P05
 * (already exists).
 */
function explained(error: unknown): unknown {
  const code = sqlState(error);
  if (code !== "26000" && code !== "42P05") return error;
  return new AgentixStorageError(
    `PostgresStorageBackend: ${(error as Error).message}. Is a transaction pooler (PgBouncer in transaction mode, ` +
      "RDS Proxy, Supavisor) between agentix and Postgres? Then connect with `prepare: false` (`?prepare=false`).",
    { cause: error },
  );
}
