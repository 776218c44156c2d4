// Shell tasks whose stdin stays open (stdin_stream without tty): input is written to the process's
// stdin as it arrives, with the pipe's backpressure deciding when the hub may send more, and the end of
// input closes stdin. Otherwise they run like any shell task: their own process group, stdout and
// stderr apart, SIGTERM then SIGKILL on a stop.
import { spawn, type ChildProcess } from "node:child_process";
import { Code } from "../../../common/errors.js";
import { failedFinished, type InputChunk } from "../executor.js";
import { OutputPipes } from "../pipes.js";
import { InteractiveRun } from "./interactive-run.js";
import { signalTaskGroup } from "./process-group.js";

/** After the main process exited: how long its pipes may stay open with no data before we stop waiting. */
const PIPE_LINGER_MS = 2000;

export class StdinStreamRun extends InteractiveRun {
  protected readonly endSignal = "SIGTERM";
  protected readonly what = "streamed-stdin shell task";
  private child: ChildProcess | undefined;
  private readonly pipes = new OutputPipes(this.ctx.output);
  /** Input written while stdin's buffer was full: re-granted once it drained. */
  private undrained = 0;

  protected spawn(): number | undefined {
    const child = spawn(this.launch.file, this.launch.args, {
      cwd: this.launch.cwd === "" ? undefined : this.launch.cwd,
      env: this.launch.env,
      // Its own session and process group, so that signals to -pid reach everything it starts.
      detached: true,
      stdio: ["pipe", "pipe", "pipe"],
    });
    this.child = child;
    child.on("error", (e: NodeJS.ErrnoException) => {
      if (this.state === "starting") {
        this.failToStart(
          failedFinished(
            e.code === "EACCES" ? Code.FAILED_PRECONDITION : Code.INTERNAL,
            `cannot start "${this.launch.file}" on agent ${this.opts.agentId}: ${e.message}`,
          ),
        );
      } else this.ctx.logger.warn({ err: e, taskId: this.ctx.taskId }, "shell task process error");
    });
    if (child.pid === undefined) return undefined; // 'error' follows with the reason
    const maxChunkBytes = Math.min(this.opts.maxChunkBytes, this.ctx.maxChunkBytes ?? Infinity);
    this.pipes.pipeChild(child, { maxChunkBytes }, (failure) => {
      if (failure) this.ctx.logger.debug({ err: failure, taskId: this.ctx.taskId }, "pipe error");
      this.maybeFinish();
    });
    child.on("exit", (code, signal) => this.onExit(code, signal));
    const stdin = child.stdin;
    stdin.on("error", (e: NodeJS.ErrnoException) => {
      // EPIPE: the process exited or closed stdin without reading everything; that is its business.
      if (e.code !== "EPIPE") this.ctx.logger.debug({ err: e, taskId: this.ctx.taskId }, "stdin error");
    });
    stdin.on("drain", () => {
      const n = this.undrained;
      this.undrained = 0;
      this.window.took(n);
    });
    if (this.spec.stdin.length > 0) stdin.write(this.spec.stdin);
    return child.pid;
  }

  protected deliver(chunk: InputChunk): void {
    const stdin = this.child?.stdin;
    if (!stdin || stdin.writableEnded || stdin.destroyed) return;
    if (chunk.data.length > 0) {
      // Re-grant what the pipe took; what it buffered waits for 'drain', so a process that does not
      // read holds the client back instead of filling the agent's memory.
      if (stdin.write(chunk.data) && this.undrained === 0) this.window.took(chunk.data.length);
      else this.undrained += chunk.data.length;
    }
    if (chunk.eof) stdin.end();
  }

  protected signalOwn(signal: NodeJS.Signals): void {
    signalTaskGroup(this.pid, signal, this.ctx);
  }

  protected release(): void {
    this.child?.stdin?.destroy();
    this.child?.stdout?.destroy();
    this.child?.stderr?.destroy();
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (!this.exited(code, signal)) return;
    this.child?.stdin?.destroy();
    // A process that left the group may hold the pipes after the main one exited: stop waiting when silent.
    this.pipes.watchLinger(this.machine, {
      exitedAt: Date.now(),
      lingerMs: PIPE_LINGER_MS,
      stopping: () => this.stopRequest !== undefined,
      gaveUp: () =>
        this.ctx.logger.warn(
          { taskId: this.ctx.taskId, pid: this.pid },
          "shell task's pipes stayed open after it exited; no longer waiting",
        ),
    });
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.state === "exited" && this.pipes.open === 0) this.finish();
  }
}
