// What an executor is: it admits or refuses a task spec up front, then runs it, reporting Started and
// output through its context and resolving with the task's Finished; it stops when asked (a cancel,
// a timeout, the link lost, the agent shutting down). Also the Finished builders all executors share.
import type { Logger } from "../../common/logger.js";
import { Code } from "../../common/errors.js";
import { Finished, TaskState, type TaskError, type TaskSpec } from "../../gen/switchboard/v1/task.js";
import type { OutputSink } from "../output-gate.js";

export type TaskKind = NonNullable<TaskSpec["kind"]>["$case"];

/** Why a task is being stopped before it ended by itself. */
export type StopCause = "cancelled" | "timed_out" | "lost" | "shutdown";

export interface StopRequest {
  cause: StopCause;
  /** The human sentence for Finished.reason. */
  reason: string;
  /** SIGTERM -> SIGKILL grace; undefined: the task's or the agent's default. */
  graceMs?: number;
}

export interface ExecutionContext {
  readonly taskId: string;
  /** Absolute, ms since epoch; 0 = none. */
  readonly deadlineMs: number;
  readonly output: OutputSink;
  /** The largest Output chunk the session's stream carries (the hub's max message size, less framing). */
  readonly maxChunkBytes?: number;
  /** Reports Started (once, when the work really began). */
  started(pid: number): void;
  /**
   * Input flow control: the hub may send this many more TaskInput data bytes. An execution that takes
   * input grants a first window when it is ready for it, and more as it consumes what arrived.
   */
  grantInput(bytes: number): void;
  readonly logger: Logger;
}

/** One TaskInput for a running task, in the order the client sent it. */
export interface InputChunk {
  data: Buffer;
  eof: boolean;
  resize?: { cols: number; rows: number };
  /** With eof: the SHA-256 of an upload whose spec left it out. */
  sha256?: string;
}

export interface Execution {
  /** Asks the work to stop; the first request wins, later ones are ignored. */
  stop(request: StopRequest): void;
  /** The task's Finished; never rejects for task failures (they are a Finished too). */
  readonly done: Promise<Finished>;
  /** Input from the client, for executions that take it (within the windows they granted). */
  input?(chunk: InputChunk): void;
}

export interface Executor {
  readonly kind: TaskKind;
  /** A refusal (Finished FAILED with this error, no Started), or undefined to run the spec. */
  admit(spec: TaskSpec): TaskError | undefined;
  start(spec: TaskSpec, ctx: ExecutionContext): Execution;
}

/** The terminal state a stop leads to: a timeout is TIMED_OUT, everything else CANCELLED. */
export function stateForStop(cause: StopCause): TaskState {
  return cause === "timed_out" ? TaskState.TASK_STATE_TIMED_OUT : TaskState.TASK_STATE_CANCELLED;
}

export function codeForStop(cause: StopCause): Code {
  return cause === "timed_out" ? Code.DEADLINE_EXCEEDED : Code.CANCELLED;
}

/**
 * The tighter of a task's own timeout (0: none) and its deadline (epoch ms, 0: none), as a duration from
 * startedAt; undefined when it has neither. Negative when the deadline has already passed.
 */
export function timeLimitMs(timeoutMs: number, deadlineMs: number, startedAt: number): number | undefined {
  let limitMs: number | undefined = timeoutMs > 0 ? timeoutMs : undefined;
  if (deadlineMs > 0) {
    const untilDeadline = deadlineMs - startedAt;
    if (limitMs === undefined || untilDeadline < limitMs) limitMs = untilDeadline;
  }
  return limitMs;
}

export { failedFinished } from "../../common/finished.js";

/** A task stopped before it could start (or with no process to report on). */
export function stoppedFinished(stop: StopRequest, durationMs = 0): Finished {
  return Finished.fromPartial({
    state: stateForStop(stop.cause),
    exitCode: -1,
    error: { code: codeForStop(stop.cause), message: stop.reason },
    durationMs,
    reason: stop.reason,
  });
}

/** A task a limit ended: FAILED, RESOURCE_EXHAUSTED, the reason naming the limit. */
export function limitFinished(
  reason: string,
  exitCode: number,
  signal: string,
  durationMs: number,
): Finished {
  return Finished.fromPartial({
    state: TaskState.TASK_STATE_FAILED,
    exitCode,
    signal,
    error: { code: Code.RESOURCE_EXHAUSTED, message: reason },
    durationMs,
    reason,
  });
}

/** How a process task ended: a limit, a stop, exit 0, or a failure (a non-zero code, a signal). */
export function processFinished(o: {
  limitReason: string | undefined;
  stop: StopRequest | undefined;
  exit: { code: number | null; signal: string | null } | undefined;
  durationMs: number;
}): Finished {
  const exitCode = o.exit?.code ?? -1;
  const signal = o.exit?.signal ?? "";
  const { durationMs, stop } = o;
  if (o.limitReason !== undefined) return limitFinished(o.limitReason, exitCode, signal, durationMs);
  if (stop) {
    return Finished.fromPartial({
      state: stateForStop(stop.cause),
      exitCode,
      signal,
      error: { code: codeForStop(stop.cause), message: stop.reason },
      durationMs,
      reason: stop.reason,
    });
  }
  if (o.exit?.code === 0)
    return Finished.fromPartial({ state: TaskState.TASK_STATE_SUCCEEDED, exitCode: 0, durationMs });
  const reason =
    o.exit === undefined
      ? "the process could not be waited for"
      : o.exit.code !== null
        ? `exited with code ${o.exit.code}`
        : `killed by signal ${signal}`;
  return Finished.fromPartial({ state: TaskState.TASK_STATE_FAILED, exitCode, signal, durationMs, reason });
}

/** The refusal of a task kind the agent's config leaves off; `turnOn` says what in the config turns it on. */
export function disabledRefusal(kind: TaskKind, agentId: string, turnOn: string): TaskError {
  return {
    code: Code.PERMISSION_DENIED,
    message: `${kind} tasks are disabled on agent ${agentId}: ${turnOn} in its config`,
  };
}

/** What is wrong with a task's environment variable names (empty, or holding "="), if anything. */
export function envNameProblem(env: Record<string, string>): string | undefined {
  const bad = Object.keys(env).find((name) => name === "" || name.includes("="));
  return bad === undefined ? undefined : `invalid environment variable name ${JSON.stringify(bad)}`;
}
