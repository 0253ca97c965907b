// The File baseline: the workloads written by hand with node:fs on the backend's directory layout
// (sessions/<id>/session.json + messages.jsonl, agents/<agent>/<id>). It is a single-process floor: no lock
// between processes and no repair of a torn last line, both of which the backend does.
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { uuidv7 } from "uuidv7";
import { compareSessions, isAfter } from "../../src/core/records.js";
import type {
  MessageContent,
  MessageRecord,
  NewMessage,
  Role,
  SessionCursor,
  SessionRecord,
} from "../../src/core/types.js";
import { FileStorageBackend } from "../../src/file.js";
import { agentixSubject, type BenchTarget, type Namespace, type Side, type Subject } from "../workloads.js";

const TIMESTAMP_AT_END = /"timestamp":"([^"]{24})"\}\n$/;
const UPDATED_AT = /"updated_at": "([^"]{24})"/;

export class RawFile implements Subject {
  readonly #base: string;

  constructor(base: string) {
    this.#base = base;
  }

  saveMessage(sessionId: string, role: Role, content: MessageContent): void {
    this.#append(sessionId, [{ role, content }], false);
  }

  /**
   * Appends the batch as one write; with `expectedLength`, only when the log has that many lines (counted by
   * reading it: the floor keeps no count). Synchronous, so nothing of this process comes between the count and
   * the write.
   */
  saveMessages(sessionId: string, messages: NewMessage[], expectedLength?: number): number | null {
    return this.#append(sessionId, messages, true, expectedLength);
  }

  /** The new length when `counted`, else -1; `null` when the length was not `expectedLength`. */
  #append(sessionId: string, messages: NewMessage[], counted: boolean, expectedLength?: number): number | null {
    const dir = join(this.#base, "sessions", sessionId);
    const fd = openIfExists(join(dir, "messages.jsonl"), fs.constants.O_RDWR | fs.constants.O_APPEND);
    if (fd === null) throw new Error(`session not found: ${sessionId}`);
    try {
      // The clamp: no earlier than the last line nor the session's own updated_at (a fork's time).
      const size = fs.fstatSync(fd).size;
      const tail = Buffer.alloc(Math.min(size, 64));
      fs.readSync(fd, tail, 0, tail.length, size - tail.length);
      const last = TIMESTAMP_AT_END.exec(tail.toString("latin1"))?.[1] ?? "";
      const head = Buffer.alloc(160);
      const meta = fs.openSync(join(dir, "session.json"), "r");
      const n = fs.readSync(meta, head, 0, 160, 0);
      fs.closeSync(meta);
      const floor = UPDATED_AT.exec(head.toString("latin1", 0, n))?.[1] ?? "";
      let timestamp = new Date().toISOString();
      if (timestamp < last) timestamp = last;
      if (timestamp < floor) timestamp = floor;
      const count = counted ? countLines(fd) : -1;
      if (expectedLength !== undefined && count !== expectedLength) return null;
      fs.writeSync(
        fd,
        messages.map((m) => `${JSON.stringify({ role: m.role, content: m.content, timestamp })}\n`).join(""),
      );
      return counted ? count + messages.length : -1;
    } finally {
      fs.closeSync(fd);
    }
  }

  countMessages(sessionId: string): number {
    const fd = openIfExists(join(this.#base, "sessions", sessionId, "messages.jsonl"), "r") ?? notFound(sessionId);
    try {
      return countLines(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * The log read in 1 MiB chunks, counting newlines up to the page's first line and keeping only its lines: the
   * floor keeps no index of positions, but never holds more than a chunk and the page.
   */
  loadPage(sessionId: string, offset: number, limit: number): MessageRecord[] {
    const fd = openIfExists(join(this.#base, "sessions", sessionId, "messages.jsonl"), "r") ?? notFound(sessionId);
    try {
      const buffer = Buffer.alloc(1 << 20);
      const kept: Buffer[] = [];
      let line = 0; // the line the next byte belongs to
      let position = 0;
      for (;;) {
        const n = fs.readSync(fd, buffer, 0, buffer.length, position);
        if (n === 0) break;
        let from = line >= offset ? 0 : -1;
        for (let at = buffer.indexOf(0x0a); at !== -1 && at < n; at = buffer.indexOf(0x0a, at + 1)) {
          line++;
          if (line === offset) from = at + 1;
          if (line === offset + limit) {
            kept.push(Buffer.from(buffer.subarray(Math.max(from, 0), at + 1)));
            return parseLines(Buffer.concat(kept).toString("utf8"));
          }
        }
        if (from !== -1 && from < n) kept.push(Buffer.from(buffer.subarray(from, n)));
        position += n;
      }
      return parseLines(Buffer.concat(kept).toString("utf8"));
    } finally {
      fs.closeSync(fd);
    }
  }

  /** A read stream split into lines (node:readline): one chunk of the log in memory at a time. */
  async *iterateMessages(sessionId: string): AsyncIterable<MessageRecord> {
    const path = join(this.#base, "sessions", sessionId, "messages.jsonl");
    if (!fs.existsSync(path)) notFound(sessionId);
    const lines = createInterface({ input: fs.createReadStream(path), crlfDelay: Number.POSITIVE_INFINITY });
    for await (const line of lines) if (line !== "") yield JSON.parse(line) as MessageRecord;
  }

  loadMessages(sessionId: string, last?: number): MessageRecord[] {
    const path = join(this.#base, "sessions", sessionId, "messages.jsonl");
    let text: string;
    if (last === undefined) {
      text = readIfExists(path) ?? notFound(sessionId);
    } else {
      const fd = openIfExists(path, "r") ?? notFound(sessionId);
      try {
        text = tail(fd, last);
      } finally {
        fs.closeSync(fd);
      }
    }
    const end = text.lastIndexOf("\n");
    if (end <= 0) return [];
    // Lines of JSON never hold a raw newline: the log is an array once its newlines are commas.
    return JSON.parse(`[${text.slice(0, end).replaceAll("\n", ",")}]`) as MessageRecord[];
  }

  listSessions(agentId: string, limit: number, before?: SessionCursor): SessionRecord[] {
    const index = join(this.#base, "agents", agentKey(agentId));
    const records: SessionRecord[] = [];
    for (const id of fs.readdirSync(index)) {
      const dir = join(this.#base, "sessions", id);
      const meta = readIfExists(join(dir, "session.json"));
      if (meta === null) continue;
      const record = JSON.parse(meta) as SessionRecord;
      const fd = fs.openSync(join(dir, "messages.jsonl"), "r");
      const size = fs.fstatSync(fd).size;
      const buffer = Buffer.alloc(Math.min(size, 64));
      fs.readSync(fd, buffer, 0, buffer.length, size - buffer.length);
      fs.closeSync(fd);
      const last = TIMESTAMP_AT_END.exec(buffer.toString("latin1"))?.[1];
      if (last !== undefined && last > record.updated_at) record.updated_at = last;
      if (before && !isAfter(record, before)) continue;
      const { session_id, agent_id, created_at, updated_at, metadata } = record;
      records.push({ session_id, agent_id, created_at, updated_at, metadata });
    }
    return records.sort(compareSessions).slice(0, limit);
  }

  forkSession(sessionId: string): string {
    const source = join(this.#base, "sessions", sessionId);
    const meta = readIfExists(join(source, "session.json")) ?? notFound(sessionId);
    const { agent_id, metadata } = JSON.parse(meta) as SessionRecord;
    const id = uuidv7();
    const at = new Date().toISOString();
    // Filled under a temporary name and renamed into place: readers see all of it or nothing.
    const tmp = join(this.#base, "tmp", `${id}.${randomBytes(6).toString("hex")}`);
    fs.mkdirSync(tmp);
    const record = { session_id: id, created_at: at, updated_at: at, agent_id, metadata };
    fs.writeFileSync(join(tmp, "session.json"), `${JSON.stringify(record, null, 2)}\n`, { flag: "wx" });
    fs.copyFileSync(join(source, "messages.jsonl"), join(tmp, "messages.jsonl"), fs.constants.COPYFILE_FICLONE);
    const index = join(this.#base, "agents", agentKey(agent_id));
    fs.mkdirSync(index, { recursive: true });
    fs.writeFileSync(join(index, id), "", { flag: "wx" });
    fs.renameSync(tmp, join(this.#base, "sessions", id));
    return id;
  }
}

/** The backend's directory name for an agent: a readable slug and the SHA-256 of the id. */
function agentKey(agentId: string): string {
  const slug = agentId
    .toLowerCase()
    .replace(/[^a-z0-9_-]+/g, "_")
    .slice(0, 48);
  return `${slug}.${createHash("sha256").update(agentId).digest("hex")}`;
}

/** Complete lines of JSON as records (a torn last line is left out). */
function parseLines(text: string): MessageRecord[] {
  const end = text.lastIndexOf("\n");
  if (end <= 0) return [];
  return JSON.parse(`[${text.slice(0, end).replaceAll("\n", ",")}]`) as MessageRecord[];
}

/** The number of complete lines of the log, counted in 1 MiB reads. */
function countLines(fd: number): number {
  const buffer = Buffer.alloc(1 << 20);
  let count = 0;
  let position = 0;
  for (;;) {
    const n = fs.readSync(fd, buffer, 0, buffer.length, position);
    if (n === 0) return count;
    for (let at = buffer.indexOf(0x0a); at !== -1 && at < n; at = buffer.indexOf(0x0a, at + 1)) count++;
    position += n;
  }
}

/** The last `n` lines (and a partial one before them), read backwards from the end. */
function tail(fd: number, n: number): string {
  const size = fs.fstatSync(fd).size;
  for (let chunk = 16_384; ; chunk *= 4) {
    const from = Math.max(0, size - chunk);
    const buffer = Buffer.alloc(size - from);
    fs.readSync(fd, buffer, 0, buffer.length, from);
    let at = buffer.length - 1; // the newline that ends the last line
    let seen = 0;
    while (seen < n && at > 0) {
      at = buffer.lastIndexOf(0x0a, at - 1);
      if (at === -1) break;
      seen++;
    }
    if (seen === n) return buffer.toString("utf8", at + 1);
    if (from === 0) return buffer.toString("utf8");
  }
}

function openIfExists(path: string, flags: string | number): number | null {
  try {
    return fs.openSync(path, flags);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
}

function readIfExists(path: string): string | null {
  try {
    return fs.readFileSync(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw error;
  }
}

function notFound(sessionId: string): never {
  throw new Error(`session not found: ${sessionId}`);
}

/**
 * Sessions without messages written straight into the backend's layout (session.json, an empty log, the agent's
 * entry), as an import leaves them but without the agent's listing file (index.slots), which the backend builds from
 * the entries on the agent's first listing or scan: an import takes milliseconds (locks, temporary directory,
 * renames), too long for the 111,000 sessions of the scale rows. Untimed seeding only.
 */
function seedLayout(base: string, records: SessionRecord[]): void {
  const agents = new Map<string, string>();
  for (const r of records) {
    let index = agents.get(r.agent_id);
    if (index === undefined) {
      index = join(base, "agents", agentKey(r.agent_id));
      fs.mkdirSync(index, { recursive: true });
      agents.set(r.agent_id, index);
    }
    const dir = join(base, "sessions", r.session_id);
    fs.mkdirSync(dir, { recursive: true });
    const { session_id, created_at, updated_at, agent_id, metadata } = r;
    const record = { session_id, created_at, updated_at, agent_id, metadata };
    fs.writeFileSync(join(dir, "session.json"), `${JSON.stringify(record, null, 2)}\n`, { flag: "wx" });
    fs.writeFileSync(join(dir, "messages.jsonl"), "", { flag: "wx" });
    fs.writeFileSync(join(index, session_id), "", { flag: "wx" });
  }
}

export function fileTarget(): BenchTarget {
  return {
    name: "file",
    floor: false,
    probe: async () => null,
    versions: async () => ({}),
    async open(side: Side, _count?: boolean, parent = tmpdir()): Promise<Namespace> {
      const dir = fs.mkdtempSync(join(parent, "agentix-bench-"));
      const admin = new FileStorageBackend({ basePath: dir });
      // Without fsync, as the targets are stated (and as the backend defaults).
      const backend = side === "agentix" ? new FileStorageBackend({ basePath: dir, fsync: false }) : undefined;
      return {
        subject: backend ? agentixSubject(backend) : new RawFile(dir),
        ...(backend ? { backend } : {}),
        admin,
        async seedSessions(records: SessionRecord[]) {
          seedLayout(dir, records);
        },
        async drop() {
          await backend?.close();
          await admin.close();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
    },
    close: async () => {},
  };
}
