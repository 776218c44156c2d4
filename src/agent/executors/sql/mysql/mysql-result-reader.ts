// The rows of one MySQL/MariaDB statement as batches pulled by the consumer: mysql2's row events are buffered
// up to one batch, then the connection is paused (TCP backpressure reaches the server) until the consumer
// takes the batch. Values are converted (mysql-values.ts) as they arrive.
import type { FieldPacket, PoolConnection, Query, ResultSetHeader } from "mysql2";
import type { ColumnInfo, JsonValue } from "../datasource.js";
import { columnInfo, converters, type Converter } from "./mysql-values.js";

/**
 * The rows of one statement, held at most one batch ahead of the consumer: when a batch is full the
 * connection is paused (mysql2 stops reading the socket, TCP backpressure reaches the server) until the
 * consumer takes it.
 */
export class ResultReader {
  rowCount = 0;
  affectedRows: number | undefined;
  private state: "header" | "rows" | "ended" | "failed" = "header";
  private info: ColumnInfo[] = [];
  private converters: [number, Converter][] = [];
  private buffered: JsonValue[][] = [];
  private failure: unknown;
  private resultSets = 0;
  private paused = false;
  private wake: (() => void) | undefined;
  private readonly onConnectionError = (err: Error): void => this.fail(err);
  private readonly onAbort = (): void => this.notify();

  constructor(
    private readonly conn: PoolConnection,
    query: Query,
    private readonly batchRows: number,
    private readonly signal: AbortSignal,
  ) {
    // A statement that returns no rows still gets a "fields" event, without fields, then its OK packet.
    query.on("fields", (fields: FieldPacket[] | undefined) => {
      // Only the first result set counts (a CALL adds its status as a second one).
      if (++this.resultSets > 1) return;
      this.info = fields ? fields.map(columnInfo) : [];
      this.converters = fields ? converters(fields) : [];
      this.state = "rows";
      this.notify();
    });
    query.on("result", (row: unknown) => {
      if (this.resultSets > 1) return;
      if (!Array.isArray(row)) {
        this.affectedRows = (row as ResultSetHeader).affectedRows;
        return;
      }
      const values = row as JsonValue[];
      for (const [i, convert] of this.converters) {
        const v: unknown = values[i];
        if (v !== null) values[i] = convert(v);
      }
      this.buffered.push(values);
      if (this.buffered.length >= this.batchRows) {
        if (!this.paused) {
          this.paused = true;
          this.conn.pause();
        }
        this.notify();
      }
    });
    query.on("error", (err: Error) => this.fail(err));
    query.on("end", () => {
      if (this.state !== "failed") this.state = "ended";
      this.detach();
      this.notify();
    });
    // A lost connection is reported on the connection, not on a query that has no callback.
    conn.on("error", this.onConnectionError);
    signal.addEventListener("abort", this.onAbort, { once: true });
  }

  async columns(): Promise<ColumnInfo[]> {
    await this.until(() => this.state !== "header");
    return this.info;
  }

  /** The next batch (full unless it is the last), or undefined once the result has ended. */
  async nextBatch(): Promise<JsonValue[][] | undefined> {
    await this.until(() => this.state !== "rows" || this.buffered.length >= this.batchRows);
    if (this.buffered.length === 0) return undefined;
    const rows =
      this.buffered.length <= this.batchRows ? this.buffered : this.buffered.slice(0, this.batchRows);
    this.buffered = rows === this.buffered ? [] : this.buffered.slice(this.batchRows);
    this.rowCount += rows.length;
    if (this.paused && this.buffered.length < this.batchRows) {
      this.paused = false;
      // Replays what arrived before the pause; may pause again at once.
      this.conn.resume();
    }
    return rows;
  }

  private async until(ready: () => boolean): Promise<void> {
    while (!ready() && this.state !== "failed" && !this.signal.aborted) {
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
    if (this.signal.aborted) throw new Error("aborted");
    if (this.state === "failed") throw this.failure;
  }

  private fail(err: unknown): void {
    if (this.state === "failed") return;
    this.failure = err;
    this.state = "failed";
    this.detach();
    this.notify();
  }

  private detach(): void {
    this.conn.removeListener("error", this.onConnectionError);
    this.signal.removeEventListener("abort", this.onAbort);
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }
}
