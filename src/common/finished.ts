// The Finished of a task that failed, built alike by the agent's executors and by the hub's seed-000 bridge,
// which plays the agent for seed-protocol workers.
import type { Code } from "./errors.js";
import { Finished, TaskState } from "../gen/switchboard/v1/task.js";

/** A task that could not run, or failed before it produced an exit status. */
export function failedFinished(code: Code, message: string, durationMs = 0): Finished {
  return Finished.fromPartial({
    state: TaskState.TASK_STATE_FAILED,
    exitCode: -1,
    error: { code, message },
    durationMs,
    reason: message,
  });
}
