// The Redis backend's reads of a range of messages (standalone and cluster mode: one session's keys, one slot).
import type { Redis } from "ioredis";
import type { MessageRange, MessageRecord } from "./core/types.js";
import { PAGE, PAGE_BYTES } from "./redis-scripts.js";

/** A session's keys that a read touches. */
export interface RangeKeys {
  session: string;
  messages: string;
  edits: string;
}

/**
 * A range of a session's messages, `null` when the session does not exist. A range of at most a page, or a longer one
 * that turns out to end within a page: one LRANGE. A longer one is read in pages, so that no LRANGE blocks Redis for
 * long (see readPages); an edit meanwhile makes it read again.
 */
export async function readRange(redis: Redis, keys: RangeKeys, range: MessageRange): Promise<MessageRecord[] | null> {
  const { messages } = keys;
  let probe: string[] | undefined;
  if ("last" in range ? range.last > PAGE : range.limit === undefined || range.limit > PAGE) {
    if (!("last" in range)) probe = await redis.lrange(messages, range.offset, range.offset + PAGE);
    if (probe === undefined || probe.length > PAGE) {
      // The probe was not read with the session's stamp, so its messages are read again; their size sizes the pages.
      const count = probe ? nextPage(probe) : PAGE;
      for (let attempt = 0; attempt < 3; attempt++) {
        const lines = await readPages(redis, keys, range, count);
        if (lines === null) return null;
        if (lines) return lines.map((line) => JSON.parse(line) as MessageRecord);
      }
      probe = undefined; // edited throughout: one LRANGE of it all, below
    }
  }
  const [start, stop] =
    "last" in range
      ? [-range.last, -1]
      : [range.offset, range.limit === undefined ? -1 : range.offset + range.limit - 1];
  // The scripts write and delete a session's list together with its hash, so a non-empty list means the
  // session exists: one LRANGE. Only an empty one needs the atomic check that tells "empty" from "not found".
  let lines = probe ?? (await redis.lrange(messages, start, stop));
  if (lines.length === 0) {
    const [exists, page] = await exec(redis.multi().exists(keys.session).lrange(messages, start, stop));
    if (exists !== 1) return null;
    lines = page as string[];
  }
  return lines.map((line) => JSON.parse(line) as MessageRecord);
}

/** Messages per page after one of `lines`: as many as fit in PAGE_BYTES at their size, from 1 to PAGE. */
function nextPage(lines: string[]): number {
  const bytes = lines.reduce((n, line) => n + line.length, 0) / Math.max(1, lines.length);
  return Math.max(1, Math.min(PAGE, Math.floor(PAGE_BYTES / Math.max(1, bytes))));
}

/**
 * A range read page by page: the list's length, read atomically with the session's stamp (see `stamp` in the
 * scripts) and the first page (of `count`, offset ranges only), fixes the positions; appends meanwhile only add later
 * ones. The later pages are sized by the bytes of the messages read; the last is read with the stamp again, so that
 * every page is of one state of the list. `null`: not found; `undefined`: the session was edited (messages removed)
 * or replaced meanwhile, read again.
 */
async function readPages(
  redis: Redis,
  keys: RangeKeys,
  range: MessageRange,
  count: number,
): Promise<string[] | null | undefined> {
  const { session, edits, messages: list } = keys;
  const offset = "last" in range ? undefined : range.offset;
  const head = redis.multi().hget(session, "created_at").get(edits).llen(list);
  if (offset !== undefined) head.lrange(list, offset, offset + count - 1);
  const [created, edited, length, first = []] = (await exec(head)) as [string | null, string | null, number, string[]?];
  if (created === null) return null;
  const from = offset === undefined ? Math.max(0, length - (range as { last: number }).last) : Math.min(offset, length);
  const to = "last" in range || range.limit === undefined ? length : Math.min(length, range.offset + range.limit);
  const lines = first.slice(0, to - from);
  if (lines.length > 0) count = nextPage(lines);
  while (from + lines.length < to) {
    const at = from + lines.length;
    const stop = Math.min(at + count, to);
    let page: string[];
    if (stop < to) page = await redis.lrange(list, at, stop - 1);
    else {
      // The last page, with the stamp: unchanged since the first, so every page read is of one state of the list.
      const last = await exec(
        redis
          .multi()
          .hget(session, "created_at")
          .get(edits)
          .lrange(list, at, stop - 1),
      );
      if (`${last[0]}:${last[1]}` !== `${created}:${edited}`) return undefined;
      page = last[2] as string[];
    }
    if (page.length !== stop - at) return undefined;
    lines.push(...page);
    count = nextPage(page);
  }
  return lines;
}

/** The replies of a MULTI, or its first error. */
export async function exec(multi: ReturnType<Redis["multi"]>): Promise<unknown[]> {
  return ((await multi.exec()) ?? []).map(([error, value]) => {
    if (error) throw error;
    return value;
  });
}

/** The scripts that build an agent's id set (src/redis-scripts.ts). */
export interface IdScripts {
  agentixIdsBuild(base: string, agentId: string, ids?: string[]): Promise<unknown>;
  agentixIdsPublish(base: string, agentId: string): Promise<unknown>;
}

/**
 * Builds an agent's id set {prefix}:ids:{agent} (standalone mode) from its index `index`, a thousand ids per script
 * so that none blocks Redis for long. The set being built exists (and writers keep it) before the scan of the index
 * starts, so every session is in it: those there throughout are found by ZSCAN, those created or deleted meanwhile
 * are added or removed by their writers, and a script adds an id only while its session is the agent's.
 */
export async function buildIds(redis: Redis & IdScripts, base: string, index: string, agentId: string): Promise<void> {
  if ((await redis.agentixIdsBuild(base, agentId)) === 0) return;
  let cursor = "0";
  do {
    const [next, flat] = await redis.zscan(index, cursor, "COUNT", 1000);
    const ids = flat.filter((_, i) => i % 2 === 0);
    if ((await redis.agentixIdsBuild(base, agentId, ids)) === 0) return;
    cursor = next;
  } while (cursor !== "0");
  await redis.agentixIdsPublish(base, agentId);
}
