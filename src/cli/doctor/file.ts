// `agentix doctor` on a File store: what is damaged, and (with repair) the damage quarantined next to its session,
// never deleted; the agent index (entries and listing files) rebuilt; stale locks and temporary files removed.
import * as fs from "node:fs";
import { join } from "node:path";
import { isSessionId } from "../../core/validation.js";
import { AgentIndex } from "../../file/agents.js";
import { DamagedFile, parseMessage } from "../../file/damage.js";
import { ifExists, withFile, writeAll } from "../../file/io.js";
import { LineReader } from "../../file/lines.js";
import { withLock } from "../../file/lock.js";
import { COUNT, committedEnd, LOG } from "../../file/log.js";
import { INDEX, indexProblem } from "../../file/positions.js";
import { agentKey, META, metaJson, readStored, settledRecord } from "../../file/session.js";
import type { Finding } from "./report.js";

const LOCK_STALE_MS = 60_000;
const TMP_STALE_MS = 3_600_000;

/** Checks (and with `repair`, repairs) the File store at `base`. */
export function checkFileStore(base: string, repair: boolean): Finding[] {
  const findings: Finding[] = [];
  const found = (where: string, problem: string, fix: () => string) => {
    findings.push({ where, problem, repaired: repair ? fix() : undefined });
  };
  const stamp = new Date().toISOString().replaceAll(":", "-");
  for (const dir of ["sessions", "agents", "locks", "tmp"]) {
    if (!fs.existsSync(join(base, dir))) {
      found(`${dir}/`, "missing", () => {
        fs.mkdirSync(join(base, dir), { recursive: true });
        return "made";
      });
    }
  }
  const lock = <T>(sessionId: string, run: () => T): T =>
    withLock(join(base, "locks", `${sessionId}.lock`), base, sessionId, run);
  const agents = new Map<string, string>(); // agent key → agent id, of the sessions in place
  const sessionsDir = join(base, "sessions");
  for (const id of (ifExists(() => fs.readdirSync(sessionsDir)) ?? []).filter(isSessionId)) {
    const dir = join(sessionsDir, id);
    let agentId: string;
    try {
      const stored = readStored(dir, id);
      if (stored === null) throw new DamagedFile(join(dir, "session.json"), "missing");
      agentId = stored.agent_id;
    } catch (error) {
      if (!(error instanceof DamagedFile)) throw error;
      // Nothing says whose the session is: the whole directory is moved aside, out of every listing.
      found(`session ${id}`, `${error.file}: ${error.message}`, () => {
        const aside = `${dir}.corrupt-${stamp}`;
        lock(id, () => fs.renameSync(dir, aside));
        return `moved to ${aside}`;
      });
      continue;
    }
    agents.set(agentKey(agentId), agentId);
    checkLog(id, dir, stamp, found, lock);
    const entry = join(base, "agents", agentKey(agentId), id);
    if (!fs.existsSync(entry)) {
      found(`session ${id}`, `no index entry (${entry})`, () => {
        fs.mkdirSync(join(base, "agents", agentKey(agentId)), { recursive: true });
        fs.writeFileSync(entry, "");
        return "entry made (slot: see the listing file)";
      });
    }
  }
  const index = new AgentIndex({
    base,
    fsync: false,
    read: (id) => {
      try {
        return readStored(join(sessionsDir, id), id);
      } catch {
        return null;
      }
    },
    lock: (name, run) => withLock(join(base, "locks", name), base, name, run),
    lockSession: lock,
    syncDir: () => {},
  });
  for (const key of ifExists(() => fs.readdirSync(join(base, "agents"))) ?? []) {
    const agentDir = join(base, "agents", key);
    const agentId = agents.get(key);
    for (const id of fs.readdirSync(agentDir).filter(isSessionId)) {
      let owner: string | undefined;
      try {
        owner = readStored(join(sessionsDir, id), id)?.agent_id;
      } catch {
        owner = undefined;
      }
      if (owner === undefined || agentKey(owner) !== key) {
        found(`agents/${key}/${id}`, "an index entry without a session of this agent", () => {
          fs.rmSync(join(agentDir, id), { force: true });
          return "removed (an entry holds no data)";
        });
      }
    }
    if (agentId === undefined) continue;
    const problem = index.problem(agentId);
    if (problem !== null) {
      found(`agents/${key}`, problem, () => {
        const damaged = problem.startsWith("a damaged");
        const aside = damaged ? join(agentDir, `index.slots.corrupt-${stamp}`) : undefined;
        const n = index.rebuild(agentId, aside);
        return `listing file rebuilt (${n} sessions)${aside ? `, the old one moved to ${aside}` : ""}`;
      });
    }
  }
  const now = Date.now();
  for (const [dir, age, what] of [
    ["locks", LOCK_STALE_MS, "a stale lock"],
    ["tmp", TMP_STALE_MS, "a stale temporary file"],
  ] as const) {
    for (const name of ifExists(() => fs.readdirSync(join(base, dir))) ?? []) {
      const path = join(base, dir, name);
      const mtime = fs.statSync(path, { throwIfNoEntry: false })?.mtimeMs ?? now;
      if (mtime < now - age) {
        found(`${dir}/${name}`, what, () => {
          fs.rmSync(path, { recursive: true, force: true });
          return "removed";
        });
      }
    }
  }
  return findings;
}

/** The log's invalid lines and torn tail; repaired by moving them to `messages.jsonl.corrupt-<time>`. */
function checkLog(
  id: string,
  dir: string,
  stamp: string,
  found: (where: string, problem: string, fix: () => string) => void,
  lock: <T>(sessionId: string, run: () => T) => T,
): void {
  const log = join(dir, LOG);
  const scan = () =>
    withFile(log, "r", (fd) => {
      const size = fs.fstatSync(fd).size;
      const end = committedEnd(fd, size);
      const bad: number[] = [];
      const reader = new LineReader(fd, 0, end);
      for (let n = 1, line = reader.next(); line !== undefined; n++, line = reader.next()) {
        try {
          parseMessage(line.toString("utf8"), undefined);
        } catch {
          bad.push(n);
        }
      }
      return { bad, torn: size - end };
    });
  const seen = scan();
  if (seen === null) {
    found(`session ${id}`, `${log}: missing`, () => {
      lock(id, () => fs.writeFileSync(log, "", { flag: "wx" }));
      return "an empty log made";
    });
    return;
  }
  if (seen.bad.length === 0 && seen.torn === 0) {
    const problem = withFile(log, "r", (fd) => {
      const { size, ino } = fs.fstatSync(fd);
      return indexProblem(dir, { fd, ino, end: committedEnd(fd, size) });
    });
    if (problem) {
      found(`session ${id}`, `${join(dir, INDEX)}: ${problem}`, () => {
        lock(id, () => fs.rmSync(join(dir, INDEX), { force: true }));
        return "removed (a hint, made again by the next deep read)";
      });
    }
    return;
  }
  const what = [
    seen.bad.length > 0 ? `invalid line${seen.bad.length > 1 ? "s" : ""} ${seen.bad.join(", ")}` : "",
    seen.torn > 0 ? `a torn tail of ${seen.torn} bytes (ignored by readers)` : "",
  ].filter(Boolean);
  found(`session ${id}`, `${log}: ${what.join("; ")}`, () =>
    lock(id, () => {
      const aside = `${log}.corrupt-${stamp}`;
      const tmp = `${log}.repair-${stamp}`;
      withFile(log, "r", (fd) => {
        const size = fs.fstatSync(fd).size;
        const end = committedEnd(fd, size);
        const out = fs.openSync(tmp, "wx");
        const quarantine = fs.openSync(aside, "a");
        try {
          const reader = new LineReader(fd, 0, end);
          for (let line = reader.next(); line !== undefined; line = reader.next()) {
            let ok = true;
            try {
              parseMessage(line.toString("utf8"), undefined);
            } catch {
              ok = false;
            }
            // A kept line that continued a batch whose end was cut away ends it.
            const text = ok ? line.toString("utf8").replace(/ $/, "") : line.toString("utf8");
            writeAll(ok ? out : quarantine, Buffer.from(`${text}\n`));
          }
          if (size > end) {
            const torn = Buffer.alloc(size - end);
            fs.readSync(fd, torn, 0, torn.length, end);
            writeAll(quarantine, torn);
          }
        } finally {
          fs.closeSync(out);
          fs.closeSync(quarantine);
        }
      });
      // The position index of the old log goes first: it is made again for the new one when needed.
      fs.rmSync(join(dir, INDEX), { force: true });
      // A session.json pending on the old log's inode is written plain first (see src/file/session.ts).
      const settled = settledRecord(dir, id);
      if (settled) {
        fs.writeFileSync(`${tmp}.meta`, metaJson(settled));
        fs.renameSync(`${tmp}.meta`, join(dir, META));
      }
      fs.renameSync(tmp, log);
      // The count record is a cache of the old log's: it is not trusted for a new log, and is written again.
      fs.rmSync(join(dir, COUNT), { force: true });
      return `moved to ${aside}`;
    }),
  );
}
