// One statement's hold on a pooled PostgreSQL connection, from checkout to release: its transaction, the
// cursor read one batch per pull, the COPY stream of queryCsv, and the cancel in the server (pg_cancel_backend
// from another connection) when the caller's signal aborts or the datasource closes while it runs.
import pg from "pg";
import Cursor from "pg-cursor";
import { to as copyTo, type CopyToStreamQuery } from "pg-copy-streams";
import { Code } from "../../../../common/errors.js";
import type { Logger } from "../../../../common/logger.js";
import { messageOf } from "../datasource-errors.js";
import { SqlError, type DatasourceConfig, type JsonValue, type PrivilegedUser } from "../datasource.js";
import { auxQuery, connectionConfig } from "./postgres-connection.js";
import { isConnectionError } from "./postgres-errors.js";
import { privilegeOf } from "./postgres-privileges.js";

/** How much COPY output is read ahead of the consumer (one output chunk's worth). */
const COPY_BUFFER_BYTES = 256 * 1024;
/** After asking the server to cancel, how long a statement may take to stop before its connection is cut. */
const CANCEL_GRACE_MS = 3_000;
/** Ending the transaction (cursor closed, rolled back) and resetting the session; past this the connection is cut. */
const CLEANUP_TIMEOUT_MS = 5_000;

/** What a run needs of its datasource. */
export interface RunOwner {
  readonly name: string;
  readonly readOnly: boolean;
  readonly config: DatasourceConfig;
  readonly logger?: Logger;
  /** Read-only: pooled connections whose user was found to be no more than a reader when they were new. */
  readonly verified: WeakSet<pg.ClientBase>;
  /** Listens for the connection's 'error' events (once per connection). */
  guard(client: pg.ClientBase): void;
  connectError(e: unknown): SqlError;
  /** Refuses the datasource while its user is privileged; the returned error is what its tasks fail with. */
  refuse(privileged: PrivilegedUser): SqlError;
}

/**
 * One statement's hold on a connection, from checkout to release. The phases run in order:
 *   acquiring -> held (checked out) -> open (transaction begun) -> committed -> released
 * and any phase may jump to released (rolled back, or the connection destroyed when its state is unknown).
 * A DB call in flight is `busy`; a stop (the caller's signal, or the datasource closing) while busy asks the
 * server to cancel, and cuts the connection if the call has not ended CANCEL_GRACE_MS later.
 */
type RunPhase = "acquiring" | "held" | "open" | "committed" | "released";
export type StopReason = "cancelled" | "closed";

interface Batch {
  rows: JsonValue[][];
  result: pg.QueryResult;
}

export class StatementRun {
  phase: RunPhase = "acquiring";
  stopReason: StopReason | undefined;
  private client: pg.PoolClient | undefined;
  private pid: number | undefined;
  private cursor: Cursor<JsonValue[]> | undefined;
  private cursorFailed = false;
  private result: pg.QueryResult | undefined;
  private busy = false;
  /** Set while a COPY streams: the connection cannot take another statement until it ends. */
  abandonOnFinish = false;
  private cancelSent = false;
  private broken = false;
  private graceTimer: NodeJS.Timeout | undefined;
  private readonly stopped = new AbortController();
  private readonly onAbort = (): void => void this.stop("cancelled");

  constructor(
    private readonly ds: RunOwner,
    private readonly signal: AbortSignal,
  ) {
    if (signal.aborted) {
      this.stopReason = "cancelled";
      this.stopped.abort();
    } else {
      signal.addEventListener("abort", this.onAbort, { once: true });
    }
  }

  holds(client: pg.ClientBase): boolean {
    return this.client === client;
  }

  connectionFailed(err: Error): void {
    if (this.phase === "released") return;
    this.broken = true;
    this.ds.logger?.warn({ error: err.message }, "postgres: the connection failed during a query");
  }

  throwIfStopped(): void {
    if (this.stopReason !== undefined) throw new Error(`statement ${this.stopReason}`);
  }

  /** Waits for p unless the run stops first; a value that arrives after the stop goes to onLate. */
  untilStopped<T>(p: Promise<T>, onLate?: (v: T) => void): Promise<T> {
    if (this.stopReason !== undefined) {
      p.then(onLate, () => undefined);
      return Promise.reject(new Error(`statement ${this.stopReason}`));
    }
    return new Promise<T>((resolve, reject) => {
      const onStop = (): void => reject(new Error(`statement ${this.stopReason ?? "stopped"}`));
      this.stopped.signal.addEventListener("abort", onStop, { once: true });
      p.then(
        (v) => {
          this.stopped.signal.removeEventListener("abort", onStop);
          if (this.stopReason !== undefined) onLate?.(v);
          resolve(v);
        },
        (e: unknown) => {
          this.stopped.signal.removeEventListener("abort", onStop);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });
  }

  async acquire(pool: pg.Pool): Promise<void> {
    let client: pg.PoolClient;
    const full = pool.idleCount === 0 && pool.totalCount >= pool.options.max;
    try {
      // A connection that arrives after the caller gave up goes straight back to the pool.
      client = await this.untilStopped(pool.connect(), (c) => c.release());
    } catch (e) {
      if (this.stopReason !== undefined) throw e;
      if (full && /timeout exceeded when trying to connect/i.test(messageOf(e))) {
        throw new SqlError(
          Code.UNAVAILABLE,
          `datasource "${this.ds.name}": no connection came free within ${this.ds.config.connectTimeoutMs / 1000}s: ` +
            `all ${pool.options.max} (pool_size) are running other queries`,
        );
      }
      throw this.ds.connectError(e);
    }
    this.ds.guard(client);
    this.client = client;
    this.phase = "held";
  }

  /**
   * On a read-only datasource, a connection new to this datasource is used only once its user is found to
   * be no more than a reader (one catalog query per connection, not per statement: see PRIVILEGES_SQL).
   */
  async verifyRole(): Promise<void> {
    const client = this.mustHold();
    if (!this.ds.readOnly || this.ds.verified.has(client)) return;
    const privileged = await this.call(() => privilegeOf(client));
    if (privileged) throw this.ds.refuse(privileged);
    this.ds.verified.add(client);
  }

  async begin(sql: string): Promise<void> {
    const client = this.mustHold();
    this.phase = "open";
    const results = (await this.call(() => client.query(sql))) as unknown as pg.QueryResult[];
    const last = results[results.length - 1];
    const pid = Number((last?.rows[0] as { pid?: unknown } | undefined)?.pid);
    this.pid =
      Number.isInteger(pid) && pid > 0 ? pid : (client as unknown as { processID?: number }).processID;
  }

  open(sql: string, values: unknown[], types: pg.CustomTypesConfig): void {
    this.cursor = this.mustHold().query(new Cursor<JsonValue[]>(sql, values, { rowMode: "array", types }));
  }

  async read(n: number): Promise<Batch> {
    const cursor = this.cursor;
    if (!cursor) throw new Error("no cursor is open");
    try {
      return await this.call(
        () =>
          new Promise<Batch>((resolve, reject) => {
            cursor.read(n, (err, rows, result) => {
              if (err) return reject(err);
              // A read after the end gets no result object; the one from the end still holds the command tag.
              this.result = (result as pg.QueryResult | undefined) ?? this.result;
              if (!this.result) return reject(new Error("the cursor returned no result"));
              resolve({ rows, result: this.result });
            });
          }),
      );
    } catch (e) {
      this.cursorFailed = true;
      throw e;
    }
  }

  /** The fields of a statement that returns none of its rows, or undefined when it fails (rolled back to a savepoint). */
  async probe(sql: string): Promise<pg.FieldDef[] | undefined> {
    const client = this.mustHold();
    await this.call(() => client.query("SAVEPOINT sb_csv_probe"));
    try {
      const r = await this.call(() => client.query({ text: sql, rowMode: "array" }));
      await this.call(() => client.query("RELEASE SAVEPOINT sb_csv_probe"));
      return r.fields;
    } catch (e) {
      if (this.stopReason !== undefined || this.broken) throw e;
      await this.call(() => client.query("ROLLBACK TO SAVEPOINT sb_csv_probe"));
      return undefined;
    }
  }

  startCopy(sql: string): CopyToStreamQuery {
    // Up to a chunk's worth is buffered, so that each read hands over one large buffer (fewer copies and
    // messages downstream) while the socket stays paused beyond it.
    const stream = this.mustHold().query(copyTo(sql, { highWaterMark: COPY_BUFFER_BYTES }));
    // Between reads nobody listens; an error then (the connection closed) is seen by the next read.
    stream.on("error", () => undefined);
    return stream;
  }

  /** The COPY output that arrived since the last read (waiting for some), or null at its end. */
  async readCopy(stream: CopyToStreamQuery): Promise<Buffer | null> {
    return this.call(
      () =>
        new Promise<Buffer | null>((resolve, reject) => {
          const done = (v: Buffer | null, err?: Error): void => {
            stream.off("readable", onReadable);
            stream.off("end", onEnd);
            stream.off("error", onError);
            if (err) reject(err);
            else resolve(v);
          };
          const onReadable = (): void => {
            const b = stream.read() as Buffer | null;
            if (b !== null) done(b);
          };
          const onEnd = (): void => done(null);
          const onError = (e: Error): void => done(null, e);
          if (stream.errored) return reject(stream.errored);
          if (stream.readableEnded) return resolve(null);
          if (stream.destroyed) return reject(new Error("the COPY stream was closed"));
          stream.on("error", onError);
          stream.on("end", onEnd);
          stream.on("readable", onReadable);
          onReadable();
        }),
    );
  }

  async commit(): Promise<void> {
    const client = this.mustHold();
    // Once COMMIT succeeds the writes are durable: a stop that came meanwhile must not report otherwise.
    await this.call(() => client.query("COMMIT"), { keepIfStopped: true });
    this.phase = "committed";
  }

  /** One DB call on the held connection; a stop while it runs cancels it in the server. */
  private async call<T>(fn: () => Promise<T>, opts: { keepIfStopped?: boolean } = {}): Promise<T> {
    this.throwIfStopped();
    this.busy = true;
    let value: T;
    try {
      value = await fn();
    } catch (e) {
      if (isConnectionError(e)) this.broken = true;
      throw e;
    } finally {
      this.busy = false;
      clearTimeout(this.graceTimer);
      this.graceTimer = undefined;
    }
    // Stopped while the call ran but it finished anyway (the cancel came too late): its result is not wanted.
    if (!opts.keepIfStopped) this.throwIfStopped();
    return value;
  }

  private mustHold(): pg.PoolClient {
    this.throwIfStopped();
    if (!this.client || this.phase === "released") throw new Error("the connection was released");
    return this.client;
  }

  /**
   * Stops the run: a statement in the server is cancelled there; an idle run is left to the consumer's
   * next pull (cancelled) or cut at once (closed: the consumer may never pull again).
   */
  async stop(reason: StopReason): Promise<void> {
    if (this.stopReason !== undefined) {
      if (reason === "closed" && !this.busy) this.destroy(new Error("datasource closed"));
      return;
    }
    this.stopReason = reason;
    this.stopped.abort();
    if (this.busy) {
      this.graceTimer = setTimeout(() => {
        if (!this.busy) return;
        this.ds.logger?.warn(
          { pid: this.pid, graceMs: CANCEL_GRACE_MS },
          "postgres: the statement did not stop after the cancel request; closing its connection",
        );
        this.destroy(new Error("statement did not stop after cancel"));
      }, CANCEL_GRACE_MS);
      await this.cancelInServer();
    } else if (reason === "closed") {
      this.destroy(new Error("datasource closed"));
    }
  }

  /** pg_cancel_backend from another connection: the pool may have none to spare. */
  private async cancelInServer(): Promise<void> {
    if (this.cancelSent || this.pid === undefined) {
      // No pid yet (still in BEGIN): the BEGIN batch is quick, and the run stops right after it.
      return;
    }
    this.cancelSent = true;
    const pid = this.pid;
    const client = new pg.Client(connectionConfig(this.ds.config));
    client.on("error", () => undefined);
    try {
      await client.connect();
      await auxQuery(client, "SELECT pg_cancel_backend($1)", [pid]);
    } catch (e) {
      this.ds.logger?.warn(
        { pid, error: messageOf(e) },
        "postgres: cannot cancel the statement in the server",
      );
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  private get released(): boolean {
    return this.phase === "released";
  }

  /** Ends the connection instead of returning it: its state is unknown, or a cancel might still land on it. */
  private destroy(err: Error): void {
    if (!this.client || this.phase === "released") return;
    this.phase = "released";
    this.client.release(err);
  }

  /**
   * Runs when the statement ends for any reason: leaves the connection clean in the pool, or ends it. Clean
   * means as a new connection would be: the transaction ended, then DISCARD ALL, so that nothing the statement
   * left in the session (set_config(..., false), SET ROLE, advisory locks, temporary tables, prepared
   * statements, LISTEN) reaches the next task, and locks are free as soon as this task ends. DISCARD ALL
   * cannot run inside a transaction block, so it is a round trip of its own after COMMIT/ROLLBACK (a
   * multi-statement string is one implicit transaction); a connection it cannot reset is closed, not reused.
   */
  async finish(): Promise<void> {
    this.signal.removeEventListener("abort", this.onAbort);
    const client = this.client;
    if (!client || this.phase === "released") return;
    if (this.broken || this.cancelSent || this.busy || this.abandonOnFinish) {
      this.destroy(new Error("connection state unknown"));
      return;
    }
    if (this.phase === "held") {
      // Checked out, nothing of the caller's ran on it.
      this.phase = "released";
      client.release();
      return;
    }
    const cursor = this.cursor;
    const rollback = this.phase === "open";
    const cleanup = (async () => {
      if (rollback) {
        if (cursor && !this.cursorFailed) await cursor.close();
        await client.query("ROLLBACK");
      }
      await client.query("DISCARD ALL");
    })();
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        cleanup,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error("the reset took too long")), CLEANUP_TIMEOUT_MS);
        }),
      ]);
      // The datasource may have closed (and cut the connection) meanwhile.
      if (this.released) return;
      this.phase = "released";
      client.release();
    } catch (e) {
      cleanup.catch(() => undefined);
      this.ds.logger?.warn(
        { error: messageOf(e) },
        "postgres: cannot end the transaction and reset the session; closing the connection",
      );
      this.destroy(e instanceof Error ? e : new Error(String(e)));
    } finally {
      clearTimeout(timer);
    }
  }
}
