// Echo tasks: the payload comes back as the result. Used for round-trip checks and benchmarks, so it
// reports Started like every other kind and never touches the disk or a process.
import { Code } from "../../../common/errors.js";
import { Finished, TaskState, type TaskError, type TaskSpec } from "../../../gen/switchboard/v1/task.js";
import {
  stoppedFinished,
  type Execution,
  type ExecutionContext,
  type Executor,
  type StopRequest,
} from "../executor.js";

export class EchoExecutor implements Executor {
  readonly kind = "echo" as const;

  admit(spec: TaskSpec): TaskError | undefined {
    if (spec.kind?.$case !== "echo") return { code: Code.INVALID_ARGUMENT, message: "not an echo task" };
    return undefined;
  }

  start(spec: TaskSpec, ctx: ExecutionContext): Execution {
    const payload = spec.kind?.$case === "echo" ? spec.kind.value.payload : Buffer.alloc(0);
    const startedAt = Date.now();
    let stopped: StopRequest | undefined;
    // One turn of the event loop between Started and Finished, so a cancel sent right behind the
    // Assign is honoured like it would be for any other kind.
    const done = new Promise<Finished>((resolve) => {
      setImmediate(() => {
        if (stopped) return resolve(stoppedFinished(stopped, Date.now() - startedAt));
        if (ctx.deadlineMs > 0 && Date.now() > ctx.deadlineMs) {
          return resolve(
            stoppedFinished({ cause: "timed_out", reason: "deadline passed before the echo ran" }),
          );
        }
        resolve(
          Finished.fromPartial({
            state: TaskState.TASK_STATE_SUCCEEDED,
            exitCode: 0,
            durationMs: Date.now() - startedAt,
            result: payload,
          }),
        );
      });
    });
    ctx.started(0);
    return {
      done,
      stop: (request) => {
        stopped ??= request;
      },
    };
  }
}
