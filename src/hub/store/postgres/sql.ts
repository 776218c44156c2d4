// What the per-table queries run on: a pooled connection (inside a commit's transaction) or the
// pool itself (reads), and bytes as pg sends them (records.ts converts the values read back).
import type pg from "pg";

export interface Sql {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string,
    values?: unknown[],
    /** Prepares the statement under this name, once per connection: for those sent on every commit. */
    name?: string,
  ): Promise<pg.QueryResult<R>>;
}

/** Bytes as pg sends them in arrays (it converts a Buffer without copying). */
export function bytes(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
