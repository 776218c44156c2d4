// What the per-table queries run on: a pooled connection (inside a commit's transaction) or the
// pool itself (reads), and the conversions of PostgreSQL's values to the records' types.
import type pg from "pg";

export interface Sql {
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(
    text: string,
    values?: unknown[],
  ): Promise<pg.QueryResult<R>>;
}

/** BIGINT arrives as a string (it may exceed 2^53); the store's values are milliseconds and byte counts. */
export function num(value: string | number): number {
  return typeof value === "number" ? value : Number(value);
}

export function numOrNull(value: string | number | null): number | null {
  return value === null ? null : num(value);
}

/** Bytes as pg sends them in arrays (it converts a Buffer without copying). */
export function bytes(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}
