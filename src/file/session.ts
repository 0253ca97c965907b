// session.json and the agent index: names and small readers shared by the File backend's modules.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { join } from "node:path";
import type { SessionRecord } from "../core/types.js";
import { isSessionId } from "../core/validation.js";
import { parseStored } from "./damage.js";
import { ifExists, readAt, withFile } from "./io.js";

export const META = "session.json";
/** In session.json, `updated_at` follows the fixed-length `session_id` and `created_at`: it is in the first bytes. */
const HEAD_UPDATED_AT = /"updated_at": "([^"]{24})"/;

/**
 * An agent's directory name: a slug for people plus the SHA-256 of the exact id.
 * The hash makes it injective (also on case-insensitive file systems) and short
 * (at most 113 bytes for any id); the slug has no dot, so no name is "." or "..".
 */
export function agentKey(agentId: string): string {
  const slug = agentId
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, "_")
    .slice(0, 48);
  return `${slug}.${createHash("sha256").update(agentId).digest("hex")}`;
}

/** session.json: `updated_at` before `agent_id` and `metadata`, so that an append finds it in the first bytes. */
export function metaJson(r: SessionRecord): string {
  const { session_id, created_at, updated_at, agent_id, metadata } = r;
  return `${JSON.stringify({ session_id, created_at, updated_at, agent_id, metadata }, null, 2)}\n`;
}

/**
 * A session's session.json, or `null` when it is not (or no longer) there; {@link DamagedFile} when it is not
 * one agentix wrote for `sessionId`.
 */
export function readStored(dir: string, sessionId: string): SessionRecord | null {
  const path = join(dir, META);
  const text = ifExists(() => fs.readFileSync(path, "utf8"));
  return text === null ? null : parseStored(text, path, sessionId);
}

/** The session ids in a directory: anything else there (a temporary name) is not one. */
export function sessionIds(dir: string): string[] {
  return ifExists(() => fs.readdirSync(dir).filter(isSessionId)) ?? [];
}

/** The session's own `updated_at`, read from the head of session.json (parsed whole only if edited by hand). */
export function updatedAtFloor(path: string, sessionId: string): string {
  const head = withFile(path, "r", (fd) => HEAD_UPDATED_AT.exec(readAt(fd, 0, 160).toString("latin1"))?.[1]);
  return head ?? parseStored(fs.readFileSync(path, "utf8"), path, sessionId).updated_at;
}
