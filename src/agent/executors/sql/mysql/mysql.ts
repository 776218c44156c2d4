// MySQL and MariaDB datasources over mysql2's callback API: a pool of poolSize connections, one statement per
// checkout, its rows taken off the socket only as fast as the consumer pulls batches (the connection is paused
// in between), and a cancelled statement stopped in the server by KILL QUERY sent from a separate connection.
// A read-only datasource refuses a user that may do more than read (see mysql-grants.ts): checked on each new
// connection, whose global privileges the server fixes when it logs in, and by every health check.
import mysql from "mysql2";
import type { ConnectionOptions, Pool, PoolConnection } from "mysql2";
import { Code } from "../../../../common/errors.js";
import type { Logger } from "../../../../common/logger.js";
import { cancelledError } from "../datasource-errors.js";
import {
  SqlError,
  batchRowsOf,
  jsonTextParam,
  privilegedUserError,
  type Datasource,
  type DatasourceCheck,
  type DatasourceConfig,
  type PrivilegedUser,
  type JsonValue,
  type QueryChunk,
  type QueryOptions,
  type TableMeta,
} from "../datasource.js";
import { describeMysqlTable, parseTableName } from "./mysql-catalog.js";
import { Checkout } from "./mysql-checkout.js";
import {
  driverOptions,
  firstColumn,
  flavorOfVersion,
  targetOf,
  type Flavor,
  type Target,
} from "./mysql-connection.js";
import {
  ER,
  asDriverError,
  connectError,
  engineCode,
  engineMessage,
  isServerError,
  mysqlError,
  type ErrorContext,
} from "./mysql-errors.js";
import { privilegeOf } from "./mysql-privileges.js";

/** Waiters for a pooled connection beyond this fail at once rather than queue without bound. */
const POOL_QUEUE_LIMIT = 1_000;
/** The KILL QUERY connection gets this long to connect and answer; the statement's connection is closed anyway. */
const KILL_TIMEOUT_MS = 5_000;

/**
 * A statement that would switch the session or its transactions to read-write. MySQL and MariaDB let a client
 * do that with one statement (`SET STATEMENT tx_read_only=0 FOR DROP TABLE t` even escapes a READ ONLY
 * session), so on a read-only datasource such text is refused before it is sent. A string literal that
 * happens to contain these words is refused too; that is the price of not parsing SQL here.
 */
const CHANGES_READ_ONLY = /\b(?:tx_read_only|transaction_read_only)\b|\bread\s+write\b/i;

export function openMysql(config: DatasourceConfig, logger?: Logger): Datasource {
  return new MysqlDatasource(config, logger);
}

class MysqlDatasource implements Datasource {
  readonly name: string;
  readonly driver = "mysql" as const;
  readonly readOnly: boolean;
  private readonly target: Target;
  private readonly pool: Pool;
  /** Aborted by close(): every running statement listens to it. */
  private readonly closing = new AbortController();
  private readonly active = new Set<Checkout>();
  private closed: Promise<void> | undefined;
  /** Learned from the first connection (SELECT VERSION()); one datasource is one server. */
  private flavor: Flavor | undefined;
  /** Read-only: pooled connections whose user was found to be no more than a reader when they were new. */
  private readonly verified = new WeakSet<PoolConnection>();
  /** Read-only: set while the user is privileged; every task fails with it until a check clears it. */
  private refusal: SqlError | undefined;
  private readonly errorContext: ErrorContext;

  constructor(
    private readonly config: DatasourceConfig,
    private readonly logger?: Logger,
  ) {
    this.name = config.name;
    this.readOnly = config.readOnly;
    this.target = targetOf(config);
    this.errorContext = { name: this.name, where: this.where, statementTimeoutMs: config.statementTimeoutMs };
    this.pool = mysql.createPool({
      ...this.connectionOptions(),
      connectionLimit: Math.max(1, config.poolSize),
      maxIdle: Math.max(1, config.poolSize),
      queueLimit: POOL_QUEUE_LIMIT,
      waitForConnections: true,
      // COM_RESET_CONNECTION on release: whatever a statement changed in its session (variables, an open
      // transaction, locks, temporary tables) does not reach the next statement that gets this connection.
      resetOnRelease: true,
    });
  }

  private connectionOptions(): ConnectionOptions {
    return driverOptions(this.target, this.config.connectTimeoutMs);
  }

  /** HOST:PORT/DB, for messages (never the user's password). */
  private get where(): string {
    const t = this.target;
    return `${t.host}:${t.port}/${t.database ?? ""}`;
  }

  async check(): Promise<DatasourceCheck> {
    const conn = await this.acquire(this.closing.signal);
    let privileged: PrivilegedUser | undefined;
    try {
      privileged = await privilegeOf(conn, this.flavor ?? (await this.learnFlavor(conn)));
    } catch (e) {
      conn.destroy();
      throw this.privilegesError(e);
    }
    if (privileged && this.readOnly) {
      conn.destroy();
      throw this.refuse(privileged);
    }
    if (this.readOnly) this.verified.add(conn);
    conn.release();
    this.refusal = undefined;
    return privileged ? { privileged } : {};
  }

  private refuse(privileged: PrivilegedUser): SqlError {
    this.refusal = privilegedUserError(this.name, privileged);
    return this.refusal;
  }

  /**
   * A pooled connection for a statement. On a read-only datasource a connection new to it is first checked:
   * the server fixes a session's global privileges (FILE, SUPER...) when it logs in, so a connection found a
   * reader then stays one, and one that is not is closed, never used.
   */
  private async acquireReader(signal: AbortSignal): Promise<PoolConnection> {
    if (this.refusal) throw this.refusal;
    const conn = await this.acquire(signal);
    if (!this.readOnly || this.verified.has(conn)) return conn;
    let privileged: PrivilegedUser | undefined;
    try {
      privileged = await privilegeOf(conn, this.flavor ?? (await this.learnFlavor(conn)));
    } catch (e) {
      conn.destroy();
      throw this.privilegesError(e);
    }
    if (privileged) {
      conn.destroy();
      throw this.refuse(privileged);
    }
    this.verified.add(conn);
    return conn;
  }

  private async learnFlavor(conn: PoolConnection): Promise<Flavor> {
    const [version] = await firstColumn(conn, "SELECT VERSION()");
    this.flavor = flavorOfVersion(version ?? "");
    return this.flavor;
  }

  /** A failure to read the user's privileges: the server's refusal, or a lost connection. */
  private privilegesError(e: unknown): SqlError {
    if (e instanceof SqlError) return e;
    const err = asDriverError(e);
    if (isServerError(err)) {
      return new SqlError(
        Code.FAILED_PRECONDITION,
        `datasource "${this.name}": cannot read what its user may do (SHOW GRANTS): ${engineMessage(err)}`,
        engineCode(err),
      );
    }
    return this.connectError(e);
  }

  async *query(sql: string, params: JsonValue[], opts: QueryOptions): AsyncGenerator<QueryChunk> {
    const batchRows = batchRowsOf(opts);
    if (this.readOnly && CHANGES_READ_ONLY.test(sql)) {
      throw new SqlError(
        Code.PERMISSION_DENIED,
        `datasource "${this.name}" is read-only: the statement would change the session's read-only setting`,
      );
    }
    const signal = AbortSignal.any([opts.signal, this.closing.signal]);
    if (signal.aborted) throw this.cancelled();
    const checkout = new Checkout(await this.acquireReader(signal), signal, (id) => this.killQuery(id));
    this.active.add(checkout);
    // Stop the statement as soon as the signal says, even while the consumer is not pulling.
    const onAbort = (): void => void checkout.abandon();
    signal.addEventListener("abort", onAbort, { once: true });
    /** "other": the driver failed (a lost link, a bad packet) and the connection's state is unknown. */
    let failure: "none" | "server" | "other" = "none";
    try {
      const flavor = await this.flavorOf(checkout);
      await checkout.run(this.sessionSetup(flavor));
      const reader = checkout.stream(sql, params.map(jsonTextParam), batchRows);
      yield { kind: "columns", columns: await reader.columns() };
      for (let rows = await reader.nextBatch(); rows; rows = await reader.nextBatch()) {
        yield { kind: "rows", rows };
        if (signal.aborted) throw this.cancelled();
      }
      // MariaDB's SLEEP() answers 1 instead of an error when killed: a cancelled statement is cancelled.
      if (signal.aborted) throw this.cancelled();
      yield { kind: "done", rowCount: reader.rowCount, affectedRows: reader.affectedRows };
    } catch (e) {
      if (signal.aborted) throw this.cancelled();
      const err = asDriverError(e);
      // An error the server sent leaves the connection ready for the next command.
      failure = isServerError(err) ? "server" : "other";
      throw this.toSqlError(e);
    } finally {
      signal.removeEventListener("abort", onAbort);
      // Reusable when nothing runs on it any more, whether the result ended or the consumer left after it did.
      if (!signal.aborted && failure !== "other" && !checkout.busy && !checkout.lost) checkout.release();
      else await checkout.abandon();
      this.active.delete(checkout);
    }
  }

  /**
   * One SET per statement that puts the session in the shape the datasource's config asks for (the pool's
   * reset on release undoes it): UTC for TIMESTAMP values, read-only transactions, the statement timeout.
   * Read-only is the session's transaction characteristic rather than a START TRANSACTION READ ONLY around the
   * statement because DDL commits an open transaction before it runs, escaping it; the session setting also
   * covers the transaction that follows that commit, so CREATE/DROP/TRUNCATE fail with 1792 too.
   */
  private sessionSetup(flavor: Flavor): string {
    const parts = ["time_zone = '+00:00'"];
    if (this.readOnly) parts.push(flavor === "mariadb" ? "tx_read_only = 1" : "transaction_read_only = 1");
    const ms = this.config.statementTimeoutMs;
    if (ms > 0) {
      // MariaDB counts seconds (to the microsecond) for every statement; MySQL milliseconds, for SELECT only.
      parts.push(
        flavor === "mariadb"
          ? `max_statement_time = ${(ms / 1000).toFixed(6)}`
          : `max_execution_time = ${Math.ceil(ms)}`,
      );
    }
    return `SET SESSION ${parts.join(", ")}`;
  }

  private async flavorOf(checkout: Checkout): Promise<Flavor> {
    if (this.flavor) return this.flavor;
    const rows = await checkout.run<string[][]>("SELECT VERSION()", true);
    const version = rows[0]?.[0] ?? "";
    this.flavor = flavorOfVersion(version);
    return this.flavor;
  }

  async describeTable(table: string): Promise<TableMeta> {
    if (this.refusal) throw this.refusal;
    const name = parseTableName(table);
    if (!name) {
      throw new SqlError(
        Code.INVALID_ARGUMENT,
        `datasource "${this.name}": table "${table}" is not a table name; write TABLE or DATABASE.TABLE`,
      );
    }
    const conn = await this.acquire(this.closing.signal);
    try {
      const meta = await describeMysqlTable(conn, name, table, this.name);
      conn.release();
      return meta;
    } catch (e) {
      if (e instanceof SqlError || isServerError(asDriverError(e))) conn.release();
      else conn.destroy();
      throw this.toSqlError(e);
    }
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      this.closing.abort();
      await Promise.all([...this.active].map((c) => c.abandon()));
      await new Promise<void>((resolve) => this.pool.end(() => resolve()));
    })();
    return this.closed;
  }

  /** A pooled connection; waiting for one ends when the signal aborts. */
  private acquire(signal: AbortSignal): Promise<PoolConnection> {
    return new Promise((resolve, reject) => {
      if (this.closing.signal.aborted) {
        reject(new SqlError(Code.UNAVAILABLE, `datasource "${this.name}" is closed`));
        return;
      }
      let settled = false;
      const onAbort = (): void => {
        settled = true;
        reject(this.cancelled());
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.pool.getConnection((err, conn) => {
        signal.removeEventListener("abort", onAbort);
        if (settled) {
          // Given up on while waiting: hand it back untouched.
          if (!err) conn.release();
          return;
        }
        settled = true;
        if (!err) {
          resolve(conn);
        } else if (err.message === "Queue limit reached.") {
          reject(
            new SqlError(
              Code.RESOURCE_EXHAUSTED,
              `datasource "${this.name}": ${POOL_QUEUE_LIMIT} statements already wait for one of its ${this.config.poolSize} connections; try again later or raise pool_size`,
            ),
          );
        } else {
          reject(this.connectError(err));
        }
      });
    });
  }

  /** KILL QUERY from a short-lived connection of its own: the pool may have none to spare. */
  private killQuery(threadId: number): Promise<void> {
    return new Promise((resolve) => {
      const killer = mysql.createConnection({
        ...this.connectionOptions(),
        connectTimeout: Math.min(this.config.connectTimeoutMs || KILL_TIMEOUT_MS, KILL_TIMEOUT_MS),
      });
      // Errors reach the query's callback; a late one on the connection itself has nobody left to tell.
      killer.on("error", () => undefined);
      killer.query({ sql: `KILL QUERY ${threadId}`, timeout: KILL_TIMEOUT_MS }, (err) => {
        if (err && err.errno !== ER.UNKNOWN_THREAD) {
          this.logger?.warn(
            { datasource: this.name, threadId, error: engineMessage(err) },
            "could not stop a statement with KILL QUERY; its connection is closed instead",
          );
        }
        if (err) killer.destroy();
        else killer.end(() => undefined);
        resolve();
      });
    });
  }

  private cancelled(): SqlError {
    return cancelledError(this.name);
  }

  private connectError(e: unknown): SqlError {
    return connectError(e, this.errorContext);
  }

  private toSqlError(e: unknown): SqlError {
    return mysqlError(e, this.errorContext);
  }
}
