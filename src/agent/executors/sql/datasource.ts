// What every SQL driver of the agent provides: a named datasource (configured on the agent, never in the
// request) that checks its connection, runs one statement with positional parameters and streams the
// result as column metadata then batches of rows, pulled one batch at a time (the consumer's pace is
// the database's pace: nothing is read ahead of what the consumer asked for beyond one batch), and
// describes a table from the engine's catalog. Values arrive already converted to JSON that keeps their
// meaning (see JsonValue below).

export type SqlDriver = "postgres" | "mysql" | "sqlite";

/** A datasource as configured in the agent's `[datasources.NAME]`, secrets already resolved. */
export interface DatasourceConfig {
  name: string;
  driver: SqlDriver;
  /** postgres/mysql: a connection URL (postgres://..., mysql://...). Either url or the fields below. */
  url?: string;
  host?: string;
  port?: number;
  user?: string;
  /** Resolved from password_env or password_file; never logged. */
  password?: string;
  /** postgres/mysql: the database name. */
  database?: string;
  /** sqlite: the database file (absolute). */
  path?: string;
  /**
   * Default true: the database itself refuses writes (read-only transaction/session, SQLite opened read-only),
   * and the agent refuses a PostgreSQL or MySQL/MariaDB user that could get around that (see check()).
   */
  readOnly: boolean;
  /** Per statement; 0 = none. Enforced by the database where it can, else by cancelling. */
  statementTimeoutMs: number;
  /** Connections kept (postgres/mysql); sqlite: concurrent readers. */
  poolSize: number;
  /** A result longer than this fails with FAILED_PRECONDITION-like error after sending max_rows rows; 0 = none. */
  maxRows: number;
  connectTimeoutMs: number;
}

export type { ColumnInfo, JsonValue, TableMeta } from "../../../common/sql-result.js";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { ColumnInfo, JsonValue, TableMeta } from "../../../common/sql-result.js";

/** Rows per batch when the caller does not say. */
export const DEFAULT_BATCH_ROWS = 500;

/** The rows per batch a query yields: the caller's batchRows (at least 1, whole), else DEFAULT_BATCH_ROWS. */
export function batchRowsOf(opts: QueryOptions): number {
  return Math.max(1, Math.floor(opts.batchRows ?? DEFAULT_BATCH_ROWS));
}

/**
 * A parameter as the network drivers bind it: objects and arrays as JSON text (pg would make an array
 * literal of an array, mysql2 would expand it), since JSON is what a structured parameter means here.
 */
export function jsonTextParam(v: JsonValue): string | number | boolean | null {
  return v !== null && typeof v === "object" ? JSON.stringify(v) : v;
}

export interface QueryOptions {
  /** Aborting stops the statement in the database (pg_cancel_backend, KILL QUERY, interrupt). */
  signal: AbortSignal;
  /** Rows per batch yielded (default 500). */
  batchRows?: number;
}

export type QueryChunk =
  /** Exactly once, first: the result's columns (empty for a statement that returns no rows). */
  | { kind: "columns"; columns: ColumnInfo[] }
  /** Zero or more, in order; never empty. */
  | { kind: "rows"; rows: JsonValue[][] }
  /** Exactly once, last. affectedRows: for INSERT/UPDATE/DELETE where the engine says. */
  | { kind: "done"; rowCount: number; affectedRows?: number };

/**
 * A result the database itself encodes as CSV (see Datasource.queryCsv): "unsuitable" first and alone when
 * this statement cannot take that path (the caller then uses query()); otherwise columns, data*, done.
 */
export type CsvChunk =
  | { kind: "unsuitable" }
  | { kind: "columns"; columns: ColumnInfo[] }
  /** CSV lines, byte for byte what csvRows() of src/common/sql-csv.ts makes of the same rows. */
  | { kind: "data"; data: Buffer }
  | { kind: "done"; rowCount: number };

/** Why a statement failed, with the engine's own code when there is one. */
export class SqlError extends SwitchboardError {
  constructor(
    code: Code,
    message: string,
    /** The engine's own error code (SQLSTATE, errno, SQLITE_*), when there is one. */
    readonly engineCode?: string,
  ) {
    super(code, message);
    this.name = "SqlError";
  }
}

/**
 * What lets the database user a datasource connects as do more than read: a read-only transaction or session
 * does not stop a PostgreSQL superuser's COPY ... TO PROGRAM or MariaDB's SELECT ... INTO OUTFILE with FILE.
 */
export interface PrivilegedUser {
  /** As the server names it: "postgres", "root@127.0.0.1". */
  user: string;
  /** What it holds, as the end of a sentence about the user: "is a superuser", "holds FILE ON *.*". */
  privilege: string;
}

export interface DatasourceCheck {
  /** Set when the user is privileged and the datasource is not read_only (a read_only one refuses instead). */
  privileged?: PrivilegedUser;
}

/**
 * Why a read_only datasource is not used: its user is privileged. FAILED_PRECONDITION: the datasource's
 * configuration, not the task, has to change.
 */
export function privilegedUserError(datasource: string, p: PrivilegedUser): SqlError {
  return new SqlError(
    Code.FAILED_PRECONDITION,
    `datasource "${datasource}": user ${p.user} ${p.privilege}; a read_only datasource needs a ` +
      `least-privilege role (see docs/security.md#databases) or read_only = false`,
  );
}

export interface Datasource {
  readonly name: string;
  readonly driver: SqlDriver;
  readonly readOnly: boolean;
  /**
   * Opens a connection (or uses one from the pool), checks it answers and, on PostgreSQL and MySQL/MariaDB,
   * what its user may do; rejects with SqlError, FAILED_PRECONDITION (privilegedUserError) for a read_only
   * datasource whose user can do more than read. From then on its tasks fail with that error too, until a
   * check finds the user no longer privileged.
   */
  check(): Promise<DatasourceCheck>;
  /**
   * Runs one statement. The iterator yields columns, rows*, done; it throws SqlError for database errors
   * (the message carries the engine's own text), and for a write on a read-only datasource. Returning
   * early (break) or aborting the signal stops the statement in the database and releases the connection.
   * maxRows is not enforced here (the executor counts).
   */
  query(sql: string, params: JsonValue[], opts: QueryOptions): AsyncIterable<QueryChunk>;
  /**
   * Optional: the statement's result as CSV encoded by the database (PostgreSQL's COPY ... TO STDOUT), for
   * statements whose every column prints in CSV exactly as csvRows() prints its JSON value. Same read-only,
   * cancel and pacing rules as query(); parameters are not supported (the caller passes none).
   */
  queryCsv?(sql: string, opts: QueryOptions): AsyncIterable<CsvChunk>;
  /** The table's columns, primary key and indexes from the engine's catalog; SqlError NOT_FOUND when absent. */
  describeTable(table: string): Promise<TableMeta>;
  /** Ends every connection; queries running are cancelled. */
  close(): Promise<void>;
}
