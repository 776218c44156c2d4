// The typed client for Switchboard's hub: tasks over one shared Session stream by default, the
// unary and streaming RPCs where they fit better, the admin API and the supervised-node API. Every
// call takes the same bearer token; every failure is a SwitchboardError with a gRPC status code.
import {
  credentials,
  Metadata,
  status,
  type CallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type ClientReadableStream,
} from "@grpc/grpc-js";
import { bearerMetadata } from "../common/auth.js";
import { FastClientServiceClient } from "../common/codec.js";
import { clientOptions, DEFAULT_MAX_MESSAGE_BYTES } from "../common/grpc-options.js";
import {
  AdminServiceClient,
  NodeServiceClient,
  type ClientServiceClient,
  type InputResult,
  type ListTasksRequest,
} from "../gen/switchboard/v1/client.js";
import {
  OutputStream,
  TaskState,
  type TaskEvent,
  type TaskInfo,
  type TaskInput,
  type TaskResult,
} from "../gen/switchboard/v1/task.js";
import { adminApi, type AdminApi } from "./admin-api.js";
import { toSubmitRequest, type TaskRequest } from "./builders.js";
import { nodesApi, type NodesApi } from "./nodes-api.js";
import type { Callback, UnaryCall } from "./unary.js";
import { SwitchboardError } from "../common/errors.js";
import { callError } from "./errors.js";
import { SessionMux } from "./session.js";
import {
  SqlResultDecoder,
  type JsonValue,
  type SqlResultHeader,
  type SqlResultSummary,
} from "../common/sql-result.js";

/** How to reach the hub: its address, the token to send, TLS, and call limits. */
export interface SwitchboardClientOptions {
  /** host:port of the hub. */
  hub: string;
  /** The bearer token every call carries (`switchboard token create`); its role decides what it may do. */
  token?: string;
  /** Default: insecure (plaintext) channel. */
  credentials?: ChannelCredentials;
  /** The largest gRPC message either way; default 16 MiB, as the hub's. */
  maxMessageBytes?: number;
  /** Deadline for short calls (getTask, listTasks, admin); default 30 s. */
  callTimeoutMs?: number;
  /** Further grpc-js channel options, applied last (keepalive, proxies, ...). */
  channelOptions?: ChannelOptions;
}

/** Which tasks {@link SwitchboardClient.listTasks} returns; unset fields do not filter. */
export interface ListTasksFilter {
  /** At most this many; default 50, at most 1000. */
  limit?: number;
  /** Only tasks assigned to this agent. */
  agentId?: string;
  /** Only tasks targeted at this pool. */
  pool?: string;
  /** Only tasks in one of these states. */
  states?: TaskState[];
  /** Paging: only tasks older than this one (pass the last id of the previous page). */
  beforeTaskId?: string;
}

/** How {@link SwitchboardClient.watch} follows a task. */
export interface WatchOptions {
  /** Replay events after this sequence number; 0 (default) replays from the start. */
  afterSeq?: number;
  /** Aborting ends the watch (the task runs on); the loop then throws a CANCELLED SwitchboardError. */
  signal?: AbortSignal;
  /** How long to keep re-attaching after the stream breaks (hub restart, network); default 30 s. */
  reattachForMs?: number;
}

/** Options of the calls that run a task: {@link SwitchboardClient.execute}, `run`, `query`. */
export interface RunOptions {
  /** Called with the task id as soon as the hub has accepted the task. */
  onTaskId?: (taskId: string) => void;
}

/** What query() yields: the header once, rows in batches as they arrive, then the summary. */
export type QueryEvent =
  | {
      /** The result's header: first, once. */
      kind: "header";
      /** The columns, and the described table. */
      header: SqlResultHeader;
      /** The task's id, to cancel or look it up. */
      taskId: string;
    }
  | {
      /** A batch of rows, in order. */
      kind: "rows";
      /** Each row as an array of column values, in the header's column order. */
      rows: JsonValue[][];
      /** The size of these rows as they travelled (NDJSON lines). */
      bytes: number;
    }
  | {
      /** For a sql task with format "csv": CSV lines as the agent encoded them (no header line). */
      kind: "csv";
      /** The CSV bytes, ready to write to a file. */
      data: Buffer;
    }
  | {
      /** The end of a successful result: last, once. */
      kind: "done";
      /** Row count, bytes and affected rows. */
      summary: SqlResultSummary;
    };

/**
 * The input of one running task, from {@link SwitchboardClient.openInput}: bytes for its stdin (or
 * terminal, or upload), terminal resizes, then the end of input.
 */
export interface TaskInputWriter {
  /** Bytes for the task's stdin (or terminal, or upload). */
  write(data: Uint8Array): Promise<void>;
  /** A new terminal size (tty tasks). */
  resize(cols: number, rows: number): Promise<void>;
  /**
   * End of input; resolves once the hub forwarded everything (or the task ended). `sha256`: the hex
   * digest of an upload whose task left it out, computed while sending.
   */
  end(sha256?: string): Promise<InputResult>;
  /** Closes the stream without an end of input (e.g. after the task ended). */
  close(): void;
  /** The call's outcome. */
  done(): Promise<InputResult>;
}

/**
 * The client for a Switchboard hub: run tasks on agents and follow them, and reach the admin and node
 * APIs. One instance holds one channel and one shared Session stream; make one per hub and reuse it,
 * then {@link SwitchboardClient.close} it. Every failure is a {@link SwitchboardError} with a gRPC code;
 * a task that ran and failed is not an error: its `info.state` and `info.exitCode` say so.
 *
 * @example Connecting
 * ```ts
 * import { SwitchboardClient, shell } from "switchboard/dist/src/client/index.js";
 *
 * const client = new SwitchboardClient({ hub: "hub.internal:7443", token: process.env.SWITCHBOARD_TOKEN });
 * try {
 *   const { info, stdout } = await client.execute({ ...shell({ script: "uptime" }), target: { pool: "web" } });
 *   console.log(info.exitCode, stdout.toString());
 * } finally {
 *   client.close();
 * }
 * ```
 *
 * @example Errors
 * ```ts
 * try {
 *   await client.execute({ ...shell({ argv: ["true"] }), target: { pool: "nowhere" } });
 * } catch (e) {
 *   if (e instanceof SwitchboardError && e.code === Code.UNAVAILABLE) console.error(e.message);
 *   else throw e;
 * }
 * ```
 */
export class SwitchboardClient {
  /** The hub's address, as given. */
  readonly hub: string;
  /** The admin API: agents, tokens, cluster status, audit log. */
  readonly admin: AdminApi;
  /** The supervised-node API: spawn, stop, migrate and watch long-running processes on agents. */
  readonly nodes: NodesApi;
  private readonly rpc: ClientServiceClient;
  private readonly adminRpc: AdminServiceClient;
  private readonly nodeRpc: NodeServiceClient;
  private readonly token: string;
  private readonly callTimeoutMs: number;
  private readonly session: SessionMux;

  /** Opens the channel lazily: nothing is sent until the first call, so the hub need not be up yet. */
  constructor(opts: SwitchboardClientOptions) {
    this.hub = opts.hub;
    this.token = opts.token ?? "";
    this.callTimeoutMs = opts.callTimeoutMs ?? 30_000;
    const channelOpts = {
      ...clientOptions(opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES),
      ...opts.channelOptions,
    };
    const creds = opts.credentials ?? credentials.createInsecure();
    this.rpc = new FastClientServiceClient(opts.hub, creds, channelOpts);
    this.adminRpc = new AdminServiceClient(opts.hub, creds, {
      ...channelOpts,
      channelOverride: this.rpc.getChannel(),
    });
    this.nodeRpc = new NodeServiceClient(opts.hub, creds, {
      ...channelOpts,
      channelOverride: this.rpc.getChannel(),
    });
    this.session = new SessionMux(this.rpc, () => this.metadata(), this.hub);
    const md = (): Metadata => this.metadata();
    const unary: UnaryCall = (invoke, timeoutMs) => this.unary(invoke, timeoutMs);
    this.admin = adminApi(this.adminRpc, md, unary);
    this.nodes = nodesApi(this.nodeRpc, md, unary, this.callTimeoutMs);
  }

  /** Runs a task and resolves with its result, over the shared Session stream. */
  execute(req: TaskRequest, opts: RunOptions = {}): Promise<TaskResult> {
    return this.session.execute(toSubmitRequest(req), req.signal, opts.onTaskId);
  }

  /** The same as execute(), as one unary Execute RPC (simpler on the wire, dearer per task). */
  executeUnary(req: TaskRequest): Promise<TaskResult> {
    return this.withAbort(req.signal, (opts, cb: Callback<TaskResult>) =>
      this.rpc.execute(toSubmitRequest(req), this.metadata(), opts, cb),
    );
  }

  /** Submits a task and resolves with its id once the hub has stored it. */
  submit(req: TaskRequest): Promise<string> {
    return this.session.submit(toSubmitRequest(req), req.signal);
  }

  /**
   * Runs a task and yields its events (Queued, Assigned, Started, Output..., Finished) as they
   * happen. The stream is flow-controlled: a slow reader slows only this task. Aborting the
   * signal, or leaving the loop early, cancels the task.
   *
   * @example Running a shell command and streaming its output
   * ```ts
   * for await (const ev of client.run({ ...shell({ argv: ["make", "test"] }), target: { pool: "build" } })) {
   *   const e = ev.event;
   *   if (e?.$case === "output") process.stdout.write(e.value.data);
   *   if (e?.$case === "finished") process.exitCode = e.value.exitCode;
   * }
   * ```
   */
  async *run(req: TaskRequest, opts: RunOptions = {}): AsyncGenerator<TaskEvent, void, undefined> {
    const call = this.rpc.run(toSubmitRequest(req), this.metadata());
    let taskId: string | undefined;
    let finished = false;
    const onAbort = (): void => {
      if (taskId) void this.cancel(taskId, "cancelled by the caller").catch(() => undefined);
      call.cancel();
    };
    req.signal?.addEventListener("abort", onAbort, { once: true });
    try {
      for await (const ev of readStream<TaskEvent>(call, this.hub)) {
        if (!taskId && ev.taskId) {
          taskId = ev.taskId;
          opts.onTaskId?.(taskId);
        }
        if (ev.event?.$case === "finished") finished = true;
        yield ev;
        if (finished) return;
      }
      if (req.signal?.aborted) throw cancelledByCaller();
    } finally {
      req.signal?.removeEventListener("abort", onAbort);
      if (!finished) {
        call.cancel();
        if (taskId && !req.signal?.aborted)
          await this.cancel(taskId, "the client stopped reading").catch(() => undefined);
      }
    }
  }

  /**
   * Runs a SQL task (see `sql()`) and yields its result: the header (columns, table description), rows
   * in batches as they arrive, then the summary. Flow-controlled end to end: while the caller does not
   * pull, the agent does not read further from the database. A failed query throws a
   * SwitchboardError with the database's message after the rows that came before the failure.
   *
   * @example A SQL query
   * ```ts
   * const q = sql({ datasource: "postgres", query: "select id, name from users where id > $1", params: [100] });
   * for await (const ev of client.query({ ...q, target: { pool: "db" } })) {
   *   if (ev.kind === "header") console.log(ev.header.columns.map((c) => c.name));
   *   if (ev.kind === "rows") for (const row of ev.rows) console.log(row);
   *   if (ev.kind === "done") console.log(`${ev.summary.row_count} rows`);
   * }
   * ```
   */
  async *query(req: TaskRequest, opts: RunOptions = {}): AsyncGenerator<QueryEvent, void, undefined> {
    if (req.spec.kind?.$case !== "sql") throw new TypeError("query(): the request must be a sql() task");
    const decoder = new SqlResultDecoder();
    let headerSent = false;
    let taskId = "";
    for await (const ev of this.run(req, opts)) {
      taskId = ev.taskId;
      const e = ev.event;
      if (e?.$case === "output") {
        if (e.value.stream !== OutputStream.OUTPUT_STREAM_STDOUT) continue;
        const before = decoder.rowBytes;
        const rows = decoder.push(e.value.data);
        if (!headerSent && decoder.header) {
          headerSent = true;
          yield { kind: "header", header: decoder.header, taskId };
        }
        if (rows.length > 0) yield { kind: "rows", rows, bytes: decoder.rowBytes - before };
        const encoded = decoder.takeEncoded();
        if (encoded !== undefined) yield { kind: "csv", data: encoded };
      } else if (e?.$case === "finished") {
        const f = e.value;
        if (f.state !== TaskState.TASK_STATE_SUCCEEDED) {
          const why = f.error?.message || f.reason || `the query ended ${TaskState[f.state]}`;
          throw new SwitchboardError(f.error?.code ?? status.UNKNOWN, why);
        }
        if (decoder.incomplete) {
          throw new SwitchboardError(status.DATA_LOSS, "the result ended inside a row");
        }
        const summary = JSON.parse(Buffer.from(f.result).toString("utf8") || "{}") as SqlResultSummary;
        if (!headerSent) {
          // A statement that returns no rows still has a header; an agent always sends one.
          yield { kind: "header", header: decoder.header ?? { columns: [], table: null }, taskId };
        }
        yield { kind: "done", summary };
        return;
      }
    }
  }

  /**
   * Yields a task's events from `afterSeq` on, replaying what already happened, until it finishes.
   * When the stream breaks (a hub restart, a network blip), it re-attaches after the last event
   * it saw, so nothing is missed and nothing is repeated.
   *
   * @example Following a task submitted earlier
   * ```ts
   * const taskId = await client.submit({ ...shell({ script: "./backup.sh" }), target: { agentId: "db-1" } });
   * // ... later, from any process:
   * for await (const ev of client.watch(taskId)) {
   *   if (ev.event?.$case === "finished") console.log(TaskState[ev.event.value.state]);
   * }
   * ```
   */
  async *watch(taskId: string, opts: WatchOptions = {}): AsyncGenerator<TaskEvent, void, undefined> {
    let after = opts.afterSeq ?? 0;
    const reattachFor = opts.reattachForMs ?? 30_000;
    let brokenSince: number | undefined;
    let delay = 100;
    for (;;) {
      const call = this.rpc.watch({ taskId, afterSeq: after }, this.metadata());
      const onAbort = (): void => call.cancel();
      opts.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        for await (const ev of readStream<TaskEvent>(call, this.hub)) {
          brokenSince = undefined;
          delay = 100;
          if (ev.seq <= after) continue;
          after = ev.seq;
          yield ev;
          if (ev.event?.$case === "finished") return;
        }
        if (opts.signal?.aborted) throw cancelledByCaller();
        return;
      } catch (e) {
        const err = callError(e, this.hub);
        if (opts.signal?.aborted) throw cancelledByCaller();
        if (err.code !== status.UNAVAILABLE) throw err;
        brokenSince ??= Date.now();
        if (Date.now() - brokenSince > reattachFor) throw err;
        await sleep(delay * (0.5 + Math.random() / 2), opts.signal);
        delay = Math.min(delay * 2, 5_000);
      } finally {
        opts.signal?.removeEventListener("abort", onAbort);
        call.cancel();
      }
    }
  }

  /** Cancels a task; resolves with its state afterwards (a finished task keeps its state). */
  async cancel(taskId: string, reason = ""): Promise<TaskState> {
    const r = await this.unary<{ state: TaskState }>((o, cb) =>
      this.rpc.cancel({ taskId, reason }, this.metadata(), o, cb),
    );
    return r.state;
  }

  /**
   * Opens the input of a running task that takes it (a shell with stdinStream or tty, a file upload).
   * Writes resolve once the hub took them: a fast writer is held back while the agent is behind.
   */
  openInput(taskId: string): TaskInputWriter {
    let settle!: { resolve: (r: InputResult) => void; reject: (e: Error) => void };
    const result = new Promise<InputResult>((resolve, reject) => (settle = { resolve, reject }));
    result.catch(() => undefined); // read through done(); a failed write reports it too
    const call = this.rpc.input(this.metadata(), (err, res) =>
      err ? settle.reject(callError(err, this.hub)) : settle.resolve(res),
    );
    let first = true;
    // Writes held back by flow control, settled by a drain or by the call's end. Kept in a set rather
    // than as one handler on `result` per write: those would keep every message alive until the call ends.
    const held = new Set<{ resolve: () => void; reject: (e: Error) => void }>();
    let ended: { error?: Error } | undefined;
    result.then(
      () => {
        ended = {};
        for (const w of held) w.resolve();
        held.clear();
      },
      (e: unknown) => {
        ended = { error: e instanceof Error ? e : new Error(String(e)) };
        for (const w of held) w.reject(ended.error!);
        held.clear();
      },
    );
    const send = (m: Omit<TaskInput, "taskId" | "offset">): Promise<void> => {
      if (ended) return ended.error ? Promise.reject(ended.error) : Promise.resolve();
      const msg: TaskInput = { ...m, taskId: first ? taskId : "", offset: 0 };
      first = false;
      if (call.write(msg)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        const w = { resolve, reject };
        held.add(w);
        call.once("drain", () => {
          if (held.delete(w)) resolve();
        });
      });
    };
    return {
      // A view, not a copy: the message is encoded (copied) as it is written.
      write: (data) =>
        send({
          data: Buffer.from(data.buffer, data.byteOffset, data.byteLength),
          eof: false,
          resize: undefined,
          sha256: "",
        }),
      resize: (cols, rows) => send({ data: Buffer.alloc(0), eof: false, resize: { cols, rows }, sha256: "" }),
      end: async (sha256 = "") => {
        await send({ data: Buffer.alloc(0), eof: true, resize: undefined, sha256 });
        call.end();
        return result;
      },
      close: () => call.end(),
      done: () => result,
    };
  }

  /** A task as the hub holds it, with its kept output; NOT_FOUND for an unknown id. */
  getTask(taskId: string): Promise<TaskResult> {
    return this.unary<TaskResult>((o, cb) => this.rpc.getTask({ taskId }, this.metadata(), o, cb));
  }

  /** Tasks, newest first, without their specs; page with `beforeTaskId`. */
  async listTasks(filter: ListTasksFilter = {}): Promise<TaskInfo[]> {
    const req: ListTasksRequest = {
      limit: filter.limit ?? 0,
      agentId: filter.agentId ?? "",
      pool: filter.pool ?? "",
      states: filter.states ?? [],
      beforeTaskId: filter.beforeTaskId ?? "",
    };
    const r = await this.unary<{ tasks: TaskInfo[] }>((o, cb) =>
      this.rpc.listTasks(req, this.metadata(), o, cb),
    );
    return r.tasks;
  }

  /** Ends the session stream once its calls are answered, then the channel. */
  close(): void {
    this.session.close();
    // Let the session's half-close go out before the channel closes under it.
    setImmediate(() => {
      this.adminRpc.close();
      this.nodeRpc.close();
      this.rpc.close();
    });
  }

  private metadata(): Metadata {
    return bearerMetadata(this.token);
  }

  private unary<T>(
    invoke: (opts: CallOptions, cb: Callback<T>) => unknown,
    timeoutMs = this.callTimeoutMs,
  ): Promise<T> {
    return this.withAbort(undefined, invoke, Date.now() + timeoutMs);
  }

  private withAbort<T>(
    signal: AbortSignal | undefined,
    invoke: (opts: CallOptions, cb: Callback<T>) => unknown,
    deadline?: number,
  ): Promise<T> {
    if (signal?.aborted) return Promise.reject(cancelledByCaller());
    return new Promise<T>((resolve, reject) => {
      const opts: CallOptions = deadline ? { deadline } : {};
      const call = invoke(opts, (err, value) => {
        signal?.removeEventListener("abort", onAbort);
        if (err) reject(callError(err, this.hub));
        else resolve(value as T);
      }) as { cancel(): void };
      const onAbort = (): void => call.cancel();
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }
}

/** A grpc-js server stream as an async iterable whose errors are SwitchboardErrors. */
async function* readStream<T>(
  call: ClientReadableStream<T>,
  hub: string,
): AsyncGenerator<T, void, undefined> {
  try {
    for await (const msg of call as AsyncIterable<T>) yield msg;
  } catch (e) {
    const err = callError(e, hub);
    if (err.code === status.CANCELLED) return;
    throw err;
  }
}

function cancelledByCaller(): SwitchboardError {
  return new SwitchboardError(status.CANCELLED, "cancelled by the caller");
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });
}
