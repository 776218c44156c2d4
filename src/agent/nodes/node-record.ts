// What a spawn asks for and the record the supervisor keeps of each node: the table persisted across agent
// restarts, listed to the hub in heartbeats and answered to node commands.
import type { NodeState } from "./node-state.js";

export interface SpawnNodeRequest {
  nodeId: string;
  /** Under the supervisor's data path; created when absent. */
  storagePath: string;
  /** 0: the first free port from portRangeStart. */
  port: number;
  /** 0: the default. */
  memoryMb: number;
  args?: string[];
  env?: Record<string, string>;
  /** Default: the configured binary. Must be allowlisted. */
  binary?: string;
  /** A dir inside the data path whose contents are copied into the storage path first (migration). */
  copyFrom?: string;
}

/** How the node's process last ended, and why (the reason is what a user reads). */
export interface NodeExit {
  code: number | null;
  signal: string | null;
  reason: string;
  at: number;
}

export interface NodeRecord {
  nodeId: string;
  state: NodeState;
  binary: string;
  args: string[];
  env: Record<string, string>;
  storagePath: string;
  port: number;
  memoryMb: number;
  pid: number | null;
  /** The process's start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart. */
  procStart: number | null;
  startedAt: number | null;
  restartCount: number;
  lastExit: NodeExit | null;
}

/** The record of a node not started yet (stopped), as a spawn request makes it. */
export function newNodeRecord(
  req: SpawnNodeRequest,
  binary: string,
  storagePath: string,
  port: number,
  defaultMemoryMb: number,
): NodeRecord {
  return {
    nodeId: req.nodeId,
    state: "stopped",
    binary,
    args: req.args ?? [],
    env: req.env ?? {},
    storagePath,
    port,
    memoryMb: req.memoryMb > 0 ? req.memoryMb : defaultMemoryMb,
    pid: null,
    procStart: null,
    startedAt: null,
    restartCount: 0,
    lastExit: null,
  };
}
