// What a terminal run and a streamed-stdin run share: the life of the task's process as a state
// machine (starting, running, stopping in two steps, exited), its time limit and its confinement's
// limits, the stop that ends everything it started (process-end.ts), the input window it grants the hub,
// and the Finished it ends with.
import { Code } from "../../../common/errors.js";
import type { Finished, ShellSpec } from "../../../gen/switchboard/v1/task.js";
import {
  failedFinished,
  stoppedFinished,
  timeLimitMs,
  type Execution,
  type ExecutionContext,
  type InputChunk,
  type StopRequest,
} from "../executor.js";
import { RunState, type Transitions } from "../run-state.js";
import { PROCESS_LIFE, ProcessEnd } from "./process-end.js";
import { cwdProblem } from "./shell-launch.js";
import type { TaskConfinement } from "./confinement.js";

/** What every interactive run (a terminal, a streamed stdin) is told by the agent. */
export interface InteractiveOptions {
  agentId: string;
  /** [shell] pty: whether terminals (interactive sessions) may be opened on this agent. */
  pty?: boolean;
  /** SIGTERM (or SIGHUP) -> SIGKILL grace when neither the cancel nor the spec names one. */
  killGraceMs: number;
  maxChunkBytes: number;
  /** After SIGKILL: how long to wait for the exit before reporting without it. */
  killWaitMs?: number;
  /** The environment tasks start from; default: the agent's own, without its token. */
  baseEnv?: NodeJS.ProcessEnv;
}

/** What a run spawns. Holds secrets (env): never log it. */
export interface InteractiveLaunch {
  /** Absolute path of the program (or of the confinement's and setpriv's prefix). */
  file: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Empty: the agent's working directory. */
  cwd: string;
  /** The task's hold on its processes (cgroup or marker) and limits; released when the run ends. */
  confined?: TaskConfinement;
}

/** starting: checks and spawn. terminating: the first signal sent. killing: SIGKILL sent. */
export type InteractiveState = "starting" | "running" | "terminating" | "killing" | "exited" | "done";

const TRANSITIONS: Transitions<InteractiveState> = { starting: ["running", "done"], ...PROCESS_LIFE };

/**
 * Input bytes the hub may send ahead of what the process took. Re-granted as the process takes input,
 * in batches of at least half of it, or after INPUT_REGRANT_MS, so keystrokes are not one message each.
 */
export const INPUT_WINDOW_BYTES = 64 * 1024;
const INPUT_REGRANT_MS = 20;

/** The input window of one run: granted once at start, topped up as the process takes bytes. */
export class InputWindow {
  private owed = 0;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly grant: (bytes: number) => void) {}

  open(): void {
    this.grant(INPUT_WINDOW_BYTES);
  }

  /** The process took these many bytes: the hub may send as many more. */
  took(bytes: number): void {
    if (this.closed || bytes <= 0) return;
    this.owed += bytes;
    if (this.owed >= INPUT_WINDOW_BYTES / 2) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), INPUT_REGRANT_MS);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private flush(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.closed || this.owed === 0) return;
    const n = this.owed;
    this.owed = 0;
    this.grant(n);
  }
}

export abstract class InteractiveRun implements Execution {
  readonly done: Promise<Finished>;
  private resolveDone!: (f: Finished) => void;
  /** The run's state and its timers (the subclass arms its own polls there too). */
  protected readonly machine = new RunState(TRANSITIONS, "starting");
  protected stopRequest: StopRequest | undefined;
  protected pid = 0;
  private readonly end: ProcessEnd<InteractiveState>;
  protected readonly window: InputWindow;

  /** The signal that asks the task to end before SIGKILL: SIGHUP for a terminal, SIGTERM otherwise. */
  protected abstract readonly endSignal: NodeJS.Signals;
  /** What the run is, for logs: "terminal" or "streamed-stdin shell task". */
  protected abstract readonly what: string;

  constructor(
    protected readonly spec: ShellSpec,
    protected readonly launch: InteractiveLaunch,
    protected readonly ctx: ExecutionContext,
    protected readonly opts: InteractiveOptions,
  ) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.window = new InputWindow((bytes) => this.ctx.grantInput(bytes));
    this.end = new ProcessEnd(this.machine, {
      what: () => this.what,
      ctx,
      killWaitMs: opts.killWaitMs,
      pid: () => this.pid,
      stopRequest: () => this.stopRequest,
      signalAll: (signal) => this.signalAll(signal),
      giveUp: () => {
        this.release();
        this.finish();
      },
    });
  }

  /** Starts the process; returns its pid, or undefined after calling failToStart (now or later). */
  protected abstract spawn(): number | undefined;
  /** Signals the processes the run itself knows of (its group or its session). */
  protected abstract signalOwn(signal: NodeJS.Signals): void;
  /** Hands input to the process (data, resize, end of input). Only called while it runs. */
  protected abstract deliver(chunk: InputChunk): void;
  /** Lets go of pipes or the terminal when the run ends without waiting for them. */
  protected abstract release(): void;

  async begin(): Promise<void> {
    try {
      const limitMs = timeLimitMs(this.spec.timeoutMs, this.ctx.deadlineMs, this.end.startedAt);
      if (limitMs !== undefined && limitMs <= 0) {
        return this.failToStart(
          stoppedFinished({ cause: "timed_out", reason: "deadline passed before the task started" }),
        );
      }
      if (this.launch.cwd !== "") {
        const problem = await cwdProblem(this.launch.cwd, this.opts.agentId);
        if (problem) return this.failToStart(failedFinished(Code.FAILED_PRECONDITION, problem));
      }
      if (this.stopRequest) return this.failToStart(stoppedFinished(this.stopRequest));
      const pid = this.spawn();
      if (pid === undefined || !this.move("running")) return;
      this.pid = pid;
      this.launch.confined?.started(pid);
      this.ctx.started(pid);
      this.window.open();
      if (limitMs !== undefined) {
        this.machine.at(Date.now() + limitMs, () =>
          this.stop({ cause: "timed_out", reason: `timeout after ${limitMs} ms` }),
        );
      }
      this.end.watchLimits(this.launch.confined);
    } catch (e) {
      this.ctx.logger.error({ err: e, taskId: this.ctx.taskId }, `${this.what} failed to start`);
      if (this.pid > 1) this.signalAll("SIGKILL");
      this.failToStart(
        failedFinished(Code.INTERNAL, `the agent could not start the task: ${(e as Error).message}`),
      );
    }
  }

  stop(request: StopRequest): void {
    if (this.stopRequest || this.end.limitReason !== undefined || this.state === "done") return;
    this.stopRequest = request;
    // starting: begin() checks for a stop before it spawns.
    if (this.state === "running") this.terminate(request.graceMs);
  }

  input(chunk: InputChunk): void {
    if (this.state !== "running") {
      this.ctx.logger.debug({ taskId: this.ctx.taskId, state: this.state }, `${this.what}: input ignored`);
      return;
    }
    this.deliver(chunk);
  }

  /** Ends the task's processes: endSignal to all of them, SIGKILL after the grace. */
  protected terminate(graceMs?: number): void {
    const grace = graceMs ?? (this.spec.killGraceMs > 0 ? this.spec.killGraceMs : this.opts.killGraceMs);
    this.end.terminate(grace, this.endSignal);
  }

  /** Signals every process of the task: the run's own, and all its confinement knows of. */
  protected signalAll(signal: NodeJS.Signals): void {
    this.signalOwn(signal);
    this.launch.confined?.signalAll(signal);
  }

  /** The main process ended; the subclass calls finish() once its output is all read. */
  protected exited(code: number | null, signal: string | null): boolean {
    if (!this.end.exited(code, signal)) return false;
    this.window.close();
    // Whatever it left behind goes too, or it would hold the terminal or the pipes open.
    this.signalAll("SIGKILL");
    return true;
  }

  protected finish(): void {
    if (!this.move("done")) return;
    this.window.close();
    void this.end.finished(this.launch.confined).then(this.resolveDone);
  }

  /** Ends the task with a Finished decided before a process ran (or when it failed to spawn). */
  protected failToStart(f: Finished): void {
    if (!this.move("done")) return;
    this.window.close();
    this.release();
    void this.end.finished(this.launch.confined, f).then(this.resolveDone);
  }

  protected get state(): InteractiveState {
    return this.machine.state;
  }

  protected move(next: InteractiveState): boolean {
    return this.machine.move(next);
  }
}
