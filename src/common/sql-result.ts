// The result of a SQL task as it travels: the task's stdout is NDJSON, a header line (columns and the
// named table's description) then one JSON array per row; Finished.result is a JSON summary. Shared by
// the agent that writes it, the client that reads it, and the hub's seed-000 bridge.

/**
 * JSON that keeps each value's meaning:
 * - 64-bit integers: a number when |v| <= 2^53-1, else a decimal string; DECIMAL/NUMERIC: always a string
 * - floats: numbers; NaN and ±Infinity as the strings "NaN", "Infinity", "-Infinity"
 * - dates "YYYY-MM-DD", times "HH:MM:SS[.ffffff]", timestamps ISO 8601 "YYYY-MM-DDTHH:MM:SS[.ffffff]"
 *   (with "+HH:MM" / "Z" offset when the type carries a zone)
 * - binary: base64 string; JSON/JSONB: the JSON value itself; booleans: true/false; NULL: null
 * - arrays (postgres): JSON arrays of converted elements; anything else: its text form
 */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** One column of a SQL result, as the header line describes it. */
export interface ColumnInfo {
  /** Its name as the statement gave it (two columns may share one). */
  name: string;
  /** The engine's own type name, lower case: "int8", "numeric(10,2)", "varchar(20)", "bigint", "text", "blob"... */
  type: string;
  /** null when the engine cannot tell (a computed column). */
  nullable: boolean | null;
}

/** The description of the table a sql task named (`table`): its columns, primary key and indexes. */
export interface TableMeta {
  /** As given; schema-qualified when the caller qualified it. */
  table: string;
  /** Its columns, in table order. */
  columns: {
    /** The column's name. */
    name: string;
    /** The engine's own type name, as in ColumnInfo. */
    type: string;
    /** Whether it accepts NULL. */
    nullable: boolean;
    /** The default expression as the catalog spells it; null when none. */
    default: string | null;
  }[];
  /** Column names of the primary key, in key order; empty when none. */
  primaryKey: string[];
  /** Its indexes, the primary key's included. */
  indexes: {
    /** The index's name. */
    name: string;
    /** Its column names, in key order. */
    columns: string[];
    /** It enforces uniqueness. */
    unique: boolean;
    /** It is the primary key's index. */
    primary: boolean;
  }[];
}

/**
 * Names that are unique among themselves, so that an object keyed by them loses no value:
 * `SELECT 1 AS a, 2 AS a` gives "a" and "a_2" (a suffix already taken is skipped).
 */
export function uniqueNames(names: readonly string[]): string[] {
  const used = new Set<string>();
  return names.map((name) => {
    let unique = name;
    for (let n = 2; used.has(unique); n++) unique = `${name}_${n}`;
    used.add(unique);
    return unique;
  });
}

/**
 * `{"name":value,...}` for each row, keyed by the columns' unique names. Written member by member (the
 * keys' JSON computed once): a JS object would move integer-like names such as "1" to the front.
 */
export class RowObjectEncoder {
  private readonly keys: string[];

  constructor(columns: readonly ColumnInfo[]) {
    this.keys = uniqueNames(columns.map((c) => c.name)).map((n) => JSON.stringify(n) + ":");
  }

  encode(row: readonly JsonValue[]): string {
    let text = "{";
    for (let i = 0; i < this.keys.length; i++) {
      if (i > 0) text += ",";
      text += this.keys[i]! + JSON.stringify(row[i] ?? null);
    }
    return text + "}";
  }
}

/** The header line of a result. */
export interface SqlResultHeader {
  /** The result's columns, in the order row values come. */
  columns: ColumnInfo[];
  /** The named table's description; null when the task named none. */
  table: TableMeta | null;
  /** "csv": the lines after the header are CSV (RFC 4180) rather than JSON arrays; absent: JSON arrays. */
  format?: "csv";
}

/** Finished.result of a SQL task. */
export interface SqlResultSummary {
  /** Rows returned. */
  row_count: number;
  /** Bytes of the row lines as they travelled. */
  bytes: number;
  /** Rows an INSERT, UPDATE or DELETE changed; null when the engine does not say (a SELECT). */
  affected_rows: number | null;
}

/**
 * Joins output chunks into lines (a row may be split across chunks) and parses them: the first line is
 * the header, the rest are rows. Holds at most one partial line.
 */
export class SqlResultDecoder {
  private partial: Buffer[] = [];
  /** CSV results: the bytes after the header, as they came, until takeEncoded(). */
  private encoded: Buffer[] = [];
  private endsInNewline = true;
  header: SqlResultHeader | undefined;
  rowCount = 0;
  /** Bytes of the row lines so far, newlines included (as the summary counts them). */
  rowBytes = 0;

  /** The rows completed by this chunk; the header, when it completes, is set on `header`. */
  push(chunk: Uint8Array): JsonValue[][] {
    const buf = Buffer.isBuffer(chunk)
      ? chunk
      : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (this.header?.format === "csv") {
      this.addEncoded(buf);
      return [];
    }
    const firstNl = buf.indexOf(0x0a);
    if (firstNl === -1) {
      if (buf.length > 0) this.partial.push(Buffer.from(buf));
      return [];
    }
    let rows: JsonValue[][] = [];
    let start = 0;
    if (this.partial.length > 0 || this.header === undefined) {
      // The line a previous chunk began, or the header: on its own.
      const line =
        this.partial.length > 0
          ? Buffer.concat([...this.partial, buf.subarray(0, firstNl)])
          : buf.subarray(0, firstNl);
      this.partial = [];
      start = firstNl + 1;
      this.take(line, rows);
      if (this.header?.format === "csv") {
        this.addEncoded(buf.subarray(start));
        return rows;
      }
    }
    const lastNl = buf.lastIndexOf(0x0a);
    if (lastNl >= start) {
      // Every whole row line in between, parsed at once: JSON never holds a raw newline inside a
      // value, so each newline separates two rows and the region is one JSON array once joined.
      const text = buf.toString("utf8", start, lastNl);
      const parsed = JSON.parse(`[${text.replaceAll("\n", ",")}]`) as JsonValue[][];
      if (rows.length === 0) rows = parsed;
      else for (const r of parsed) rows.push(r);
      this.rowCount += parsed.length;
      this.rowBytes += lastNl + 1 - start;
      start = lastNl + 1;
    }
    if (start < buf.length) this.partial.push(Buffer.from(buf.subarray(start)));
    return rows;
  }

  /** True when a partial line is left over (the result was cut off). */
  get incomplete(): boolean {
    return this.partial.length > 0 || !this.endsInNewline;
  }

  /** A CSV result's bytes received since the last call (rows already encoded by the agent). */
  takeEncoded(): Buffer | undefined {
    if (this.encoded.length === 0) return undefined;
    const out = this.encoded.length === 1 ? this.encoded[0]! : Buffer.concat(this.encoded);
    this.encoded = [];
    return out;
  }

  private addEncoded(buf: Buffer): void {
    if (buf.length === 0) return;
    this.encoded.push(buf);
    this.rowBytes += buf.length;
    this.endsInNewline = buf[buf.length - 1] === 0x0a;
  }

  private take(line: Buffer, rows: JsonValue[][]): void {
    const text = line.toString("utf8");
    if (this.header === undefined) {
      this.header = JSON.parse(text) as SqlResultHeader;
      return;
    }
    rows.push(JSON.parse(text) as JsonValue[]);
    this.rowCount += 1;
    this.rowBytes += line.length + 1;
  }
}
