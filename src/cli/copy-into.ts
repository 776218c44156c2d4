// `switchboard query --into`: copies a result, batch by batch, into a table of a central PostgreSQL with
// COPY ... FROM STDIN, in one transaction: the table is created from the source's column types when it
// is absent, and any failure or cancel rolls everything back, so the table never holds part of a result.
import pg from "pg";
import { from as copyFrom, type CopyStreamQuery } from "pg-copy-streams";
import type { ColumnInfo, JsonValue } from "../common/sql-result.js";
import { CliError, EXIT, usageError } from "./cli-error.js";
import { uniqueNames } from "../common/sql-result.js";

export interface CopyIntoOptions {
  /** postgres://... of the database to fill; its password never appears in a message. */
  url: string;
  /** "table" or "schema.table"; unquoted names fold to lower case as in SQL, "Quoted" ones keep their case. */
  table: string;
  columns: ColumnInfo[];
  rows: AsyncIterable<JsonValue[][]>;
  signal: AbortSignal;
}

const CONNECT_TIMEOUT_MS = 15_000;
/** ROLLBACK after a failure gets this long; closing the connection rolls back anyway. */
const ROLLBACK_TIMEOUT_MS = 5_000;
/** Lets the next batch be encoded while the previous one is still going out on the socket. */
const COPY_BUFFER_BYTES = 1 << 20;

export async function copyInto(opts: CopyIntoOptions): Promise<{ rowCount: number; created: boolean }> {
  const { table, columns, signal } = opts;
  const target = quotedTableName(table);
  const names = uniqueNames(columns.map((c, i) => (c.name === "" ? `column_${i + 1}` : c.name)));
  const cancelled = (): CliError =>
    new CliError(`the copy into ${table} was cancelled; nothing was committed`, EXIT.interrupted);
  if (signal.aborted) throw cancelled();

  const client = new pg.Client({
    connectionString: opts.url,
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    application_name: "switchboard query --into",
  });
  // A connection that drops also fails the statement in flight, which reports it; the event alone must not crash.
  client.on("error", () => {});
  const redact = passwordRedactor(opts.url);
  try {
    await client.connect();
  } catch (e) {
    await client.end().catch(() => {});
    throw new CliError(
      `could not connect to the --into database: ${redact(reason(e))}`,
      EXIT.failed,
      "check the --into URL: host, port, database, user and password",
    );
  }

  // The abort reaches every wait below through this promise; its rejection is observed by whoever races it.
  let onAbort: () => void = () => {};
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(cancelled());
    signal.addEventListener("abort", onAbort, { once: true });
  });
  aborted.catch(() => {});

  let copy: CopyStreamQuery | undefined;
  let copyFailed = false;
  let sourceError: unknown;
  try {
    await client.query("BEGIN");
    const exists = await client.query<{ exists: boolean }>(
      "SELECT to_regclass($1::text) IS NOT NULL AS exists",
      [target],
    );
    const created = exists.rows[0]?.exists !== true;
    let targetTypes: (string | undefined)[];
    if (created) {
      targetTypes = columns.map((c) => postgresType(c.type));
      const defs = names.map((n, i) => `${quoteIdent(n)} ${targetTypes[i]!}`).join(", ");
      await client.query(`CREATE TABLE IF NOT EXISTS ${target} (${defs})`);
    } else {
      // An existing table decides how values are written (a bytea column gets bytes, a jsonb one JSON).
      const r = await client.query<{ name: string; type: string }>(
        `SELECT attname AS name, format_type(atttypid, atttypmod) AS type FROM pg_attribute
          WHERE attrelid = to_regclass($1::text) AND attnum > 0 AND NOT attisdropped`,
        [target],
      );
      const byName = new Map(r.rows.map((row) => [row.name, row.type]));
      targetTypes = names.map((n) => byName.get(n));
    }
    if (signal.aborted) throw cancelled();

    const encoders = columns.map((c, i) => fieldEncoder(c.type, targetTypes[i] ?? postgresType(c.type)));
    copy = client.query(
      copyFrom(`COPY ${target} (${names.map(quoteIdent).join(", ")}) FROM STDIN`, {
        highWaterMark: COPY_BUFFER_BYTES,
      }),
    );
    const stream = copy;
    // Kept for the stream's life: a destroyed COPY reports the server's answer to CopyFail as an 'error' too.
    const copyError = new Promise<never>((_, reject) =>
      stream.on("error", (e: Error) => {
        copyFailed = true;
        reject(e);
      }),
    );
    copyError.catch(() => {});

    const batches = opts.rows[Symbol.asyncIterator]();
    try {
      for (;;) {
        const next = await Promise.race([
          batches.next().catch((e: unknown) => {
            sourceError = e;
            throw e;
          }),
          aborted,
          copyError,
        ]);
        if (next.done) break;
        const text = encodeBatch(next.value, encoders);
        if (text !== "" && !stream.write(text)) {
          await Promise.race([new Promise((resolve) => stream.once("drain", resolve)), aborted, copyError]);
        }
      }
    } catch (e) {
      // Stops the query that feeds us; not awaited, as a source stuck on the network would hold us here.
      if (sourceError === undefined) void batches.return?.().catch(() => {});
      throw e;
    }
    stream.end();
    await Promise.race([new Promise((resolve) => stream.once("finish", resolve)), aborted, copyError]);
    if (signal.aborted) throw cancelled();
    await client.query("COMMIT");
    return { rowCount: stream.rowCount, created };
  } catch (e) {
    // CopyFail ends the COPY on the server; a COPY the server already failed needs nothing more.
    if (copy && !copyFailed && !copy.writableFinished) copy.destroy(e instanceof Error ? e : undefined);
    await rollback(client);
    if (e === sourceError) throw e;
    if (e instanceof CliError) throw e;
    throw copyFailure(e, table, redact);
  } finally {
    signal.removeEventListener("abort", onAbort);
    await client.end().catch(() => {});
  }
}

async function rollback(client: pg.Client): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    client.query("ROLLBACK"),
    new Promise((resolve) => (timer = setTimeout(resolve, ROLLBACK_TIMEOUT_MS))),
  ]).catch(() => {});
  clearTimeout(timer);
}

function copyFailure(e: unknown, table: string, redact: (s: string) => string): CliError {
  if (e instanceof pg.DatabaseError) {
    const where = e.where ? ` (${e.where})` : "";
    return new CliError(`could not copy into ${table}: ${redact(e.message)}${where}`);
  }
  return new CliError(`could not copy into ${table}: the connection failed: ${redact(reason(e))}`);
}

function reason(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Removes the URL's password from a message, in case a driver ever echoes it. */
function passwordRedactor(url: string): (s: string) => string {
  let secrets: string[] = [];
  try {
    const raw = new URL(url).password;
    if (raw !== "") secrets = [...new Set([raw, decodeURIComponent(raw)])];
  } catch {
    // Not a URL the WHATWG parser takes: pg rejects it too, without echoing it.
  }
  return (s) => secrets.reduce((text, secret) => text.split(secret).join("***"), s);
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * `schema.table`, `table` or `"Mixed Case"."t.1"` as a quoted, schema-qualified name. Unquoted parts fold
 * to lower case as PostgreSQL folds them, so `--into-table Staging.Orders` fills what `SELECT * FROM
 * Staging.Orders` reads.
 */
export function quotedTableName(raw: string): string {
  const parts: string[] = [];
  let i = 0;
  for (;;) {
    if (raw[i] === '"') {
      let name = "";
      for (i++; ; i++) {
        if (i >= raw.length) throw usageError(`--into-table: unterminated quote in "${raw}"`);
        if (raw[i] === '"') {
          if (raw[i + 1] !== '"') break;
          i++;
        }
        name += raw[i];
      }
      i++;
      parts.push(name);
    } else {
      const end = raw.indexOf(".", i);
      const name = raw.slice(i, end === -1 ? raw.length : end).trim();
      if (name.includes('"')) throw usageError(`--into-table: misplaced quote in "${raw}"`);
      parts.push(name.toLowerCase());
      i = end === -1 ? raw.length : end;
    }
    if (parts[parts.length - 1] === "") throw usageError(`--into-table: empty name in "${raw}"`);
    if (i >= raw.length) break;
    if (raw[i] !== ".") throw usageError(`--into-table: expected "." after a quoted name in "${raw}"`);
    i++;
  }
  if (parts.length > 2) {
    throw usageError(`--into-table: expected table or schema.table, got "${raw}"`);
  }
  return parts.map(quoteIdent).join(".");
}

const PG_AS_IS = new Set([
  "smallint",
  "bigint",
  "int2",
  "int8",
  "int4",
  "boolean",
  "bool",
  "date",
  "interval",
  "uuid",
  "inet",
  "cidr",
  "macaddr",
  "macaddr8",
  "money",
  "xml",
  "tsvector",
  "tsquery",
  "point",
  "line",
  "lseg",
  "box",
  "path",
  "polygon",
  "circle",
  "oid",
  "pg_lsn",
  "int4range",
  "int8range",
  "numrange",
  "tsrange",
  "tstzrange",
  "daterange",
]);

const TEXT_TYPES = new Set([
  "char",
  "character",
  "varchar",
  "character varying",
  "bpchar",
  "text",
  "tinytext",
  "mediumtext",
  "longtext",
  "nchar",
  "nvarchar",
  "national char",
  "national varchar",
  "name",
  "citext",
  "string",
  "clob",
]);

const BINARY_TYPES = new Set([
  "bytea",
  "blob",
  "tinyblob",
  "mediumblob",
  "longblob",
  "binary",
  "varbinary",
  "bit",
]);

/** A type name, optional (p) or (p,s), optional trailing words: "timestamp(3) with time zone". */
const TYPE_SHAPE = /^([a-z][a-z0-9_ ]*?)\s*(?:\(\s*(\d+)\s*(?:,\s*(\d+)\s*)?\))?((?:\s+[a-z]+)*)$/;

/**
 * The PostgreSQL column type for a source column's type (PostgreSQL, MariaDB/MySQL or SQLite spelling).
 * Only names built here reach the CREATE TABLE, never the source's text. Where the engines disagree the
 * wider type wins: "integer" and "int" are 64-bit in SQLite, so they become bigint; "real" and "float" are
 * doubles in SQLite, so they become double precision.
 */
export function postgresType(sourceType: string): string {
  const t = sourceType.trim().toLowerCase().replace(/\s+/g, " ");
  if (t.endsWith("[]")) return `${postgresType(t.slice(0, -2))}[]`;
  if (/^_[a-z][a-z0-9]*$/.test(t)) return `${postgresType(t.slice(1))}[]`;
  const m = TYPE_SHAPE.exec(t);
  if (!m) return "text";
  const p = m[2] === undefined ? undefined : Number(m[2]);
  const s = m[3] === undefined ? undefined : Number(m[3]);
  const words = `${m[1]!.trim()}${m[4] ?? ""}`.split(" ");
  const unsigned = words.includes("unsigned");
  const name = words.filter((w) => w !== "unsigned" && w !== "zerofill").join(" ");
  const precision = (max: number): string => (p !== undefined && p <= max ? `(${p})` : "");

  switch (name) {
    case "tinyint":
      return unsigned ? "integer" : "smallint";
    case "smallint":
      return unsigned ? "integer" : "smallint";
    case "mediumint":
      return unsigned ? "bigint" : "integer";
    case "int":
    case "integer":
      return "bigint";
    case "bigint":
    case "int8":
      return unsigned ? "numeric(20,0)" : "bigint";
    case "serial":
    case "serial4":
      return "integer";
    case "bigserial":
    case "serial8":
      return "bigint";
    case "smallserial":
    case "serial2":
      return "smallint";
    case "year":
      return "integer";
    case "decimal":
    case "numeric":
    case "dec":
    case "fixed":
      if (p !== undefined && p >= 1 && p <= 1000 && (s ?? 0) <= p) return `numeric(${p},${s ?? 0})`;
      return "numeric";
    case "real":
    case "float":
    case "double":
    case "double precision":
    case "float8":
      return "double precision";
    case "float4":
      return "real";
    case "datetime":
    case "timestamp":
    case "timestamp without time zone":
      return `timestamp${precision(6)}`;
    case "timestamptz":
    case "timestamp with time zone":
      return `timestamp${precision(6)} with time zone`;
    case "time":
    case "time without time zone":
      return `time${precision(6)}`;
    case "timetz":
    case "time with time zone":
      return `time${precision(6)} with time zone`;
    case "json":
    case "jsonb":
      return "jsonb";
    case "bit varying":
    case "varbit":
      return `bit varying${p !== undefined ? `(${p})` : ""}`;
    case "":
      return "text";
  }
  if (PG_AS_IS.has(name)) return name;
  if (TEXT_TYPES.has(name)) return "text";
  if (BINARY_TYPES.has(name)) return "bytea";
  // SQLite's affinity rules, for declared types such as "UNSIGNED BIG INT" or "NATIVE CHARACTER(70)".
  if (name.includes("int")) return "bigint";
  if (name.includes("char") || name.includes("clob") || name.includes("text")) return "text";
  if (name.includes("blob")) return "bytea";
  if (name.includes("real") || name.includes("floa") || name.includes("doub")) return "double precision";
  return "text";
}

type FieldEncoder = (v: JsonValue) => string;

/** Encodes a value as the COPY text format's field for a column of `targetType`, fed from `sourceType`. */
function fieldEncoder(sourceType: string, targetType: string): FieldEncoder {
  const source = postgresType(sourceType);
  const target = targetType.toLowerCase();
  const element = (t: string): string => (t.endsWith("[]") ? t.slice(0, -2) : t);
  const scalar = scalarEncoder(element(source), element(target));
  if (target.endsWith("[]")) {
    return (v) => {
      if (v === null) return "\\N";
      return copyEscape(Array.isArray(v) ? arrayLiteral(v, scalar) : scalar(v));
    };
  }
  return (v) => (v === null ? "\\N" : copyEscape(scalar(v)));
}

/** The text PostgreSQL parses for one non-null value, before COPY's escaping. */
function scalarEncoder(source: string, target: string): (v: Exclude<JsonValue, null>) => string {
  const numericTarget = /^(smallint|integer|bigint|numeric|real|double precision)/.test(target);
  if (target === "bytea" && source === "bytea") {
    // Binary arrives base64; bytea's hex input format is "\x" and the bytes' hex.
    return (v) =>
      typeof v === "string" ? `\\x${Buffer.from(v, "base64").toString("hex")}` : plain(v, false);
  }
  if (target === "json" || target === "jsonb") {
    // A JSON source's value is the JSON itself (a string value is a JSON string); text is JSON text already.
    if (source === "jsonb") return (v) => JSON.stringify(v);
    return (v) => (typeof v === "string" ? v : JSON.stringify(v));
  }
  return (v) => plain(v, numericTarget);
}

function plain(v: Exclude<JsonValue, null>, numericTarget: boolean): string {
  if (typeof v === "string") return v;
  if (typeof v === "number") return String(v);
  if (typeof v === "boolean") return numericTarget ? (v ? "1" : "0") : v ? "t" : "f";
  return JSON.stringify(v);
}

/** A PostgreSQL array literal: {1,2,NULL} or {{"a","b"},{"c","d"}}; JSON arrays nest as dimensions. */
function arrayLiteral(items: JsonValue[], scalar: (v: Exclude<JsonValue, null>) => string): string {
  const parts = items.map((x) => {
    if (x === null) return "NULL";
    if (Array.isArray(x)) return arrayLiteral(x, scalar);
    return `"${scalar(x).replace(/[\\"]/g, "\\$&")}"`;
  });
  return `{${parts.join(",")}}`;
}

const COPY_SPECIAL = /[\\\n\r\t]/;
const COPY_SPECIAL_ALL = /[\\\n\r\t]/g;
const COPY_ESCAPES: Record<string, string> = { "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

function copyEscape(text: string): string {
  return COPY_SPECIAL.test(text) ? text.replace(COPY_SPECIAL_ALL, (c) => COPY_ESCAPES[c]!) : text;
}

/** One string for the whole batch: a line per row, tab between fields, \N for NULL. */
function encodeBatch(batch: JsonValue[][], encoders: FieldEncoder[]): string {
  let text = "";
  for (const row of batch) {
    for (let i = 0; i < encoders.length; i++) {
      if (i > 0) text += "\t";
      text += encoders[i]!(row[i] ?? null);
    }
    text += "\n";
  }
  return text;
}
