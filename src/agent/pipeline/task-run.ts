// One assigned task, from its Assign to its single Finished: its state machine, its event numbering
// (seq from 1), its output gate and the execution it drives. Whatever path the task takes, exactly one
// Finished leaves a TaskRun, after all of its output.
import type { Logger } from "../../common/logger.js";
import { Code } from "../../common/errors.js";
import type { AgentTaskEvent, Assign } from "../../gen/switchboard/v1/agent.js";
import { Finished, TaskState, type OutputStream, type TaskSpec } from "../../gen/switchboard/v1/task.js";
import {
  codeForStop,
  failedFinished,
  stateForStop,
  stoppedFinished,
  type Execution,
  type Executor,
  type InputChunk,
  type StopRequest,
} from "../executors/executor.js";
import { OutputGate, type OutputRoom } from "../output-gate.js";

/** queued: in the inbox. running: its executor works. stopping: asked to stop, not ended yet. */
export type TaskRunState = "queued" | "running" | "stopping" | "finished";

const RUN_TRANSITIONS: Record<TaskRunState, readonly TaskRunState[]> = {
  queued: ["running", "finished"],
  running: ["stopping", "finished"],
  stopping: ["finished"],
  finished: [],
};

export function canMoveRun(from: TaskRunState, to: TaskRunState): boolean {
  return RUN_TRANSITIONS[from].includes(to);
}

export type TaskEventBody = NonNullable<AgentTaskEvent["event"]>;

/** What a run reports to: the pipeline, which routes events to the session and frees the slot. */
export interface TaskRunOwner {
  emit(run: TaskRun, event: AgentTaskEvent): void;
  ended(run: TaskRun, finished: Finished): void;
  /** The run may take this many more input bytes: tell the hub (InputWindow). */
  grantInput(run: TaskRun, bytes: number): void;
}

export interface TaskRunOptions {
  assign: Assign;
  /** The session the task arrived on; its events go nowhere else. */
  epoch: number;
  executor: Executor;
  /** Output bytes allowed before the first OutputWindow; Infinity when the hub sets none. */
  outputWindowBytes: number;
  maxChunkBytes?: number;
  room: OutputRoom;
  owner: TaskRunOwner;
  logger: Logger;
}

export class TaskRun {
  readonly taskId: string;
  /** The session its events belong to; a resumed session takes it over. */
  epoch: number;
  readonly spec: TaskSpec;
  readonly deadlineMs: number;
  readonly acceptedAt = Date.now();
  private runState: TaskRunState = "queued";
  private seq = 0;
  private readonly gate: OutputGate;
  private execution: Execution | undefined;
  private stopRequest: StopRequest | undefined;
  private readonly executor: Executor;
  private readonly owner: TaskRunOwner;
  private readonly logger: Logger;
  private readonly maxChunkBytes: number | undefined;
  /** True once an executor took it (it then held an executor slot). */
  wasStarted = false;

  constructor(opts: TaskRunOptions) {
    this.taskId = opts.assign.taskId;
    this.epoch = opts.epoch;
    this.spec = opts.assign.spec!;
    this.deadlineMs = opts.assign.deadlineMs;
    this.executor = opts.executor;
    this.owner = opts.owner;
    this.logger = opts.logger;
    this.maxChunkBytes = opts.maxChunkBytes;
    this.gate = new OutputGate(opts.outputWindowBytes, opts.room, (stream, data) =>
      this.sendOutput(stream, data),
    );
  }

  get state(): TaskRunState {
    return this.runState;
  }

  get kind(): string {
    return this.executor.kind;
  }

  /** An executor is free: run it. */
  start(): void {
    if (!this.move("running")) return;
    this.wasStarted = true;
    let execution: Execution;
    try {
      execution = this.executor.start(this.spec, {
        taskId: this.taskId,
        deadlineMs: this.deadlineMs,
        output: this.gate,
        ...(this.maxChunkBytes !== undefined ? { maxChunkBytes: this.maxChunkBytes } : {}),
        started: (pid) => this.emit({ $case: "started", value: { startedAtMs: Date.now(), pid } }),
        grantInput: (bytes) => {
          if (this.runState === "running" && bytes > 0) this.owner.grantInput(this, bytes);
        },
        logger: this.logger,
      });
    } catch (e) {
      this.logger.error({ err: e, taskId: this.taskId }, "executor failed to start the task");
      this.finish(
        failedFinished(Code.INTERNAL, `the agent's ${this.kind} executor failed: ${(e as Error).message}`),
      );
      return;
    }
    this.execution = execution;
    execution.done
      .then(
        (f) => this.onExecutionDone(f),
        (e: unknown) => {
          this.logger.error({ err: e, taskId: this.taskId }, "executor failed while running the task");
          this.gate.stopHolding();
          this.finish(
            failedFinished(Code.INTERNAL, `the agent's ${this.kind} executor failed: ${String(e)}`),
          );
        },
      )
      // A bug past this point must be a log line, not an unhandled rejection that ends the agent.
      .catch((e: unknown) =>
        this.logger.error({ err: e, taskId: this.taskId }, "reporting the task's end failed"),
      );
  }

  /** Cancel, timeout, link lost or shutdown. The first request wins. */
  stop(request: StopRequest): void {
    if (this.runState === "queued") {
      this.stopRequest = request;
      this.finish(stoppedFinished(request, Date.now() - this.acceptedAt));
      return;
    }
    if (this.runState !== "running") return;
    this.stopRequest = request;
    this.move("stopping");
    // Output the hub has no window for will not be sent now: drop it rather than keep the pipes blocked.
    this.gate.stopHolding();
    this.execution?.stop(request);
  }

  /** Input bytes taken from the hub (after skipping what was sent again): what InputWindow acknowledges. */
  inputReceived = 0;
  /** Input window granted while the link was down, sent when the session resumes. */
  ungrantedInput = 0;
  /** All the input window granted so far (InputWindow.granted_total). */
  inputGranted = 0;
  private inputEnded = false;

  /**
   * Input from the client (TaskInput), handed to the execution if it takes input. `offset`: where its data
   * starts in the task's input, when the hub numbers it; what was taken already (input the hub sent again
   * after a broken link) is skipped, as is anything after the end of input.
   */
  input(chunk: InputChunk, offset?: number): void {
    if (this.inputEnded) return;
    if (offset !== undefined) {
      if (offset > this.inputReceived) {
        this.logger.warn(
          { taskId: this.taskId, offset, received: this.inputReceived },
          "input beyond what was taken: some input is missing",
        );
      }
      const skip = Math.max(0, this.inputReceived - offset);
      if (skip > 0) {
        if (skip >= chunk.data.length && chunk.data.length > 0 && !chunk.eof) return;
        if (chunk.data.length === 0 && chunk.resize) return; // a resize sent again, taken before
        chunk = { ...chunk, data: chunk.data.subarray(Math.min(skip, chunk.data.length)) };
      }
    }
    this.inputReceived += chunk.data.length;
    if (chunk.eof) this.inputEnded = true;
    if (this.runState !== "running" || !this.execution?.input) {
      this.logger.debug(
        { taskId: this.taskId, state: this.runState },
        "input for a task that takes none ignored",
      );
      return;
    }
    this.execution.input(chunk);
  }

  /** More output window from the hub (OutputWindow). */
  grantWindow(bytes: number, grantedTotal = 0): void {
    this.gate.grant(bytes, grantedTotal);
  }

  /** Output bytes this run sent, and dropped because it was stopping. */
  outputStats(): { sentBytes: number; droppedBytes: number; pendingBytes: number } {
    return {
      sentBytes: this.gate.sentBytes,
      droppedBytes: this.gate.droppedBytes,
      pendingBytes: this.gate.pendingBytes,
    };
  }

  private async onExecutionDone(f: Finished): Promise<void> {
    // Every Output before the Finished: wait for what the window still holds back. A stop in the
    // meantime drops it (stopHolding), so this wait ends with the task however it ends.
    await this.gate.whenFlushed();
    const stop = this.stopRequest;
    if (stop && (f.state === TaskState.TASK_STATE_SUCCEEDED || f.state === TaskState.TASK_STATE_FAILED)) {
      // The process ended on its own, but the task was stopped before its Finished could go out.
      f = {
        ...f,
        state: stateForStop(stop.cause),
        error: { code: codeForStop(stop.cause), message: stop.reason },
        reason: stop.reason,
      };
    }
    this.finish(f);
  }

  private finish(f: Finished): void {
    if (!this.move("finished")) {
      this.logger.error(
        { taskId: this.taskId, state: this.runState },
        "a second Finished for a task was suppressed",
      );
      return;
    }
    this.emit({ $case: "finished", value: Finished.fromPartial(f) });
    this.owner.ended(this, f);
  }

  private sendOutput(stream: OutputStream, data: Buffer): void {
    this.emit({ $case: "output", value: { stream, data } });
  }

  private emit(event: TaskEventBody): void {
    // Nothing follows the Finished, whatever an executor still does after a failure.
    if (this.runState === "finished" && event.$case !== "finished") return;
    this.seq += 1;
    this.owner.emit(this, { taskId: this.taskId, seq: this.seq, event });
  }

  private move(next: TaskRunState): boolean {
    if (!canMoveRun(this.runState, next)) return false;
    this.runState = next;
    return true;
  }
}
