// One pooled MySQL/MariaDB connection held for one statement: its commands, whether one is in flight on
// the server (then stopping it takes a KILL QUERY from another connection), whether the link was lost, and
// its end: back to the pool (reset on release) or closed when its state is no longer known.
import type { PoolConnection } from "mysql2";
import { ResultReader } from "./mysql-result-reader.js";

/**
 * One connection taken from the pool for one statement, and what is known of it: whether a command is in
 * flight on the server (then stopping it takes a KILL QUERY), whether the link was lost, whether it was given up.
 */
export class Checkout {
  /** Commands sent and not yet answered. */
  private inFlight = 0;
  private link: "up" | "lost" = "up";
  private abandoned: Promise<void> | undefined;
  private readonly onLost = (): void => {
    this.link = "lost";
  };

  constructor(
    readonly conn: PoolConnection,
    private readonly signal: AbortSignal,
    private readonly killQuery: (threadId: number) => Promise<void>,
  ) {
    conn.on("error", this.onLost);
  }

  get busy(): boolean {
    return this.inFlight > 0;
  }

  get lost(): boolean {
    return this.link === "lost";
  }

  /** A command with a small result; rejects as soon as the signal aborts (abandon() cleans up). */
  run<R = unknown>(sql: string, rowsAsArray = false): Promise<R> {
    return new Promise((resolve, reject) => {
      if (this.signal.aborted) {
        reject(new Error("aborted"));
        return;
      }
      const onAbort = (): void => reject(new Error("aborted"));
      this.signal.addEventListener("abort", onAbort, { once: true });
      this.inFlight++;
      this.conn.query({ sql, rowsAsArray }, (err, result) => {
        this.inFlight--;
        this.signal.removeEventListener("abort", onAbort);
        if (err) reject(err);
        else resolve(result as R);
      });
    });
  }

  stream(sql: string, values: (string | number | boolean | null)[], batchRows: number): ResultReader {
    if (this.signal.aborted) throw new Error("aborted");
    // Without values mysql2 sends the text untouched (a literal "?" stays a question mark).
    const query = this.conn.query({ sql, values: values.length > 0 ? values : undefined, rowsAsArray: true });
    this.inFlight++;
    query.once("end", () => this.inFlight--);
    return new ResultReader(this.conn, query, batchRows, this.signal);
  }

  /** Back to the pool, whose reset on release clears what the statement left in the session. */
  release(): void {
    this.conn.removeListener("error", this.onLost);
    this.conn.release();
  }

  /**
   * Stops what runs (KILL QUERY, unless the link is gone and the server with it) and closes the connection:
   * its state is no longer known. Once; every caller waits for the same end.
   */
  abandon(): Promise<void> {
    this.abandoned ??= (async () => {
      if (this.busy && !this.lost && this.conn.threadId) await this.killQuery(this.conn.threadId);
      this.conn.removeListener("error", this.onLost);
      this.conn.destroy();
    })();
    return this.abandoned;
  }
}
