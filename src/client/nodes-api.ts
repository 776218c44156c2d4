// The supervised-node API of the SDK, as `client.nodes`: spawn, stop, migrate, list and read the logs
// of long-running processes on agents, over the hub's NodeService.
import type { Metadata } from "@grpc/grpc-js";
import type {
  NodeBatchItem,
  NodeInfo,
  NodeLogsResponse,
  NodeServiceClient,
  SpawnNodeRequest,
  StopNodeRequest,
} from "../gen/switchboard/v1/client.js";
import type { UnaryCall } from "./unary.js";

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

/** `client.nodes`: the NodeService calls; those that wait for a process get at least a minute. */
export function nodesApi(
  n: NodeServiceClient,
  md: () => Metadata,
  unary: UnaryCall,
  callTimeoutMs: number,
): NodesApi {
  // The hub answers spawn once the node runs (up to 30 s, plus retries on another agent).
  const long = Math.max(NODE_LIFECYCLE_TIMEOUT_MS, callTimeoutMs);
  return {
    spawn: (i = {}) => unary<NodeInfo>((c, cb) => n.spawnNode(toSpawnRequest(i), md(), c, cb), long),
    spawnMany: async (inputs, o = {}) =>
      (
        await unary<{ items: NodeBatchItem[] }>(
          (c, cb) =>
            n.spawnNodes({ nodes: inputs.map(toSpawnRequest), atomic: o.atomic ?? false }, md(), c, cb),
          long,
        )
      ).items,
    stop: (nodeId, o = {}) =>
      unary<NodeInfo>((c, cb) => n.stopNode(toStopRequest({ ...o, nodeId }), md(), c, cb), long),
    stopMany: async (nodes) =>
      (
        await unary<{ items: NodeBatchItem[] }>(
          (c, cb) => n.stopNodes({ nodes: nodes.map(toStopRequest) }, md(), c, cb),
          long,
        )
      ).items,
    status: (nodeId) => unary<NodeInfo>((c, cb) => n.getNodeStatus({ nodeId }, md(), c, cb)),
    list: async (o = {}) =>
      (
        await unary<{ nodes: NodeInfo[] }>((c, cb) =>
          n.listNodes({ agentId: o.agentId ?? "", includeStopped: o.includeStopped ?? false }, md(), c, cb),
        )
      ).nodes,
    migrate: (i) =>
      unary<NodeInfo>(
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
      unary<NodeLogsResponse>((c, cb) =>
        n.nodeLogs(
          { nodeId: i.nodeId, stderr: i.stderr ?? false, offset: i.offset ?? 0, maxBytes: i.maxBytes ?? 0 },
          md(),
          c,
          cb,
        ),
      ),
  };
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
