// A fork's chunks (standalone and cluster mode): read with LRANGE and pushed with RPUSH, plain commands that copy in
// C (a script would convert every message to a Lua string and back: 4-10 times as long), each bounded by bytes and
// by count so that none holds Redis for long, whatever the size of the messages.
import type { Cluster, Redis } from "ioredis";
import { exec } from "./redis-reads.js";
import { CHUNK, CHUNK_BYTES, TEMP_TTL_MS } from "./redis-scripts.js";

/** Messages per chunk for messages of `bytes` bytes each (0: unknown, the count bound alone). */
function countFor(bytes: number): number {
  return bytes <= 0 ? CHUNK : Math.max(1, Math.min(CHUNK, Math.floor(CHUNK_BYTES / bytes)));
}

/** The size of a fork's chunks: from an estimate of the messages' size at first, then from those read. */
export class Chunks {
  #count: number;

  constructor(bytesPerMessage: number) {
    this.#count = countFor(bytesPerMessage);
  }

  /** How many messages to read next. */
  get count(): number {
    return this.#count;
  }

  /** `lines` (a chunk read) in pieces of at most CHUNK_BYTES, a longer message alone; the next count follows them. */
  pieces(lines: string[]): string[][] {
    const pieces: string[][] = [];
    let piece: string[] = [];
    let bytes = 0;
    let total = 0;
    for (const line of lines) {
      const size = Buffer.byteLength(line);
      total += size;
      if (piece.length > 0 && bytes + size > CHUNK_BYTES) {
        pieces.push(piece);
        piece = [];
        bytes = 0;
      }
      piece.push(line);
      bytes += size;
    }
    if (piece.length > 0) pieces.push(piece);
    if (lines.length > 0) this.#count = countFor(total / lines.length);
    return pieces;
  }
}

/** A fork's source keys (one slot) and its temp key (the fork's slot), as plain commands name them. */
export interface ChunkKeys {
  session: string;
  messages: string;
  edits: string;
  temp: string;
}

/**
 * Copies the source's positions `from`..`to`-1 into the temp key: `to`, or -1 when the source changed (its stamp, see
 * `stamp` in the scripts) or a piece was pushed twice (resent after a dropped connection); the temp key is then gone.
 * Each chunk is read atomically with the source's stamp.
 */
export async function copyChunks(
  redis: Redis | Cluster,
  keys: ChunkKeys,
  stamp: string,
  chunks: Chunks,
  from: number,
  to: number,
): Promise<number> {
  let copied = from;
  while (copied < to) {
    const stop = Math.min(copied + chunks.count, to);
    const [created, edited, lines] = (await exec(
      redis
        .multi()
        .hget(keys.session, "created_at")
        .get(keys.edits)
        .lrange(keys.messages, copied, stop - 1),
    )) as [string | null, string | null, string[]];
    if (created === null || `${created}:${edited ?? "0"}` !== stamp || lines.length !== stop - copied) {
      await redis.unlink(keys.temp);
      return -1;
    }
    for (const piece of chunks.pieces(lines)) {
      const [pushed] = await exec(
        redis
          .multi()
          .rpush(keys.temp, ...piece)
          .pexpire(keys.temp, TEMP_TTL_MS),
      );
      if (pushed !== copied + piece.length) {
        await redis.unlink(keys.temp);
        return -1;
      }
      copied += piece.length;
    }
  }
  return copied;
}
