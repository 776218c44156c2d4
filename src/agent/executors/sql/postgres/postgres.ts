// The PostgreSQL datasource: a pg Pool whose every statement runs in a transaction of its own (READ ONLY
// unless the datasource allows writes) through a pg-cursor that fetches one batch per pull, with values
// converted once from PostgreSQL's text output to JsonValue. Cancelling stops the statement in the server.
// A read-only datasource refuses a user that a READ ONLY transaction cannot hold (a superuser, a member of
// the server-file and signal roles): checked on each new connection and by every health check.
import pg from "pg";
import { Code } from "../../../../common/errors.js";
import type { Logger } from "../../../../common/logger.js";
import {
  SqlError,
  batchRowsOf,
  jsonTextParam,
  privilegedUserError,
  type CsvChunk,
  type Datasource,
  type DatasourceCheck,
  type DatasourceConfig,
  type PrivilegedUser,
  type JsonValue,
  type QueryChunk,
  type QueryOptions,
  type TableMeta,
} from "../datasource.js";
import { PostgresCatalog, describePostgresTable } from "./postgres-catalog.js";
import { connectionConfig, endpointOf } from "./postgres-connection.js";
import { connectError, isConnectionError, postgresError, type ErrorContext } from "./postgres-errors.js";
import { privilegeOf } from "./postgres-privileges.js";
import { StatementRun } from "./postgres-statement-run.js";

/** Per transaction (SET LOCAL), not per session, so they hold behind a transaction-pooling PgBouncer too. */
const SESSION_SETTINGS = [
  "SET LOCAL TimeZone = 'UTC'",
  "SET LOCAL DateStyle = 'ISO, YMD'",
  "SET LOCAL IntervalStyle = 'postgres'",
  // Shortest exact float output on PostgreSQL 12+, the most digits on older servers.
  "SET LOCAL extra_float_digits = 3",
  "SET LOCAL bytea_output = 'hex'",
];

export function openPostgres(config: DatasourceConfig, logger?: Logger): Datasource {
  return new PostgresDatasource(config, logger);
}

type DatasourceState = "open" | "closing" | "closed";

class PostgresDatasource implements Datasource {
  readonly name: string;
  readonly driver = "postgres" as const;
  readonly readOnly: boolean;
  readonly endpoint: string;
  private readonly pool: pg.Pool;
  private readonly clientConfig: pg.ClientConfig;
  private state: DatasourceState = "open";
  private closing: Promise<void> | undefined;
  private readonly runs = new Set<StatementRun>();
  private readonly catalog: PostgresCatalog;
  private readonly errorContext: ErrorContext;
  /** Clients that already carry our 'error' listener. */
  private readonly guarded = new WeakSet<pg.ClientBase>();
  /** Read-only: pooled connections whose user was found to be no more than a reader when they were new. */
  readonly verified = new WeakSet<pg.ClientBase>();
  /** Read-only: set while the user is privileged (see refuse()); every task fails with it. */
  private refusal: SqlError | undefined;

  constructor(
    readonly config: DatasourceConfig,
    readonly logger?: Logger,
  ) {
    this.name = config.name;
    this.readOnly = config.readOnly;
    this.endpoint = endpointOf(config);
    this.clientConfig = connectionConfig(config);
    this.errorContext = {
      name: this.name,
      endpoint: this.endpoint,
      statementTimeoutMs: config.statementTimeoutMs,
    };
    this.catalog = new PostgresCatalog((fn) => this.withSpareClient(fn), logger);
    this.pool = new pg.Pool({ ...this.clientConfig, max: Math.max(1, config.poolSize) });
    // An idle pooled connection that dies (server restart, network cut) is dropped by the pool; without a
    // listener the event would crash the agent.
    this.pool.on("error", (err) => {
      this.logger?.warn({ error: err.message }, "postgres: an idle connection failed and was dropped");
    });
  }

  async check(): Promise<DatasourceCheck> {
    this.throwIfClosed();
    let privileged: PrivilegedUser | undefined;
    try {
      privileged = await this.withSpareClient((c) => privilegeOf(c));
    } catch (e) {
      if (e instanceof SqlError) throw e;
      throw this.connectError(e);
    }
    if (privileged && this.readOnly) throw this.refuse(privileged);
    this.refusal = undefined;
    return privileged ? { privileged } : {};
  }

  /**
   * Stops using a read-only datasource whose user turned out privileged: its tasks fail with the returned
   * error until a check finds the user a reader again (PostgreSQL applies role changes to open sessions too).
   */
  refuse(privileged: PrivilegedUser): SqlError {
    this.refusal = privilegedUserError(this.name, privileged);
    return this.refusal;
  }

  async *query(sql: string, params: JsonValue[], opts: QueryOptions): AsyncGenerator<QueryChunk> {
    this.throwIfUnusable();
    const batchRows = batchRowsOf(opts);
    const run = new StatementRun(this, opts.signal);
    this.runs.add(run);
    try {
      await this.start(run);
      const lateOids = new Set<number>();
      run.open(sql, params.map(jsonTextParam), this.catalog.parsersFor(lateOids));
      let batch = await run.read(batchRows);
      const { columns, lateArrays } = await run.untilStopped(
        this.catalog.columnsOf(batch.result.fields, lateOids),
      );
      yield { kind: "columns", columns };
      run.throwIfStopped();
      let rowCount = 0;
      while (batch.rows.length > 0) {
        for (const { index, convert } of lateArrays) {
          for (const row of batch.rows) {
            const v = row[index];
            if (typeof v === "string") row[index] = convert(v);
          }
        }
        rowCount += batch.rows.length;
        yield { kind: "rows", rows: batch.rows };
        run.throwIfStopped();
        batch = await run.read(batchRows);
      }
      await run.commit();
      yield { kind: "done", rowCount, affectedRows: affectedRows(batch.result) };
    } catch (e) {
      throw this.toSqlError(e, run);
    } finally {
      await run.finish();
      this.runs.delete(run);
    }
  }

  async *queryCsv(sql: string, opts: QueryOptions): AsyncGenerator<CsvChunk> {
    this.throwIfUnusable();
    if (!/^\s*(select|with|values|table)\b/i.test(sql) || sql.includes(";")) {
      yield { kind: "unsuitable" };
      return;
    }
    const run = new StatementRun(this, opts.signal);
    this.runs.add(run);
    try {
      await this.start(run);
      // The result's columns without running it (LIMIT 0 is planned, not executed); a statement that cannot
      // be wrapped fails here, inside a savepoint, and takes the ordinary path, which reports its error.
      const fields = await run.probe(`SELECT * FROM (${sql}) AS sb_csv_probe LIMIT 0`);
      if (fields === undefined || !fields.every((f) => CSV_IDENTICAL_TYPES.has(f.dataTypeID))) {
        yield { kind: "unsuitable" };
        return;
      }
      const { columns } = await run.untilStopped(this.catalog.columnsOf(fields, new Set()));
      yield { kind: "columns", columns };
      const copy = run.startCopy(`COPY (${sql}) TO STDOUT WITH (FORMAT csv)`);
      // Until the COPY has ended the connection is mid-protocol: leaving early closes it, never reuses it.
      run.abandonOnFinish = true;
      for (let data = await run.readCopy(copy); data !== null; data = await run.readCopy(copy)) {
        yield { kind: "data", data };
        run.throwIfStopped();
      }
      run.abandonOnFinish = false;
      await run.commit();
      yield { kind: "done", rowCount: copy.rowCount };
    } catch (e) {
      throw this.toSqlError(e, run);
    } finally {
      await run.finish();
      this.runs.delete(run);
    }
  }

  async describeTable(table: string): Promise<TableMeta> {
    this.throwIfUnusable();
    try {
      return await this.withSpareClient((c) => describePostgresTable(c, table, this.name));
    } catch (e) {
      throw this.toSqlError(e);
    }
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.state = "closing";
      await Promise.all([...this.runs].map((r) => r.stop("closed")));
      await this.pool.end();
      this.state = "closed";
    })();
    return this.closing;
  }

  // -------------------------------------------------------------------------------------------------------

  /** Takes a connection for the run, checks its user (read-only datasources) and begins its transaction. */
  private async start(run: StatementRun): Promise<void> {
    run.throwIfStopped();
    await run.acquire(this.pool);
    await run.verifyRole();
    await run.begin(this.beginSql());
  }

  private beginSql(): string {
    const timeout = this.config.statementTimeoutMs;
    return [
      this.readOnly ? "BEGIN TRANSACTION READ ONLY" : "BEGIN",
      ...SESSION_SETTINGS,
      ...(timeout > 0 ? [`SET LOCAL statement_timeout = ${Math.ceil(timeout)}`] : []),
      // The server's own pid (not the one a pooler may announce) is what pg_cancel_backend needs.
      "SELECT pg_backend_pid() AS pid",
    ].join("; ");
  }
  async withSpareClient<T>(fn: (c: pg.ClientBase) => Promise<T>): Promise<T> {
    const pool = this.pool;
    const spare = pool.waitingCount === 0 && (pool.idleCount > 0 || pool.totalCount < pool.options.max);
    if (spare && this.state === "open") {
      let client: pg.PoolClient;
      try {
        client = await pool.connect();
      } catch (e) {
        throw this.connectError(e);
      }
      this.guard(client);
      let broken: Error | undefined;
      try {
        return await fn(client);
      } catch (e) {
        if (isConnectionError(e)) broken = e instanceof Error ? e : new Error(String(e));
        throw e;
      } finally {
        client.release(broken);
      }
    }
    const client = new pg.Client(this.clientConfig);
    client.on("error", () => undefined);
    try {
      await client.connect();
    } catch (e) {
      await client.end().catch(() => undefined);
      throw this.connectError(e);
    }
    try {
      return await fn(client);
    } finally {
      await client.end().catch(() => undefined);
    }
  }

  /** A pooled connection that fails while we hold it emits 'error'; unheard, that would crash the agent. */
  guard(client: pg.ClientBase): void {
    if (this.guarded.has(client)) return;
    this.guarded.add(client);
    client.on("error", (err: Error) => {
      for (const run of this.runs) if (run.holds(client)) run.connectionFailed(err);
      this.logger?.debug({ error: err.message }, "postgres: a connection failed");
    });
  }

  connectError(e: unknown): SqlError {
    return connectError(e, this.errorContext);
  }

  private throwIfClosed(): void {
    if (this.state !== "open") {
      throw new SqlError(
        Code.UNAVAILABLE,
        `datasource "${this.name}" is closed (the agent is shutting down)`,
      );
    }
  }

  /** Closed, or refused while its user is known to be privileged (read-only datasources). */
  private throwIfUnusable(): void {
    this.throwIfClosed();
    if (this.refusal) throw this.refusal;
  }

  toSqlError(e: unknown, run?: StatementRun): SqlError {
    return postgresError(e, this.errorContext, run?.stopReason);
  }
}

/**
 * Types whose text in PostgreSQL's CSV is exactly what csvRows() prints for the JsonValue this driver makes
 * of them (integers, numeric, text types, uuid, ISO dates): for these, COPY's output is the result.
 */
const CSV_IDENTICAL_TYPES = new Set([
  20 /* int8 */, 21 /* int2 */, 23 /* int4 */, 26 /* oid */, 1700 /* numeric */, 25 /* text */,
  1043 /* varchar */, 1042 /* bpchar */, 19 /* name */, 2950 /* uuid */, 1082 /* date */,
]);

const WRITE_COMMANDS = new Set(["INSERT", "UPDATE", "DELETE", "MERGE", "COPY"]);

function affectedRows(result: pg.QueryResult): number | undefined {
  if (result.rowCount === null || !result.command) return undefined;
  if (WRITE_COMMANDS.has(result.command)) return result.rowCount;
  // CREATE TABLE AS / SELECT INTO report "SELECT n" and return no rows.
  if (result.command === "SELECT" && result.fields.length === 0) return result.rowCount;
  return undefined;
}
