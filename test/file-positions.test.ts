// The File backend's position index (src/file/positions.ts): pages at any offset read only their own lines and
// fewer than K others, and are exactly a slice of the list after every kind of edit, whatever state the index
// is in (missing, stale, damaged, lagging), with several processes writing and reading.
import { spawn } from "node:child_process";
import {
  appendFileSync,
  closeSync,
  copyFileSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { checkFileStore } from "../src/cli/doctor/file.js";
import type { MessageRecord, NewMessage } from "../src/core/types.js";
import { bytesRead } from "../src/file/io.js";
import { INDEX, K } from "../src/file/positions.js";
import { FileStorageBackend } from "../src/file.js";

const root = mkdtempSync(join(tmpdir(), "agentix-file-positions-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const fresh = () => mkdtempSync(join(root, "base-"));
const logOf = (base: string, id: string) => join(base, "sessions", id, "messages.jsonl");
const indexOf = (base: string, id: string) => join(base, "sessions", id, INDEX);

/** Messages of varied lengths (one in 7 long, some non-ASCII), so that line starts are not evenly spaced. */
function messages(from: number, n: number, tag = "m"): NewMessage[] {
  return Array.from({ length: n }, (_, k) => {
    const i = from + k;
    const pad = i % 7 === 0 ? "z".repeat(300 + (i % 13) * 50) : "é".repeat(i % 5);
    return { role: i % 2 ? ("assistant" as const) : ("user" as const), content: `${tag}${i} ${pad}` };
  });
}

/** Every page of a few shapes at offsets around the index's entries and elsewhere equals the plain slice. */
async function expectPages(b: FileStorageBackend, id: string, label: string): Promise<void> {
  const all = await b.loadMessages(id);
  const n = all.length;
  const offsets = new Set<number>([0, 1, n - 1, n, n + 3]);
  for (let e = K; e < n + K; e += K) for (const d of [-1, 0, 1]) offsets.add(e + d);
  for (let i = 0; i < 12; i++) offsets.add(Math.floor(Math.random() * (n + 1)));
  for (const [i, offset] of [...offsets].filter((o) => o >= 0).entries()) {
    // Without a limit, a page reads to the end: asked for at a few offsets only, to keep the test quick.
    for (const limit of i % 16 === 0 ? [1, 7, 100, undefined] : [1, 7, 100]) {
      const page = await b.loadMessages(id, limit === undefined ? { offset } : { offset, limit });
      const slice = all.slice(offset, limit === undefined ? undefined : offset + limit);
      if (page.length !== slice.length || JSON.stringify(page) !== JSON.stringify(slice)) {
        expect(page, `${label}: offset ${offset}, limit ${limit}`).toStrictEqual(slice);
      }
    }
  }
}

/** The contents of a page, for short assertions. */
const contents = (page: MessageRecord[]) => page.map((m) => (m.content as string).split(" ")[0]);

describe("FileStorageBackend position index", () => {
  it("serves a deep page from a cold backend reading only about the page's lines", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    for (let i = 0; i < 20_000; i += 1000) await b.saveMessages(id, messages(i, 1000));
    expect(statSync(logOf(base, id)).size).toBeGreaterThan(2_000_000);
    // The first deep read builds the index (one scan, as far as the page), every later one uses it.
    expect(contents(await b.loadMessages(id, { offset: 19_900, limit: 2 }))).toEqual(["m19900", "m19901"]);
    expect(existsSync(indexOf(base, id))).toBe(true);
    for (const offset of [19_500, 10_007, 15_031, 5_000]) {
      const cold = new FileStorageBackend({ basePath: base });
      const before = bytesRead.total;
      expect(contents(await cold.loadMessages(id, { offset, limit: 100 }))).toEqual(
        Array.from({ length: 100 }, (_, k) => `m${offset + k}`),
      );
      // A page of 100 is ~15 KiB; with fewer than K lines skipped, the log's tail and the index's bytes: < 64 KiB.
      expect(bytesRead.total - before).toBeLessThan(64 << 10);
      await cold.close();
    }
    await b.close();
  });

  it("tails, counts, pages deep and iterates a 40 MB log of 1 MiB lines, never reading over 4 MiB at once", async () => {
    // The 5 GiB log (over Node's Buffer limit) is test/reliability/file-huge.test.ts; this is the same paths, small.
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    const big = "y".repeat(1 << 20);
    for (let i = 0; i < 40; i += 8) {
      await b.saveMessages(
        id,
        Array.from({ length: 8 }, (_, k) => ({ role: "user" as const, content: `${i + k} ${big}` })),
      );
    }
    rmSync(join(base, "sessions", id, "messages.count")); // counted from the log itself
    const fresh2 = new FileStorageBackend({ basePath: base });
    bytesRead.largest = 0;
    expect(contents(await fresh2.loadMessages(id, { last: 3 }))).toEqual(["37", "38", "39"]);
    expect(await fresh2.countMessages(id)).toBe(40);
    expect(contents(await fresh2.loadMessages(id, { offset: 35, limit: 2 }))).toEqual(["35", "36"]);
    let n = 0;
    for await (const m of fresh2.iterateMessages(id, { batchSize: 3 })) expect(contents([m])).toEqual([`${n++}`]);
    expect(n).toBe(40);
    expect(bytesRead.largest).toBeLessThanOrEqual(4 << 20);
    await fresh2.close();
    await b.close();
  });

  it("pages equal a plain slice after appends, batches, truncations, replaces, pops, forks and deletes", {
    timeout: 120_000,
  }, async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessages(id, messages(0, 700));
    await expectPages(b, id, "batch");
    for (const m of messages(700, 40)) await b.saveMessage(id, m.role, m.content);
    await expectPages(b, id, "single appends");
    await b.saveMessages(id, messages(740, 333), { expectedLength: 740 });
    await expectPages(b, id, "saveMessages with expectedLength");
    await b.replaceMessages(id, 500, []);
    await expectPages(b, id, "truncation");
    await b.replaceMessages(id, 321, messages(0, 90, "r"));
    await expectPages(b, id, "suffix replace");
    await b.replaceMessages(id, 0, messages(0, 400, "full"));
    await expectPages(b, id, "full replace");
    for (let i = 0; i < 40; i++) await b.popMessage(id);
    await expectPages(b, id, "pops");
    await b.saveMessages(id, messages(0, 200, "after"));
    await expectPages(b, id, "appends after pops");
    const fork = await b.forkSession(id, { length: 300 });
    await expectPages(b, fork, "fork with length");
    await b.saveMessages(fork, messages(0, 50, "f"));
    await expectPages(b, fork, "fork, appended");
    await expectPages(b, id, "fork source");
    // Deleted and made again under the same id: nothing of the old index is used.
    await b.deleteSession(fork);
    await b.createSession("agent", null, { sessionId: fork });
    await b.saveMessages(fork, messages(0, 130, "again"));
    await expectPages(b, fork, "deleted, made again");
    // A fresh backend (no entries remembered) reads the same pages.
    const other = new FileStorageBackend({ basePath: base });
    await expectPages(other, id, "another backend");
    await other.close();
    await b.close();
  });

  it("a torn last line: ignored by pages, cut off by the next append, the index carried over", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessages(id, messages(0, 300));
    await expectPages(b, id, "before");
    appendFileSync(logOf(base, id), '{"role":"user","content":"torn');
    await expectPages(b, id, "torn");
    const ino = statSync(logOf(base, id)).ino;
    await b.saveMessages(id, messages(300, 70));
    expect(statSync(logOf(base, id)).ino).not.toBe(ino); // repaired: a new log
    expect(readFileSync(indexOf(base, id), "latin1")).toContain(`"ino":${statSync(logOf(base, id)).ino}`);
    await expectPages(b, id, "repaired");
    expect(await b.countMessages(id)).toBe(370);
    await b.close();
  });

  it("gives right answers from a missing, damaged, stale, torn or lagging index, and builds it again", {
    timeout: 120_000,
  }, async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessages(id, messages(0, 2000));
    await expectPages(b, id, "built");
    const twin = await b.createSession("agent");
    await b.saveMessages(twin, messages(0, 2000));
    await b.loadMessages(twin, { offset: 1999, limit: 1 });
    const good = readFileSync(indexOf(base, id));
    const damage: Array<[string, () => void]> = [
      ["missing", () => rmSync(indexOf(base, id))],
      ["garbage", () => writeFileSync(indexOf(base, id), "garbage\n".repeat(500))],
      ["empty", () => writeFileSync(indexOf(base, id), "")],
      ["torn", () => writeFileSync(indexOf(base, id), good.subarray(0, good.length - 45))],
      ["header only", () => writeFileSync(indexOf(base, id), good.subarray(0, 64))],
      [
        "an entry's offset changed",
        () => {
          const bytes = Buffer.from(good);
          bytes[64 + 32 * 20 + 11] = bytes[64 + 32 * 20 + 11] === 0x31 ? 0x32 : 0x31;
          writeFileSync(indexOf(base, id), bytes);
        },
      ],
      [
        "entries swapped",
        () => {
          const bytes = Buffer.from(good);
          bytes.copy(bytes, 64 + 32 * 10, 64 + 32 * 11, 64 + 32 * 12);
          writeFileSync(indexOf(base, id), bytes);
        },
      ],
      ["another session's", () => copyFileSync(indexOf(base, twin), indexOf(base, id))],
      [
        "the log edited in place by hand (same inode, lines shifted)",
        () => {
          // The first line rewritten 5 bytes longer, the rest moved: every later line start moves.
          const log = readFileSync(logOf(base, id), "utf8");
          const first = log.indexOf("\n");
          const line = JSON.parse(log.slice(0, first)) as MessageRecord;
          const fd = openSync(logOf(base, id), "r+");
          writeSync(fd, `${JSON.stringify({ ...line, content: `${line.content}12345` })}${log.slice(first)}`, 0);
          closeSync(fd);
          rmSync(join(base, "sessions", id, "messages.count"));
        },
      ],
    ];
    for (const [what, harm] of damage) {
      writeFileSync(indexOf(base, id), good);
      harm();
      // A fresh backend each time: nothing remembered from a good index.
      const reader = new FileStorageBackend({ basePath: base });
      await expectPages(reader, id, what);
      await reader.close();
    }
    // A stale index (of the log before an edit) put back after the edit.
    await expectPages(b, id, "again");
    const stale = readFileSync(indexOf(base, id));
    await b.replaceMessages(id, 1500, messages(0, 10, "new"));
    writeFileSync(indexOf(base, id), stale);
    const reader = new FileStorageBackend({ basePath: base });
    await expectPages(reader, id, "stale");
    expect(readFileSync(indexOf(base, id), "latin1")).toContain(`"ino":${statSync(logOf(base, id)).ino}`);
    // Lagging: appends add no entry; the next deep read adds them.
    await b.saveMessages(id, messages(0, 500, "late"));
    const size = statSync(indexOf(base, id)).size;
    await expectPages(reader, id, "lagging");
    expect(statSync(indexOf(base, id)).size).toBeGreaterThan(size);
    await reader.close();
    await b.close();
  });

  it("agentix doctor reports a damaged index and removes it; the next deep read builds it again", async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessages(id, messages(0, 500));
    await b.loadMessages(id, { offset: 450, limit: 1 });
    expect(checkFileStore(base, false)).toEqual([]);
    const bytes = readFileSync(indexOf(base, id));
    bytes[64 + 32 * 3 + 2] = 0x66;
    writeFileSync(indexOf(base, id), bytes);
    const found = checkFileStore(base, false);
    expect(found).toHaveLength(1);
    expect(found[0]?.problem).toMatch(/messages\.index: entry 4 does not check out/);
    expect(existsSync(indexOf(base, id))).toBe(true);
    const repaired = checkFileStore(base, true);
    expect(repaired[0]?.repaired).toMatch(/removed/);
    expect(existsSync(indexOf(base, id))).toBe(false);
    expect(checkFileStore(base, true)).toEqual([]);
    await expectPages(new FileStorageBackend({ basePath: base }), id, "after doctor");
    expect(existsSync(indexOf(base, id))).toBe(true);
    expect(checkFileStore(base, false)).toEqual([]);
    // A log that doctor rewrites (an invalid line quarantined) gets no index of the old log.
    appendFileSync(logOf(base, id), "garbage\n");
    checkFileStore(base, true);
    expect(existsSync(indexOf(base, id))).toBe(false);
    await expectPages(b, id, "after the log's repair");
    await b.close();
  });

  it("stays exact while 3 processes append and 2 read deep pages and damage the index", {
    timeout: 120_000,
  }, async () => {
    const base = fresh();
    const b = new FileStorageBackend({ basePath: base });
    const id = await b.createSession("agent");
    await b.saveMessages(id, messages(0, 1000, "seed"));
    const script = join(base, "child.mts");
    writeFileSync(
      script,
      `import { rmSync, writeFileSync } from "node:fs";
import { FileStorageBackend } from ${JSON.stringify(fileURLToPath(new URL("../src/file.ts", import.meta.url)))};
const [role, basePath, id, n] = process.argv.slice(2);
const b = new FileStorageBackend({ basePath });
const pages = [];
for (let i = 0; i < Number(n); i++) {
  if (role === "writer") {
    const size = 1 + (i % 23);
    await b.saveMessages(id, Array.from({ length: size }, (_, k) => ({ role: "user", content: \`w\${process.pid}-\${i}-\${k}\` })));
  } else {
    const length = await b.countMessages(id);
    const offset = Math.floor(Math.random() * length);
    pages.push({ offset, length, contents: (await b.loadMessages(id, { offset, limit: 50 })).map((m) => m.content) });
    if (i % 40 === 0) rmSync(basePath + "/sessions/" + id + "/messages.index", { force: true });
    if (i % 40 === 20) writeFileSync(basePath + "/sessions/" + id + "/messages.index", "garbage");
  }
}
console.log(JSON.stringify(pages));
`,
    );
    const run = (role: string, n: number) =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ["--import", "tsx", script, role, base, id, String(n)], {
          stdio: ["ignore", "pipe", "pipe"],
        });
        // Decoded at the end: a chunk of the pipe may end inside a character.
        const out: Buffer[] = [];
        let err = "";
        child.stdout.on("data", (c: Buffer) => out.push(c));
        child.stderr.on("data", (c: Buffer) => {
          err += c.toString();
        });
        child.on("exit", (code) =>
          code === 0
            ? resolve(Buffer.concat(out).toString("utf8"))
            : reject(new Error(`${role} exited ${code}: ${err}`)),
        );
      });
    const outputs = await Promise.all([
      run("writer", 150),
      run("writer", 150),
      run("writer", 150),
      run("reader", 200),
      run("reader", 200),
    ]);
    const all = (await b.loadMessages(id)).map((m) => m.content);
    expect(all).toHaveLength(1000 + 3 * writtenPerWriter());
    // Appends only: every page read at any time is a slice of the final list, as long as the list was then.
    let pages = 0;
    for (const out of outputs.slice(3)) {
      const read = JSON.parse(out) as Array<{ offset: number; length: number; contents: unknown[] }>;
      for (const { offset, length, contents: page } of read) {
        expect(page.length, `offset ${offset}`).toBeGreaterThanOrEqual(Math.min(50, length - offset));
        const want = all.slice(offset, offset + page.length);
        const at = page.findIndex((c, i) => c !== want[i]);
        expect(
          at === -1 ? [] : [at, page[at], want[at], page.slice(at, at + 3), want.slice(at, at + 3)],
          `offset ${offset}`,
        ).toEqual([]);
        pages++;
      }
    }
    expect(pages).toBe(400);
    await expectPages(b, id, "after the processes");
    await b.close();
  });
});

/** The messages each writer above appends: batches of 1 + (i % 23) messages, 150 of them. */
function writtenPerWriter(): number {
  let total = 0;
  for (let i = 0; i < 150; i++) total += 1 + (i % 23);
  return total;
}
