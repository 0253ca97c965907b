// Hostile input on every backend, beyond the conformance suite's single-tenant hostile ids: two tenants that
// never see each other's data, SQL / Redis-protocol / glob / path strings in every string argument, agent ids
// at and over the limit, a cwd as long as a real path may be, and a 64 MiB message.
import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { Redis } from "ioredis";
import { afterAll, describe, expect, inject, it } from "vitest";
import type { StorageBackend } from "../../src/core/backend.js";
import { AgentixStorageError, SessionNotFoundError, ValidationError } from "../../src/core/errors.js";
import type { JsonObject, SessionRecord } from "../../src/core/types.js";
import type { FileStorageBackend } from "../../src/file.js";
import { jsonDiff } from "../../src/testing/context.js";
import { figure, prototypeSnapshot, subjects } from "./support.js";

const { all, namespace, cleanup } = subjects("hostile");
afterAll(cleanup);

/** A marker in every hostile string of this run, to find anything it may have created outside its namespace. */
const token = `tok${randomUUID().slice(0, 8)}`;
/** SQL, Redis protocol and glob syntax, path traversal: each must be stored and matched as plain text. */
const hostile = [
  `' OR '1'='1 ${token}`,
  `'; DROP TABLE sessions; -- ${token}`,
  `"; DROP SCHEMA public CASCADE; -- ${token}`,
  `$1 $$ ${token} $$; select pg_sleep(10); --`,
  `\\'; DELETE FROM messages; -- ${token}`,
  `*3\r\n$3\r\nDEL\r\n$1\r\n* ${token}`,
  `${token}\r\nFLUSHALL\r\n`,
  `${token}:index:*`,
  `${token}:session:?`,
  `[a-z]* ${token} {x} %_`,
  `../../../${token}`,
  `/tmp/${token}`,
  `..\\..\\${token}`,
  `${token}/./../.`,
];

const sessionsOf = async (b: StorageBackend, agent: string) => (await b.listSessions(agent)).map((s) => s.session_id);

describe.each(all)("$name: hostile input", ({ name, available, open }) => {
  describe.skipIf(!available)(name, () => {
    it("two tenants never see each other's data", async () => {
      const acme = await open("acme");
      const eu = await open("acme.eu"); // a namespace that starts with the other's name
      try {
        const agent = "shared-agent";
        const mine = async (b: StorageBackend, label: string) => {
          const ids = [];
          for (let k = 0; k < 3; k++) {
            const id = await b.createSession(agent, { cwd: "/shared", tenant: label });
            await b.saveMessage(id, "user", `${label} ${k}`);
            ids.push(id);
          }
          return ids;
        };
        const a = await mine(acme, "acme");
        const e = await mine(eu, "eu");
        for (const [self, other, own, theirs] of [
          [acme, eu, a, e],
          [eu, acme, e, a],
        ] as const) {
          expect((await sessionsOf(self, agent)).sort()).toEqual([...own].sort());
          expect((await self.listSessions(agent, { cwd: "/shared" })).map((s) => s.session_id).sort()).toEqual(
            [...own].sort(),
          );
          expect((await self.scanSessions({ agentId: agent })).map((s) => s.session_id)).toEqual([...own].sort());
          for (const id of theirs) {
            expect(await self.getSession(id)).toBeNull();
            await expect(self.loadMessages(id)).rejects.toBeInstanceOf(SessionNotFoundError);
            await expect(self.saveMessage(id, "user", "intruder")).rejects.toBeInstanceOf(SessionNotFoundError);
            await expect(self.forkSession(id)).rejects.toBeInstanceOf(SessionNotFoundError);
            await self.deleteSession(id); // a no-op here: it exists only in the other tenant
          }
          for (const [k, id] of theirs.entries()) {
            expect((await other.loadMessages(id)).map((m) => m.content)).toEqual([
              `${other === acme ? "acme" : "eu"} ${k}`,
            ]);
          }
        }
        // Importing the other tenant's record makes an independent copy: same id, separate lives.
        const record = (await acme.getSession(a[0] as string)) as SessionRecord;
        expect(await eu.importSession(record, await acme.loadMessages(record.session_id))).toBe(true);
        await eu.saveMessage(record.session_id, "user", "only in eu");
        await eu.deleteSession(record.session_id);
        expect((await acme.loadMessages(record.session_id)).map((m) => m.content)).toEqual(["acme 0"]);
        expect(await eu.getSession(record.session_id)).toBeNull();
      } finally {
        await acme.close();
        await eu.close();
      }
    });

    it(`${hostile.length} SQL, protocol, glob and path strings in every string argument are plain data`, async () => {
      const b = await open();
      const prototypes = prototypeSnapshot();
      try {
        const sentinel = await b.createSession(`sentinel-${token}`, { cwd: "/sentinel" });
        await b.saveMessage(sentinel, "user", "untouched");
        const ids = new Map<string, string>();
        for (const text of hostile) {
          const metadata: JsonObject = { cwd: text, [text]: text, nested: { [text]: [text] } };
          const id = await b.createSession(text, metadata);
          ids.set(text, id);
          await b.saveMessage(id, "user", text);
          await b.saveMessage(id, "assistant", { [text]: text, list: [text] });
          expect(jsonDiff((await b.getSession(id))?.metadata, metadata)).toBeNull();
          const messages = await b.loadMessages(id);
          expect(messages.map((m) => m.content)).toEqual([text, { [text]: text, list: [text] }]);
          expect(await sessionsOf(b, text)).toEqual([id]);
          expect((await b.listSessions(text, { cwd: text })).map((s) => s.session_id)).toEqual([id]);
          expect((await b.scanSessions({ agentId: text })).map((s) => s.session_id)).toEqual([id]);
          // As a session id it names nothing; as a role, cursor or import id it is refused.
          expect(await b.getSession(text)).toBeNull();
          await expect(b.loadMessages(text)).rejects.toBeInstanceOf(SessionNotFoundError);
          await expect(b.saveMessage(id, text as never, "x")).rejects.toBeInstanceOf(ValidationError);
          await expect(
            b.listSessions(text, { before: { updated_at: text, session_id: text } as never }),
          ).rejects.toBeInstanceOf(ValidationError);
          const record = (await b.getSession(id)) as SessionRecord;
          await expect(b.importSession({ ...record, session_id: text }, [])).rejects.toBeInstanceOf(ValidationError);
          const fork = await b.forkSession(id);
          expect(await b.loadMessages(fork)).toEqual(messages);
          await b.deleteSession(fork);
        }
        // Each agent sees its own session only; nothing else was touched.
        for (const [text, id] of ids) expect(await sessionsOf(b, text)).toEqual([id]);
        expect((await b.loadMessages(sentinel)).map((m) => m.content)).toEqual(["untouched"]);
        expect(await sessionsOf(b, `sentinel-${token}`)).toEqual([sentinel]);
        expect(prototypeSnapshot()).toBe(prototypes);
        if (name === "redis") await expectRedisKeysInside();
        if (name === "file") expectFilesInside(b as FileStorageBackend);
        figure(`hostile strings ${name}`, {
          strings: hostile.length,
          as: [
            "agentId",
            "metadata key/value",
            "cwd",
            "content",
            "content key",
            "sessionId",
            "role",
            "cursor",
            "import id",
          ],
          sentinelIntact: true,
        });
      } finally {
        await b.close();
      }
    });

    it("agent ids: 256 characters of 3-byte UTF-8 are stored exactly, 257 are refused", async () => {
      const b = await open();
      try {
        const longest = "語".repeat(256); // 768 bytes in UTF-8
        expect(longest).toHaveLength(256);
        const id = await b.createSession(longest, { cwd: longest });
        expect((await b.listSessions(longest, { cwd: longest }))[0]?.agent_id).toBe(longest);
        for (const over of [`${longest}x`, "x".repeat(10_000), "a".repeat(1 << 20)]) {
          await expect(b.createSession(over)).rejects.toBeInstanceOf(ValidationError);
          await expect(b.listSessions(over)).rejects.toBeInstanceOf(ValidationError);
        }
        expect(await sessionsOf(b, longest)).toEqual([id]);
      } finally {
        await b.close();
      }
    });

    // Postgres indexes md5(cwd), not cwd: a btree row holds at most 2704 bytes.
    it("a cwd as long as a Linux path may be (4095 bytes) is stored and listed", async () => {
      const b = await open();
      try {
        let cwd = "";
        while (cwd.length < 4095) cwd += `/${randomBytes(12).toString("base64url")}`;
        cwd = cwd.slice(0, 4095);
        const agent = `long-cwd-${token}`;
        const id = await b.createSession(agent, { cwd });
        expect((await b.listSessions(agent, { cwd })).map((s) => s.session_id)).toEqual([id]);
      } finally {
        await b.close();
      }
    });

    it("a 64 MiB message is stored whole, or refused with a clear error and nothing written", {
      timeout: 180_000,
    }, async () => {
      const b = await open();
      try {
        const id = await b.createSession(`big-${token}`);
        await b.saveMessage(id, "user", "before");
        const before = (await b.getSession(id))?.updated_at;
        // One-byte characters only (the string stays 64 MiB in memory); NUL and "ÿ" (2 bytes in UTF-8) at the end.
        const big = `${"x".repeat(64 * 1024 * 1024 - 2)}\u0000ÿ`;
        const started = Date.now();
        const outcome = await b.saveMessage(id, "assistant", big).then(
          () => "accepted",
          (error: unknown) => error,
        );
        const saveMs = Date.now() - started;
        const messages = await b.loadMessages(id);
        if (outcome === "accepted") {
          expect(messages).toHaveLength(2);
          expect(messages[1]?.content === big).toBe(true);
          expect((await b.getSession(id))?.updated_at).toBe(messages[1]?.timestamp);
        } else {
          expect(outcome).toBeInstanceOf(AgentixStorageError);
          expect(String((outcome as Error).message)).toMatch(/too (large|big|long)|size|limit|exceed/i);
          expect(messages.map((m) => m.content)).toEqual(["before"]);
          expect((await b.getSession(id))?.updated_at).toBe(before);
        }
        await b.saveMessage(id, "user", "after");
        expect((await b.loadMessages(id, { last: 1 }))[0]?.content).toBe("after");
        figure(`64 MiB message ${name}`, {
          outcome: outcome === "accepted" ? "accepted" : String(outcome),
          saveMs,
          rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
        });
      } finally {
        await b.close();
      }
    });
  });
});

/** Every key this run's hostile strings produced is inside the backend's prefix. */
async function expectRedisKeysInside(): Promise<void> {
  const redis = new Redis(inject("redisUrl") as string);
  try {
    const keys: string[] = [];
    let cursor = "0";
    do {
      const [next, found] = await redis.scan(cursor, "MATCH", `*${token}*`, "COUNT", 1000);
      keys.push(...found);
      cursor = next;
    } while (cursor !== "0");
    expect(keys.length).toBeGreaterThan(0);
    for (const key of keys) expect(key.startsWith(`rel-${namespace}-main:`)).toBe(true);
  } finally {
    await redis.quit();
  }
}

/** Nothing named after a hostile string was created outside the backend's directory. */
function expectFilesInside(b: FileStorageBackend): void {
  const base = b.basePath;
  const walk = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
      const path = join(dir, entry.name);
      return entry.isDirectory() ? [path, ...walk(path)] : [path];
    });
  // Two levels up: the test file's temp directory, which ../../../ from inside the backend's layout would reach.
  const outside = walk(dirname(dirname(base))).filter((path) => relative(base, path).startsWith(".."));
  expect(outside.filter((path) => path.includes(token))).toEqual([]);
  expect(existsSync(join(tmpdir(), token))).toBe(false);
}
