// Reading part of a local file to send it: what cp uploads and http's streamed bodies share.
import { createReadStream } from "node:fs";

/** Sent pieces of a file: large, since a message costs far more than its bytes. */
export const FILE_CHUNK_BYTES = 256 * 1024;

/**
 * Bytes [start, end) of a local file, in pieces of up to `chunkBytes`; nothing at all for an empty range
 * (createReadStream's `end` is inclusive, and would read a whole file for end 0). Reading stops at `end`
 * even when the file has grown since its size was taken.
 */
export async function* fileChunks(
  path: string,
  start: number,
  end: number,
  chunkBytes = FILE_CHUNK_BYTES,
): AsyncGenerator<Buffer> {
  if (start >= end) return;
  yield* createReadStream(path, { start, end: end - 1, highWaterMark: chunkBytes }) as AsyncIterable<Buffer>;
}
