// The File store's agent index (src/file/listing.ts, src/file/agents.ts): listings and scans by agent that read
// their page, stay exact while other processes write, and heal when the index is missing, damaged or behind.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { compareSessions } from "../src/core/records.js";
import type { SessionRecord } from "../src/core/types.js";
import { encodeSlot, newestSlots, readSlots, SLOT_BYTES } from "../src/file/listing.js";
import { agentKey } from "../src/file/session.js";
import { FileStorageBackend } from "../src/file.js";

const root = mkdtempSync(join(tmpdir(), "agentix-file-listing-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const fresh = () => mkdtempSync(join(root, "base-"));
const appender = fileURLToPath(new URL("./fixtures/file-appender.ts", import.meta.url));
const key = (r: SessionRecord) => `${r.updated_at} ${r.session_id}`;
const slots = (b: FileStorageBackend, agent: string) => join(b.basePath, "agents", agentKey(agent), "index.slots");

/** `n` sessions of agent "a" made by import, the i-th updated at second i, in a new store. */
async function store(n: number) {
  const reported: string[] = [];
  const b = new FileStorageBackend({ basePath: fresh(), onCorruptSession: (e) => reported.push(e.sessionId) });
  const records: SessionRecord[] = [];
  for (let i = 0; i < n; i++) {
    const at = new Date(Date.UTC(2026, 0, 1, 0, 0, i % 7 === 0 ? 0 : i)).toISOString(); // some exact ties
    const id = await b.createSession("a", { i });
    const r = { session_id: id, agent_id: "a", created_at: at, updated_at: at, metadata: { i } };
    await b.deleteSession(id);
    await b.importSession(r, []);
    records.push(r);
  }
  return { b, records: records.sort(compareSessions), reported };
}

describe("FileStorageBackend listings from the agent index", () => {
  it("reads the sessions of its page only (the others are never opened), also through before pages", async () => {
    const { b, records, reported } = await store(120);
    // Every session after the first two pages is damaged: a listing that read it would report it.
    for (const r of records.slice(40)) writeFileSync(join(b.basePath, "sessions", r.session_id, "session.json"), "x");
    const first = await b.listSessions("a", { limit: 20 });
    expect(first).toEqual(records.slice(0, 20));
    expect(await b.listSessions("a", { limit: 20, before: first.at(-1) as SessionRecord })).toEqual(
      records.slice(20, 40),
    );
    expect(reported).toEqual([]);
    await b.close();
  });

  it("builds a missing index from the entries, and lists exactly through a damaged one", async () => {
    const { b, records } = await store(30);
    rmSync(slots(b, "a"));
    expect(await b.listSessions("a", { limit: 7 })).toEqual(records.slice(0, 7));
    expect(readFileSync(slots(b, "a")).length).toBe(30 * SLOT_BYTES);
    // A torn slot: the listing reads every session, and stays exact.
    const bytes = readFileSync(slots(b, "a"));
    bytes.write("garbage", 3 * SLOT_BYTES + 5, "latin1");
    writeFileSync(slots(b, "a"), bytes);
    expect(await b.listSessions("a", { limit: 7 })).toEqual(records.slice(0, 7));
    expect(await b.listSessions("a")).toEqual(records);
    await b.close();
  });

  it("puts a session whose slot is ahead (a write killed before its log) in its place, and heals one behind", async () => {
    const { b, records } = await store(30);
    const path = slots(b, "a");
    const bytes = readFileSync(path);
    const slotOf = (id: string) => {
      for (let at = 0; at < bytes.length; at += SLOT_BYTES) {
        if (bytes.toString("latin1", at + 25, at + 63) === `${id} l`) return at;
      }
      throw new Error("no slot");
    };
    // The oldest session's slot says it is the newest (an append killed after its slot was written).
    const oldest = records.at(-1) as SessionRecord;
    encodeSlot("2030-01-01T00:00:00.000Z", oldest.session_id, true).copy(bytes, slotOf(oldest.session_id));
    // The newest session's slot says it is the oldest (a write this index never saw).
    const newest = records[0] as SessionRecord;
    encodeSlot("2000-01-01T00:00:00.000Z", newest.session_id, true).copy(bytes, slotOf(newest.session_id));
    writeFileSync(path, bytes);
    // A slot behind is met by a listing that reads it (a first page may not: such a slot is left only by a
    // writer that does not keep the index, e.g. an older agentix), which fixes it.
    expect(await b.listSessions("a")).toEqual(records);
    expect(await b.listSessions("a", { limit: 5 })).toEqual(records.slice(0, 5));
    expect(readFileSync(path).toString("latin1", slotOf(newest.session_id), slotOf(newest.session_id) + 24)).toBe(
      newest.updated_at,
    );
    await b.close();
  });

  it("stays exact while 4 processes append to random sessions and update them", async () => {
    const basePath = fresh();
    const b = new FileStorageBackend({ basePath });
    const ids: string[] = [];
    // More sessions than a page of 6 takes candidates (2 × 6 + 32): the page is picked from the newest slots.
    for (let i = 0; i < 60; i++) ids.push(await b.createSession("a", { i }));
    const writers = Array.from({ length: 4 }, (_, writer) => {
      const child = spawn(
        process.execPath,
        ["--import", "tsx", appender, JSON.stringify({ basePath, ids, count: 150, writer })],
        { stdio: ["ignore", "pipe", "inherit"] },
      );
      return new Promise<number | null>((resolve) => child.on("exit", resolve));
    });
    let running = true;
    const done = Promise.all(writers).finally(() => {
      running = false;
    });
    let checks = 0;
    while (running || checks < 3) {
      // The backend's calls settle without a turn of the event loop: this one lets the writers' exits in.
      await new Promise((resolve) => setImmediate(resolve));
      const before = new Map((await b.scanSessions({ agentId: "a" })).map((r) => [r.session_id, r]));
      const page = await b.listSessions("a", { limit: 6 });
      const all = await b.listSessions("a");
      // Ordered, each session once, every session there.
      for (const list of [page, all]) {
        for (let i = 1; i < list.length; i++)
          expect(key(list[i - 1] as SessionRecord) > key(list[i] as SessionRecord)).toBe(true);
      }
      expect(all.map((r) => r.session_id).sort()).toEqual([...ids].sort());
      // No session that was already newer than the page's last when the listing began is missing from the page.
      const last = page.at(-1) as SessionRecord;
      for (const [id, r] of before) {
        if (!page.some((p) => p.session_id === id)) expect(key(r) < key(last)).toBe(true);
      }
      checks++;
    }
    expect(await done).toEqual([0, 0, 0, 0]);
    // At rest: the listing is the order of the sessions' own records.
    const records = await Promise.all(ids.map(async (id) => (await b.getSession(id)) as SessionRecord));
    expect(await b.listSessions("a")).toEqual(records.sort(compareSessions));
    expect(await b.listSessions("a", { limit: 5, before: records[4] as SessionRecord })).toEqual(records.slice(5, 10));
    const messages = await Promise.all(ids.map((id) => b.countMessages(id)));
    expect(messages.reduce((s, n) => s + n, 0)).toBe(4 * 120);
    await b.close();
  }, 120_000);

  it("picks a page's candidates from the slots' bytes as from the parsed slots (damage, ties, deletes, cursors)", () => {
    const dir = fresh();
    const times = ["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:01.000Z", "2026-03-01T12:00:00.000Z"];
    const ids = Array.from({ length: 40 }, (_, i) => `01900000-0000-7000-8000-${String(i).padStart(12, "0")}`);
    const slot = fc.record({ at: fc.constantFrom(...times), id: fc.constantFrom(...ids), live: fc.boolean() });
    fc.assert(
      fc.property(
        fc.array(slot, { maxLength: 120 }),
        fc.option(fc.record({ at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) })),
        fc.option(fc.nat({ max: SLOT_BYTES - 1 })),
        fc.integer({ min: 1, max: 60 }),
        fc.option(fc.tuple(fc.constantFrom(...times), fc.constantFrom(...ids))),
        (slots, damage, torn, want, cursor) => {
          const bytes = Buffer.concat(slots.map((s) => encodeSlot(s.at, s.id, s.live)));
          if (damage && bytes.length > 0) bytes[damage.at % bytes.length] = damage.byte;
          const path = join(dir, "index.slots");
          writeFileSync(path, torn ? Buffer.concat([bytes, bytes.subarray(0, torn)]) : bytes);
          const before = cursor ? cursor.join(" ") : undefined;
          const all = readSlots(path) as NonNullable<ReturnType<typeof readSlots>>;
          const keys = [...new Set(all.slots.filter((s) => s.live && (!before || s.key < before)).map((s) => s.key))];
          keys.sort();
          expect(newestSlots(path, want, before)).toEqual({
            keys: keys.slice(-want),
            cut: keys.length > want,
            damaged: all.damaged,
          });
        },
      ),
      { numRuns: 400 },
    );
    expect(newestSlots(join(dir, "none"), 5, undefined)).toBeNull();
  });
});
