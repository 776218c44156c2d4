// MySQL and MariaDB datasources over mysql2's callback API: a pool of poolSize connections, one statement per
// checkout, its rows taken off the socket only as fast as the consumer pulls batches (the connection is paused
// in between), and a cancelled statement stopped in the server by KILL QUERY sent from a separate connection.
// A read-only datasource refuses a user that may do more than read (see mysql-grants.ts): checked on each new
// connection, whose global privileges the server fixes when it logs in, and by every health check.
import mysql from "mysql2";
import type { ConnectionOptions, FieldPacket, Pool, PoolConnection, Query, ResultSetHeader } from "mysql2";
import { Code } from "../../../../common/errors.js";
import type { Logger } from "../../../../common/logger.js";
import {
  DEFAULT_BATCH_ROWS,
  SqlError,
  privilegedUserError,
  type ColumnInfo,
  type Datasource,
  type DatasourceCheck,
  type DatasourceConfig,
  type PrivilegedUser,
  type JsonValue,
  type QueryChunk,
  type QueryOptions,
  type TableMeta,
} from "../datasource.js";
import { summarizeGrants } from "./mysql-grants.js";

const DEFAULT_PORT = 3306;
/** Waiters for a pooled connection beyond this fail at once rather than queue without bound. */
const POOL_QUEUE_LIMIT = 1_000;
/** The KILL QUERY connection gets this long to connect and answer; the statement's connection is closed anyway. */
const KILL_TIMEOUT_MS = 5_000;
/** SHOW GRANTS and its companions are small; a server that takes longer than this is in trouble. */
const PRIVILEGES_TIMEOUT_MS = 15_000;
/** Privileges named in a refusal; the rest are counted. */
const PRIVILEGES_SHOWN = 3;

/**
 * A statement that would switch the session or its transactions to read-write. MySQL and MariaDB let a client
 * do that with one statement (`SET STATEMENT tx_read_only=0 FOR DROP TABLE t` even escapes a READ ONLY
 * session), so on a read-only datasource such text is refused before it is sent. A string literal that
 * happens to contain these words is refused too; that is the price of not parsing SQL here.
 */
const CHANGES_READ_ONLY = /\b(?:tx_read_only|transaction_read_only)\b|\bread\s+write\b/i;

/** Column types of the client/server protocol (include/mysql_com.h, enum_field_types). */
const T = {
  DECIMAL: 0x00,
  TINY: 0x01,
  SHORT: 0x02,
  LONG: 0x03,
  FLOAT: 0x04,
  DOUBLE: 0x05,
  NULL: 0x06,
  TIMESTAMP: 0x07,
  LONGLONG: 0x08,
  INT24: 0x09,
  DATE: 0x0a,
  TIME: 0x0b,
  DATETIME: 0x0c,
  YEAR: 0x0d,
  NEWDATE: 0x0e,
  VARCHAR: 0x0f,
  BIT: 0x10,
  VECTOR: 0xf2,
  JSON: 0xf5,
  NEWDECIMAL: 0xf6,
  ENUM: 0xf7,
  SET: 0xf8,
  TINY_BLOB: 0xf9,
  MEDIUM_BLOB: 0xfa,
  LONG_BLOB: 0xfb,
  BLOB: 0xfc,
  VAR_STRING: 0xfd,
  STRING: 0xfe,
  GEOMETRY: 0xff,
} as const;

const FLAG_NOT_NULL = 1;
const FLAG_UNSIGNED = 32;
const FLAG_ENUM = 256;
const FLAG_SET = 2048;
/** The character set number of binary strings (BLOB, VARBINARY, BIT...). */
const CHARSET_BINARY = 63;

/** Server error numbers (mysqld_error.h) that decide a status code. */
const ER = {
  CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: 1792,
  OPTION_PREVENTS_STATEMENT: 1290,
  READ_ONLY_MODE: 1836,
  QUERY_INTERRUPTED: 1317,
  STATEMENT_TIMEOUT: 1969,
  QUERY_TIMEOUT: 3024,
  UNKNOWN_THREAD: 1094,
} as const;

const PERMISSION_ERRNOS = new Set([1044, 1045, 1142, 1143, 1227, 1370]);
/** The server or the link went away: 1040 too many connections, 1053 shutdown, 1927 connection killed, 2006/2013 gone/lost. */
const UNAVAILABLE_ERRNOS = new Set([1040, 1053, 1927, 2006, 2013]);
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EPIPE",
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_SEQUENCE_TIMEOUT",
]);
/** Syntax, unknown names, bad data, constraint violations: the request is wrong, not the server. */
const INVALID_ERRNOS = new Set([
  1048, 1049, 1050, 1051, 1052, 1054, 1060, 1062, 1064, 1066, 1072, 1091, 1109, 1111, 1136, 1146, 1176, 1210,
  1222, 1241, 1242, 1264, 1265, 1292, 1305, 1318, 1364, 1365, 1366, 1367, 1406, 1411, 1451, 1452, 1582, 1583,
  1630, 1690, 3140, 3819, 4025, 4038,
]);
/** SQLSTATE classes of the same kind: 21 cardinality, 22 data exception, 23 integrity constraint, 42 syntax. */
const INVALID_SQLSTATE = /^(21|22|23|42)/;

type Flavor = "mariadb" | "mysql";

/** What mysql2 puts on its errors (server errors carry errno and sqlMessage; socket errors only code). */
interface DriverError {
  message: string;
  code?: string;
  errno?: number;
  sqlState?: string;
  sqlMessage?: string;
  fatal?: boolean;
}

function asDriverError(e: unknown): DriverError {
  if (e instanceof Error) return e;
  return { message: String(e) };
}

/** The engine's own words for an error. */
function engineMessage(e: DriverError): string {
  return e.sqlMessage ?? e.message;
}

function engineCode(e: DriverError): string | undefined {
  return e.errno !== undefined && e.errno > 0 ? String(e.errno) : e.code;
}

interface Target {
  host: string;
  port: number;
  user?: string;
  password?: string;
  database?: string;
}

/** Where to connect, from the url (mysql:// or mariadb://) with the separate fields filling what it leaves out. */
function targetOf(config: DatasourceConfig): Target {
  if (config.url === undefined || config.url === "") {
    return {
      host: config.host ?? "localhost",
      port: config.port ?? DEFAULT_PORT,
      user: config.user,
      password: config.password,
      database: config.database,
    };
  }
  let url: URL;
  try {
    url = new URL(config.url);
  } catch {
    // The url may hold a password: name only its shape.
    throw new SqlError(
      Code.INVALID_ARGUMENT,
      `datasource "${config.name}": url is not a URL; write it as mysql://USER@HOST:PORT/DATABASE`,
    );
  }
  if (url.protocol !== "mysql:" && url.protocol !== "mariadb:") {
    throw new SqlError(
      Code.INVALID_ARGUMENT,
      `datasource "${config.name}": a mysql url starts with mysql:// or mariadb://, not ${url.protocol}//`,
    );
  }
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const database = decodeURIComponent(url.pathname.replace(/^\//, ""));
  return {
    host: host === "" ? (config.host ?? "localhost") : decodeURIComponent(host),
    port: url.port !== "" ? Number(url.port) : (config.port ?? DEFAULT_PORT),
    user: url.username !== "" ? decodeURIComponent(url.username) : config.user,
    password: url.password !== "" ? decodeURIComponent(url.password) : config.password,
    database: database !== "" ? database : config.database,
  };
}

/** The statement's parameters as mysql2 escapes them: objects and arrays go as JSON text (else it expands them). */
function toQueryValue(v: JsonValue): string | number | boolean | null {
  return v !== null && typeof v === "object" ? JSON.stringify(v) : v;
}

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

  constructor(
    private readonly config: DatasourceConfig,
    private readonly logger?: Logger,
  ) {
    this.name = config.name;
    this.readOnly = config.readOnly;
    this.target = targetOf(config);
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
    const t = this.target;
    return {
      host: t.host,
      port: t.port,
      user: t.user,
      password: t.password,
      database: t.database,
      connectTimeout: this.config.connectTimeoutMs,
      charset: "utf8mb4",
      timezone: "Z",
      supportBigNumbers: true,
      bigNumberStrings: false,
      decimalNumbers: false,
      dateStrings: true,
      multipleStatements: false,
    };
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
      privileged = await this.privilegeOf(conn);
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
      privileged = await this.privilegeOf(conn);
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

  /**
   * What the connection's user may do beyond reading, from SHOW GRANTS (which includes PUBLIC's grants on
   * MariaDB) and the grants of every role it could SET ROLE to: on MariaDB those show once the role is set
   * (nested roles included), on MySQL through SHOW GRANTS ... USING.
   */
  private async privilegeOf(conn: PoolConnection): Promise<PrivilegedUser | undefined> {
    const flavor = this.flavor ?? (await this.learnFlavor(conn));
    const [user] = await firstColumn(conn, "SELECT CURRENT_USER()");
    const grants = async (sql: string): Promise<string[]> =>
      (await firstColumn(conn, sql)).filter((l): l is string => l !== null);
    let lines: string[];
    if (flavor === "mysql") {
      lines = await grants("SHOW GRANTS");
      const { roles } = summarizeGrants(lines);
      if (roles.length > 0) {
        lines = lines.concat(await grants(`SHOW GRANTS FOR CURRENT_USER() USING ${roles.join(", ")}`));
      }
    } else {
      // MariaDB's SHOW GRANTS adds the grants of the role set in the session: none while the account's own
      // are read (its role grants then name only roles granted to it, which SET ROLE accepts).
      const [active] = await firstColumn(conn, "SELECT CURRENT_ROLE()");
      try {
        if (active) await firstColumn(conn, "SET ROLE NONE");
        lines = await grants("SHOW GRANTS");
        for (const role of summarizeGrants(lines).roles) {
          await firstColumn(conn, `SET ROLE ${role}`);
          lines = lines.concat(await grants("SHOW GRANTS"));
        }
      } finally {
        await firstColumn(conn, active ? `SET ROLE \`${active.replace(/`/g, "``")}\`` : "SET ROLE NONE");
      }
    }
    const beyond = summarizeGrants(lines).beyondReading;
    if (beyond.length === 0) return undefined;
    const more = beyond.length - PRIVILEGES_SHOWN;
    const shown = beyond.slice(0, PRIVILEGES_SHOWN).join(", ") + (more > 0 ? ` and ${more} more` : "");
    return { user: user ?? "(unknown)", privilege: `holds ${shown}` };
  }

  private async learnFlavor(conn: PoolConnection): Promise<Flavor> {
    const [version] = await firstColumn(conn, "SELECT VERSION()");
    this.flavor = /mariadb/i.test(version ?? "") ? "mariadb" : "mysql";
    return this.flavor;
  }

  /** A failure to read the user's privileges: the server's refusal, or a lost connection. */
  private privilegesError(e: unknown): SqlError {
    if (e instanceof SqlError) return e;
    const err = asDriverError(e);
    if (err.errno !== undefined && err.errno > 0 && !err.fatal) {
      return new SqlError(
        Code.FAILED_PRECONDITION,
        `datasource "${this.name}": cannot read what its user may do (SHOW GRANTS): ${engineMessage(err)}`,
        engineCode(err),
      );
    }
    return this.connectError(e);
  }

  async *query(sql: string, params: JsonValue[], opts: QueryOptions): AsyncGenerator<QueryChunk> {
    const batchRows = Math.max(1, Math.floor(opts.batchRows ?? DEFAULT_BATCH_ROWS));
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
      const reader = checkout.stream(sql, params.map(toQueryValue), batchRows);
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
      failure = err.errno !== undefined && err.errno > 0 && !err.fatal ? "server" : "other";
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
    this.flavor = /mariadb/i.test(version) ? "mariadb" : "mysql";
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
      const schema = name.schema ?? null;
      const columns = await simpleQuery<ColumnRow[]>(
        conn,
        `SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, IS_NULLABLE AS nullable, COLUMN_DEFAULT AS dflt
           FROM information_schema.COLUMNS
          WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
          ORDER BY ORDINAL_POSITION`,
        [schema, name.table],
      );
      if (columns.length === 0) {
        throw new SqlError(Code.NOT_FOUND, `datasource "${this.name}": table "${table}" does not exist`);
      }
      const stats = await simpleQuery<IndexRow[]>(
        conn,
        `SELECT INDEX_NAME AS name, COLUMN_NAME AS col, NON_UNIQUE AS nonUnique
           FROM information_schema.STATISTICS
          WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
          ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX`,
        [schema, name.table],
      );
      const indexes = new Map<string, TableMeta["indexes"][number]>();
      for (const s of stats) {
        let index = indexes.get(s.name);
        if (!index) {
          index = {
            name: s.name,
            columns: [],
            unique: Number(s.nonUnique) === 0,
            primary: s.name === "PRIMARY",
          };
          indexes.set(s.name, index);
        }
        index.columns.push(s.col);
      }
      conn.release();
      return {
        table,
        columns: columns.map((c) => ({
          name: c.name,
          type: c.type,
          nullable: c.nullable === "YES",
          // MariaDB spells "no default" of a nullable column as the expression NULL; MySQL as SQL NULL.
          default: c.dflt === null || c.dflt === "NULL" ? null : c.dflt,
        })),
        primaryKey: indexes.get("PRIMARY")?.columns ?? [],
        indexes: [...indexes.values()],
      };
    } catch (e) {
      const err = asDriverError(e);
      if (e instanceof SqlError || (err.errno !== undefined && err.errno > 0 && !err.fatal)) conn.release();
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
    return new SqlError(Code.CANCELLED, `datasource "${this.name}": query cancelled`);
  }

  private connectError(e: unknown): SqlError {
    if (e instanceof SqlError) return e;
    const err = asDriverError(e);
    return new SqlError(
      Code.UNAVAILABLE,
      `datasource "${this.name}": cannot connect to mysql at ${this.where}: ${engineMessage(err)}`,
      engineCode(err),
    );
  }

  private toSqlError(e: unknown): SqlError {
    if (e instanceof SqlError) return e;
    const err = asDriverError(e);
    const msg = engineMessage(err);
    const errno = err.errno ?? 0;
    const code = engineCode(err);
    const plain = (status: number): SqlError =>
      new SqlError(status, `datasource "${this.name}": ${msg}`, code);
    if (
      errno === ER.CANT_EXECUTE_IN_READ_ONLY_TRANSACTION ||
      errno === ER.READ_ONLY_MODE ||
      (errno === ER.OPTION_PREVENTS_STATEMENT && /read.only/i.test(msg))
    ) {
      return new SqlError(Code.PERMISSION_DENIED, `datasource "${this.name}" is read-only: ${msg}`, code);
    }
    if (errno === ER.STATEMENT_TIMEOUT || errno === ER.QUERY_TIMEOUT) {
      const secs = this.config.statementTimeoutMs / 1000;
      return new SqlError(
        Code.DEADLINE_EXCEEDED,
        `datasource "${this.name}": statement timeout (${secs}s) exceeded: ${msg}`,
        code,
      );
    }
    // Interrupted by someone else's KILL QUERY (ours are reported as cancelled before we get here).
    if (errno === ER.QUERY_INTERRUPTED) return plain(Code.CANCELLED);
    if (UNAVAILABLE_ERRNOS.has(errno) || UNAVAILABLE_CODES.has(err.code ?? "") || err.fatal) {
      return new SqlError(
        Code.UNAVAILABLE,
        `datasource "${this.name}": the connection to mysql at ${this.where} was lost: ${msg}`,
        code,
      );
    }
    if (PERMISSION_ERRNOS.has(errno)) return plain(Code.PERMISSION_DENIED);
    if (INVALID_ERRNOS.has(errno) || (errno > 0 && INVALID_SQLSTATE.test(err.sqlState ?? ""))) {
      return plain(Code.INVALID_ARGUMENT);
    }
    return plain(Code.INTERNAL);
  }
}

interface ColumnRow {
  name: string;
  type: string;
  nullable: string;
  dflt: string | null;
}

interface IndexRow {
  name: string;
  col: string;
  nonUnique: number | string;
}

/** "table", "db.table", with or without backquotes. */
function parseTableName(text: string): { schema?: string; table: string } | undefined {
  const part = "(?:`((?:[^`]|``)+)`|([^.`\\s]+))";
  const m = new RegExp(`^\\s*${part}(?:\\.${part})?\\s*$`).exec(text);
  if (!m) return undefined;
  const unquote = (q: string | undefined, bare: string | undefined): string | undefined =>
    q !== undefined ? q.replace(/``/g, "`") : bare;
  const first = unquote(m[1], m[2]);
  const second = unquote(m[3], m[4]);
  if (first === undefined) return undefined;
  return second === undefined ? { table: first } : { schema: first, table: second };
}

/** A small statement with its whole result at once (setup, catalog lookups). */
function simpleQuery<R>(conn: PoolConnection, sql: string, values?: unknown[]): Promise<R> {
  return new Promise((resolve, reject) => {
    conn.query({ sql, values }, (err, result) => (err ? reject(err) : resolve(result as R)));
  });
}

/** The first column of a small result (SHOW GRANTS lines, a function's value), as text; [] for none. */
function firstColumn(conn: PoolConnection, sql: string): Promise<(string | null)[]> {
  return new Promise((resolve, reject) => {
    conn.query({ sql, rowsAsArray: true, timeout: PRIVILEGES_TIMEOUT_MS }, (err, result) => {
      if (err) return reject(err);
      const rows = Array.isArray(result) ? (result as unknown[][]) : [];
      const text = (v: unknown): string | null =>
        typeof v === "string"
          ? v
          : Buffer.isBuffer(v)
            ? v.toString("utf8")
            : v == null
              ? null
              : JSON.stringify(v);
      resolve(rows.map((r) => text(r[0])));
    });
  });
}

/**
 * One connection taken from the pool for one statement, and what is known of it: whether a command is in
 * flight on the server (then stopping it takes a KILL QUERY), whether the link was lost, whether it was given up.
 */
class Checkout {
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

/**
 * The rows of one statement, held at most one batch ahead of the consumer: when a batch is full the
 * connection is paused (mysql2 stops reading the socket, TCP backpressure reaches the server) until the
 * consumer takes it.
 */
class ResultReader {
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

type Converter = (v: unknown) => JsonValue;

/** Values mysql2 does not already give in their JSON form: DATETIME text to ISO, bytes to base64. */
function converters(fields: FieldPacket[]): [number, Converter][] {
  const out: [number, Converter][] = [];
  fields.forEach((f, i) => {
    const type = f.columnType ?? f.type;
    if (type === T.DATETIME || type === T.TIMESTAMP) out.push([i, isoDateTime]);
    else if (type === T.VECTOR) out.push([i, vectorToArray]);
    else if (holdsBytes(f)) out.push([i, bytesToBase64]);
  });
  return out;
}

/** Binary strings (BINARY, VARBINARY, BLOB) and BIT arrive as Buffers. */
function holdsBytes(f: FieldPacket): boolean {
  const type = f.columnType ?? f.type;
  if (type === T.BIT) return true;
  const stringy =
    type === T.VARCHAR ||
    type === T.VAR_STRING ||
    type === T.STRING ||
    type === T.TINY_BLOB ||
    type === T.MEDIUM_BLOB ||
    type === T.LONG_BLOB ||
    type === T.BLOB;
  return stringy && f.characterSet === CHARSET_BINARY && f.extendedFormat !== "json";
}

/** "2024-01-02 03:04:05.123456" -> "2024-01-02T03:04:05.123456"; zero dates stay as the server wrote them. */
function isoDateTime(v: unknown): JsonValue {
  if (typeof v !== "string") return v as JsonValue;
  if (v.startsWith("0000-00-00") || v.charAt(10) !== " ") return v;
  return `${v.slice(0, 10)}T${v.slice(11)}`;
}

function bytesToBase64(v: unknown): JsonValue {
  return Buffer.isBuffer(v) ? v.toString("base64") : (v as JsonValue);
}

function vectorToArray(v: unknown): JsonValue {
  return v instanceof Float32Array ? Array.from(v) : (v as JsonValue);
}

function columnInfo(f: FieldPacket): ColumnInfo {
  const flags = typeof f.flags === "number" ? f.flags : 0;
  const notNull = (flags & FLAG_NOT_NULL) !== 0;
  let nullable: boolean | null = !notNull;
  // A computed column has no table behind it: the engine cannot say, unless it marks it NOT NULL.
  if (!f.orgTable && !notNull) nullable = null;
  return { name: f.name, type: typeName(f, flags), nullable };
}

/** The engine's own type name, lower case, from the column's protocol type, flags, length and charset. */
function typeName(f: FieldPacket, flags: number): string {
  if (f.extendedTypeName) return f.extendedTypeName.toLowerCase();
  if (f.extendedFormat === "json") return "json";
  const type = f.columnType ?? f.type ?? -1;
  const length = f.columnLength ?? f.length ?? 0;
  const decimals = f.decimals;
  const unsigned = (flags & FLAG_UNSIGNED) !== 0 ? " unsigned" : "";
  const binary = f.characterSet === CHARSET_BINARY;
  // utf8mb4 (the connection's charset) counts 4 bytes per character in lengths.
  const chars = binary ? length : Math.floor(length / 4);
  // Fractional seconds precision; 31 and above mean "not fixed".
  const fsp = decimals > 0 && decimals <= 6 ? `(${decimals})` : "";
  if (flags & FLAG_ENUM) return "enum";
  if (flags & FLAG_SET) return "set";
  switch (type) {
    case T.TINY:
      return length === 1 ? "tinyint(1)" : `tinyint${unsigned}`;
    case T.SHORT:
      return `smallint${unsigned}`;
    case T.INT24:
      return `mediumint${unsigned}`;
    case T.LONG:
      return `int${unsigned}`;
    case T.LONGLONG:
      return `bigint${unsigned}`;
    case T.DECIMAL:
    case T.NEWDECIMAL: {
      // The display length counts a sign (unless unsigned) and a decimal point (when there are decimals).
      const precision = length - (decimals > 0 ? 1 : 0) - (unsigned ? 0 : 1);
      return `decimal(${precision},${decimals})${unsigned}`;
    }
    case T.FLOAT:
      return "float";
    case T.DOUBLE:
      return "double";
    case T.NULL:
      return "null";
    case T.TIMESTAMP:
      return `timestamp${fsp}`;
    case T.DATETIME:
      return `datetime${fsp}`;
    case T.DATE:
    case T.NEWDATE:
      return "date";
    case T.TIME:
      return `time${fsp}`;
    case T.YEAR:
      return "year";
    case T.BIT:
      return `bit(${length})`;
    case T.JSON:
      return "json";
    case T.ENUM:
      return "enum";
    case T.SET:
      return "set";
    case T.VARCHAR:
    case T.VAR_STRING:
      return binary ? `varbinary(${chars})` : `varchar(${chars})`;
    case T.STRING:
      return binary ? `binary(${chars})` : `char(${chars})`;
    case T.TINY_BLOB:
    case T.MEDIUM_BLOB:
    case T.LONG_BLOB:
    case T.BLOB: {
      const size = chars <= 255 ? "tiny" : chars <= 65_535 ? "" : chars <= 16_777_215 ? "medium" : "long";
      return `${size}${binary ? "blob" : "text"}`;
    }
    case T.GEOMETRY:
      return "geometry";
    case T.VECTOR:
      return "vector";
    default:
      return `type ${type}`;
  }
}
