// For the engines' specs: a query's chunks gathered into one result, checked for the order every driver
// promises (columns first, done last, no empty batch, a row count that counts the rows).
import { expect } from "vitest";
import type { ColumnInfo, Datasource, JsonValue, QueryChunk } from "../datasource.js";

export interface Collected {
  kinds: QueryChunk["kind"][];
  columns: ColumnInfo[];
  batches: JsonValue[][][];
  rows: JsonValue[][];
  rowCount: number;
  affectedRows: number | undefined;
  done: Extract<QueryChunk, { kind: "done" }>;
}

/** Runs sql to its end; rejects with the driver's error (see failure()). */
export async function collect(
  ds: Datasource,
  sql: string,
  params: JsonValue[] = [],
  opts: { signal?: AbortSignal; batchRows?: number } = {},
): Promise<Collected> {
  const out: Collected = {
    kinds: [],
    columns: [],
    batches: [],
    rows: [],
    rowCount: -1,
    affectedRows: undefined,
    done: { kind: "done", rowCount: -1 },
  };
  for await (const chunk of ds.query(sql, params, {
    signal: opts.signal ?? new AbortController().signal,
    batchRows: opts.batchRows,
  })) {
    out.kinds.push(chunk.kind);
    if (chunk.kind === "columns") out.columns = chunk.columns;
    else if (chunk.kind === "rows") {
      expect(chunk.rows.length).toBeGreaterThan(0);
      out.batches.push(chunk.rows);
      out.rows.push(...chunk.rows);
    } else {
      out.done = chunk;
      out.rowCount = chunk.rowCount;
      out.affectedRows = chunk.affectedRows;
    }
  }
  expect(out.kinds[0]).toBe("columns");
  expect(out.kinds.at(-1)).toBe("done");
  expect(out.rowCount).toBe(out.rows.length);
  return out;
}

/** The query's iterator, for tests that pull chunks one at a time. */
export function pull(ds: Datasource, sql: string, batchRows: number): AsyncIterator<QueryChunk> {
  return ds.query(sql, [], { signal: new AbortController().signal, batchRows })[Symbol.asyncIterator]();
}
