// How a shell task's processes end, for the plain run (shell.ts) and the runs that take input
// (interactive-run.ts): the two-step stop (the end signal, SIGKILL after the grace, a bounded wait for
// the exit), the watch on the confinement's limits, and the Finished once the confinement is released.
import { TaskState, type Finished } from "../../../gen/switchboard/v1/task.js";
import { limitFinished, processFinished, type ExecutionContext, type StopRequest } from "../executor.js";
import type { RunState, Transitions } from "../run-state.js";
import type { TaskConfinement } from "./confinement.js";

/** The states of a process's life this module moves a run through (each run names its first state). */
export type ProcessLifeState = "running" | "terminating" | "killing" | "exited" | "done";

/**
 * Where a process run goes once its process runs; each run's own table adds its first state.
 * done straight from killing: SIGKILL sent, yet no exit within the bounded wait (e.g. stuck in the kernel).
 */
export const PROCESS_LIFE: Transitions<ProcessLifeState> = {
  running: ["terminating", "exited"],
  terminating: ["killing", "exited"],
  killing: ["exited", "done"],
  exited: ["done"],
  done: [],
};

const DEFAULT_KILL_WAIT_MS = 5000;

export interface ProcessEndOptions {
  /** What the run is, for logs: "shell task", "terminal", "streamed-stdin shell task". */
  what(): string;
  ctx: ExecutionContext;
  /** After SIGKILL: how long to wait for the exit before reporting without it. */
  killWaitMs: number | undefined;
  /** The main process's pid (0 before it runs). */
  pid(): number;
  /** The stop asked for, if one was. */
  stopRequest(): StopRequest | undefined;
  /** Signals every process of the task: its group or session, and all its confinement knows of. */
  signalAll(signal: NodeJS.Signals): void;
  /** SIGKILL went out and no exit came in time: let go of the pipes or the terminal, and finish. */
  giveUp(): void;
}

/** The end of one run's processes. */
export class ProcessEnd<S extends string> {
  /** Set when a limit of the confinement ended the task (the sentence for Finished.reason). */
  limitReason: string | undefined;
  private exit: { code: number | null; signal: string | null } | undefined;
  readonly startedAt = Date.now();

  constructor(
    private readonly machine: RunState<S | ProcessLifeState>,
    private readonly o: ProcessEndOptions,
  ) {}

  /** Ends the processes: endSignal to all of them, SIGKILL after graceMs (at once when it is 0). */
  terminate(graceMs: number, endSignal: NodeJS.Signals): void {
    if (!this.machine.move("terminating")) return;
    this.o.ctx.logger.debug(
      {
        taskId: this.o.ctx.taskId,
        pid: this.o.pid(),
        cause: this.o.stopRequest()?.cause ?? "hangup",
        graceMs,
      },
      `stopping ${this.o.what()}`,
    );
    if (graceMs <= 0) return this.kill();
    this.o.signalAll(endSignal);
    this.machine.after(graceMs, () => this.kill());
  }

  private kill(): void {
    if (this.machine.state !== "terminating" || !this.machine.move("killing")) return;
    this.o.signalAll("SIGKILL");
    this.machine.after(this.o.killWaitMs ?? DEFAULT_KILL_WAIT_MS, () => {
      if (this.machine.state !== "killing") return;
      this.o.ctx.logger.error(
        { taskId: this.o.ctx.taskId, pid: this.o.pid() },
        `${this.o.what()} did not exit after SIGKILL; reporting it without an exit status`,
      );
      this.o.giveUp();
    });
  }

  /** Polls the confinement for a limit the task went past, and kills the task when it did. */
  watchLimits(confined: TaskConfinement | undefined): void {
    const every = confined?.watchIntervalMs;
    if (!confined || every === undefined) return;
    const check = (): void => {
      if (this.machine.state !== "running") return;
      const reason = confined.watch();
      if (reason === undefined) return this.machine.after(every, check);
      this.o.ctx.logger.info(
        { taskId: this.o.ctx.taskId, pid: this.o.pid(), reason },
        `${this.o.what()} ended by a limit`,
      );
      this.limitReason = reason;
      this.terminate(0, "SIGKILL");
    };
    this.machine.after(every, check);
  }

  /** The main process exited: its status is kept, and the stop's timers are done with. */
  exited(code: number | null, signal: string | null): boolean {
    if (!this.machine.move("exited")) return false;
    this.exit = { code, signal };
    this.machine.clearTimers();
    return true;
  }

  /**
   * Kills what the task left behind (a daemon, a setsid escapee), releases its cgroup, and says how the
   * task finished: from its exit, or as `decided` (settled before a process ran). A limit the kernel
   * enforced that the watch did not see first (an OOM kill) is named.
   */
  async finished(confined: TaskConfinement | undefined, decided?: Finished): Promise<Finished> {
    const durationMs = Date.now() - this.startedAt;
    const stop = this.o.stopRequest();
    const f = decided
      ? { ...decided, durationMs: decided.durationMs || durationMs }
      : processFinished({ limitReason: this.limitReason, stop, exit: this.exit, durationMs });
    if (!confined) return f;
    const { ctx } = this.o;
    const what = this.o.what();
    try {
      const r = await confined.release();
      if (r.leftBehind > 0) {
        ctx.logger.info(
          { taskId: ctx.taskId, pid: this.o.pid(), processes: r.leftBehind },
          `killed processes the ${what} left behind`,
        );
      }
      const failed = f.state === TaskState.TASK_STATE_FAILED && f.exitCode !== 0;
      if (r.limit !== undefined && this.limitReason === undefined && !stop && failed)
        return limitFinished(r.limit, f.exitCode, f.signal, f.durationMs);
    } catch (e) {
      ctx.logger.error({ err: e, taskId: ctx.taskId }, `releasing the ${what}'s confinement failed`);
    }
    return f;
  }
}
