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

export interface SwitchboardClientOptions {
  /** host:port of the hub. */
  hub: string;
  token?: string;
  /** Default: insecure (plaintext) channel. */
  credentials?: ChannelCredentials;
  maxMessageBytes?: number;
  /** Deadline for short calls (getTask, listTasks, admin); default 30 s. */
  callTimeoutMs?: number;
  channelOptions?: ChannelOptions;
}

export interface ListTasksFilter {
  limit?: number;
  agentId?: string;
  pool?: string;
  states?: TaskState[];
  beforeTaskId?: string;
}

export interface WatchOptions {
  /** Replay events after this sequence number; 0 (default) replays from the start. */
  afterSeq?: number;
  signal?: AbortSignal;
  /** How long to keep re-attaching after the stream breaks (hub restart, network); default 30 s. */
  reattachForMs?: number;
}

export interface RunOptions {
  /** Called with the task id as soon as the hub has accepted the task. */
  onTaskId?: (taskId: string) => void;
}

/** What query() yields: the header once, rows in batches as they arrive, then the summary. */
export type QueryEvent =
  | { kind: "header"; header: SqlResultHeader; taskId: string }
  /** bytes: of these rows as they travelled (NDJSON lines). */
  | { kind: "rows"; rows: JsonValue[][]; bytes: number }
  /** For a sql task with format "csv": CSV lines as the agent encoded them (no header line). */
  | { kind: "csv"; data: Buffer }
  | { kind: "done"; summary: SqlResultSummary };

export interface CreateTokenInput {
  name: string;
  role: "admin" | "operator" | "viewer" | "agent";
  pools?: string[];
  agentId?: string;
  /** Agent tokens: a second process may take over a live session of the same agent id. */
  allowTakeover?: boolean;
}

export interface AdminApi {
  listAgents(opts?: { pool?: string; includeOffline?: boolean }): Promise<AgentInfo[]>;
  getAgent(agentId: string): Promise<AgentInfo>;
  clusterStatus(): Promise<ClusterStatusResponse>;
  createToken(input: CreateTokenInput): Promise<CreateTokenResponse>;
  listTokens(opts?: { includeRevoked?: boolean }): Promise<TokenInfo[]>;
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
  storagePath?: string;
  /** 0 (default): the agent chooses a free port. */
  port?: number;
  /** MiB; past it the agent kills and restarts the node. 0 (default): the agent's default_memory_mb. */
  memoryLimitMb?: number;
  /** Default: `switchboard storage-node`. */
  binary?: string;
  args?: string[];
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

export interface StopNodeOptions {
  /** When given, the node must be on this agent. */
  agentId?: string;
  /** SIGTERM, then SIGKILL after this long; 0: the agent's default. */
  graceMs?: number;
}

export interface StopNodeInput extends StopNodeOptions {
  nodeId: string;
}

export interface ListNodesOptions {
  /** Only the nodes of this agent; default: the whole cluster. */
  agentId?: string;
  includeStopped?: boolean;
}

export interface MigrateNodeInput {
  nodeId: string;
  toAgentId: string;
  /** Copy the data directory first (both agents on one machine, or a shared disk). */
  copyData?: boolean;
  /** 0 (default): the same port. */
  port?: number;
  /** Empty (default): the same path. */
  storagePath?: string;
}

export interface NodeLogsInput {
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
  stop(nodeId: string, opts?: StopNodeOptions): Promise<NodeInfo>;
  /** Each item independently, in request order: check each item's `code` (0 = OK). */
  stopMany(nodes: StopNodeInput[]): Promise<NodeBatchItem[]>;
  /** Live from the agent; when it cannot be reached, the hub's cached record with `stale` set. */
  status(nodeId: string): Promise<NodeInfo>;
  list(opts?: ListNodesOptions): Promise<NodeInfo[]>;
  /** Starts the node on the target agent, waits until it answers, then stops the old one. */
  migrate(input: MigrateNodeInput): Promise<NodeInfo>;
  /** A slice of the node's stdout (or stderr) log; `offset` in the answer is where `data` starts. */
  logs(input: NodeLogsInput): Promise<NodeLogsResponse>;
}

/** The least deadline for node calls that wait for a process to start or stop. */
const NODE_LIFECYCLE_TIMEOUT_MS = 60_000;

type Callback<T> = (err: Error | null, value?: T) => void;

/** The input of one running task (client.openInput). */
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

export class SwitchboardClient {
  readonly hub: string;
  readonly admin: AdminApi;
  readonly nodes: NodesApi;
  private readonly rpc: ClientServiceClient;
  private readonly adminRpc: AdminServiceClient;
  private readonly nodeRpc: NodeServiceClient;
  private readonly token: string;
  private readonly callTimeoutMs: number;
  private readonly session: SessionMux;

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

  getTask(taskId: string): Promise<TaskResult> {
    return this.unary<TaskResult>((o, cb) => this.rpc.getTask({ taskId }, this.metadata(), o, cb));
  }

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
