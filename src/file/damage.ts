// Telling damage from data in the File store: what a valid log line and a valid session.json are, and the
// internal errors the readers throw when they meet something else (the backend turns them into a
// `CorruptSessionError` naming the session, the file and the line).
import type { MessageRecord, SessionRecord } from "../core/types.js";
import { isPlainObject, isSessionId } from "../core/validation.js";

const TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const ROLES = new Set(["user", "assistant", "system", "tool"]);

/** A complete log line that is not a message, at byte offset `at` of the log (`undefined`: not known here). */
export class DamagedLine extends Error {
  readonly at: number | undefined;
  constructor(problem: string, at: number | undefined) {
    super(problem);
    this.at = at;
  }
}

/** A file of the session (session.json) that is not what agentix writes. */
export class DamagedFile extends Error {
  readonly file: string;
  constructor(file: string, problem: string) {
    super(problem);
    this.file = file;
  }
}

/** What is wrong with a parsed log line, or `null` when it is a message as agentix writes it. */
export function messageProblem(value: unknown): string | null {
  if (!isPlainObject(value)) return "not a JSON object";
  const keys = Object.keys(value);
  if (keys.length !== 3 || !("role" in value && "content" in value && "timestamp" in value)) {
    return "not a message (role, content, timestamp)";
  }
  if (typeof value.role !== "string" || !ROLES.has(value.role)) return "no valid role";
  const c = value.content;
  if (typeof c !== "string" && !Array.isArray(c) && !isPlainObject(c))
    return "content is not a string, array or object";
  if (typeof value.timestamp !== "string" || !TIMESTAMP.test(value.timestamp)) return "no valid timestamp";
  return null;
}

/** Parses one log line (which may end in the space that continues a batch), or throws {@link DamagedLine}. */
export function parseMessage(text: string, at: number | undefined): MessageRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new DamagedLine(`not JSON (${(error as Error).message})`, at);
  }
  const problem = messageProblem(value);
  if (problem !== null) throw new DamagedLine(problem, at);
  return value as MessageRecord;
}

/** What is wrong with a parsed session.json of the directory `sessionId`, or `null`. */
export function storedProblem(value: unknown, sessionId: string): string | null {
  if (!isPlainObject(value)) return "not a JSON object";
  if (value.session_id !== sessionId || !isSessionId(sessionId)) return "session_id is not the directory's name";
  if (typeof value.agent_id !== "string" || value.agent_id.length === 0) return "no valid agent_id";
  for (const key of ["created_at", "updated_at"] as const) {
    const v = value[key];
    if (typeof v !== "string" || !TIMESTAMP.test(v)) return `no valid ${key}`;
  }
  if (value.metadata !== null && !isPlainObject(value.metadata)) return "metadata is not an object or null";
  return null;
}

/** Parses session.json's text, or throws {@link DamagedFile}. */
export function parseStored(text: string, file: string, sessionId: string): SessionRecord {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new DamagedFile(file, `not JSON (${(error as Error).message})`);
  }
  const problem = storedProblem(value, sessionId);
  if (problem !== null) throw new DamagedFile(file, problem);
  return value as SessionRecord;
}
