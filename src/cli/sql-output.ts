// How `switchboard query` prints rows: CSV, NDJSON or a JSON array for pipes and files, an aligned table
// for a person at a terminal. Rows arrive in batches and leave in batches: each batch becomes one string
// written once, and the next batch waits while the output is full, so a slow reader slows the database.
// A table named with --table is described above the rows on a terminal, as a `table` member in JSON,
// and on stderr beside CSV and NDJSON (tableDescription), so that their data stays as it is.
import { CliError } from "./cli-error.js";
import { csvField, csvRows } from "../common/sql-csv.js";
import { RowObjectEncoder, type ColumnInfo, type JsonValue, type TableMeta } from "../common/sql-result.js";

export const FORMATS = ["table", "csv", "json", "ndjson"] as const;
export type Format = (typeof FORMATS)[number];

export interface RowSink {
  /** `table`: the description of the table the query named (--table), when it asked for one. */
  begin(columns: ColumnInfo[], table?: TableMeta | null): Promise<void>;
  rows(batch: JsonValue[][]): Promise<void>;
  /** Rows the agent already encoded in this sink's format (CSV): written as they are. */
  encoded?(data: Uint8Array): Promise<void>;
  end(summary: { rowCount: number }): Promise<void>;
}

export function createRowSink(format: Format, out: NodeJS.WritableStream, opts: { color: boolean }): RowSink {
  const output = new Output(out);
  switch (format) {
    case "csv":
      return new CsvSink(output);
    case "ndjson":
      return new NdjsonSink(output);
    case "json":
      return new JsonArraySink(output);
    case "table":
      return new TableSink(output, opts.color);
  }
}

/**
 * The stream the rows go to. A write that fills its buffer waits for 'drain'; a failed stream (the reader
 * closed the pipe, the disk is full) turns into a CliError, which the CLI prints as one line, no stack.
 */
class Output {
  private failure: CliError | undefined;

  constructor(private readonly out: NodeJS.WritableStream) {
    // Kept for the sink's life: an EPIPE that comes after the last write must not be an unhandled 'error'.
    out.on("error", (e: Error) => this.fail(e));
  }

  async write(text: string | Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.out.write(text)) return;
    await new Promise<void>((resolve, reject) => {
      const settle = (): void => {
        this.out.removeListener("drain", settle);
        this.out.removeListener("error", settle);
        this.out.removeListener("close", onClose);
        if (this.failure) reject(this.failure);
        else resolve();
      };
      // A stream destroyed while full emits 'close' and never 'drain'.
      const onClose = (): void => {
        this.failure ??= new CliError("the output was closed before the result was complete");
        settle();
      };
      this.out.once("drain", settle);
      this.out.once("error", settle);
      this.out.once("close", onClose);
    });
  }

  private fail(e: NodeJS.ErrnoException): void {
    if (this.failure) return;
    this.failure =
      e.code === "EPIPE"
        ? new CliError("the reader closed the output before the result was complete")
        : new CliError(`could not write the result: ${e.message}`);
  }
}

class CsvSink implements RowSink {
  constructor(private readonly out: Output) {}

  async begin(columns: ColumnInfo[]): Promise<void> {
    // A statement without a result (UPDATE ...) prints nothing, not an empty header line.
    if (columns.length === 0) return;
    await this.out.write(columns.map((c) => csvField(c.name)).join(",") + "\n");
  }

  async rows(batch: JsonValue[][]): Promise<void> {
    const text = csvRows(batch);
    if (text !== "") await this.out.write(text);
  }

  async encoded(data: Uint8Array): Promise<void> {
    if (data.length > 0) await this.out.write(data);
  }

  async end(): Promise<void> {}
}

class NdjsonSink implements RowSink {
  private encoder = new RowObjectEncoder([]);

  constructor(private readonly out: Output) {}

  begin(columns: ColumnInfo[]): Promise<void> {
    this.encoder = new RowObjectEncoder(columns);
    return Promise.resolve();
  }

  async rows(batch: JsonValue[][]): Promise<void> {
    let text = "";
    for (const row of batch) text += this.encoder.encode(row) + "\n";
    if (text !== "") await this.out.write(text);
  }

  async end(): Promise<void> {}
}

/**
 * One JSON array, streamed object by object; the file is valid JSON only once end() has written "]".
 * With a table description the array is the `rows` member of an object whose `table` member holds it.
 */
class JsonArraySink implements RowSink {
  private encoder = new RowObjectEncoder([]);
  private started = false;
  private wrapped = false;

  constructor(private readonly out: Output) {}

  async begin(columns: ColumnInfo[], table?: TableMeta | null): Promise<void> {
    this.encoder = new RowObjectEncoder(columns);
    if (table) {
      this.wrapped = true;
      await this.out.write(`{"table":${JSON.stringify(table)},\n"rows":`);
    }
  }

  async rows(batch: JsonValue[][]): Promise<void> {
    let text = "";
    for (const row of batch) {
      text += (this.started ? ",\n" : "[\n") + this.encoder.encode(row);
      this.started = true;
    }
    if (text !== "") await this.out.write(text);
  }

  async end(): Promise<void> {
    const close = this.wrapped ? "}\n" : "\n";
    await this.out.write((this.started ? "\n]" : "[]") + close);
  }
}

/**
 * A table's description for a person: its columns (type, nullability, default, place in the primary
 * key), then its primary key and indexes. Names come from the database: control characters are escaped.
 */
export function tableDescription(meta: TableMeta): string {
  const pkPlace = (name: string): string => {
    const i = meta.primaryKey.indexOf(name);
    if (i === -1) return "";
    return meta.primaryKey.length === 1 ? "primary key" : `primary key (${i + 1})`;
  };
  const rows = [
    ["column", "type", "null", "default", "key"],
    ...meta.columns.map((c) => [c.name, c.type, c.nullable ? "yes" : "no", c.default ?? "", pkPlace(c.name)]),
  ].map((r) => r.map(escapeControls));
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => displayWidth(r[i]!))));
  const line = (r: string[]): string =>
    "  " +
    r
      .map((cell, i) => cell + " ".repeat(widths[i]! - displayWidth(cell)))
      .join(GAP)
      .trimEnd() +
    "\n";
  const list = (names: string[]): string => names.map(escapeControls).join(", ");
  let text = `table ${escapeControls(meta.table)}\n`;
  text += rows.map(line).join("");
  text += meta.primaryKey.length > 0 ? `  primary key (${list(meta.primaryKey)})\n` : "  no primary key\n";
  for (const ix of meta.indexes) {
    const kind = ix.primary ? "primary key index" : ix.unique ? "unique index" : "index";
    text += `  ${kind} ${escapeControls(ix.name)} (${list(ix.columns)})\n`;
  }
  if (meta.indexes.length === 0) text += "  no indexes\n";
  return text;
}

/** Rows looked at to size the columns; later rows are cut to fit. */
export const TABLE_SAMPLE_ROWS = 200;
/** No column is wider than this; longer cells end in "…". */
export const TABLE_MAX_WIDTH = 60;
/** Long values are cut to this many UTF-16 units before they are escaped and measured. */
const CELL_SCAN_LIMIT = 4 * TABLE_MAX_WIDTH;
const GAP = "  ";
const NUMERIC_TYPE =
  /^(int|integer|bigint|smallint|tinyint|mediumint|int2|int4|int8|serial|bigserial|smallserial|numeric|decimal|real|float|float4|float8|double|money|year)\b/;

/** A cell as shown: its text, or null for SQL NULL (printed as NULL, dim when colored). */
type Cell = string | null;

class TableSink implements RowSink {
  private columns: ColumnInfo[] = [];
  private sample: Cell[][] = [];
  /** Numbers seen per column in the sample, and values that are not numbers. */
  private numbers: number[] = [];
  private others: number[] = [];
  private widths: number[] | undefined;
  private rightAligned: boolean[] = [];

  constructor(
    private readonly out: Output,
    private readonly color: boolean,
  ) {}

  async begin(columns: ColumnInfo[], table?: TableMeta | null): Promise<void> {
    this.columns = columns;
    this.numbers = columns.map(() => 0);
    this.others = columns.map(() => 0);
    // Above the rows, and apart from them by a blank line when rows follow.
    if (table) await this.out.write(tableDescription(table) + (columns.length > 0 ? "\n" : ""));
  }

  async rows(batch: JsonValue[][]): Promise<void> {
    if (this.columns.length === 0) return;
    if (this.widths === undefined) {
      let i = 0;
      for (; i < batch.length && this.sample.length < TABLE_SAMPLE_ROWS; i++) {
        this.sample.push(this.cells(batch[i]!, true));
      }
      if (this.sample.length < TABLE_SAMPLE_ROWS) return;
      await this.out.write(this.layout() + this.lines(batch.slice(i).map((r) => this.cells(r, false))));
      return;
    }
    const text = this.lines(batch.map((r) => this.cells(r, false)));
    if (text !== "") await this.out.write(text);
  }

  async end(summary: { rowCount: number }): Promise<void> {
    if (this.columns.length === 0) return;
    const head = this.widths === undefined ? this.layout() : "";
    const n = summary.rowCount;
    await this.out.write(`${head}(${n} ${n === 1 ? "row" : "rows"})\n`);
  }

  private cells(row: JsonValue[], sampling: boolean): Cell[] {
    return this.columns.map((_, i) => {
      const v = row[i] ?? null;
      if (sampling && v !== null) {
        if (typeof v === "number") this.numbers[i]!++;
        else this.others[i]!++;
      }
      return v === null ? null : cellText(v);
    });
  }

  /** Fixes the widths from the sample, and returns the header, its underline and the sampled rows. */
  private layout(): string {
    const widths = this.columns.map((c, i) => {
      let w = Math.max(1, displayWidth(escapeControls(c.name)));
      for (const row of this.sample) {
        const cell = row[i] ?? null;
        w = Math.max(w, cell === null ? 4 : displayWidth(cell));
      }
      return Math.min(w, TABLE_MAX_WIDTH);
    });
    this.widths = widths;
    this.rightAligned = this.columns.map(
      (c, i) => NUMERIC_TYPE.test(c.type) || (this.numbers[i]! > 0 && this.others[i] === 0),
    );
    const header = this.columns.map((c, i) => {
      const text = fit(escapeControls(c.name), widths[i]!);
      return { text: this.color ? `\x1b[36m${text}\x1b[39m` : text, width: displayWidth(text) };
    });
    const underline = widths.map((w) => ({ text: "-".repeat(w), width: w }));
    const sample = this.sample;
    this.sample = [];
    return this.line(header) + this.line(underline) + this.lines(sample);
  }

  private lines(rows: Cell[][]): string {
    let text = "";
    for (const row of rows) {
      text += this.line(
        row.map((cell, i) => {
          if (cell === null) return { text: this.color ? "\x1b[2mNULL\x1b[22m" : "NULL", width: 4 };
          const shown = fit(cell, this.widths![i]!);
          return { text: shown, width: displayWidth(shown) };
        }),
      );
    }
    return text;
  }

  private line(cells: { text: string; width: number }[]): string {
    const widths = this.widths!;
    let text = "";
    cells.forEach((cell, i) => {
      const pad = " ".repeat(Math.max(0, widths[i]! - cell.width));
      if (i > 0) text += GAP;
      if (this.rightAligned[i]) text += pad + cell.text;
      else text += i === cells.length - 1 ? cell.text : cell.text + pad;
    });
    return text + "\n";
  }
}

function cellText(v: Exclude<JsonValue, null>): string {
  let text = typeof v === "string" ? v : typeof v === "object" ? JSON.stringify(v) : String(v);
  // Only the first TABLE_MAX_WIDTH columns can show: a megabyte of text is not escaped and measured whole.
  if (text.length > CELL_SCAN_LIMIT) text = text.slice(0, CELL_SCAN_LIMIT) + "…";
  return escapeControls(text);
}

// Control characters would break the alignment or drive the terminal (ESC sequences from the data).
// eslint-disable-next-line no-control-regex -- matching control characters is the point
const CONTROLS = /[\x00-\x1f\x7f-\x9f]/g;

function escapeControls(text: string): string {
  return text.replace(CONTROLS, (c) => {
    if (c === "\n") return "\\n";
    if (c === "\r") return "\\r";
    if (c === "\t") return "\\t";
    return `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`;
  });
}

/** The text cut to `width` terminal columns, ending in "…" when something was cut. */
function fit(text: string, width: number): string {
  if (displayWidth(text) <= width) return text;
  let out = "";
  let used = 0;
  for (const ch of text) {
    const w = charWidth(ch.codePointAt(0)!);
    if (used + w > width - 1) break;
    out += ch;
    used += w;
  }
  return out + "…";
}

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
const ZERO_WIDTH = /^[\p{Mn}\p{Me}\p{Cf}]$/u;

/** Terminal columns the text takes: East Asian wide characters and emoji take two, combining marks none. */
export function displayWidth(text: string): number {
  if (PRINTABLE_ASCII.test(text)) return text.length;
  let width = 0;
  for (const ch of text) width += charWidth(ch.codePointAt(0)!);
  return width;
}

function charWidth(cp: number): number {
  if (cp < 0x300) return 1;
  if (ZERO_WIDTH.test(String.fromCodePoint(cp))) return 0;
  if (
    (cp >= 0x1100 && cp <= 0x115f) ||
    (cp >= 0x2e80 && cp <= 0x303e) ||
    (cp >= 0x3041 && cp <= 0x33ff) ||
    (cp >= 0x3400 && cp <= 0x4dbf) ||
    (cp >= 0x4e00 && cp <= 0x9fff) ||
    (cp >= 0xa000 && cp <= 0xa4cf) ||
    (cp >= 0xac00 && cp <= 0xd7a3) ||
    (cp >= 0xf900 && cp <= 0xfaff) ||
    (cp >= 0xfe30 && cp <= 0xfe4f) ||
    (cp >= 0xff00 && cp <= 0xff60) ||
    (cp >= 0xffe0 && cp <= 0xffe6) ||
    (cp >= 0x1f300 && cp <= 0x1faff) ||
    (cp >= 0x20000 && cp <= 0x3fffd)
  ) {
    return 2;
  }
  return 1;
}
