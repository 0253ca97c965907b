import { createHash } from "node:crypto";
import { uuidv7 } from "uuidv7";

/** A new session id: UUIDv7, lowercase, strictly increasing within this process. */
export function newSessionId(): string {
  return uuidv7();
}

/**
 * The namespace of {@link sessionIdFor} when none is given: agentix's own, fixed forever, so that a key maps to
 * the same session id in every process, release and language.
 */
export const AGENTIX_NAMESPACE = "0b7e6c52-5d3c-4a8e-9f0a-61677478a001";

/**
 * The UUIDv5 (RFC 9562, SHA-1) of `key` in `namespace`, in canonical lowercase form: a framework's string key
 * (a session name, a thread id) as a session id, the same every time. `key` and `namespace` are validated by
 * the caller (see `sessionIdFor` in validation.ts).
 */
export function uuidv5(key: string, namespace: string): string {
  const hash = createHash("sha1")
    .update(Buffer.from(namespace.replaceAll("-", ""), "hex"))
    .update(key, "utf8")
    .digest();
  hash[6] = ((hash[6] as number) & 0x0f) | 0x50; // version 5
  hash[8] = ((hash[8] as number) & 0x3f) | 0x80; // the RFC's variant
  const hex = hash.subarray(0, 16).toString("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
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
