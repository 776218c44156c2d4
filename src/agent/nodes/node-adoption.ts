// Nodes outlive the agent: after an agent restart, a node of the saved table whose process still runs
// (same pid and same start time, so a reused pid is no alibi) is adopted, the others are restarted. An
// adopted process is not the agent's child, so no 'exit' event tells of its end: it is polled for.
import type { NodeRecord } from "./node-record.js";
import { procStartOf } from "./proc-stat.js";

/** How often adopted nodes are looked at: their exit is noticed within this (plus a restart's backoff). */
export const ADOPTED_POLL_MS = 100;

/** Whether the process the record names still runs: its pid with the start time recorded. */
export function stillRuns(r: NodeRecord): boolean {
  return r.pid !== null && r.procStart !== null && procStartOf(r.pid) === r.procStart;
}

/**
 * Takes over a node (not stopped) of an earlier run's table: "adopted" (running) when its process still
 * runs, else "crashed", with the reason in its lastExit, for a restart at once.
 */
export function takeOver(r: NodeRecord): "adopted" | "crashed" {
  if (stillRuns(r)) {
    r.state = "running";
    return "adopted";
  }
  r.pid = null;
  r.lastExit = { code: null, signal: null, reason: "not running after the agent restarted", at: Date.now() };
  r.state = "crashed";
  return "crashed";
}

/**
 * Why an adopted node, running or stopping, has ended, or undefined while its process lives on: a dead
 * pid, a zombie or a reused pid all show another start time in /proc/PID/stat. `known` is a reason the
 * supervisor already has (it killed the node itself).
 */
export function adoptedEnd(r: NodeRecord, known: string | undefined): string | undefined {
  if (r.pid === null || (r.state !== "running" && r.state !== "stopping")) return undefined;
  if (procStartOf(r.pid) === r.procStart) return undefined;
  // Its exit code or signal went to whoever reaped it, not to the agent.
  return (
    known ??
    (r.state === "stopping"
      ? "ended after it was asked to stop (adopted after an agent restart: exit status unknown)"
      : "ended while adopted after an agent restart (exit status unknown: not the agent's child)")
  );
}
