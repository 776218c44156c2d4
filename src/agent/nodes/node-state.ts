// A supervised node's life as an explicit state machine: its named states and the one table of the moves
// between them; the supervisor moves a node only through nextNodeState, so an impossible move is a bug
// that throws instead of a state that drifts.
//   starting -> running -> stopping -> stopped
//   starting | running -> crashed -> backoff -> starting        (restart_failed_nodes)

export type NodeState = "starting" | "running" | "stopping" | "stopped" | "crashed" | "backoff";

export const NODE_TRANSITIONS: Readonly<Record<NodeState, readonly NodeState[]>> = {
  starting: ["running", "stopping", "crashed"],
  running: ["stopping", "crashed"],
  stopping: ["stopped"],
  stopped: ["starting"],
  crashed: ["backoff", "stopped"],
  backoff: ["starting", "stopped"],
};

/** `to`, when the table allows the move from `from`; throws otherwise. */
export function nextNodeState(nodeId: string, from: NodeState, to: NodeState): NodeState {
  if (!NODE_TRANSITIONS[from].includes(to))
    throw new Error(`node ${nodeId}: ${from} -> ${to} is not a transition`);
  return to;
}
