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
  type AgentInfo,
  type AuditEntry,
  type ClusterStatusResponse,
  type CreateTokenResponse,
  type ForgetAgentResponse,
  type InputResult,
  type ListTasksRequest,
  type NodeBatchItem,
  type NodeInfo,
  type NodeLogsResponse,
  type SpawnNodeRequest,
  type StopNodeRequest,
  type TokenInfo,
} from "../gen/switchboard/v1/client.js";
import {
  OutputStream,
  TaskState,
  type TaskEvent,
  type TaskInfo,
  type TaskInput,
  type TaskResult,
} from "../gen/switchboard/v1/task.js";
import { toSubmitRequest, type TaskRequest } from "./builders.js";
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

/** A token to create with {@link AdminApi.createToken}. */
export interface CreateTokenInput {
  /** A unique name; it is the actor in the audit log. */
  name: string;
  /** viewer reads; operator also runs and cancels tasks; admin does everything; agent connects an agent. */
  role: "admin" | "operator" | "viewer" | "agent";
  /** Scope it to these pools; default: all. */
  pools?: string[];
  /** Agent tokens: only an agent with this id may use it. */
  agentId?: string;
  /** Agent tokens: a second process may take over a live session of the same agent id. */
  allowTakeover?: boolean;
}

/**
 * The cluster's administration, as `client.admin`: agents, tokens, the audit log. Reading needs a
 * viewer token; tokens and concurrency an admin token.
 *
 * @example
 * ```ts
 * const status = await client.admin.clusterStatus();
 * console.log(status.summary);
 * const { token } = await client.admin.createToken({ name: "ci", role: "operator", pools: ["build"] });
 * ```
 */
export interface AdminApi {
  /** The agents the hub knows, optionally of one pool. */
  listAgents(opts?: { pool?: string; includeOffline?: boolean }): Promise<AgentInfo[]>;
  /** One agent by id; NOT_FOUND when the hub does not know it. */
  getAgent(agentId: string): Promise<AgentInfo>;
  /** Counts of agents, tasks and nodes, per pool, with a one-line summary. */
  clusterStatus(): Promise<ClusterStatusResponse>;
  /** A new token; its secret is in the answer and nowhere else, so keep it. */
  createToken(input: CreateTokenInput): Promise<CreateTokenResponse>;
  /** The tokens' public records (never their secrets). */
  listTokens(opts?: { includeRevoked?: boolean }): Promise<TokenInfo[]>;
  /** Revokes a token by id or name: calls with it are refused from then on. */
  revokeToken(idOrName: string): Promise<TokenInfo>;
  /** The audit log, newest first. */
  listAudit(filter?: { limit?: number; action?: string; subject?: string }): Promise<AuditEntry[]>;
  /** How many tasks a connected agent runs at once, until it restarts. */
  setAgentConcurrency(agentId: string, concurrency: number): Promise<AgentInfo>;
  /** Releases an offline agent's id from its pool and token: the next agent with that id claims it. */
  forgetAgent(agentId: string): Promise<ForgetAgentResponse>;
}

/** A node to start; every field may be left out (the hub chooses the agent, the port, the id). */
export interface SpawnNodeInput {
  /** Start it on this agent; empty: the hub picks a healthy agent matching labels and pool. */
  agentId?: string;
  /** Its data directory on the agent; default: one under the agent's storage root. */
  storagePath?: string;
  /** 0 (default): the agent chooses a free port. */
  port?: number;
  /** MiB; past it the agent kills and restarts the node. 0 (default): the agent's default_memory_mb. */
  memoryLimitMb?: number;
  /** Default: `switchboard storage-node`. */
  binary?: string;
  /** Arguments after the binary. */
  args?: string[];
  /** Added to its environment. */
  env?: Record<string, string>;
  /** Placement: only agents carrying all these labels. */
  labels?: Record<string, string>;
  /** Placement: only agents of this pool. */
  pool?: string;
  /** May be started on another agent when its own stays offline. */
  reschedule?: boolean;
  /** Empty: the hub generates node-<uuid>. */
  nodeId?: string;
}

/** How {@link NodesApi.stop} stops a node. */
export interface StopNodeOptions {
  /** When given, the node must be on this agent. */
  agentId?: string;
  /** SIGTERM, then SIGKILL after this long; 0: the agent's default. */
  graceMs?: number;
}

/** One node to stop in {@link NodesApi.stopMany}. */
export interface StopNodeInput extends StopNodeOptions {
  /** The node's id. */
  nodeId: string;
}

/** Which nodes {@link NodesApi.list} returns. */
export interface ListNodesOptions {
  /** Only the nodes of this agent; default: the whole cluster. */
  agentId?: string;
  /** Also the nodes the registry wants stopped. */
  includeStopped?: boolean;
}

/** A node to move with {@link NodesApi.migrate}. */
export interface MigrateNodeInput {
  /** The node's id. */
  nodeId: string;
  /** The agent to start it on. */
  toAgentId: string;
  /** Copy the data directory first (both agents on one machine, or a shared disk). */
  copyData?: boolean;
  /** 0 (default): the same port. */
  port?: number;
  /** Empty (default): the same path. */
  storagePath?: string;
}

/** Which part of a node's log {@link NodesApi.logs} reads. */
export interface NodeLogsInput {
  /** The node's id. */
  nodeId: string;
  /** Read stderr instead of stdout. */
  stderr?: boolean;
  /** Where to start reading; negative: the last -offset bytes. Default 0. */
  offset?: number;
  /** At most this many bytes; 0 (default): the hub's limit. */
  maxBytes?: number;
}

/**
 * Supervised nodes: long-running processes (by default storage nodes) that agents start, stop and
 * watch. spawn, migrate and stop wait until the node runs (or has stopped), so they get a deadline
 * of at least a minute.
 */
export interface NodesApi {
  /** Resolves once the node is running (its port accepts connections). */
  spawn(input?: SpawnNodeInput): Promise<NodeInfo>;
  /**
   * Items in request order: check each one's `code` (0 = OK). Each item stands alone, unless
   * `atomic`: then when one fails, the ones started are stopped again.
   */
  spawnMany(inputs: SpawnNodeInput[], opts?: { atomic?: boolean }): Promise<NodeBatchItem[]>;
  /** Stops a node (SIGTERM, then SIGKILL after the grace) and records that it should stay stopped. */
  stop(nodeId: string, opts?: StopNodeOptions): Promise<NodeInfo>;
  /** Each item independently, in request order: check each item's `code` (0 = OK). */
  stopMany(nodes: StopNodeInput[]): Promise<NodeBatchItem[]>;
  /** Live from the agent; when it cannot be reached, the hub's cached record with `stale` set. */
  status(nodeId: string): Promise<NodeInfo>;
  /** The nodes of the registry, of one agent or of the whole cluster. */
  list(opts?: ListNodesOptions): Promise<NodeInfo[]>;
  /** Starts the node on the target agent, waits until it answers, then stops the old one. */
  migrate(input: MigrateNodeInput): Promise<NodeInfo>;
  /** A slice of the node's stdout (or stderr) log; `offset` in the answer is where `data` starts. */
  logs(input: NodeLogsInput): Promise<NodeLogsResponse>;
}

/** The least deadline for node calls that wait for a process to start or stop. */
const NODE_LIFECYCLE_TIMEOUT_MS = 60_000;

type Callback<T> = (err: Error | null, value?: T) => void;

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
    this.admin = this.makeAdmin();
    this.nodes = this.makeNodes();
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

  private makeAdmin(): AdminApi {
    const md = (): Metadata => this.metadata();
    const a = this.adminRpc;
    return {
      listAgents: async (o = {}) =>
        (
          await this.unary<{ agents: AgentInfo[] }>((c, cb) =>
            a.listAgents({ pool: o.pool ?? "", includeOffline: o.includeOffline ?? false }, md(), c, cb),
          )
        ).agents,
      getAgent: (agentId) => this.unary<AgentInfo>((c, cb) => a.getAgent({ agentId }, md(), c, cb)),
      clusterStatus: () => this.unary<ClusterStatusResponse>((c, cb) => a.clusterStatus({}, md(), c, cb)),
      createToken: (i) =>
        this.unary<CreateTokenResponse>((c, cb) =>
          a.createToken(
            {
              name: i.name,
              role: i.role,
              pools: i.pools ?? [],
              agentId: i.agentId ?? "",
              allowTakeover: i.allowTakeover ?? false,
            },
            md(),
            c,
            cb,
          ),
        ),
      listTokens: async (o = {}) =>
        (
          await this.unary<{ tokens: TokenInfo[] }>((c, cb) =>
            a.listTokens({ includeRevoked: o.includeRevoked ?? false }, md(), c, cb),
          )
        ).tokens,
      listAudit: async (f = {}) =>
        (
          await this.unary<{ entries: AuditEntry[] }>((c, cb) =>
            a.listAudit(
              { limit: f.limit ?? 0, action: f.action ?? "", subject: f.subject ?? "" },
              md(),
              c,
              cb,
            ),
          )
        ).entries,
      setAgentConcurrency: (agentId, concurrency) =>
        this.unary<AgentInfo>((c, cb) => a.setAgentConcurrency({ agentId, concurrency }, md(), c, cb)),
      forgetAgent: (agentId) =>
        this.unary<ForgetAgentResponse>((c, cb) => a.forgetAgent({ agentId }, md(), c, cb)),
      revokeToken: async (idOrName) => {
        const r = await this.unary<{ info?: TokenInfo }>((c, cb) => a.revokeToken({ idOrName }, md(), c, cb));
        if (!r.info) throw new SwitchboardError(status.INTERNAL, "the hub answered without the token");
        return r.info;
      },
    };
  }

  private makeNodes(): NodesApi {
    const md = (): Metadata => this.metadata();
    const n = this.nodeRpc;
    // The hub answers spawn once the node runs (up to 30 s, plus retries on another agent).
    const long = Math.max(NODE_LIFECYCLE_TIMEOUT_MS, this.callTimeoutMs);
    return {
      spawn: (i = {}) => this.unary<NodeInfo>((c, cb) => n.spawnNode(toSpawnRequest(i), md(), c, cb), long),
      spawnMany: async (inputs, o = {}) =>
        (
          await this.unary<{ items: NodeBatchItem[] }>(
            (c, cb) =>
              n.spawnNodes({ nodes: inputs.map(toSpawnRequest), atomic: o.atomic ?? false }, md(), c, cb),
            long,
          )
        ).items,
      stop: (nodeId, o = {}) =>
        this.unary<NodeInfo>((c, cb) => n.stopNode(toStopRequest({ ...o, nodeId }), md(), c, cb), long),
      stopMany: async (nodes) =>
        (
          await this.unary<{ items: NodeBatchItem[] }>(
            (c, cb) => n.stopNodes({ nodes: nodes.map(toStopRequest) }, md(), c, cb),
            long,
          )
        ).items,
      status: (nodeId) => this.unary<NodeInfo>((c, cb) => n.getNodeStatus({ nodeId }, md(), c, cb)),
      list: async (o = {}) =>
        (
          await this.unary<{ nodes: NodeInfo[] }>((c, cb) =>
            n.listNodes({ agentId: o.agentId ?? "", includeStopped: o.includeStopped ?? false }, md(), c, cb),
          )
        ).nodes,
      migrate: (i) =>
        this.unary<NodeInfo>(
          (c, cb) =>
            n.migrateNode(
              {
                nodeId: i.nodeId,
                toAgentId: i.toAgentId,
                copyData: i.copyData ?? false,
                port: i.port ?? 0,
                storagePath: i.storagePath ?? "",
              },
              md(),
              c,
              cb,
            ),
          long,
        ),
      logs: (i) =>
        this.unary<NodeLogsResponse>((c, cb) =>
          n.nodeLogs(
            { nodeId: i.nodeId, stderr: i.stderr ?? false, offset: i.offset ?? 0, maxBytes: i.maxBytes ?? 0 },
            md(),
            c,
            cb,
          ),
        ),
    };
  }
}

function toSpawnRequest(i: SpawnNodeInput): SpawnNodeRequest {
  return {
    agentId: i.agentId ?? "",
    storagePath: i.storagePath ?? "",
    port: i.port ?? 0,
    memoryLimitMb: i.memoryLimitMb ?? 0,
    args: i.args ?? [],
    env: i.env ?? {},
    binary: i.binary ?? "",
    labels: i.labels ?? {},
    pool: i.pool ?? "",
    reschedule: i.reschedule ?? false,
    nodeId: i.nodeId ?? "",
  };
}

function toStopRequest(i: StopNodeInput): StopNodeRequest {
  return { nodeId: i.nodeId, agentId: i.agentId ?? "", graceMs: i.graceMs ?? 0 };
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
