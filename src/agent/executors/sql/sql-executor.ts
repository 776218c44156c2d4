// SQL tasks: one statement on a datasource the agent's config names. The result goes out as the task's
// stdout in NDJSON: a header line (columns, and the named table's catalog description), then one JSON
// array per row. Rows are pulled from the database one batch at a time and only while the task's
// output window has room, so a slow client slows only its own query and no result sits whole here.
import { Code } from "../../../common/errors.js";
import {
  Finished,
  OutputStream,
  TaskState,
  type SqlSpec,
  type TaskError,
  type TaskSpec,
} from "../../../gen/switchboard/v1/task.js";
import type {
  ColumnInfo,
  JsonValue,
  SqlResultHeader,
  SqlResultSummary,
  TableMeta,
} from "../../../common/sql-result.js";
import { csvRows } from "../../../common/sql-csv.js";
import { DEFAULT_BATCH_ROWS, SqlError } from "./datasource.js";
import type { Datasources } from "./datasources.js";
import {
  failedFinished,
  stoppedFinished,
  timeLimitMs,
  type Execution,
  type ExecutionContext,
  type Executor,
  type StopRequest,
} from "../executor.js";

export interface SqlExecutorOptions {
  agentId: string;
  datasources: Datasources;
  /** The largest Output chunk when the session does not say. */
  maxChunkBytes: number;
}

const MAX_BATCH_ROWS = 100_000;
/** Row lines are gathered into chunks of about this size before they go out. */
const CHUNK_TARGET_BYTES = 256 * 1024;
const MAX_TIMER_MS = 2_147_483_647;

export class SqlExecutor implements Executor {
  readonly kind = "sql" as const;

  constructor(private readonly opts: SqlExecutorOptions) {}

  admit(spec: TaskSpec): TaskError | undefined {
    const invalid = (message: string): TaskError => ({ code: Code.INVALID_ARGUMENT, message });
    if (spec.kind?.$case !== "sql") return invalid("not a sql task");
    const s = spec.kind.value;
    const { datasources, agentId } = this.opts;
    if (datasources.size === 0) {
      return {
        code: Code.FAILED_PRECONDITION,
        message: `agent ${agentId} has no datasources: configure [datasources.NAME] in its config`,
      };
    }
    if (s.datasource === "") return invalid("a sql task names a datasource");
    if (!datasources.resolve(s.datasource)) {
      return {
        code: Code.NOT_FOUND,
        message: `agent ${agentId} has no datasource ${JSON.stringify(s.datasource)}; it has ${datasources
          .names()
          .map((n) => JSON.stringify(n))
          .join(", ")}`,
      };
    }
    if (s.query.trim() === "") return invalid("a sql task needs a query");
    if (s.batchRows > MAX_BATCH_ROWS) return invalid(`batch_rows may be at most ${MAX_BATCH_ROWS}`);
    if (s.format !== "" && s.format !== "ndjson" && s.format !== "csv") {
      return invalid(`format: expected "ndjson" or "csv", got ${JSON.stringify(s.format.slice(0, 40))}`);
    }
    const params = parseParams(s.paramsJson);
    if (typeof params === "string") return invalid(params);
    return undefined;
  }

  start(spec: TaskSpec, ctx: ExecutionContext): Execution {
    if (spec.kind?.$case !== "sql") throw new Error("not a sql task");
    return new SqlRun(spec.kind.value, ctx, this.opts);
  }
}

/** The parameters as a JSON array, or a sentence saying what is wrong. */
function parseParams(json: string): JsonValue[] | string {
  if (json.trim() === "") return [];
  let v: unknown;
  try {
    v = JSON.parse(json);
  } catch (e) {
    return `params_json is not JSON: ${(e as Error).message}`;
  }
  if (!Array.isArray(v)) return "params_json must be a JSON array of positional parameters";
  return v as JsonValue[];
}

class SqlRun implements Execution {
  readonly done: Promise<Finished>;
  private readonly abort = new AbortController();
  private stopRequest: StopRequest | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = Date.now();
  private readonly maxChunk: number;

  constructor(
    private readonly spec: SqlSpec,
    private readonly ctx: ExecutionContext,
    private readonly opts: SqlExecutorOptions,
  ) {
    this.maxChunk = Math.max(1024, ctx.maxChunkBytes ?? opts.maxChunkBytes);
    this.armTimeout();
    this.done = this.run().finally(() => clearTimeout(this.timer));
  }

  stop(request: StopRequest): void {
    if (this.stopRequest) return;
    this.stopRequest = request;
    this.abort.abort(new Error(request.reason));
  }

  /** The task's own timeout or its deadline, whichever is sooner; the datasource has its own too. */
  private armTimeout(): void {
    const limitMs = timeLimitMs(this.spec.timeoutMs, this.ctx.deadlineMs, this.startedAt);
    if (limitMs === undefined) return;
    const ms = Math.max(0, limitMs);
    this.timer = setTimeout(
      () => this.stop({ cause: "timed_out", reason: `statement timeout after ${ms} ms` }),
      Math.min(ms, MAX_TIMER_MS),
    );
  }

  private async run(): Promise<Finished> {
    const { datasources } = this.opts;
    const ds = datasources.resolve(this.spec.datasource);
    const params = parseParams(this.spec.paramsJson);
    if (!ds || typeof params === "string") {
      return failedFinished(Code.INVALID_ARGUMENT, `the sql task is no longer valid on this agent`);
    }
    const config = datasources.config(ds.name);
    const limits = [this.spec.maxRows, config?.maxRows ?? 0].filter((n) => n > 0);
    const maxRows = limits.length > 0 ? Math.min(...limits) : 0;
    this.ctx.started(0);
    let rows = 0;
    let bytes = 0;
    let affected: number | null = null;
    /** The header line shares a chunk with the first rows; the summary counts the rows' bytes only. */
    let headerBytes = 0;
    const out = new LineWriter(this.ctx, this.maxChunk, this.abort.signal);
    const csv = this.spec.format === "csv";
    // Travels with the first rows (or the end): a small result is one output event, not two.
    const addHeader = (columns: ColumnInfo[], table: TableMeta | null): void => {
      const header: SqlResultHeader = csv ? { columns, table, format: "csv" } : { columns, table };
      const line = JSON.stringify(header);
      headerBytes = Buffer.byteLength(line) + 1;
      out.add(line);
    };
    const summary = (): SqlResultSummary => ({
      row_count: rows,
      bytes: Math.max(0, bytes - headerBytes),
      affected_rows: affected,
    });
    try {
      const table = this.spec.table !== "" ? await ds.describeTable(this.spec.table) : null;
      this.throwIfStopped();
      // CSV the database encodes itself (PostgreSQL's COPY) when the statement suits it: no row is parsed or
      // encoded here. Row limits and parameters need the ordinary path.
      let viaDatabaseCsv = false;
      if (csv && params.length === 0 && maxRows === 0 && ds.queryCsv) {
        for await (const c of ds.queryCsv(this.spec.query, { signal: this.abort.signal })) {
          if (c.kind === "unsuitable") break;
          viaDatabaseCsv = true;
          if (c.kind === "columns") addHeader(c.columns, table);
          else if (c.kind === "data") {
            out.addBytes(c.data);
            if (out.full) bytes += await out.flush();
          } else rows = c.rowCount;
        }
      }
      if (!viaDatabaseCsv) {
        for await (const chunk of ds.query(this.spec.query, params, {
          signal: this.abort.signal,
          batchRows: this.spec.batchRows > 0 ? this.spec.batchRows : DEFAULT_BATCH_ROWS,
        })) {
          switch (chunk.kind) {
            case "columns":
              addHeader(chunk.columns, table);
              break;
            case "rows": {
              let batch = chunk.rows;
              const over = maxRows > 0 && rows + batch.length > maxRows;
              if (over) batch = batch.slice(0, maxRows - rows);
              if (csv) {
                out.addText(csvRows(batch));
                if (out.full) bytes += await out.flush();
              } else {
                for (const row of batch) {
                  out.add(JSON.stringify(row));
                  if (out.full) bytes += await out.flush();
                }
              }
              rows += batch.length;
              if (over) {
                bytes += await out.flush();
                throw new SqlError(
                  Code.RESOURCE_EXHAUSTED,
                  `datasource "${ds.name}": the result has more than max_rows = ${maxRows} rows; the first ${maxRows} were sent`,
                );
              }
              break;
            }
            case "done":
              affected = chunk.affectedRows ?? null;
              break;
          }
        }
      }
      bytes += await out.flush();
      this.throwIfStopped();
      return Finished.fromPartial({
        state: TaskState.TASK_STATE_SUCCEEDED,
        exitCode: 0,
        durationMs: Date.now() - this.startedAt,
        result: Buffer.from(JSON.stringify(summary())),
      });
    } catch (e) {
      if (this.stopRequest) return stoppedFinished(this.stopRequest, Date.now() - this.startedAt);
      const err = e instanceof SqlError ? e : undefined;
      // Lost its server, or (FAILED_PRECONDITION) found its user privileged: its health says so at once.
      if (err?.code === Code.UNAVAILABLE || err?.code === Code.FAILED_PRECONDITION)
        datasources.suspect(ds.name);
      const message = err
        ? err.message
        : `datasource "${ds.name}": ${e instanceof Error ? e.message : String(e)}`;
      bytes += await out.flush().catch(() => 0);
      const f = failedFinished(err?.code ?? Code.INTERNAL, message, Date.now() - this.startedAt);
      f.result = Buffer.from(JSON.stringify(summary()));
      return f;
    }
  }

  private throwIfStopped(): void {
    if (this.stopRequest) throw new Error(this.stopRequest.reason);
  }
}

/**
 * Gathers lines into chunks of about CHUNK_TARGET_BYTES and writes them to the task's output, waiting
 * (abortably) while the output window is closed. A line longer than a chunk is split across chunks:
 * readers join them at newlines.
 */
class LineWriter {
  // One string per chunk: V8 concatenates into a rope, and one conversion to bytes per chunk is far
  // cheaper than measuring every line.
  private text = "";
  /** Bytes already encoded (CSV from the database), in order before `text`. */
  private raw: Buffer[] = [];
  private rawBytes = 0;

  constructor(
    private readonly ctx: ExecutionContext,
    private readonly maxChunk: number,
    private readonly signal: AbortSignal,
  ) {}

  /** Adds one line (without its newline). */
  add(line: string): void {
    this.text += line;
    this.text += "\n";
  }

  /** Adds whole lines, each already ending in a newline. */
  addText(lines: string): void {
    this.text += lines;
  }

  /** Adds encoded lines as they are. */
  addBytes(data: Buffer): void {
    if (this.text.length > 0) {
      const head = Buffer.from(this.text);
      this.text = "";
      this.raw.push(head);
      this.rawBytes += head.length;
    }
    this.raw.push(data);
    this.rawBytes += data.length;
  }

  /** Enough gathered for a chunk (text counted in UTF-16 units, at most its bytes): flush() before adding more. */
  get full(): boolean {
    return this.text.length + this.rawBytes >= Math.min(CHUNK_TARGET_BYTES, this.maxChunk);
  }

  /** Writes what was gathered, waiting while the output window is closed; returns the bytes written. */
  async flush(): Promise<number> {
    if (this.text.length === 0 && this.rawBytes === 0) return 0;
    let buf: Buffer;
    if (this.raw.length === 0) buf = Buffer.from(this.text);
    else {
      if (this.text.length > 0) this.raw.push(Buffer.from(this.text));
      buf = this.raw.length === 1 ? this.raw[0]! : Buffer.concat(this.raw);
      this.raw = [];
      this.rawBytes = 0;
    }
    this.text = "";
    let writable = true;
    for (let off = 0; off < buf.length; off += this.maxChunk) {
      writable = this.ctx.output.write(
        OutputStream.OUTPUT_STREAM_STDOUT,
        buf.subarray(off, off + this.maxChunk),
      );
    }
    if (!writable) await this.whenWritable();
    return buf.length;
  }

  private whenWritable(): Promise<void> {
    if (this.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        this.signal.removeEventListener("abort", done);
        resolve();
      };
      this.signal.addEventListener("abort", done, { once: true });
      this.ctx.output.onceWritable(done);
    });
  }
}
