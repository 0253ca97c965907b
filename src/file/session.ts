// session.json and the agent index: names and small readers shared by the File backend's modules.
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { join } from "node:path";
import type { JsonObject, SessionRecord } from "../core/types.js";
import { isSessionId } from "../core/validation.js";
import { parseStored } from "./damage.js";
import { ifExists, readAt, withFile } from "./io.js";
import { LOG } from "./log.js";

export const META = "session.json";
/** In session.json, `updated_at` follows the fixed-length `session_id` and `created_at`: it is in the first bytes. */
const HEAD_UPDATED_AT = /"updated_at": "([^"]{24})"/;
/** A pending session.json's mark, right after `updated_at` (see {@link Pending}). */
const HEAD_COMMIT_INO = /"updated_at": "[^"]{24}",\n {2}"commit_ino": \d/;
const HEAD_BYTES = 200;

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

/**
 * A metadata write made with an edit that replaces the log (src/file/edit.ts) cannot rename two files at once.
 * So session.json is first written PENDING: the new record plus `commit_ino`, the inode of the new log (already
 * written under tmp/), and `prior_metadata`; then the new log is renamed in (the commit point); then session.json
 * is written plain. A reader of a pending session.json takes the new metadata only if the log in place is that
 * inode, else the prior one — so a kill anywhere leaves both old or both new. A pending record is settled (written
 * plain, resolved) before anything else replaces the log (another inode would no longer name the edit): edits see
 * the marker in the head they read anyway, the rare repairs read it whole. Its updated_at may be ahead of the log
 * after a kill before the rename, as a truncation's may (never behind).
 */
export interface Pending {
  commitIno: number;
  priorMetadata: JsonObject | null;
}

/** session.json: `updated_at` before `agent_id` and `metadata`, so that an append finds it in the first bytes. */
export function metaJson(r: SessionRecord, pending?: Pending): string {
  const { session_id, created_at, updated_at, agent_id, metadata } = r;
  const marks = pending && { commit_ino: pending.commitIno, prior_metadata: pending.priorMetadata };
  return `${JSON.stringify({ session_id, created_at, updated_at, ...marks, agent_id, metadata }, null, 2)}\n`;
}

/** Whether session.json's text is pending (see {@link Pending}). */
function isPending(text: string): boolean {
  return HEAD_COMMIT_INO.test(text.slice(0, HEAD_BYTES));
}

/** A pending session.json's record as it resolves now, to be written plain; `null` when it is not pending. */
export function settledRecord(dir: string, sessionId: string): SessionRecord | null {
  const text = ifExists(() => fs.readFileSync(join(dir, META), "utf8"));
  return text !== null && isPending(text) ? readStored(dir, sessionId) : null;
}

/**
 * A session's session.json, or `null` when it is not (or no longer) there; {@link DamagedFile} when it is not
 * one agentix wrote for `sessionId`.
 */
export function readStored(dir: string, sessionId: string): SessionRecord | null {
  const path = join(dir, META);
  const text = ifExists(() => fs.readFileSync(path, "utf8"));
  if (text === null) return null;
  const stored = parseStored(text, path, sessionId) as SessionRecord & {
    commit_ino?: unknown;
    prior_metadata?: unknown;
  };
  const { commit_ino, prior_metadata, ...record } = stored;
  if (commit_ino === undefined) return stored;
  // Pending: the edit it belongs to took place iff its log is the one in place (a log gone: a session deleted).
  const ino = ifExists(() => fs.statSync(join(dir, LOG)).ino);
  if (ino === null || ino === commit_ino) return record;
  return { ...record, metadata: (prior_metadata ?? null) as JsonObject | null };
}

/** The session ids in a directory: anything else there (a temporary name) is not one. */
export function sessionIds(dir: string): string[] {
  return ifExists(() => fs.readdirSync(dir).filter(isSessionId)) ?? [];
}

/** The session's own `updated_at`, read from the head of session.json (parsed whole only if edited by hand). */
export function updatedAtFloor(path: string, sessionId: string): string {
  return readHead(path, sessionId).updatedAt;
}

/** {@link updatedAtFloor}, and whether session.json is pending (see {@link Pending}), from the same one read. */
export function readHead(path: string, sessionId: string): { updatedAt: string; pending: boolean } {
  const head = withFile(path, "r", (fd) => readAt(fd, 0, HEAD_BYTES).toString("latin1")) ?? "";
  const updatedAt = HEAD_UPDATED_AT.exec(head)?.[1];
  if (updatedAt !== undefined) return { updatedAt, pending: HEAD_COMMIT_INO.test(head) };
  const text = fs.readFileSync(path, "utf8");
  return { updatedAt: parseStored(text, path, sessionId).updated_at, pending: isPending(text) };
}
