// The SQLite driver. Statements run in worker processes (sqlite-worker.ts), so that a long one neither
// blocks the agent nor outlives a cancel or a timeout: its worker is killed, and a new one starts when
// next needed. The health check and table descriptions read the catalog here, on short-lived connections.
import { Code } from "../../../../common/errors.js";
import type { Logger } from "../../../../common/logger.js";
import { cancelledError, readOnlyError, statementTimeoutError } from "../datasource-errors.js";
import {
  SqlError,
  batchRowsOf,
  type Datasource,
  type DatasourceCheck,
  type DatasourceConfig,
  type JsonValue,
  type QueryChunk,
  type QueryOptions,
  type TableMeta,
} from "../datasource.js";
import { describeSqliteTable, openCatalogConnection } from "./sqlite-catalog.js";
import {
  SqliteWorkerPool,
  type BindValue,
  type SqliteWorker,
  type WorkerBatch,
  type WorkerRequest,
} from "./sqlite-worker.js";

/** setTimeout's longest delay; a longer one would fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

export function openSqlite(config: DatasourceConfig, logger?: Logger): Datasource {
  return new SqliteDatasource(config, logger);
}

/**
 * What a failed SQLite call says: an SqliteError carries `code` (SQLITE_*); better-sqlite3's own checks
 * of the SQL text and the parameters throw RangeError or TypeError, without a code.
 */
interface EngineFailure {
  name: string;
  code: string | null;
  message: string;
}

class SqliteDatasource implements Datasource {
  readonly driver = "sqlite" as const;
  readonly name: string;
  readonly readOnly: boolean;
  private readonly path: string;
  private readonly pool: SqliteWorkerPool;

  constructor(
    private readonly config: DatasourceConfig,
    private readonly logger?: Logger,
  ) {
    this.name = config.name;
    this.readOnly = config.readOnly;
    if (!config.path) {
      throw new SqlError(
        Code.INVALID_ARGUMENT,
        `datasource "${config.name}": a sqlite datasource needs path (the database file)`,
      );
    }
    this.path = config.path;
    this.pool = new SqliteWorkerPool(config.name, Math.max(1, Math.floor(config.poolSize)), {
      path: config.path,
      readOnly: config.readOnly,
    });
  }

  /**
   * No privileges to check: SQLite has no users, and a read-only datasource's file is opened read-only by
   * SQLite itself (with query_only, ATTACH and VACUUM INTO refused), which no statement can undo.
   */
  check(): Promise<DatasourceCheck> {
    let db: ReturnType<typeof openCatalogConnection> | undefined;
    try {
      db = openCatalogConnection(this.path);
      // Reads the file's header: a file that is not a database fails here.
      db.pragma("schema_version");
      return Promise.resolve({});
    } catch (err) {
      const failure = engineFailure(err);
      // A writer in the middle of a commit holds the file: it is there and it is a database.
      if (/^SQLITE_(BUSY|LOCKED)/.test(failure.code ?? "")) return Promise.resolve({});
      return Promise.reject(this.cannotOpen(failure));
    } finally {
      db?.close();
    }
  }

  async *query(sql: string, params: JsonValue[], opts: QueryOptions): AsyncGenerator<QueryChunk> {
    const { signal } = opts;
    const outside = reachesOtherFiles(sql);
    if (outside !== undefined) {
      throw new SqlError(
        Code.PERMISSION_DENIED,
        `datasource "${this.name}": ${outside} is not allowed: a datasource uses only its own database file`,
      );
    }
    const batchRows = batchRowsOf(opts);
    const clock = new StatementClock(this.config.statementTimeoutMs);
    const worker = await this.pool.acquire(signal, () => this.cancelled());
    // The worker holds the statement open (between batches) until "next" or "end".
    let open = false;
    try {
      const request: WorkerRequest = { op: "query", sql, params: params.map(toBindValue), batchRows };
      let batch = await this.ask(worker, request, signal, clock);
      open = batch.done === null;
      yield { kind: "columns", columns: batch.columns ?? [] };
      for (;;) {
        if (batch.rows.length > 0) yield { kind: "rows", rows: batch.rows };
        if (batch.done !== null) {
          const { rowCount, affectedRows } = batch.done;
          yield affectedRows === undefined
            ? { kind: "done", rowCount }
            : { kind: "done", rowCount, affectedRows };
          return;
        }
        // The consumer asked for more: only now does the worker read the next batch.
        if (signal.aborted) throw this.cancelled();
        open = false;
        batch = await this.ask(worker, { op: "next" }, signal, clock);
        open = batch.done === null;
      }
    } finally {
      if (open) worker.post({ op: "end" });
      this.pool.release(worker);
    }
  }

  describeTable(table: string): Promise<TableMeta> {
    let db: ReturnType<typeof openCatalogConnection>;
    try {
      db = openCatalogConnection(this.path);
    } catch (err) {
      return Promise.reject(this.cannotOpen(engineFailure(err)));
    }
    try {
      const meta = describeSqliteTable(db, table);
      if (meta) return Promise.resolve(meta);
      return Promise.reject(
        new SqlError(
          Code.NOT_FOUND,
          `datasource "${this.name}": table ${JSON.stringify(table)} does not exist`,
        ),
      );
    } catch (err) {
      return Promise.reject(this.toSqlError(engineFailure(err)));
    } finally {
      db.close();
    }
  }

  async close(): Promise<void> {
    await this.pool.close(
      new SqlError(Code.CANCELLED, `datasource "${this.name}" was closed; its statement was cancelled`),
    );
  }

  /** One request to the worker, killing it on abort or when the statement's time runs out. */
  private async ask(
    worker: SqliteWorker,
    request: WorkerRequest,
    signal: AbortSignal,
    clock: StatementClock,
  ): Promise<WorkerBatch> {
    if (signal.aborted) throw this.cancelled();
    const onAbort = (): void => worker.kill(this.cancelled());
    signal.addEventListener("abort", onAbort, { once: true });
    // A new worker's start-up is not the statement's time (an abort meanwhile kills it, which ends the wait).
    await worker.ready;
    const stopClock = clock.run(() => {
      this.logger?.info({ timeoutMs: this.config.statementTimeoutMs }, "sqlite statement timed out");
      worker.kill(this.timedOut());
    });
    try {
      const reply = await worker.request(request);
      if (reply.type === "error") {
        throw reply.phase === "open" ? this.cannotOpen(reply) : this.toSqlError(reply);
      }
      return reply;
    } catch (err) {
      if (err instanceof SqlError) throw err;
      // The worker process died under the statement: it is replaced when the pool is next asked.
      const reason = err instanceof Error ? err.message : String(err);
      this.logger?.warn({ reason }, "sqlite worker process failed");
      throw new SqlError(
        Code.INTERNAL,
        `datasource "${this.name}": ${reason}; the statement failed and a new worker takes the next one`,
      );
    } finally {
      signal.removeEventListener("abort", onAbort);
      stopClock();
    }
  }

  private toSqlError(failure: EngineFailure): SqlError {
    const { code, message } = failure;
    const primary = code === null ? null : code.split("_").slice(0, 2).join("_");
    switch (primary) {
      case null:
        // better-sqlite3's own checks of the SQL text and the parameters.
        return this.error(
          failure.name === "RangeError" || failure.name === "TypeError"
            ? Code.INVALID_ARGUMENT
            : Code.INTERNAL,
          failure,
        );
      case "SQLITE_READONLY":
        return this.readOnly
          ? readOnlyError(this.name, message, code ?? undefined)
          : new SqlError(Code.PERMISSION_DENIED, `datasource "${this.name}": ${message}`, code ?? undefined);
      // SQLITE_ERROR is the statement's own fault: syntax, no such table or column, wrong arguments.
      case "SQLITE_ERROR":
      case "SQLITE_CONSTRAINT":
      case "SQLITE_MISMATCH":
      case "SQLITE_RANGE":
      case "SQLITE_TOOBIG":
        return this.error(Code.INVALID_ARGUMENT, failure);
      case "SQLITE_PERM":
      case "SQLITE_AUTH":
        return this.error(Code.PERMISSION_DENIED, failure);
      case "SQLITE_BUSY":
      case "SQLITE_LOCKED":
        return this.error(Code.UNAVAILABLE, failure);
      case "SQLITE_CANTOPEN":
      case "SQLITE_NOTADB":
        return this.cannotOpen(failure);
      default:
        return this.error(Code.INTERNAL, failure);
    }
  }

  private error(code: Code, failure: EngineFailure): SqlError {
    return new SqlError(code, `datasource "${this.name}": ${failure.message}`, failure.code ?? undefined);
  }

  private cannotOpen(failure: EngineFailure): SqlError {
    return new SqlError(
      Code.UNAVAILABLE,
      `datasource "${this.name}": cannot open sqlite database ${this.path}: ${failure.message}`,
      failure.code ?? undefined,
    );
  }

  private cancelled(): SqlError {
    return cancelledError(this.name);
  }

  private timedOut(): SqlError {
    return statementTimeoutError(this.name, this.config.statementTimeoutMs);
  }
}

/**
 * The time a statement has spent running in its worker, against statement_timeout. Time the worker sits
 * idle between batches waiting for the consumer does not count: a slow reader is not a slow statement
 * (the task's own timeout bounds the whole run).
 */
class StatementClock {
  private spentMs = 0;

  constructor(private readonly limitMs: number) {}

  /** Starts timing one request; onExpire runs if the statement's time runs out first. Returns stop. */
  run(onExpire: () => void): () => void {
    if (this.limitMs <= 0) return () => undefined;
    const began = performance.now();
    const timer = setTimeout(onExpire, Math.min(MAX_TIMER_MS, Math.max(0, this.limitMs - this.spentMs)));
    return () => {
      clearTimeout(timer);
      this.spentMs += performance.now() - began;
    };
  }
}

/**
 * The statement's kind when it would reach files other than the datasource's own: ATTACH opens any
 * database file the agent can read (or creates one), VACUUM INTO writes one anywhere. Both can only
 * stand at the start of a statement, after comments.
 */
function reachesOtherFiles(sql: string): string | undefined {
  let rest = sql;
  for (;;) {
    rest = rest.trimStart();
    if (rest.startsWith("--")) {
      const nl = rest.indexOf("\n");
      rest = nl === -1 ? "" : rest.slice(nl + 1);
    } else if (rest.startsWith("/*")) {
      const end = rest.indexOf("*/", 2);
      rest = end === -1 ? "" : rest.slice(end + 2);
    } else {
      break;
    }
  }
  const word = /^[A-Za-z]+/.exec(rest)?.[0].toUpperCase();
  if (word === "ATTACH") return "ATTACH";
  if (word === "VACUUM" && /\binto\b/i.test(rest)) return "VACUUM INTO";
  return undefined;
}

/** Booleans as 1/0 and objects/arrays as JSON text, since SQLite has neither. */
function toBindValue(v: JsonValue): BindValue {
  if (v === null || typeof v === "string") return v;
  if (typeof v === "boolean") return v ? 1n : 0n;
  if (typeof v === "number") return Number.isSafeInteger(v) ? BigInt(v) : v;
  return JSON.stringify(v);
}

function engineFailure(err: unknown): EngineFailure {
  if (!(err instanceof Error)) return { name: "Error", code: null, message: String(err) };
  const code = (err as { code?: unknown }).code;
  return { name: err.name, code: typeof code === "string" ? code : null, message: err.message };
}
