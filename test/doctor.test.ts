// `agentix doctor` on a File store damaged in each of the ways issue 19 lists, and on SQLite.
import { execFile } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { checkFileStore } from "../src/cli/doctor/file.js";
import { checkSqliteStore } from "../src/cli/doctor/sqlite.js";
import { agentKey } from "../src/file/session.js";
import { FileStorageBackend } from "../src/file.js";

const root = mkdtempSync(join(tmpdir(), "agentix-doctor-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const CLI = fileURLToPath(new URL("../src/cli/index.ts", import.meta.url));

describe("agentix doctor on a File store", () => {
  it("finds each kind of damage, repairs it without deleting data, and finds nothing the second time", async () => {
    const base = mkdtempSync(join(root, "file-"));
    const b = new FileStorageBackend({ basePath: base });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const id = await b.createSession("a", { i });
      await b.saveMessages(id, [
        { role: "user", content: `q${i}` },
        { role: "assistant", content: `a${i}` },
      ]);
      ids.push(id);
    }
    const [badLine, badMeta, torn, noEntry, fine] = ids as [string, string, string, string, string];
    const s = (id: string, f: string) => join(base, "sessions", id, f);
    appendFileSync(s(badLine, "messages.jsonl"), "garbage\n");
    writeFileSync(s(badMeta, "session.json"), "{ torn");
    appendFileSync(s(torn, "messages.jsonl"), '{"role":"user","con');
    const agentDir = join(base, "agents", agentKey("a"));
    rmSync(join(agentDir, noEntry));
    writeFileSync(join(agentDir, "0190aaaa-0000-7000-8000-000000000000"), ""); // an entry without a session
    const slots = readFileSync(join(agentDir, "index.slots"));
    slots.write("XXXX", 10, "latin1");
    writeFileSync(join(agentDir, "index.slots"), slots);
    const old = new Date(Date.now() - 2 * 3_600_000);
    mkdirSync(join(base, "locks", `${fine}.lock`));
    utimesSync(join(base, "locks", `${fine}.lock`), old, old);
    writeFileSync(join(base, "tmp", "left-by-a-crash"), "x");
    utimesSync(join(base, "tmp", "left-by-a-crash"), old, old);

    const found = checkFileStore(base, false);
    const text = found.map((f) => `${f.where}: ${f.problem}`).join("\n");
    expect(text).toContain(`session ${badLine}: ${s(badLine, "messages.jsonl")}: invalid line 3`);
    expect(text).toContain(`session ${badMeta}: ${s(badMeta, "session.json")}: not JSON`);
    expect(text).toMatch(new RegExp(`session ${torn}: .*a torn tail of 19 bytes`));
    expect(text).toContain(`session ${noEntry}: no index entry`);
    expect(text).toContain("an index entry without a session");
    expect(text).toContain("a damaged listing file");
    expect(text).toContain("a stale lock");
    expect(text).toContain("a stale temporary file");
    expect(found.every((f) => f.repaired === undefined)).toBe(true);

    const repaired = checkFileStore(base, true);
    expect(repaired.length).toBe(found.length);
    expect(repaired.every((f) => f.repaired !== undefined)).toBe(true);
    expect(checkFileStore(base, false)).toEqual([]);

    // Nothing was deleted: the bad line, the torn tail and the damaged session are kept next to their session.
    const aside = (id: string) => readdirSync(join(base, "sessions", id)).find((n) => n.includes(".corrupt-"));
    expect(readFileSync(join(base, "sessions", badLine, aside(badLine) as string), "utf8")).toBe("garbage\n");
    expect(readFileSync(join(base, "sessions", torn, aside(torn) as string), "utf8")).toBe('{"role":"user","con');
    const moved = readdirSync(join(base, "sessions")).find((n) => n.startsWith(`${badMeta}.corrupt-`)) as string;
    expect(readFileSync(join(base, "sessions", moved, "session.json"), "utf8")).toBe("{ torn");
    // And the store works: every other session listed and readable, appendable.
    const b2 = new FileStorageBackend({ basePath: base });
    expect((await b2.listSessions("a")).map((r) => r.session_id).sort()).toEqual([badLine, torn, noEntry, fine].sort());
    expect(await b2.loadMessages(badLine)).toHaveLength(2);
    await b2.saveMessage(torn, "user", "after");
    expect(await b2.countMessages(torn)).toBe(3);
    await b.close();
    await b2.close();
  });

  it("runs as `agentix doctor [--repair]`, exit code 1 while problems are left", async () => {
    const base = mkdtempSync(join(root, "cli-"));
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("a");
    await b.saveMessage(id, "user", "x");
    appendFileSync(join(base, "sessions", id, "messages.jsonl"), "{}\n");
    await b.close();
    const run = (...args: string[]) =>
      promisify(execFile)(process.execPath, ["--import", "tsx", CLI, "--storage", base, "doctor", ...args]).then(
        (r) => ({ code: 0, stdout: r.stdout }),
        (e: { code: number; stdout: string }) => ({ code: e.code, stdout: e.stdout }),
      );
    const checked = await run();
    expect(checked.code).toBe(1);
    expect(checked.stdout).toContain("invalid line 2");
    expect(checked.stdout).toContain("run with --repair");
    expect((await run("--repair")).code).toBe(0);
    expect(await run()).toEqual({ code: 0, stdout: `File store ${base}: no problems found\n` });
  }, 60_000);
});

describe("agentix doctor on a SQLite store", () => {
  it("runs integrity_check and foreign_key_check", async () => {
    const { SqliteStorageBackend } = await import("../src/sqlite.js");
    const path = join(root, "store.db");
    const b = new SqliteStorageBackend({ path });
    await b.saveMessage(await b.createSession("a"), "user", "x");
    await b.close();
    expect(checkSqliteStore(path)).toEqual([]);
    expect(existsSync(path)).toBe(true);
  });
});
