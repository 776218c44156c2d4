// The PostgreSQL datasource: a pg Pool whose every statement runs in a transaction of its own (READ ONLY
// unless the datasource allows writes) through a pg-cursor that fetches one batch per pull, with values
// converted once from PostgreSQL's text output to JsonValue. Cancelling stops the statement in the server.
// A read-only datasource refuses a user that a READ ONLY transaction cannot hold (a superuser, a member of
// the server-file and signal roles): checked on each new connection and by every health check.
import pg from "pg";
import Cursor from "pg-cursor";
import { to as copyTo, type CopyToStreamQuery } from "pg-copy-streams";
import { Code } from "../../../../common/errors.js";
import type { Logger } from "../../../../common/logger.js";
import {
  DEFAULT_BATCH_ROWS,
  SqlError,
  type ColumnInfo,
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

const DEFAULT_PORT = 5432;
/** How much COPY output is read ahead of the consumer (one output chunk's worth). */
const COPY_BUFFER_BYTES = 256 * 1024;
/** After asking the server to cancel, how long a statement may take to stop before its connection is cut. */
const CANCEL_GRACE_MS = 3_000;
/** Ending the transaction (cursor closed, rolled back) and resetting the session; past this the connection is cut. */
const CLEANUP_TIMEOUT_MS = 5_000;
/** Catalog look-ups and the cancel request are small; a server that takes longer than this is in trouble. */
const AUX_QUERY_TIMEOUT_MS = 15_000;
/** Nullability may change with ALTER TABLE; type names of an (oid, typmod) never do. */
const TABLE_CACHE_TTL_MS = 60_000;
/** Bounds on the look-up caches (a datasource may see many ad-hoc tables). */
const CACHE_MAX_ENTRIES = 10_000;

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

// ---------------------------------------------------------------------------------------------------------
// Values: PostgreSQL's text output -> JsonValue (see src/common/sql-result.ts for the rules).

type Converter = (text: string) => JsonValue;

const asText: Converter = (v) => v;
const asInt: Converter = (v) => Number(v);
const asInt8: Converter = (v) => {
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : v;
};
const asFloat: Converter = (v) => (v === "NaN" || v === "Infinity" || v === "-Infinity" ? v : Number(v));
const asBool: Converter = (v) => v === "t";
const asJson: Converter = (v) => JSON.parse(v) as JsonValue;
const asBytea: Converter = (v) => {
  if (v.startsWith("\\x")) return Buffer.from(v.slice(2), "hex").toString("base64");
  // Escape format, should bytea_output have been changed by the statement itself.
  return (pg.types.getTypeParser(17, "text") as (s: string) => Buffer)(v).toString("base64");
};
const TIMESTAMP = /^(\d{4,}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d(?::\d\d){0,2})?$/;
/** "2024-01-02 03:04:05.123+00" -> "2024-01-02T03:04:05.123+00:00"; infinity and BC dates keep their text. */
const asTimestamp: Converter = (v) => {
  const m = TIMESTAMP.exec(v);
  if (!m) return v;
  const offset = m[3] === undefined ? "" : m[3].length === 3 ? `${m[3]}:00` : m[3];
  return `${m[1]}T${m[2]}${offset}`;
};

/** Element converters by scalar type OID; types not listed keep their text. */
const SCALARS = new Map<number, Converter>([
  [16, asBool],
  [17, asBytea],
  [20, asInt8],
  [21, asInt],
  [23, asInt],
  [26, asInt],
  [114, asJson],
  [700, asFloat],
  [701, asFloat],
  [1114, asTimestamp],
  [1184, asTimestamp],
  [3802, asJson],
]);

/** Array type OID -> its element type OID, for the built-in arrays (others are learnt from the catalog). */
const BUILTIN_ARRAYS = new Map<number, number>([
  [1000, 16],
  [1001, 17],
  [1016, 20],
  [1005, 21],
  [1007, 23],
  [1028, 26],
  [199, 114],
  [1021, 700],
  [1022, 701],
  [1115, 1114],
  [1185, 1184],
  [3807, 3802],
  [1231, 1700],
  [1009, 25],
  [1015, 1043],
  [1014, 1042],
  [1002, 18],
  [1003, 19],
  [1182, 1082],
  [1183, 1083],
  [1270, 1266],
  [1187, 1186],
  [2951, 2950],
  [1041, 869],
  [651, 650],
  [1040, 829],
  [791, 790],
  [143, 142],
  [1561, 1560],
  [1563, 1562],
]);

// pg-types' declaration file calls arrayParser a function; at run time it is { create(source, transform) }.
const arrayParser = pg.types.arrayParser as unknown as {
  create(source: string, transform: (entry: string) => JsonValue): { parse(): JsonValue[] };
};

function arrayConverter(elementOid: number): Converter {
  const element = SCALARS.get(elementOid) ?? asText;
  // Arrays print as "{...}" or "[1:2]={...}"; anything else (a type that only looked like an array) stays text.
  return (v) => (v.startsWith("{") || v.startsWith("[") ? arrayParser.create(v, element).parse() : v);
}

const ARRAYS = new Map<number, Converter>(
  [...BUILTIN_ARRAYS].map(([oid, elem]) => [oid, arrayConverter(elem)]),
);

/** typname of the built-in types, for column types when the catalog cannot be asked. */
const BUILTIN_NAMES = new Map<number, string>(
  Object.entries(pg.types.builtins).map(([name, oid]) => [oid as number, name.toLowerCase()]),
);

function toParam(v: JsonValue): unknown {
  // pg would turn a JS array into an array literal; JSON text is what a JSON parameter means.
  return v !== null && typeof v === "object" ? JSON.stringify(v) : v;
}

// ---------------------------------------------------------------------------------------------------------
// Errors.

function sqlstate(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ECONNABORTED",
]);
const NETWORK_MESSAGES =
  /Connection terminated|timeout expired|timeout exceeded when trying to connect|not queryable|Query read timeout/i;

/** True when the error means the connection itself is gone or unusable (not a statement's failure). */
function isConnectionError(e: unknown): boolean {
  const state = sqlstate(e);
  if (state !== undefined) {
    return (state.startsWith("08") && state !== "08P01") || state.startsWith("57P") || state.startsWith("28");
  }
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === "string" && NETWORK_CODES.has(code)) return true;
  return e instanceof Error && NETWORK_MESSAGES.test(e.message);
}

/** A check, catalog or cancel query, bounded in time (pg's query_timeout, absent from its type declarations). */
function auxQuery<R extends pg.QueryResultRow = pg.QueryResultRow>(
  c: pg.ClientBase,
  text: string,
  values: unknown[] = [],
): Promise<pg.QueryResult<R>> {
  const config: pg.QueryConfig<unknown[]> & { query_timeout: number } = {
    text,
    values,
    query_timeout: AUX_QUERY_TIMEOUT_MS,
  };
  return c.query<R>(config);
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

const INVALID_ARGUMENT_CLASSES = new Set(["42", "22", "23", "21", "26", "34", "3F", "0A", "44", "2B"]);

// ---------------------------------------------------------------------------------------------------------
// Privileges.

/**
 * Predefined roles whose members get around a READ ONLY transaction: COPY ... TO/FROM PROGRAM, COPY to and
 * from server files (and the file functions), pg_terminate_backend/pg_cancel_backend of other users' sessions.
 */
const PRIVILEGED_ROLES = [
  "pg_execute_server_program",
  "pg_write_server_files",
  "pg_read_server_files",
  "pg_signal_backend",
];

/**
 * The superuser roles and the roles above that the login role is a member of, directly or through other
 * roles (it could SET ROLE to any of them): the login role itself first when it is a superuser.
 */
const PRIVILEGES_SQL = `SELECT session_user AS login, r.rolname AS role, r.rolsuper AS super
    FROM pg_roles r
   WHERE (r.rolsuper OR r.rolname = ANY($1::text[])) AND pg_has_role(session_user, r.oid, 'MEMBER')
   ORDER BY r.rolname = session_user DESC, r.rolsuper DESC, r.rolname`;

/** What makes the connection's login role more than a reader, or undefined when nothing does. */
async function privilegeOf(c: pg.ClientBase): Promise<PrivilegedUser | undefined> {
  const r = await auxQuery<{ login: string; role: string; super: boolean }>(c, PRIVILEGES_SQL, [
    PRIVILEGED_ROLES,
  ]);
  const first = r.rows[0];
  if (!first) return undefined;
  if (first.super) {
    const privilege =
      first.role === first.login ? "is a superuser" : `is a member of superuser role ${first.role}`;
    return { user: first.login, privilege };
  }
  return { user: first.login, privilege: `is a member of ${r.rows.map((x) => x.role).join(", ")}` };
}

// ---------------------------------------------------------------------------------------------------------

interface TypeInfo {
  name: string;
  /** For an array type not known at build time: its element's OID (from pg_type.typelem). */
  arrayElement: number | undefined;
}

interface TableNullability {
  at: number;
  /** attnum -> attnotnull */
  notNull: Map<number, boolean>;
}

/** A column whose array values arrived as text (its type was first seen in this result) and are parsed after. */
interface LateArray {
  index: number;
  convert: Converter;
}

/** Where the datasource connects, for messages: host:port/database, never the user or the password. */
function endpointOf(config: DatasourceConfig): string {
  if (config.url) {
    try {
      const u = new URL(config.url);
      const host = u.hostname || u.searchParams.get("host") || "localhost";
      const port = u.port || u.searchParams.get("port") || String(DEFAULT_PORT);
      const db = decodeURIComponent(u.pathname.replace(/^\//, "")) || u.searchParams.get("db") || "";
      return `${host}:${port}/${db}`;
    } catch {
      return "the configured url";
    }
  }
  return `${config.host ?? "localhost"}:${config.port ?? DEFAULT_PORT}/${config.database ?? ""}`;
}

function connectionConfig(config: DatasourceConfig): pg.ClientConfig {
  const base: pg.ClientConfig = {
    application_name: "switchboard-agent",
    connectionTimeoutMillis: config.connectTimeoutMs,
  };
  if (config.url) {
    let connectionString = config.url;
    // A URL without a password takes the one resolved from password_env / password_file.
    if (config.password !== undefined) {
      try {
        const u = new URL(config.url);
        if (u.password === "" && u.hostname !== "") {
          u.password = encodeURIComponent(config.password);
          connectionString = u.toString();
        }
      } catch {
        // pg reports the malformed URL when it connects.
      }
    }
    return { ...base, connectionString };
  }
  return {
    ...base,
    host: config.host,
    port: config.port,
    user: config.user,
    password: config.password,
    database: config.database,
  };
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
  /** `${oid}:${typmod}` -> the type's name (and element, for arrays) */
  private readonly types = new Map<string, TypeInfo>();
  /** Array OIDs learnt from the catalog -> their converter. */
  private readonly learntArrays = new Map<number, Converter>();
  private readonly tables = new Map<number, TableNullability>();
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
    const batchRows = Math.max(1, Math.floor(opts.batchRows ?? DEFAULT_BATCH_ROWS));
    const run = new StatementRun(this, opts.signal);
    this.runs.add(run);
    try {
      run.throwIfStopped();
      await run.acquire(this.pool);
      await run.verifyRole();
      await run.begin(this.beginSql());
      const lateOids = new Set<number>();
      run.open(sql, params.map(toParam), this.parsersFor(lateOids));
      let batch = await run.read(batchRows);
      const { columns, lateArrays } = await run.untilStopped(this.columnsOf(batch.result.fields, lateOids));
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
      run.throwIfStopped();
      await run.acquire(this.pool);
      await run.verifyRole();
      await run.begin(this.beginSql());
      // The result's columns without running it (LIMIT 0 is planned, not executed); a statement that cannot
      // be wrapped fails here, inside a savepoint, and takes the ordinary path, which reports its error.
      const fields = await run.probe(`SELECT * FROM (${sql}) AS sb_csv_probe LIMIT 0`);
      if (fields === undefined || !fields.every((f) => CSV_IDENTICAL_TYPES.has(f.dataTypeID))) {
        yield { kind: "unsuitable" };
        return;
      }
      const { columns } = await run.untilStopped(this.columnsOf(fields, new Set()));
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
      return await this.withSpareClient(async (c) => {
        const oid = await resolveTable(c, table);
        if (oid === undefined) {
          throw new SqlError(Code.NOT_FOUND, `datasource "${this.name}": table "${table}" does not exist`);
        }
        const cols = await auxQuery<{
          name: string;
          type: string;
          nullable: boolean;
          default: string | null;
        }>(
          c,
          `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable,
                  CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END AS default
             FROM pg_attribute a
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum`,
          [oid],
        );
        // Plain key columns by name; expression keys as PostgreSQL prints them. INCLUDE columns are not keys.
        const idx = await auxQuery<{ name: string; columns: string[]; unique: boolean; primary: boolean }>(
          c,
          `SELECT i.relname AS name, x.indisunique AS unique, x.indisprimary AS primary,
                  ARRAY(SELECT COALESCE(
                           (SELECT a.attname::text FROM pg_attribute a
                             WHERE a.attrelid = x.indrelid AND a.attnum = x.indkey[k - 1] AND x.indkey[k - 1] <> 0),
                           pg_get_indexdef(x.indexrelid, k, true))
                          FROM generate_series(1, x.indnkeyatts) AS k ORDER BY k)::text[] AS columns
             FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
            WHERE x.indrelid = $1
            ORDER BY x.indisprimary DESC, i.relname`,
          [oid],
        );
        const indexes = idx.rows.map((r) => ({
          name: r.name,
          columns: r.columns,
          unique: r.unique,
          primary: r.primary,
        }));
        return {
          table,
          columns: cols.rows.map((r) => ({
            name: r.name,
            type: r.type,
            nullable: r.nullable,
            default: r.default,
          })),
          primaryKey: indexes.find((i) => i.primary)?.columns ?? [],
          indexes,
        };
      });
    } catch (e) {
      throw this.toSqlError(e, undefined);
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

  /** Type parsers for one cursor: known types convert as rows arrive; others keep text (noted in lateOids). */
  private parsersFor(lateOids: Set<number>): pg.CustomTypesConfig {
    return {
      getTypeParser: (oid: number): Converter => {
        const known = SCALARS.get(oid) ?? ARRAYS.get(oid) ?? this.learntArrays.get(oid);
        if (known) return known;
        lateOids.add(oid);
        return asText;
      },
    };
  }

  /** Column names, types and nullability, asking the catalog (once per type and table) on another connection. */
  private async columnsOf(
    fields: pg.FieldDef[],
    lateOids: Set<number>,
  ): Promise<{ columns: ColumnInfo[]; lateArrays: LateArray[] }> {
    const now = Date.now();
    const missingTypes = new Map<string, { oid: number; typmod: number }>();
    const missingTables = new Set<number>();
    for (const f of fields) {
      const key = `${f.dataTypeID}:${f.dataTypeModifier}`;
      if (!this.types.has(key)) missingTypes.set(key, { oid: f.dataTypeID, typmod: f.dataTypeModifier });
      const t = f.tableID > 0 ? this.tables.get(f.tableID) : undefined;
      if (f.tableID > 0 && (!t || now - t.at > TABLE_CACHE_TTL_MS)) missingTables.add(f.tableID);
    }
    let lookedUp = true;
    if (missingTypes.size > 0 || missingTables.size > 0) {
      try {
        await this.withSpareClient((c) =>
          this.lookUp(c, [...missingTypes.values()], [...missingTables], now),
        );
      } catch (e) {
        // Names then come from the built-in list and nullability is unknown; the rows are still good.
        lookedUp = false;
        this.logger?.warn({ error: messageOf(e) }, "postgres: cannot read column types from the catalog");
      }
    }
    const lateArrays: LateArray[] = [];
    const columns = fields.map((f, index): ColumnInfo => {
      const info = this.types.get(`${f.dataTypeID}:${f.dataTypeModifier}`);
      if (info?.arrayElement !== undefined && lateOids.has(f.dataTypeID)) {
        lateArrays.push({ index, convert: arrayConverter(info.arrayElement) });
      }
      const notNull =
        f.tableID > 0 && lookedUp ? this.tables.get(f.tableID)?.notNull.get(f.columnID) : undefined;
      return {
        name: f.name,
        type: info?.name ?? BUILTIN_NAMES.get(f.dataTypeID) ?? "unknown",
        nullable: notNull === undefined ? null : !notNull,
      };
    });
    return { columns, lateArrays };
  }

  private async lookUp(
    c: pg.ClientBase,
    types: { oid: number; typmod: number }[],
    tables: number[],
    now: number,
  ): Promise<void> {
    if (types.length > 0) {
      const r = await auxQuery<{ oid: string; typmod: number; name: string | null; element: string | null }>(
        c,
        `SELECT m.oid::int8::text AS oid, m.typmod, format_type(m.oid, m.typmod) AS name,
                CASE WHEN t.typcategory = 'A' AND t.typlen = -1 AND e.typdelim = ','
                      AND t.oid NOT IN ('int2vector'::regtype, 'oidvector'::regtype)
                     THEN t.typelem::int8::text END AS element
           FROM unnest($1::oid[], $2::int4[]) AS m(oid, typmod)
           LEFT JOIN pg_type t ON t.oid = m.oid
           LEFT JOIN pg_type e ON e.oid = t.typelem`,
        [types.map((t) => t.oid), types.map((t) => t.typmod)],
      );
      if (this.types.size > CACHE_MAX_ENTRIES) this.types.clear();
      if (this.learntArrays.size > CACHE_MAX_ENTRIES) this.learntArrays.clear();
      for (const row of r.rows) {
        const oid = Number(row.oid);
        const element = row.element === null ? undefined : Number(row.element);
        this.types.set(`${oid}:${row.typmod}`, { name: row.name ?? "unknown", arrayElement: element });
        if (element !== undefined && !ARRAYS.has(oid)) this.learntArrays.set(oid, arrayConverter(element));
      }
    }
    if (tables.length > 0) {
      const r = await auxQuery<{ rel: string; attnum: number; notnull: boolean }>(
        c,
        `SELECT attrelid::int8::text AS rel, attnum, attnotnull AS notnull FROM pg_attribute
                WHERE attrelid = ANY($1::oid[]) AND attnum > 0 AND NOT attisdropped`,
        [tables],
      );
      if (this.tables.size > CACHE_MAX_ENTRIES) this.tables.clear();
      for (const id of tables) this.tables.set(id, { at: now, notNull: new Map() });
      for (const row of r.rows) this.tables.get(Number(row.rel))?.notNull.set(row.attnum, row.notnull);
    }
  }

  /**
   * Runs fn on a pooled connection when one is free, else on a connection of its own: a check or a catalog
   * look-up must not wait behind long queries holding the whole pool (or behind the query that needs it).
   */
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
    if (e instanceof SqlError) return e;
    return new SqlError(
      Code.UNAVAILABLE,
      `datasource "${this.name}": cannot connect to postgres at ${this.endpoint}: ${messageOf(e)}`,
      sqlstate(e),
    );
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

  toSqlError(e: unknown, run: StatementRun | undefined): SqlError {
    if (e instanceof SqlError) return e;
    const prefix = `datasource "${this.name}"`;
    const message = messageOf(e);
    const state = sqlstate(e);
    if (run?.stopReason === "closed") {
      return new SqlError(
        Code.UNAVAILABLE,
        `${prefix} was closed while the query ran (the agent is shutting down)`,
      );
    }
    if (run?.stopReason === "cancelled") return new SqlError(Code.CANCELLED, `${prefix}: query cancelled`);
    if (state === "57014") {
      if (/user request/i.test(message)) return new SqlError(Code.CANCELLED, `${prefix}: ${message}`, state);
      const secs = this.config.statementTimeoutMs / 1000;
      return new SqlError(
        Code.DEADLINE_EXCEEDED,
        `${prefix}: statement timeout (${secs}s) exceeded: ${message}`,
        state,
      );
    }
    if (state === "25006") {
      return new SqlError(Code.PERMISSION_DENIED, `${prefix} is read-only: ${message}`, state);
    }
    if (state === "42501") return new SqlError(Code.PERMISSION_DENIED, `${prefix}: ${message}`, state);
    // A wrong number of parameters is a protocol violation to PostgreSQL, but the caller's mistake to us.
    if (state === "08P01") return new SqlError(Code.INVALID_ARGUMENT, `${prefix}: ${message}`, state);
    if (state === "53300" || isConnectionError(e)) {
      return new SqlError(
        Code.UNAVAILABLE,
        `${prefix}: lost the connection to postgres at ${this.endpoint}: ${message}`,
        state,
      );
    }
    if (state !== undefined && INVALID_ARGUMENT_CLASSES.has(state.slice(0, 2))) {
      return new SqlError(Code.INVALID_ARGUMENT, `${prefix}: ${message}`, state);
    }
    return new SqlError(Code.INTERNAL, `${prefix}: ${message}`, state);
  }
}

/** The table's OID: the name as SQL reads it (search_path, case folding), else with each part taken verbatim. */
async function resolveTable(c: pg.ClientBase, table: string): Promise<number | undefined> {
  const candidates = [table];
  if (!table.includes('"')) {
    candidates.push(
      table
        .split(".")
        .map((p) => `"${p}"`)
        .join("."),
    );
  }
  for (const name of candidates) {
    const r = await auxQuery<{ oid: string | null }>(
      c,
      `SELECT c.oid::int8::text AS oid FROM pg_class c
              WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')`,
      [name],
    );
    const oid = r.rows[0]?.oid;
    if (oid) return Number(oid);
  }
  return undefined;
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

// ---------------------------------------------------------------------------------------------------------

/**
 * One statement's hold on a connection, from checkout to release. The phases run in order:
 *   acquiring -> held (checked out) -> open (transaction begun) -> committed -> released
 * and any phase may jump to released (rolled back, or the connection destroyed when its state is unknown). A DB call in flight is `busy`; a stop (the
 * caller's signal, or the datasource closing) while busy asks the server to cancel, and cuts the connection
 * if the call has not ended CANCEL_GRACE_MS later.
 */
type RunPhase = "acquiring" | "held" | "open" | "committed" | "released";
type StopReason = "cancelled" | "closed";

interface Batch {
  rows: JsonValue[][];
  result: pg.QueryResult;
}

class StatementRun {
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
    private readonly ds: PostgresDatasource,
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
