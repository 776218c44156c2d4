// One docker task's run: the ops that answer with one document, a container run (detached, or attached
// with its output streamed under the task's output window until it exits), and logs. A run's container
// moves through named states; every Engine API call has a deadline and ends with the task.
import type { Readable } from "node:stream";
import type Dockerode from "dockerode";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { Finished, OutputStream, TaskState, type DockerSpec } from "../../../gen/switchboard/v1/task.js";
import {
  codeForStop,
  failedFinished,
  stateForStop,
  stoppedFinished,
  timeLimitMs,
  type Execution,
  type ExecutionContext,
  type StopRequest,
} from "../executor.js";
import { OutputPipes, outputChunker } from "../pipes.js";
import { RunState, canMove, type Transitions } from "../run-state.js";
import { engineStatus, engineTaskError } from "./engine-errors.js";
import { LogDemuxer } from "./log-demux.js";

/** The operations a docker task names. */
export const DOCKER_OPS = ["ps", "images", "run", "stop", "rm", "logs", "inspect"] as const;
export type DockerOp = (typeof DOCKER_OPS)[number];

/** How the agent reaches the Docker Engine API, and the limits of its docker tasks. */
export interface DockerExecutorOptions {
  enabled: boolean;
  agentId: string;
  /** The Engine API's unix socket. */
  socket: string;
  /** The largest Output chunk when the session does not say. */
  maxChunkBytes: number;
  idleFlushMs?: number;
  /** How long one Engine API request may go unanswered (not a log stream, not the wait for an exit). */
  requestTimeoutMs?: number;
}

const DEFAULT_STOP_TIMEOUT_SECS = 10;
const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;
/** After the container exited: how long its output stream may stay open with nothing in it before we stop reading. */
const LOG_LINGER_MS = 2000;
/** After a stop was sent: how long the container's exit may take to show before the task ends without it. */
const EXIT_WAIT_MS = 30_000;

/**
 * A run's container, as far as this task is concerned. requesting: no container of ours yet (and the only
 * state of the ops that make none). created: it exists but never ran, so it is ours to remove. running:
 * started. stopping: a stop was sent. exited: its exit status is known; the rest of its logs may follow.
 */
type DockerTaskState = "requesting" | "created" | "running" | "stopping" | "exited" | "done";

const TRANSITIONS: Transitions<DockerTaskState> = {
  requesting: ["created", "done"],
  created: ["running", "done"],
  running: ["stopping", "exited", "done"],
  stopping: ["exited", "done"],
  exited: ["done"],
  done: [],
};

export function canMoveDockerTask(from: DockerTaskState, to: DockerTaskState): boolean {
  return canMove(TRANSITIONS, from, to);
}

/** What an Engine API call is about, for its error message. */
interface About {
  image?: string;
  container?: string;
}

interface ContainerExit {
  StatusCode?: number;
  Error?: { Message?: string } | null;
}

/** One docker task; its `done` resolves once everything it made or opened is let go. */
export class DockerTask implements Execution {
  readonly done: Promise<Finished>;
  private readonly machine = new RunState(TRANSITIONS, "requesting");
  private stopRequest: StopRequest | undefined;
  /** Ends in-flight requests and log streams: at a stop of the ops a stop ends, and always at the end. */
  private readonly abort = new AbortController();
  /** Ends the wait for a run's exit when the container does not exit after a stop. */
  private readonly waitAbort = new AbortController();
  private engine!: Dockerode;
  private container: Dockerode.Container | undefined;
  private containerId = "";
  /** A container this task created is removed at its end, unless it is handed over (detached) or kept. */
  private removeAtEnd = false;
  private readonly startedAt = Date.now();
  private readonly requestTimeoutMs: number;
  private readonly maxChunk: number;
  /** The container's output (attached run) or its log (logs). */
  private readonly pipes: OutputPipes;

  constructor(
    private readonly spec: DockerSpec,
    private readonly ctx: ExecutionContext,
    private readonly opts: DockerExecutorOptions,
    engine: Promise<Dockerode>,
  ) {
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
    this.maxChunk = Math.max(1024, Math.min(opts.maxChunkBytes, ctx.maxChunkBytes ?? Infinity));
    this.pipes = new OutputPipes(ctx.output);
    this.done = this.run(engine).finally(() => this.release());
  }

  stop(request: StopRequest): void {
    if (this.stopRequest || this.machine.state === "done") return;
    this.stopRequest = request;
    this.ctx.logger.debug(
      { taskId: this.ctx.taskId, op: this.spec.op, state: this.machine.state, cause: request.cause },
      "stopping docker task",
    );
    // A run's container is stopped, and its exit awaited; everything else ends where it is.
    if (this.spec.op !== "run") this.abort.abort();
    else if (this.machine.state === "running") void this.stopContainer();
    // requesting, created: the run looks for a stop after each step.
  }

  private async run(engine: Promise<Dockerode>): Promise<Finished> {
    try {
      this.engine = await engine;
      const limitMs = timeLimitMs(0, this.ctx.deadlineMs, this.startedAt);
      if (limitMs !== undefined) {
        if (limitMs <= 0)
          return stoppedFinished({ cause: "timed_out", reason: "deadline passed before the task started" });
        this.armDeadline(limitMs);
      }
      const op = this.spec.op as DockerOp;
      if (op === "run") return await (this.spec.detach ? this.runDetached() : this.runAttached());
      this.ctx.started(0);
      if (op === "logs") return await this.logs();
      return await this.answer(op);
    } catch (e) {
      if (this.stopRequest) return stoppedFinished(this.stopRequest, this.elapsed());
      if (e instanceof SwitchboardError) return failedFinished(e.code, e.message, this.elapsed());
      this.ctx.logger.error({ err: e, taskId: this.ctx.taskId, op: this.spec.op }, "docker task failed");
      return failedFinished(
        Code.INTERNAL,
        `the agent's docker executor failed: ${e instanceof Error ? e.message : String(e)}`,
        this.elapsed(),
      );
    } finally {
      if (this.removeAtEnd) await this.removeContainer();
      this.move("done");
    }
  }

  // ---- ops that answer with one document ----

  private async answer(op: Exclude<DockerOp, "run" | "logs">): Promise<Finished> {
    const c = this.spec.container;
    let doc: unknown;
    let text: string;
    switch (op) {
      case "ps":
        doc = await this.call("list containers", {}, (s) =>
          this.engine.listContainers({ all: this.spec.all, abortSignal: s }),
        );
        text = `${JSON.stringify(doc)}\n`;
        break;
      case "images":
        doc = await this.call("list images", {}, (s) => this.engine.listImages({ abortSignal: s }));
        text = `${JSON.stringify(doc)}\n`;
        break;
      case "inspect":
        doc = await this.call(`inspect container ${c}`, { container: c }, (s) =>
          this.engine.getContainer(c).inspect({ abortSignal: s }),
        );
        text = `${JSON.stringify(doc)}\n`;
        break;
      case "stop": {
        const t = this.stopTimeoutSecs();
        const wasRunning = await this.call(
          `stop container ${c}`,
          { container: c },
          (s) =>
            this.engine
              .getContainer(c)
              .stop({ t, abortSignal: s })
              .then(
                () => true,
                // 304: it was not running; stopped is what was asked for.
                (e: unknown) => (engineStatus(e) === 304 ? false : Promise.reject(e as Error)),
              ),
          t * 1000 + this.requestTimeoutMs,
        );
        doc = { container: c, was_running: wasRunning };
        text = `${c}\n`;
        break;
      }
      case "rm":
        await this.call(`remove container ${c}`, { container: c }, (s) =>
          this.engine.getContainer(c).remove({ force: this.spec.force, abortSignal: s }),
        );
        doc = { container: c };
        text = `${c}\n`;
        break;
    }
    await this.writeStdout(text);
    return Finished.fromPartial({
      state: TaskState.TASK_STATE_SUCCEEDED,
      exitCode: 0,
      durationMs: this.elapsed(),
      result: Buffer.from(JSON.stringify(doc)),
    });
  }

  // ---- run ----

  private async runDetached(): Promise<Finished> {
    const container = await this.create();
    if (this.stopRequest) return stoppedFinished(this.stopRequest, this.elapsed());
    await this.startContainer(container);
    if (this.stopRequest) {
      // Cancelled before its id was reported: nobody knows of this container, so it goes.
      await this.stopContainer();
      return stoppedFinished(this.stopRequest, this.elapsed());
    }
    this.removeAtEnd = false; // handed over: `rm` (or --rm, the engine's AutoRemove) is the caller's to ask for
    const id = this.containerId;
    await this.writeStdout(`${id}\n`);
    return Finished.fromPartial({
      state: TaskState.TASK_STATE_SUCCEEDED,
      exitCode: 0,
      durationMs: this.elapsed(),
      result: Buffer.from(JSON.stringify({ id, name: this.spec.container })),
    });
  }

  private async runAttached(): Promise<Finished> {
    const container = await this.create();
    if (this.stopRequest) return stoppedFinished(this.stopRequest, this.elapsed());
    // Attached before it starts, so that no output is missed. The engine hands the container's output
    // straight to this stream, so pausing it for the output window holds the container's writes, as a full
    // pipe holds a shell task's process: nothing is lost and nothing piles up here. (Following its log
    // instead would not hold the container, but podman's log follow skips lines under load.)
    const attached = await this.call(
      `attach to container ${shortId(this.containerId)}`,
      { container: this.containerId },
      (s) => container.attach({ stream: true, stdout: true, stderr: true, hijack: true, abortSignal: s }),
      this.requestTimeoutMs,
      this.abort,
    );
    // Held until Started is out, so that the task's events come in their usual order.
    let reportedStart!: () => void;
    const held = new Promise<void>((resolve) => (reportedStart = resolve));
    const streamed = this.pumpOutput(attached as unknown as Readable, false, held);
    streamed.catch(() => undefined); // awaited below; a failure before then must not be unhandled
    await this.startContainer(container);
    reportedStart();
    this.removeAtEnd = this.spec.remove;
    if (this.stopRequest) void this.stopContainer();
    const exit = await this.call<ContainerExit>(
      `wait for container ${shortId(this.containerId)} to exit`,
      { container: this.containerId },
      (s) => container.wait({ abortSignal: s }) as Promise<ContainerExit>,
      undefined,
      this.waitAbort,
    );
    const exitedAt = Date.now();
    this.move("exited");
    await this.drainOutput(streamed, exitedAt);
    return this.exitFinished(exit);
  }

  private async create(): Promise<Dockerode.Container> {
    const s = this.spec;
    const container = await this.call(
      `create a container from image ${s.image}`,
      { image: s.image, ...(s.container !== "" ? { container: s.container } : {}) },
      (signal) =>
        this.engine.createContainer({
          Image: s.image,
          ...(s.cmd.length > 0 ? { Cmd: s.cmd } : {}),
          ...(s.container !== "" ? { name: s.container } : {}),
          Env: Object.entries(s.env).map(([k, v]) => `${k}=${v}`),
          Tty: false,
          OpenStdin: false,
          AttachStdin: false,
          AttachStdout: !s.detach,
          AttachStderr: !s.detach,
          // Who made it, for `docker ps` on the agent's machine.
          Labels: { "switchboard.task": this.ctx.taskId, "switchboard.agent": this.opts.agentId },
          ...(s.stopTimeoutSecs > 0 ? { StopTimeout: s.stopTimeoutSecs } : {}),
          HostConfig: { AutoRemove: s.detach && s.remove },
          abortSignal: signal,
        }),
    );
    this.container = container;
    this.containerId = container.id;
    this.removeAtEnd = true; // it never ran: whatever happens next, it does not outlive the task
    this.move("created");
    return container;
  }

  private async startContainer(container: Dockerode.Container): Promise<void> {
    const what = { container: this.containerId };
    await this.call(`start container ${shortId(this.containerId)}`, what, (s) =>
      container.start({ abortSignal: s }),
    );
    this.move("running");
    const info = await this.call(`inspect container ${shortId(this.containerId)}`, what, (s) =>
      container.inspect({ abortSignal: s }),
    );
    this.ctx.started(info.State?.Pid ?? 0);
  }

  /** docker stop: SIGTERM (or the image's stop signal), SIGKILL after the stop timeout; then its exit shows. */
  private async stopContainer(): Promise<void> {
    const container = this.container;
    if (!container || !this.move("stopping")) return;
    const t = this.stopTimeoutSecs();
    try {
      await this.call(
        `stop container ${shortId(this.containerId)}`,
        { container: this.containerId },
        (s) =>
          container
            .stop({ t, abortSignal: s })
            .catch((e: unknown) => (engineStatus(e) === 304 ? undefined : Promise.reject(e as Error))),
        t * 1000 + this.requestTimeoutMs,
      );
    } catch (e) {
      this.ctx.logger.warn(
        { err: e, taskId: this.ctx.taskId, container: this.containerId },
        "could not stop the task's container",
      );
    } finally {
      this.machine.after(EXIT_WAIT_MS, () => {
        if (this.machine.state !== "stopping") return;
        this.ctx.logger.error(
          { taskId: this.ctx.taskId, container: this.containerId, waitedMs: EXIT_WAIT_MS },
          "the task's container did not exit after it was stopped; reporting the task without its exit",
        );
        this.waitAbort.abort();
      });
    }
  }

  /** Best effort (force: it may still run when the task failed): a failure is logged and said on stderr. */
  private async removeContainer(): Promise<void> {
    const container = this.container;
    if (!container) return;
    this.removeAtEnd = false;
    try {
      await container.remove({ force: true, abortSignal: AbortSignal.timeout(this.requestTimeoutMs) });
    } catch (e) {
      if (engineStatus(e) === 404) return; // already gone (AutoRemove, or removed by someone else)
      const err = engineTaskError(e, {
        agentId: this.opts.agentId,
        socket: this.opts.socket,
        action: `remove container ${shortId(this.containerId)}`,
        container: this.containerId,
      });
      this.ctx.logger.warn(
        { taskId: this.ctx.taskId, container: this.containerId, err: err.message },
        "could not remove the task's container",
      );
      this.ctx.output.write(OutputStream.OUTPUT_STREAM_STDERR, Buffer.from(`switchboard: ${err.message}\n`));
    }
  }

  private exitFinished(exit: ContainerExit): Finished {
    const exitCode = typeof exit.StatusCode === "number" ? exit.StatusCode : -1;
    const durationMs = this.elapsed();
    const stop = this.stopRequest;
    if (stop) {
      return Finished.fromPartial({
        state: stateForStop(stop.cause),
        exitCode,
        error: { code: codeForStop(stop.cause), message: stop.reason },
        durationMs,
        reason: stop.reason,
      });
    }
    if (exitCode === 0)
      return Finished.fromPartial({ state: TaskState.TASK_STATE_SUCCEEDED, exitCode, durationMs });
    const engineSaid = exit.Error?.Message ? `: ${exit.Error.Message}` : "";
    return Finished.fromPartial({
      state: TaskState.TASK_STATE_FAILED,
      exitCode,
      durationMs,
      reason: `container exited with code ${exitCode}${engineSaid}`,
    });
  }

  // ---- logs ----

  private async logs(): Promise<Finished> {
    const c = this.spec.container;
    const info = await this.call(`inspect container ${c}`, { container: c }, (s) =>
      this.engine.getContainer(c).inspect({ abortSignal: s }),
    );
    const stream = await this.openLogs(c, this.spec.follow, this.spec.tail);
    await this.pumpOutput(stream, info.Config?.Tty === true);
    if (this.stopRequest) return stoppedFinished(this.stopRequest, this.elapsed());
    return Finished.fromPartial({
      state: TaskState.TASK_STATE_SUCCEEDED,
      exitCode: 0,
      durationMs: this.elapsed(),
    });
  }

  /** The container's log stream; it lives until the task's abort (or its end). */
  private openLogs(container: string, follow: boolean, tail: number): Promise<Readable> {
    return this.call(
      `read the logs of container ${shortId(container)}`,
      { container },
      (signal) =>
        new Promise<Readable>((resolve, reject) => {
          // dockerode's logs() buffers the whole log unless it follows; asking for a stream either way
          // keeps a long log in pieces, read as the output window allows.
          this.engine.modem.dial(
            {
              path: `/containers/${encodeURIComponent(container)}/logs?`,
              method: "GET",
              isStream: true,
              abortSignal: signal,
              statusCodes: { 200: true, 404: "no such container", 500: "server error" },
              options: { follow, stdout: true, stderr: true, ...(tail > 0 ? { tail } : {}) },
            },
            (err, data) => (err ? reject(err) : resolve(data as Readable)),
          );
        }),
      this.requestTimeoutMs,
      this.abort,
    );
  }

  /**
   * Copies a container's output or log stream to the task's stdout and stderr, pausing it while the output
   * window is closed. Resolves when the stream ends (or is ended by the task's abort); rejects when it
   * breaks otherwise.
   */
  private pumpOutput(stream: Readable, tty: boolean, holdUntil?: Promise<void>): Promise<void> {
    const chunking = { maxChunkBytes: this.maxChunk, idleFlushMs: this.opts.idleFlushMs };
    const out = outputChunker(this.ctx.output, OutputStream.OUTPUT_STREAM_STDOUT, chunking);
    const err = outputChunker(this.ctx.output, OutputStream.OUTPUT_STREAM_STDERR, chunking);
    // A TTY container's log is its terminal's raw bytes, all on stdout.
    const demux = tty ? undefined : new LogDemuxer((s, data) => (s === "stderr" ? err : out).push(data));
    return new Promise<void>((resolve, reject) => {
      const ended = (failure?: Error): void => {
        out.end();
        err.end();
        const ours = this.abort.signal.aborted || this.stopRequest !== undefined;
        if (failure && !ours) reject(failure);
        else resolve();
      };
      const midFrame = (): Error | undefined =>
        demux?.midFrame
          ? new SwitchboardError(Code.UNAVAILABLE, "the docker engine's output stream ended inside a frame")
          : undefined;
      const push = (data: Buffer): boolean => (demux ? demux.push(data) : out.push(data));
      this.pipes.pipe(stream, push, ended, { endFailure: midFrame, holdUntil });
    }).catch((e: unknown) => {
      if (e instanceof SwitchboardError) throw e;
      throw new SwitchboardError(
        Code.UNAVAILABLE,
        `the output stream of container ${shortId(this.spec.container || this.containerId)} broke on agent ${this.opts.agentId}: ${(e as Error).message}`,
      );
    });
  }

  /**
   * After the exit: the rest of the output, however long the window makes it take, but not a stream the
   * engine keeps open with nothing in it (we stop reading once it stays quiet for LOG_LINGER_MS).
   */
  private async drainOutput(streamed: Promise<void>, exitedAt: number): Promise<void> {
    this.pipes.watchLinger(this.machine, {
      exitedAt,
      lingerMs: LOG_LINGER_MS,
      stopping: () => this.stopRequest !== undefined,
      gaveUp: () =>
        this.ctx.logger.warn(
          { taskId: this.ctx.taskId, container: this.containerId, lingerMs: LOG_LINGER_MS },
          "the container's output stream stayed open after it exited; no longer reading it",
        ),
    });
    await streamed;
  }

  // ---- shared ----

  /**
   * One Engine API call, given up after timeoutMs without an answer (undefined: never) and when the task's
   * abort fires; a failure becomes a SwitchboardError with the code and sentence of engineTaskError.
   * `owner` is the controller the call's result lives under (a stream): it is aborted on the timeout.
   */
  private async call<T>(
    action: string,
    about: About,
    fn: (signal: AbortSignal) => Promise<T>,
    timeoutMs: number | undefined = this.requestTimeoutMs,
    owner?: AbortController,
  ): Promise<T> {
    const controller = owner ?? new AbortController();
    const onAbort = (): void => controller.abort();
    if (!owner) {
      if (this.abort.signal.aborted) controller.abort();
      else this.abort.signal.addEventListener("abort", onAbort, { once: true });
    }
    let timedOut = false;
    const timer =
      timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true;
            controller.abort();
          }, timeoutMs);
    try {
      return await fn(controller.signal);
    } catch (e) {
      const err = engineTaskError(e, {
        agentId: this.opts.agentId,
        socket: this.opts.socket,
        action,
        ...about,
        ...(timedOut ? { timedOutAfterMs: timeoutMs } : {}),
      });
      throw new SwitchboardError(err.code, err.message);
    } finally {
      clearTimeout(timer);
      this.abort.signal.removeEventListener("abort", onAbort);
    }
  }

  private async writeStdout(text: string): Promise<void> {
    const data = Buffer.from(text);
    for (let off = 0; off < data.length; off += this.maxChunk) {
      const piece = data.subarray(off, off + this.maxChunk);
      if (!this.ctx.output.write(OutputStream.OUTPUT_STREAM_STDOUT, piece)) {
        await new Promise<void>((resolve) => this.ctx.output.onceWritable(resolve));
      }
    }
  }

  private stopTimeoutSecs(): number {
    const graceMs = this.stopRequest?.graceMs;
    if (graceMs !== undefined) return Math.ceil(graceMs / 1000);
    return this.spec.stopTimeoutSecs > 0 ? this.spec.stopTimeoutSecs : DEFAULT_STOP_TIMEOUT_SECS;
  }

  private armDeadline(limitMs: number): void {
    this.machine.at(this.startedAt + limitMs, () =>
      this.stop({ cause: "timed_out", reason: `deadline passed after ${limitMs} ms` }),
    );
  }

  private release(): void {
    this.machine.clearTimers();
    this.abort.abort();
    this.waitAbort.abort();
    this.pipes.destroy(); // an attached stream is a socket of its own, which the abort does not close
  }

  private move(next: DockerTaskState): boolean {
    return this.machine.move(next);
  }

  private elapsed(): number {
    return Date.now() - this.startedAt;
  }
}

/** A container id as Docker prints it (12 hex digits); names are left alone. */
function shortId(idOrName: string): string {
  return /^[0-9a-f]{64}$/.test(idOrName) ? idOrName.slice(0, 12) : idOrName;
}
