// What a download and an upload share: a stop that aborts whatever the run waits for, the task's deadline,
// output written within the window (waiting while it is closed), and the Finished of a failure.
import type { Hash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { Finished, OutputStream, TaskState } from "../../../gen/switchboard/v1/task.js";
import {
  failedFinished,
  stoppedFinished,
  timeLimitMs,
  type ExecutionContext,
  type StopRequest,
} from "../executor.js";
import { outputRoom } from "../pipes.js";
import { fsTaskError } from "./file-roots.js";
import type { FileResult } from "../../../common/file-transfer.js";

const MAX_TIMER_MS = 2_147_483_647;

/** Thrown inside a run once it was asked to stop; turned into the stop's Finished. */
export class StoppedError extends SwitchboardError {
  constructor(readonly request: StopRequest) {
    super(Code.CANCELLED, request.reason);
  }
}

export abstract class FileRun {
  protected readonly abort = new AbortController();
  protected stopRequest: StopRequest | undefined;
  protected readonly startedAt = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private ended = false;

  protected constructor(
    protected readonly ctx: ExecutionContext,
    protected readonly agentId: string,
  ) {
    const limit = timeLimitMs(0, ctx.deadlineMs, this.startedAt);
    if (limit !== undefined) {
      const ms = Math.max(0, limit);
      this.timer = setTimeout(
        () => this.stop({ cause: "timed_out", reason: `deadline reached after ${ms} ms` }),
        Math.min(ms, MAX_TIMER_MS),
      );
    }
  }

  stop(request: StopRequest): void {
    if (this.stopRequest || this.ended) return;
    this.stopRequest = request;
    this.abort.abort(new StoppedError(request));
    this.onStop();
  }

  /** Wakes whatever the run waits for besides output (input, the disk). */
  protected onStop(): void {}

  /** Throws StoppedError once a stop was asked for. */
  protected checkStopped(): void {
    if (this.stopRequest) throw new StoppedError(this.stopRequest);
  }

  /**
   * Feeds the first `end` bytes of `fh` into `hash` (the part before a resume's offset), through one reused
   * buffer; with `also`, each piece is handed to it too (awaited), in a buffer of its own since it may be
   * kept. A file shorter than `end` is ABORTED with `shrank`.
   */
  protected async hashPrefix(
    fh: FileHandle,
    end: number,
    hash: Hash,
    shrank: string,
    also?: (piece: Buffer) => Promise<void>,
  ): Promise<void> {
    let buf = Buffer.allocUnsafe(Math.min(1024 * 1024, end));
    let pos = 0;
    while (pos < end) {
      this.checkStopped();
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
      if (bytesRead === 0) throw new SwitchboardError(Code.ABORTED, shrank);
      const piece = buf.subarray(0, bytesRead);
      hash.update(piece);
      if (also) {
        await also(piece);
        buf = Buffer.allocUnsafe(buf.length);
      }
      pos += bytesRead;
    }
  }

  /** Runs the body and turns what it throws into the task's Finished; clears the deadline. */
  protected async finish(body: () => Promise<FileResult>): Promise<Finished> {
    try {
      const result = await body();
      return Finished.fromPartial({
        state: TaskState.TASK_STATE_SUCCEEDED,
        exitCode: 0,
        durationMs: Date.now() - this.startedAt,
        result: Buffer.from(JSON.stringify(result)),
      });
    } catch (e) {
      const durationMs = Date.now() - this.startedAt;
      if (this.stopRequest) return stoppedFinished(this.stopRequest, durationMs);
      if (e instanceof StoppedError) return stoppedFinished(e.request, durationMs);
      const err = this.describe(e);
      if (err.code === Code.INTERNAL)
        this.ctx.logger.error({ err: e, taskId: this.ctx.taskId }, "file task failed");
      return failedFinished(err.code, err.message, durationMs);
    } finally {
      this.ended = true;
      clearTimeout(this.timer);
    }
  }

  /** The error of a failure that is not a SwitchboardError already (a file system error, mostly). */
  protected abstract describe(e: unknown): SwitchboardError;

  protected fsError(e: unknown, path: string): SwitchboardError {
    return fsTaskError(e, path, this.agentId);
  }

  /** Writes to stdout; waits (abortably) while the output window is closed. */
  protected async writeOut(data: Buffer): Promise<void> {
    if (this.ctx.output.write(OutputStream.OUTPUT_STREAM_STDOUT, data)) return;
    await outputRoom(this.ctx.output, this.abort.signal);
    this.checkStopped();
  }
}
