// The task state machine: named states, their wire enum, and the allowed transitions.
import { TaskState } from "../gen/switchboard/v1/task.js";

export type TaskStateName =
  "queued" | "assigned" | "running" | "succeeded" | "failed" | "cancelled" | "timed_out" | "lost";

export const TERMINAL_STATES: ReadonlySet<TaskStateName> = new Set([
  "succeeded",
  "failed",
  "cancelled",
  "timed_out",
  "lost",
]);

export function isTerminal(s: TaskStateName): boolean {
  return TERMINAL_STATES.has(s);
}

const TRANSITIONS: Record<TaskStateName, readonly TaskStateName[]> = {
  queued: ["assigned", "cancelled", "timed_out", "failed", "lost"],
  assigned: ["running", "succeeded", "failed", "cancelled", "timed_out", "lost", "queued"],
  running: ["succeeded", "failed", "cancelled", "timed_out", "lost"],
  succeeded: [],
  failed: [],
  cancelled: [],
  timed_out: [],
  lost: [],
};

export function canTransition(from: TaskStateName, to: TaskStateName): boolean {
  return TRANSITIONS[from].includes(to);
}

const TO_WIRE: Record<TaskStateName, TaskState> = {
  queued: TaskState.TASK_STATE_QUEUED,
  assigned: TaskState.TASK_STATE_ASSIGNED,
  running: TaskState.TASK_STATE_RUNNING,
  succeeded: TaskState.TASK_STATE_SUCCEEDED,
  failed: TaskState.TASK_STATE_FAILED,
  cancelled: TaskState.TASK_STATE_CANCELLED,
  timed_out: TaskState.TASK_STATE_TIMED_OUT,
  lost: TaskState.TASK_STATE_LOST,
};

export function stateToWire(s: TaskStateName): TaskState {
  return TO_WIRE[s];
}

export function stateFromWire(s: TaskState): TaskStateName | undefined {
  for (const [name, wire] of Object.entries(TO_WIRE)) if (wire === s) return name as TaskStateName;
  return undefined;
}

/** Whether a state as the wire carries it is terminal. */
export function isTerminalWire(s: TaskState): boolean {
  const name = stateFromWire(s);
  return name !== undefined && isTerminal(name);
}

export const ALL_STATES = Object.keys(TO_WIRE) as TaskStateName[];
