// Concurrent writers for the Postgres deployment tests (issue 17: poolers, serializable isolation): appends of one
// and of two messages, and forks, from many callers at once on a few shared sessions; then what is stored is
// checked against what was acknowledged.
import { expect } from "vitest";
import type { StorageBackend } from "../../src/core/backend.js";

export interface WriterRun {
  /** Per session, the texts of the appends that resolved, in the order each writer got them. */
  acked: Map<string, string[]>;
  /** Forks that resolved: [source, fork]. */
  forks: Array<[string, string]>;
  /** What rejected. */
  failures: unknown[];
  /** Calls still pending at the deadline (neither acknowledged nor failed). */
  pending: number;
}

/**
 * `writers` callers, writer `w` on session `w % sessions.length`, each making `ops` calls one after the other:
 * mostly single appends, every third a batch of two, every fifth a fork. A call that has not settled after
 * `deadlineMs` counts as pending, and the writer stops.
 */
export async function runWriters(
  storage: StorageBackend,
  sessions: string[],
  { writers, ops, deadlineMs = 30_000 }: { writers: number; ops: number; deadlineMs?: number },
): Promise<WriterRun> {
  const run: WriterRun = { acked: new Map(sessions.map((id) => [id, []])), forks: [], failures: [], pending: 0 };
  const hung = Symbol("hung");
  await Promise.all(
    Array.from({ length: writers }, async (_, w) => {
      const id = sessions[w % sessions.length] as string;
      for (let i = 0; i < ops; i++) {
        const text = `w${w}-${i}`;
        const call: Promise<() => void> =
          i % 5 === 4
            ? storage.forkSession(id).then((fork) => () => run.forks.push([id, fork]))
            : i % 3 === 2
              ? storage
                  .saveMessages(id, [
                    { role: "user", content: `${text}a` },
                    { role: "assistant", content: `${text}b` },
                  ])
                  .then(() => () => run.acked.get(id)?.push(`${text}a`, `${text}b`))
              : storage.saveMessage(id, "user", text).then(() => () => run.acked.get(id)?.push(text));
        let timer: NodeJS.Timeout | undefined;
        const deadline = new Promise<typeof hung>((resolve) => {
          timer = setTimeout(() => resolve(hung), deadlineMs);
        });
        try {
          const outcome = await Promise.race([call, deadline]);
          if (outcome === hung) {
            run.pending++;
            call.catch(() => {});
            return;
          }
          outcome();
        } catch (error) {
          run.failures.push(error);
        } finally {
          clearTimeout(timer);
        }
      }
    }),
  );
  return run;
}

/**
 * What is stored matches what was acknowledged: every acknowledged append exactly once in its session (nothing
 * lost, nothing duplicated), and every fork a prefix of its source's final history. `read` loads a session's
 * message texts, in order, straight from the store.
 */
export async function expectStoredAsAcknowledged(
  run: WriterRun,
  read: (sessionId: string) => Promise<string[]>,
): Promise<{ lost: number; duplicated: number }> {
  let lost = 0;
  let duplicated = 0;
  const finals = new Map<string, string[]>();
  for (const [id, acked] of run.acked) {
    const stored = await read(id);
    finals.set(id, stored);
    const counts = new Map<string, number>();
    for (const text of stored) counts.set(text, (counts.get(text) ?? 0) + 1);
    for (const text of acked) {
      const n = counts.get(text) ?? 0;
      if (n === 0) lost++;
      if (n > 1) duplicated++;
    }
  }
  expect({ lost, duplicated }).toEqual({ lost: 0, duplicated: 0 });
  for (const [source, fork] of run.forks) {
    const copied = await read(fork);
    expect(copied).toEqual(finals.get(source)?.slice(0, copied.length));
  }
  return { lost, duplicated };
}
