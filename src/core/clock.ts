import { uuidv7 } from "uuidv7";

/** A new session id: UUIDv7, lowercase, strictly increasing within this process. */
export function newSessionId(): string {
  return uuidv7();
}

/** Now as ISO 8601 UTC with millisecond precision. */
export function now(): string {
  return new Date().toISOString();
}

/** The later of two timestamps of the form `now()` returns. */
export function latest(a: string, b: string): string {
  return a > b ? a : b;
}
