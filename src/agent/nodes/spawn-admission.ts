// Whether a spawn may go ahead, decided before anything is awaited, and the slot it holds from then until
// its node is launched (or it fails, or a stop cancels it): concurrent spawns cannot fill the agent past
// max_storage_nodes, and a stop that comes meanwhile finds the spawn and cancels it.
import { stat } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { Code, SwitchboardError } from "../../common/errors.js";
import type { SpawnNodeRequest } from "./node-record.js";
import type { NodeState } from "./node-state.js";

const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

export interface SpawnPolicy {
  /** The binary a spawn runs when it names none. */
  binary: string;
  allowedBinaries: readonly string[];
  maxNodes: number;
}

/** What the supervisor holds now, as far as an admission asks. */
export interface SpawnAdmissionView {
  /** The state of the node of that id in the table, if any. */
  existing: NodeState | undefined;
  /** A spawn of that id is in progress. */
  pending: boolean;
  /** Slots held: nodes not stopped, and spawns not launched yet. */
  slotsUsed: number;
}

/** The checks of a spawn that need no waiting; returns the binary the node runs. */
export function admitSpawn(req: SpawnNodeRequest, policy: SpawnPolicy, now: SpawnAdmissionView): string {
  if (!NODE_ID.test(req.nodeId)) {
    throw new SwitchboardError(
      Code.INVALID_ARGUMENT,
      `node id ${JSON.stringify(req.nodeId.slice(0, 40))}: use 1-128 letters, digits and . _ : @ -`,
    );
  }
  const binary = req.binary || policy.binary;
  if (!policy.allowedBinaries.includes(binary)) {
    throw new SwitchboardError(
      Code.PERMISSION_DENIED,
      `binary ${binary} is not allowed on this agent (allowed: ${policy.allowedBinaries.join(", ")})`,
    );
  }
  if (now.existing !== undefined && now.existing !== "stopped") {
    throw new SwitchboardError(Code.ALREADY_EXISTS, `node ${req.nodeId} exists (${now.existing})`);
  }
  if (now.pending) {
    throw new SwitchboardError(Code.ALREADY_EXISTS, `node ${req.nodeId} exists (starting)`);
  }
  if (now.slotsUsed >= policy.maxNodes) {
    throw new SwitchboardError(
      Code.RESOURCE_EXHAUSTED,
      `this agent has no free node slot: ${now.slotsUsed} of max_storage_nodes = ${policy.maxNodes} in use`,
    );
  }
  if (!Number.isInteger(req.port) || req.port < 0 || req.port > 65_535) {
    throw new SwitchboardError(Code.INVALID_ARGUMENT, `port ${req.port}: expected 1 to 65535 (0: any)`);
  }
  if (req.memoryMb < 0) throw new SwitchboardError(Code.INVALID_ARGUMENT, "memory_mb may not be negative");
  return binary;
}

/** Refuses an allowlisted binary other than the default that names an absolute path with no file there. */
export async function checkBinaryExists(binary: string, defaultBinary: string): Promise<void> {
  if (binary !== defaultBinary && isAbsolute(binary)) {
    const ok = await stat(binary).then(
      (st) => st.isFile(),
      () => false,
    );
    if (!ok) throw new SwitchboardError(Code.FAILED_PRECONDITION, `binary ${binary} does not exist`);
  }
}

/** A spawn between its admission and its node's first launch: it holds a slot, and a stop cancels it. */
export interface PendingSpawn {
  req: SpawnNodeRequest;
  binary: string;
  /** A stop came for the node: the spawn gives up at its next step and leaves nothing behind. */
  cancelled: boolean;
  /** Its node is in the table (and counts there); until then the pending spawn holds the slot. */
  launched: boolean;
  /** The port it chose, kept from other spawns choosing at the same time. */
  port: number | undefined;
  /** Resolves once the spawn has ended, either way. */
  settled: Promise<void>;
}

/** Throws the cancellation when a stop came for the spawn meanwhile. */
export function throwIfCancelled(p: PendingSpawn): void {
  if (p.cancelled) throw cancelledSpawn(p.req.nodeId);
}

export function cancelledSpawn(nodeId: string): SwitchboardError {
  return new SwitchboardError(
    Code.CANCELLED,
    `the spawn of node ${nodeId} was cancelled: it was stopped before it ran (nothing is left running)`,
  );
}
