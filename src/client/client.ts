// The typed client for Switchboard's hub: tasks over one shared Session stream by default, the
// unary and streaming RPCs where they fit better, and the admin API. Every call takes the same
// bearer token; every failure is a SwitchboardClientError with a gRPC status code.
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
  type ClientServiceClient,
  type AgentInfo,
  type AuditEntry,
  type ClusterStatusResponse,
  type CreateTokenResponse,
  type ListTasksRequest,
  type TokenInfo,
} from "../gen/switchboard/v1/client.js";
import {
  OutputStream,
  TaskState,
  type TaskEvent,
  type TaskInfo,
  type TaskResult,
} from "../gen/switchboard/v1/task.js";
import { toSubmitRequest, type TaskRequest } from "./builders.js";
import { SwitchboardClientError, toClientError } from "./errors.js";
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
}

type Callback<T> = (err: Error | null, value?: T) => void;

export class SwitchboardClient {
  readonly hub: string;
  readonly admin: AdminApi;
  private readonly rpc: ClientServiceClient;
  private readonly adminRpc: AdminServiceClient;
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
    this.session = new SessionMux(this.rpc, () => this.metadata(), this.hub);
    this.admin = this.makeAdmin();
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
   * SwitchboardClientError with the database's message after the rows that came before the failure.
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
          throw new SwitchboardClientError(f.error?.code ?? status.UNKNOWN, why);
        }
        if (decoder.incomplete) {
          throw new SwitchboardClientError(status.DATA_LOSS, "the result ended inside a row");
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
        const err = toClientError(e, this.hub);
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
      this.rpc.close();
    });
  }

  private metadata(): Metadata {
    return bearerMetadata(this.token);
  }

  private unary<T>(invoke: (opts: CallOptions, cb: Callback<T>) => unknown): Promise<T> {
    return this.withAbort(undefined, invoke, Date.now() + this.callTimeoutMs);
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
        if (err) reject(toClientError(err, this.hub));
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
      revokeToken: async (idOrName) => {
        const r = await this.unary<{ info?: TokenInfo }>((c, cb) => a.revokeToken({ idOrName }, md(), c, cb));
        if (!r.info) throw new SwitchboardClientError(status.INTERNAL, "the hub answered without the token");
        return r.info;
      },
    };
  }
}

/** A grpc-js server stream as an async iterable whose errors are SwitchboardClientErrors. */
async function* readStream<T>(
  call: ClientReadableStream<T>,
  hub: string,
): AsyncGenerator<T, void, undefined> {
  try {
    for await (const msg of call as AsyncIterable<T>) yield msg;
  } catch (e) {
    const err = toClientError(e, hub);
    if (err.code === status.CANCELLED) return;
    throw err;
  }
}

function cancelledByCaller(): SwitchboardClientError {
  return new SwitchboardClientError(status.CANCELLED, "cancelled by the caller");
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
