import { uuidv7 } from "uuidv7";

/** A new session id: UUIDv7, lowercase, strictly increasing within this process. */
export function newSessionId(): string {
  return uuidv7();
}

let lastMs = Number.NaN;
let lastIso = "";

/** Now as ISO 8601 UTC with millisecond precision (formatted once per millisecond: it is on every append's path). */
export function now(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

/** The later of two timestamps of the form `now()` returns. */
export function latest(a: string, b: string): string {
  return a > b ? a : b;
}
