// Load: 64 concurrent writers appending over many sessions, with forks and deletes in between, on Postgres,
// Redis, SQLite and File. At the end: exact counts, each writer's order within each session, forks that are
// snapshots of their source. Between rounds: the heap after a full GC stays flat. After close(): the server
// connections are gone; and opening and closing 200 backends leaks no connection and no file descriptor.
import { afterAll, describe, expect, it } from "vitest";
import type { StorageBackend } from "../../src/core/backend.js";
import { eventually, FULL, figure, openFds, scaled, settledHeap, subjects } from "./support.js";

const APPENDS = scaled(5_000, 50_000);
const WRITERS = 64;
const SESSIONS = 48;
const ROUNDS = 5;
const PAD = "p".repeat(1024);
/**
 * How much the heap after a full GC may grow from the end of round 2 to the end of the last round. A leak of
 * every message appended in those rounds (1 KiB pad each) would be `3/5 * APPENDS` KiB: 3 MiB here, 30 MiB in full.
 */
const HEAP_BOUND = scaled(1.5, 4) * 1024 * 1024;
const OPEN_CLOSE = 200;

const { all, cleanup, connections } = subjects("soak");
afterAll(cleanup);
const soaked = all.filter((s) => s.name !== "memory");

interface Content {
  w: number;
  i: number;
  pad: string;
}

describe.each(soaked)("$name under load", ({ name, available, open }) => {
  it.skipIf(!available)(
    `${WRITERS} writers, ${APPENDS} appends with forks and deletes: exact counts, order, flat heap, connections back to none`,
    { timeout: FULL ? 1_800_000 : 120_000 },
    async () => {
      const connectionName = `agentix-soak-${name}-${process.pid}`;
      const b = await open("load", connectionName);
      const agent = `soak-${name}`;
      const sessions = await Promise.all(
        Array.from({ length: SESSIONS }, (_, k) => b.createSession(agent, { cwd: `/soak/${k % 4}` })),
      );
      // Writer w's i-th message goes to session (7w + i) mod SESSIONS: what each session must hold is computed,
      // not recorded, so that the test itself keeps no per-message state while the heap is measured.
      const target = (w: number, i: number) => (w * 7 + i) % SESSIONS;
      const forks: Array<{ id: string; source: string }> = [];
      let deleted = 0;
      const next = Array<number>(WRITERS).fill(0);
      const heaps: number[] = [];
      const started = Date.now();

      for (let round = 0; round < ROUNDS; round++) {
        const quota = (w: number) =>
          Math.floor(APPENDS / ROUNDS / WRITERS) + (w < (APPENDS / ROUNDS) % WRITERS ? 1 : 0);
        await Promise.all(
          Array.from({ length: WRITERS }, async (_, w) => {
            for (let k = 0; k < quota(w); k++) {
              const i = next[w] ?? 0;
              next[w] = i + 1;
              await b.saveMessage(sessions[target(w, i)] as string, "user", { w, i, pad: PAD });
              if (k === 5 && w % 16 === round) {
                const source = sessions[(w + round) % SESSIONS] as string;
                forks.push({ id: await b.forkSession(source), source });
              }
              if (k === 7 && w % 16 === round) {
                const temp = await b.createSession(agent, { temp: true });
                await b.saveMessage(temp, "user", "temporary");
                await b.deleteSession(temp);
                expect(await b.getSession(temp)).toBeNull();
                deleted++;
              }
            }
          }),
        );
        heaps.push(settledHeap());
      }
      const seconds = (Date.now() - started) / 1000;

      let total = 0;
      for (const [s, id] of sessions.entries()) {
        const stored = (await b.loadMessages(id)).map((m) => m.content as unknown as Content);
        total += stored.length;
        expect(stored.every((c) => c.pad === PAD)).toBe(true);
        // Exactly what each writer sent here, in its order (writers interleave freely).
        for (let w = 0; w < WRITERS; w++) {
          const sent = Array.from({ length: next[w] ?? 0 }, (_, i) => i).filter((i) => target(w, i) === s);
          expect(stored.filter((c) => c.w === w).map((c) => c.i)).toEqual(sent);
        }
      }
      expect(total).toBe(APPENDS);
      for (const fork of forks) {
        // A fork is a snapshot: a prefix of its source, which has only grown since.
        const copy = (await b.loadMessages(fork.id)).map((m) => JSON.stringify(m));
        const source = (await b.loadMessages(fork.source)).map((m) => JSON.stringify(m));
        expect(copy).toEqual(source.slice(0, copy.length));
      }
      const listed = await b.listSessions(agent);
      expect(listed).toHaveLength(SESSIONS + forks.length);
      expect(listed.some((s) => s.metadata?.temp === true)).toBe(false);

      const growth = (heaps.at(-1) as number) - (heaps[1] as number);
      expect(growth).toBeLessThan(HEAP_BOUND);
      const during = await connections(name, connectionName);
      await b.close();
      expect(await eventually(async () => (await connections(name, connectionName)) === 0)).toBe(true);
      figure(`soak ${name}`, {
        writers: WRITERS,
        appends: total,
        forks: forks.length,
        deletes: deleted,
        appendsPerSecond: Math.round(APPENDS / seconds),
        heapMiB: heaps.map((h) => +(h / 2 ** 20).toFixed(1)),
        heapGrowthKiB: Math.round(growth / 1024),
        connectionsDuring: during,
        connectionsAfterClose: 0,
      });
    },
  );

  it.skipIf(!available)(
    `opening and closing ${OPEN_CLOSE} backends leaks no connection and no file descriptor`,
    { timeout: 120_000 },
    async () => {
      const connectionName = `agentix-open-close-${name}-${process.pid}`;
      const use = async (b: StorageBackend, sync: boolean) => {
        const id = await b.createSession("open-close");
        await b.saveMessage(id, "user", "hello");
        // A few use the ...Sync methods too (for Postgres and Redis: a twin with its own connection on the worker).
        if (sync) expect(b.loadMessagesSync(id)).toHaveLength(1);
        await b.close();
      };
      const batch = (sync: boolean) =>
        Promise.all(
          Array.from({ length: 20 }, async (_, k) => use(await open("open-close", connectionName), sync && k === 0)),
        );
      // Warm-up, one batch: drivers loaded, schema migrated, the sync worker started, code compiled.
      await batch(true);
      await eventually(async () => (await connections(name, connectionName)) === 0);
      const fds = openFds();
      const heap = settledHeap();
      for (let k = 0; k < OPEN_CLOSE / 20; k++) await batch(k % 5 === 0);
      expect(await eventually(async () => (await connections(name, connectionName)) === 0)).toBe(true);
      if (fds !== null) expect(await eventually(() => (openFds() as number) <= fds)).toBe(true);
      const heapGrowth = settledHeap() - heap;
      expect(heapGrowth).toBeLessThan(2 * 1024 * 1024); // 10 KiB a backend: less than any pool or client
      figure(`open-close ${name}`, {
        backends: OPEN_CLOSE,
        fdsBefore: fds,
        fdsAfter: openFds(),
        heapGrowthKiB: Math.round(heapGrowth / 1024),
      });
    },
  );
});
