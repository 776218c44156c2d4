// The SQLite worker processes of a datasource: each owns one better-sqlite3 connection, and the pool lends
// them to statements one at a time. Processes rather than threads because better-sqlite3 cannot interrupt
// a statement and a worker thread cannot be stopped while SQLite runs (terminate() waits for the statement
// to come back to JavaScript, and so does the agent's exit); a process can be killed at any moment.
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import type { Socket } from "node:net";
import { Code, SwitchboardError } from "../../../../common/errors.js";
import { SqlError, type ColumnInfo, type JsonValue } from "../datasource.js";
import { SQLITE_WORKER_SOURCE } from "./sqlite-worker-source.js";

/** A parameter as SQLite binds it: safe integers travel as bigint so that they bind as INTEGER, not REAL. */
export type BindValue = null | number | bigint | string;

export type WorkerRequest =
  | { op: "init"; path: string; readOnly: boolean; betterSqlite3: string }
  | { op: "query"; sql: string; params: BindValue[]; batchRows: number }
  | { op: "next" }
  | { op: "end" };

export interface WorkerBatch {
  type: "batch";
  /** In the first batch of a statement only. */
  columns?: ColumnInfo[];
  rows: JsonValue[][];
  /** null: the statement stays open until "next" or "end". */
  done: { rowCount: number; affectedRows?: number } | null;
}

export interface WorkerFailure {
  type: "error";
  /** "open": the database could not be opened; "statement": preparing, binding or running failed. */
  phase: "open" | "statement";
  /** The JavaScript error's name: SqliteError, RangeError (parameters), TypeError... */
  name: string;
  /** SQLITE_* for an SqliteError. */
  code: string | null;
  message: string;
}

export type WorkerReply = WorkerBatch | WorkerFailure;

/** The worker process ended (the reason it was killed for, or how it died); its request cannot finish. */
export function workerGone(message: string): SwitchboardError {
  return new SwitchboardError(Code.UNAVAILABLE, message);
}

export interface SqliteWorkerOptions {
  path: string;
  readOnly: boolean;
  /** better-sqlite3's entry file; default: resolved from here (the worker process resolves nothing). */
  betterSqlite3?: string;
}

const STDERR_TAIL_CHARS = 2000;
/** How long a worker asked to close may take before it is killed. */
const CLOSE_GRACE_MS = 2000;

/** One worker process: a request at a time, each answered by one reply. */
export class SqliteWorker {
  /** Resolves once the process has exited (or could not start). */
  readonly exited: Promise<void>;
  /** Resolves once the process has started and loaded better-sqlite3, or has gone (requests then fail). */
  readonly ready: Promise<void>;
  private onReady: () => void = () => undefined;
  private readonly child: ChildProcess;
  private waiting: { resolve: (reply: WorkerReply) => void; reject: (err: Error) => void } | undefined;
  private gone: Error | undefined;
  private stderrTail = "";

  constructor(options: SqliteWorkerOptions) {
    this.child = spawn(process.execPath, ["-e", SQLITE_WORKER_SOURCE, String(process.pid)], {
      stdio: ["ignore", "ignore", "pipe", "ipc"],
      serialization: "advanced",
    });
    this.child.stderr?.setEncoding("utf8");
    this.child.stderr?.on("data", (text: string) => {
      this.stderrTail = (this.stderrTail + text).slice(-STDERR_TAIL_CHARS);
    });
    this.ready = new Promise((resolve) => (this.onReady = resolve));
    this.child.on("message", (reply: WorkerReply | { type: "ready" }) => {
      if (reply.type === "ready") return this.onReady();
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting?.resolve(reply);
    });
    this.exited = new Promise((resolve) => {
      this.child.on("exit", (code, signal) => {
        const how = signal !== null ? `was killed by ${signal}` : `exited with code ${code ?? "?"}`;
        const stderr = this.stderrTail.trim();
        this.fail(workerGone(`the sqlite worker process ${how}${stderr ? `: ${stderr}` : ""}`));
        resolve();
      });
      this.child.on("error", (err) => {
        // Spawning failed (no exit follows), or sending failed (the exit follows).
        this.fail(workerGone(`the sqlite worker process failed: ${err.message}`));
        if (this.child.pid === undefined) resolve();
      });
    });
    this.post({
      op: "init",
      path: options.path,
      readOnly: options.readOnly,
      betterSqlite3: options.betterSqlite3 ?? createRequire(import.meta.url).resolve("better-sqlite3"),
    });
  }

  get alive(): boolean {
    return this.gone === undefined;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Sends a request and waits for its reply; rejects with workerGone (UNAVAILABLE), or the reason given to kill(). */
  request(request: WorkerRequest): Promise<WorkerReply> {
    if (this.gone) return Promise.reject(this.gone);
    if (this.waiting) return Promise.reject(new Error("a sqlite worker answers one request at a time"));
    return new Promise((resolve, reject) => {
      this.waiting = { resolve, reject };
      this.post(request);
    });
  }

  /** Sends a request that has no reply ("end"). */
  post(request: WorkerRequest): void {
    if (this.gone || !this.child.connected) return;
    this.child.send(request, (err) => {
      if (err) this.kill(workerGone(`could not reach the sqlite worker process: ${err.message}`));
    });
  }

  /** Ends the process now, stopping whatever SQLite is doing; a pending request rejects with reason. */
  kill(reason: Error): void {
    this.fail(reason);
    this.child.kill("SIGKILL");
  }

  /** Lets the process finish on its own (it closes its connection), killing it if it takes too long. */
  async close(): Promise<void> {
    if (this.alive && this.child.connected) {
      this.fail(workerGone("the sqlite worker process was closed"));
      this.child.disconnect();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.exited,
        new Promise((resolve) => (timer = setTimeout(resolve, CLOSE_GRACE_MS))),
      ]);
      clearTimeout(timer);
    }
    this.child.kill("SIGKILL");
    await this.exited;
  }

  /** An idle worker does not keep the agent's process alive. */
  setActive(active: boolean): void {
    const stderr = this.child.stderr as Socket | null;
    if (active) {
      this.child.ref();
      this.child.channel?.ref();
      stderr?.ref();
    } else {
      this.child.unref();
      this.child.channel?.unref();
      stderr?.unref();
    }
  }

  private fail(err: Error): void {
    this.gone ??= err;
    this.onReady();
    const waiting = this.waiting;
    this.waiting = undefined;
    waiting?.reject(this.gone);
  }
}

/** Statements waiting for a worker beyond this many are refused rather than queued. */
const MAX_WAITING = 1000;
/** A worker idle this long exits; the next statement starts a new one. */
const DEFAULT_IDLE_MS = 60_000;

interface Waiter {
  resolve: (worker: SqliteWorker) => void;
  reject: (err: Error) => void;
}

/** Up to `size` workers, started when first needed, lent to one statement at a time. */
export class SqliteWorkerPool {
  private readonly all = new Set<SqliteWorker>();
  private readonly idle: SqliteWorker[] = [];
  private readonly idleTimers = new Map<SqliteWorker, NodeJS.Timeout>();
  private readonly waiters: Waiter[] = [];
  private closed = false;

  constructor(
    private readonly name: string,
    private readonly size: number,
    private readonly options: SqliteWorkerOptions,
    private readonly idleMs = DEFAULT_IDLE_MS,
  ) {}

  /** Live workers, lent or idle. */
  get workers(): number {
    return this.all.size;
  }

  /** A worker for one statement; give it back with release(). Rejects with cancelled() on abort. */
  acquire(signal: AbortSignal, cancelled: () => Error): Promise<SqliteWorker> {
    if (this.closed) return Promise.reject(this.closedError());
    if (signal.aborted) return Promise.reject(cancelled());
    for (let w = this.idle.pop(); w !== undefined; w = this.idle.pop()) {
      clearTimeout(this.idleTimers.get(w));
      this.idleTimers.delete(w);
      if (w.alive) return Promise.resolve(this.lend(w));
      this.all.delete(w);
    }
    if (this.all.size < this.size) return Promise.resolve(this.lend(this.start()));
    if (this.waiters.length >= MAX_WAITING) {
      return Promise.reject(
        new SqlError(
          Code.RESOURCE_EXHAUSTED,
          `datasource "${this.name}": ${this.waiters.length} statements are already waiting for one of ` +
            `its ${this.size} sqlite workers; retry later or raise pool_size`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i !== -1) this.waiters.splice(i, 1);
        reject(cancelled());
      };
      const waiter: Waiter = {
        resolve: (w) => {
          signal.removeEventListener("abort", onAbort);
          resolve(this.lend(w));
        },
        reject: (err) => {
          signal.removeEventListener("abort", onAbort);
          reject(err);
        },
      };
      signal.addEventListener("abort", onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  /** Takes a worker back; a dead one is dropped, and a waiter then gets a new one. */
  release(worker: SqliteWorker): void {
    if (!worker.alive || this.closed) {
      this.all.delete(worker);
      if (worker.alive) void worker.close();
      const waiter = this.closed ? undefined : this.waiters.shift();
      waiter?.resolve(this.start());
      return;
    }
    const waiter = this.waiters.shift();
    if (waiter) {
      waiter.resolve(worker);
      return;
    }
    worker.setActive(false);
    this.idle.push(worker);
    const timer = setTimeout(() => this.retire(worker), this.idleMs);
    timer.unref();
    this.idleTimers.set(worker, timer);
  }

  /** Idle workers close, lent ones are killed (their statements fail with reason); waiters are refused. */
  async close(reason: Error): Promise<void> {
    this.closed = true;
    for (const waiter of this.waiters.splice(0)) waiter.reject(this.closedError());
    for (const timer of this.idleTimers.values()) clearTimeout(timer);
    this.idleTimers.clear();
    const idle = new Set(this.idle.splice(0));
    const workers = [...this.all];
    this.all.clear();
    await Promise.all(
      workers.map((w) => {
        if (idle.has(w)) return w.close();
        w.kill(reason);
        return w.exited;
      }),
    );
  }

  private start(): SqliteWorker {
    const worker = new SqliteWorker(this.options);
    this.all.add(worker);
    return worker;
  }

  private lend(worker: SqliteWorker): SqliteWorker {
    worker.setActive(true);
    return worker;
  }

  private retire(worker: SqliteWorker): void {
    const i = this.idle.indexOf(worker);
    if (i === -1) return;
    this.idle.splice(i, 1);
    this.idleTimers.delete(worker);
    this.all.delete(worker);
    void worker.close();
  }

  private closedError(): SqlError {
    return new SqlError(Code.UNAVAILABLE, `datasource "${this.name}" is closed`);
  }
}
