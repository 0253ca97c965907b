// The File store with damaged files: the damage stays with its session, named (session, file, line).
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CorruptSessionError } from "../src/core/errors.js";
import { FileStorageBackend } from "../src/file.js";

const root = mkdtempSync(join(tmpdir(), "agentix-file-damage-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const fresh = () => mkdtempSync(join(root, "base-"));

/** A store with three sessions of agent "a" (two messages each), one of them damaged by `damage`. */
async function storeWithDamage(damage: (dir: string) => void) {
  const reported: CorruptSessionError[] = [];
  const b = new FileStorageBackend({ basePath: fresh(), onCorruptSession: (e) => reported.push(e) });
  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const id = await b.createSession("a", { i });
    await b.saveMessage(id, "user", `hello ${i}`);
    await b.saveMessage(id, "assistant", `hi ${i}`);
    ids.push(id);
  }
  const [bad, ...good] = ids as [string, string, string];
  damage(join(b.basePath, "sessions", bad));
  return { b, bad, good, reported };
}

const damages: Array<[string, (dir: string) => void, RegExp, number | undefined]> = [
  ["a complete line that is not JSON", (d) => appendFileSync(join(d, "messages.jsonl"), "garbage\n"), /jsonl$/, 3],
  [
    "a JSON line that is not a message, in the middle",
    (d) => {
      const lines = readFileSync(join(d, "messages.jsonl"), "utf8").split("\n");
      writeFileSync(join(d, "messages.jsonl"), [lines[0], '{"role":"robot"}', lines[1], ""].join("\n"));
    },
    /jsonl$/,
    2,
  ],
  [
    "a session.json that is not JSON",
    (d) => writeFileSync(join(d, "session.json"), "{ torn"),
    /session\.json$/,
    undefined,
  ],
  [
    "a session.json without an agent",
    (d) => writeFileSync(join(d, "session.json"), JSON.stringify({ session_id: "x" })),
    /session\.json$/,
    undefined,
  ],
];

describe.each(damages)("FileStorageBackend with %s", (_name, damage, file, line) => {
  it("lists and scans the other sessions, reporting the damaged one by id, file and line", async () => {
    const { b, bad, good, reported } = await storeWithDamage(damage);
    const listed = (await b.listSessions("a")).map((r) => r.session_id);
    // Damage before the last line is found by the reads that read it, not by a listing (which reads the last).
    const middle = line === 2;
    const expected = middle ? [bad, ...good] : good;
    expect(listed.sort()).toEqual([...expected].sort());
    const scanned = (await b.scanSessions()).map((r) => r.session_id);
    expect(scanned.sort()).toEqual([...expected].sort());
    for (const id of good) {
      expect(await b.loadMessages(id)).toHaveLength(2);
      expect(await b.getSession(id)).not.toBeNull();
    }
    expect(reported.length).toBe(middle ? 0 : 2);
    for (const e of reported) {
      expect(e).toBeInstanceOf(CorruptSessionError);
      expect(e.sessionId).toBe(bad);
      expect(e.file).toMatch(file);
      expect(e.line).toBe(line);
      expect(e.message).toContain(bad);
    }
    await b.close();
  });

  it("fails the damaged session's own reads and forks with CorruptSessionError, and still deletes it", async () => {
    const { b, bad } = await storeWithDamage(damage);
    // A damaged session.json leaves the log readable: the calls that need the record fail.
    const read = line === undefined ? b.getSession(bad) : b.loadMessages(bad);
    const error = await read.catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CorruptSessionError);
    expect((error as CorruptSessionError).sessionId).toBe(bad);
    expect((error as CorruptSessionError).file).toMatch(file);
    expect((error as CorruptSessionError).line).toBe(line);
    await expect(b.forkSession(bad)).rejects.toBeInstanceOf(CorruptSessionError);
    // No fork was left behind, complete or not.
    expect(readdirSync(join(b.basePath, "sessions"))).toHaveLength(3);
    await b.deleteSession(bad);
    expect(existsSync(join(b.basePath, "sessions", bad))).toBe(false);
    expect(await b.getSession(bad)).toBeNull();
    expect(await b.listSessions("a")).toHaveLength(2);
    await b.close();
  });
});

describe("FileStorageBackend damage reporting", () => {
  it("warns once per damaged session by default", async () => {
    const b = new FileStorageBackend({ basePath: fresh() });
    const id = await b.createSession("a");
    writeFileSync(join(b.basePath, "sessions", id, "session.json"), "nope");
    const warnings: Error[] = [];
    const listener = (w: Error) => warnings.push(w);
    process.on("warning", listener);
    try {
      expect(await b.listSessions("a")).toEqual([]);
      expect(await b.listSessions("a")).toEqual([]);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off("warning", listener);
    }
    expect(warnings.map((w) => w.message)).toEqual([expect.stringContaining(id)]);
    await b.close();
  });

  it("a fork of a session with a damaged line copies nothing", async () => {
    const b = new FileStorageBackend({ basePath: fresh() });
    const id = await b.createSession("a");
    await b.saveMessages(id, [
      { role: "user", content: "1" },
      { role: "user", content: "2" },
    ]);
    await b.saveMessage(id, "user", "3");
    const log = join(b.basePath, "sessions", id, "messages.jsonl");
    const lines = readFileSync(log, "utf8").split("\n");
    writeFileSync(log, [lines[0], lines[1], '{"role":"user","content":1}', lines[2], ""].join("\n"));
    await expect(b.forkSession(id)).rejects.toThrow(/line 3/);
    // A fork of the valid prefix is fine.
    const fork = await b.forkSession(id, { length: 2 });
    expect((await b.loadMessages(fork)).map((m) => m.content)).toEqual(["1", "2"]);
    expect(await b.listSessions("a")).toHaveLength(2);
    await b.close();
  });
});

describe("FileStorageBackend directories removed by hand", () => {
  it("makes locks/, tmp/, sessions/ and the agent index again on demand, on the same backend", async () => {
    const b = new FileStorageBackend({ basePath: fresh() });
    const id = await b.createSession("a");
    await b.saveMessage(id, "user", "1");
    for (const dir of ["locks", "tmp"]) rmSync(join(b.basePath, dir), { recursive: true });
    await b.saveMessage(id, "user", "2");
    await b.replaceMessages(id, 0, [{ role: "user", content: "x" }]);
    expect(await b.loadMessages(id)).toHaveLength(1);
    rmSync(join(b.basePath, "agents"), { recursive: true });
    rmSync(join(b.basePath, "locks"), { recursive: true });
    rmSync(join(b.basePath, "tmp"), { recursive: true });
    const other = await b.createSession("a");
    expect((await b.listSessions("a")).map((r) => r.session_id)).toContain(other);
    await b.deleteSession(id);
    rmSync(join(b.basePath, "sessions"), { recursive: true });
    rmSync(join(b.basePath, "locks"), { recursive: true });
    const third = await b.createSession("b");
    await b.saveMessage(third, "user", "3");
    expect(await b.loadMessages(third)).toHaveLength(1);
    await b.close();
  });
});
