// Shell tasks: argv or a `bash -c` script with cwd, env and stdin, leading its own process group; stdout
// and stderr stream as Output chunks under the task's output window. A timeout or stop ends the whole
// group and every process the task's confinement knows of (its cgroup, or its marked processes):
// SIGTERM, SIGKILL after the grace, SIGKILL again after exit; every wait is bounded. The command
// policy (shell-policy.ts) admits a spec first; a task may run as another user and under limits.
import { spawn, type ChildProcess } from "node:child_process";
import { Code } from "../../../common/errors.js";
import { Finished, type ShellSpec, type TaskError, type TaskSpec } from "../../../gen/switchboard/v1/task.js";
import { Confinement, findProgram, type TaskConfinement } from "./confinement.js";
import {
  disabledRefusal,
  envNameProblem,
  failedFinished,
  stoppedFinished,
  timeLimitMs,
  type Execution,
  type ExecutionContext,
  type Executor,
  type StopRequest,
} from "../executor.js";
import { OutputPipes } from "../pipes.js";
import { RunState, type Transitions } from "../run-state.js";
import { admitInteractive, startInteractive, takesInput } from "./interactive.js";
import { PROCESS_LIFE, ProcessEnd } from "./process-end.js";
import { signalTaskGroup } from "./process-group.js";
import {
  OPEN_SHELL_POLICY,
  compileShellPolicy,
  isRefusal,
  planShellTask,
  type CompiledShellPolicy,
  type PlanContext,
  type ShellPlan,
  type ShellPolicy,
} from "./shell-policy.js";
import { cwdProblem, shellLaunch } from "./shell-launch.js";

export interface ShellExecutorOptions {
  enabled: boolean;
  agentId: string;
  /** SIGTERM -> SIGKILL grace when neither the cancel nor the spec names one. */
  killGraceMs: number;
  maxChunkBytes: number;
  idleFlushMs?: number;
  /** After the main process exited: how long its pipes may stay open with no data before we stop waiting. */
  pipeLingerMs?: number;
  /** After SIGKILL: how long to wait for the exit before reporting without it. */
  killWaitMs?: number;
  /** The environment tasks start from; default: the agent's own, without its token. Secrets are taken out. */
  baseEnv?: NodeJS.ProcessEnv;
  /** `[shell]` rules; default: everything allowed, no limits. */
  policy?: ShellPolicy;
  /** How tasks are tracked and limited; default: by process scan, without limits. */
  confinement?: Confinement;
  /** Where secrets are read from; default: process.env. */
  agentEnv?: NodeJS.ProcessEnv;
  /** [shell] pty: terminals (tty tasks) allowed; see interactive.ts. */
  pty?: boolean;
}

const DEFAULT_PIPE_LINGER_MS = 2000;

/** The agent's environment minus what a task has no business reading. */
export function taskBaseEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const out = { ...env };
  delete out.SWITCHBOARD_TOKEN;
  return out;
}

export class ShellExecutor implements Executor {
  readonly kind = "shell" as const;
  private readonly planContext: PlanContext;
  private readonly confinement: Confinement;

  constructor(private readonly opts: ShellExecutorOptions) {
    const policy: CompiledShellPolicy = compileShellPolicy(opts.policy ?? OPEN_SHELL_POLICY);
    // A secret reaches only the tasks that ask for it by name, never every task through the base env.
    const baseEnv = { ...(opts.baseEnv ?? taskBaseEnv()) };
    for (const name of Object.keys(baseEnv)) {
      if (policy.secretsAllow.some((r) => r.test(name))) delete baseEnv[name];
    }
    this.confinement = opts.confinement ?? Confinement.withoutLimits();
    this.planContext = {
      agentId: opts.agentId,
      policy,
      baseEnv,
      agentEnv: opts.agentEnv ?? process.env,
      method: this.confinement.method,
      uid: process.geteuid?.() ?? -1,
      setpriv: (opts.policy?.users.length ?? 0) > 0 ? findProgram("setpriv") : undefined,
    };
  }

  admit(spec: TaskSpec): TaskError | undefined {
    const invalid = (message: string): TaskError => ({ code: Code.INVALID_ARGUMENT, message });
    if (!this.opts.enabled) return disabledRefusal("shell", this.opts.agentId, "set [shell] enabled = true");
    if (spec.kind?.$case !== "shell") return invalid("not a shell task");
    const s = spec.kind.value;
    if (s.argv.length > 0 && s.script !== "")
      return invalid("a shell task sets either argv or script, not both");
    if (s.argv.length === 0 && s.script === "") return invalid("a shell task needs argv or script");
    if (s.argv.length > 0 && s.argv[0] === "")
      return invalid("argv[0] is empty: it names the program to run");
    const texts = [...s.argv, s.script, s.cwd, ...Object.keys(s.env), ...Object.values(s.env)];
    if (texts.some((t) => t.includes("\0")))
      return invalid("argv, script, cwd and env may not contain NUL bytes");
    const envProblem = envNameProblem(s.env);
    if (envProblem !== undefined) return invalid(envProblem);
    const interactive = admitInteractive(s, this.opts);
    if (interactive) return interactive;
    const plan = planShellTask(s, this.planContext);
    return isRefusal(plan) ? plan : undefined;
  }

  start(spec: TaskSpec, ctx: ExecutionContext): Execution {
    if (spec.kind?.$case !== "shell") throw new Error("ShellExecutor.start needs a shell spec");
    if (takesInput(spec.kind.value)) {
      const plan = planShellTask(spec.kind.value, this.planContext);
      const setpriv = this.planContext.setpriv ?? "setpriv";
      return startInteractive(spec.kind.value, ctx, this.opts, {
        plan,
        confinement: this.confinement,
        setpriv,
      });
    }
    // Planned again (admit's answer is not kept): PATH lookups and user databases are cheap to re-read.
    const run = new ShellRun(
      spec.kind.value,
      planShellTask(spec.kind.value, this.planContext),
      ctx,
      this.opts,
      this.confinement,
      this.planContext.setpriv ?? "setpriv",
    );
    void run.begin();
    return run;
  }
}

/** The life of the task's main process, as far as the agent is concerned. */
type ProcessState = "spawning" | "running" | "terminating" | "killing" | "exited" | "done";

/** spawning: checks, confinement and spawn; then the life every process run shares. */
const PROCESS_TRANSITIONS: Transitions<ProcessState> = { spawning: ["running", "done"], ...PROCESS_LIFE };

class ShellRun implements Execution {
  readonly done: Promise<Finished>;
  private resolveDone!: (f: Finished) => void;
  private readonly machine: RunState<ProcessState>;
  private stopRequest: StopRequest | undefined;
  private child: ChildProcess | undefined;
  private pid = 0;
  private exitedAt = 0;
  private readonly pipes: OutputPipes;
  private readonly program: string;
  private confined: TaskConfinement | undefined;
  private readonly end: ProcessEnd<ProcessState>;

  constructor(
    private readonly spec: ShellSpec,
    private readonly plan: ShellPlan | TaskError,
    private readonly ctx: ExecutionContext,
    private readonly opts: ShellExecutorOptions,
    private readonly confinement: Confinement,
    /** setpriv's path (the plan refused a user switch without it). */
    private readonly setpriv: string,
  ) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.machine = new RunState(PROCESS_TRANSITIONS, "spawning", (from, to) => {
      if (from !== "done") {
        this.ctx.logger.debug({ taskId: this.ctx.taskId, from, to }, "shell task: transition ignored");
      }
    });
    this.pipes = new OutputPipes(ctx.output);
    this.end = new ProcessEnd(this.machine, {
      what: () => "shell task",
      ctx,
      killWaitMs: opts.killWaitMs,
      pid: () => this.pid,
      stopRequest: () => this.stopRequest,
      signalAll: (signal) => this.killGroup(signal),
      giveUp: () => {
        this.pipes.destroy();
        this.finish();
      },
    });
    this.program = spec.script !== "" ? "bash" : spec.argv[0]!;
  }

  stop(request: StopRequest): void {
    if (this.stopRequest || this.end.limitReason !== undefined || this.machine.state === "done") return;
    this.stopRequest = request;
    // spawning: begin() checks for a stop before it spawns. exited: only the pipes are left, and the
    // task run stops holding output so they drain.
    if (this.machine.state === "running") this.terminate();
  }

  async begin(): Promise<void> {
    try {
      if (isRefusal(this.plan)) return this.finishWith(failedFinished(this.plan.code, this.plan.message));
      const plan = this.plan;
      const limit = this.timeLimit();
      if (limit !== undefined && limit.remainingMs <= 0) {
        return this.finishWith(
          stoppedFinished({ cause: "timed_out", reason: "deadline passed before the task started" }),
        );
      }
      if (plan.cwd !== "") {
        const problem = await cwdProblem(plan.cwd, this.opts.agentId);
        if (problem) return this.finishWith(failedFinished(Code.FAILED_PRECONDITION, problem));
      }
      if (this.stopRequest) return this.finishWith(stoppedFinished(this.stopRequest));
      this.spawnChild(plan);
      if (limit !== undefined && this.machine.state === "running") {
        this.machine.at(Date.now() + limit.remainingMs, () =>
          this.stop({ cause: "timed_out", reason: `timeout after ${limit.limitMs} ms` }),
        );
      }
    } catch (e) {
      this.ctx.logger.error({ err: e, taskId: this.ctx.taskId }, "shell task failed to start");
      this.killGroup("SIGKILL");
      this.finishWith(
        failedFinished(Code.INTERNAL, `the agent could not start the task: ${(e as Error).message}`),
      );
    }
  }

  /** The tighter of the spec's timeout and the task's deadline, measured from now. */
  private timeLimit(): { remainingMs: number; limitMs: number } | undefined {
    const limitMs = timeLimitMs(this.spec.timeoutMs, this.ctx.deadlineMs, this.end.startedAt);
    return limitMs === undefined ? undefined : { remainingMs: limitMs, limitMs };
  }

  private spawnChild(plan: ShellPlan): void {
    let confined: TaskConfinement;
    try {
      confined = this.confinement.confine(this.ctx.taskId, plan.limits);
    } catch (e) {
      return this.finishWith(
        failedFinished(
          Code.INTERNAL,
          `agent ${this.opts.agentId} cannot confine the task (${this.confinement.method}): ${(e as Error).message}`,
        ),
      );
    }
    this.confined = confined;
    const launch = shellLaunch(plan, confined, this.setpriv);
    let child: ChildProcess;
    try {
      child = spawn(launch.file, launch.args, {
        cwd: launch.cwd === "" ? undefined : launch.cwd,
        env: launch.env,
        ...(launch.argv0 !== undefined ? { argv0: launch.argv0 } : {}),
        // Its own session and process group, so that signals to -pid reach everything it starts.
        detached: true,
        stdio: ["pipe", "pipe", "pipe"],
      });
    } catch (e) {
      return this.finishWith(
        failedFinished(Code.INVALID_ARGUMENT, `cannot start "${launch.file}": ${(e as Error).message}`),
      );
    }
    this.child = child;
    child.on("error", (e) => this.onProcessError(e));
    if (child.pid === undefined) return; // spawning failed: 'error' follows with the reason
    this.pid = child.pid;
    this.move("running");
    confined.started(this.pid);
    this.ctx.started(this.pid);
    this.end.watchLimits(confined);

    const chunking = {
      maxChunkBytes: Math.min(this.opts.maxChunkBytes, this.ctx.maxChunkBytes ?? Infinity),
      idleFlushMs: this.opts.idleFlushMs,
    };
    this.pipes.pipeChild(child, chunking, (failure) => {
      if (failure) this.ctx.logger.debug({ err: failure, taskId: this.ctx.taskId }, "shell task pipe error");
      this.maybeFinish();
    });
    child.on("exit", (code, signal) => this.onExit(code, signal));

    const stdin = child.stdin!;
    stdin.on("error", (e: NodeJS.ErrnoException) => {
      // EPIPE: the process exited or closed stdin without reading all of it; that is its business.
      if (e.code !== "EPIPE")
        this.ctx.logger.debug({ err: e, taskId: this.ctx.taskId }, "shell task stdin error");
    });
    if (this.spec.stdin.length > 0) stdin.end(this.spec.stdin);
    else stdin.end();
  }

  private onProcessError(e: NodeJS.ErrnoException): void {
    if (this.machine.state === "spawning") {
      this.finishWith(spawnFailure(e, this.program, this.spec, this.opts.agentId));
      return;
    }
    this.ctx.logger.warn({ err: e, taskId: this.ctx.taskId, pid: this.pid }, "shell task process error");
  }

  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (!this.end.exited(code, signal)) return;
    this.exitedAt = Date.now();
    // Whatever the main process left behind in its group goes too: a background job would otherwise
    // keep stdout open and the task would never end.
    this.killGroup("SIGKILL");
    this.watchLingeringPipes();
    this.maybeFinish();
  }

  private terminate(): void {
    const stop = this.stopRequest!;
    const graceMs =
      stop.graceMs ?? (this.spec.killGraceMs > 0 ? this.spec.killGraceMs : this.opts.killGraceMs);
    this.end.terminate(graceMs, "SIGTERM");
  }

  /** The task's process group, and every process its confinement knows of (setsid and double forks too). */
  private killGroup(signal: NodeJS.Signals): void {
    signalTaskGroup(this.pid, signal, this.ctx);
    this.confined?.signalAll(signal);
  }

  /** A process that left the group (setsid) may still hold the pipes after the main process exited. */
  private watchLingeringPipes(): void {
    const lingerMs = this.opts.pipeLingerMs ?? DEFAULT_PIPE_LINGER_MS;
    this.pipes.watchLinger(this.machine, {
      exitedAt: this.exitedAt,
      lingerMs,
      stopping: () => this.stopRequest !== undefined,
      gaveUp: () =>
        this.ctx.logger.warn(
          { taskId: this.ctx.taskId, pid: this.pid, lingerMs },
          "shell task's pipes stayed open after it exited (a process outside its group holds them); no longer waiting",
        ),
    });
  }

  private maybeFinish(): void {
    if (this.machine.state === "exited" && this.pipes.open === 0) this.finish();
  }

  private finish(): void {
    if (!this.move("done")) return;
    void this.end.finished(this.confined).then(this.resolveDone);
  }

  /** Ends the task with a Finished decided before any process ran (or when it failed to spawn). */
  private finishWith(f: Finished): void {
    if (!this.move("done")) return;
    // The child's own streams: a spawn that failed never had its pipes wired.
    this.child?.stdin?.destroy();
    this.child?.stdout?.destroy();
    this.child?.stderr?.destroy();
    void this.end.finished(this.confined, f).then(this.resolveDone);
  }

  private move(next: ProcessState): boolean {
    return this.machine.move(next);
  }
}

function spawnFailure(e: NodeJS.ErrnoException, program: string, spec: ShellSpec, agentId: string): Finished {
  if (e.code === "ENOENT") {
    return spec.script !== ""
      ? failedFinished(
          Code.FAILED_PRECONDITION,
          `cannot run the script: bash was not found on agent ${agentId}'s PATH`,
        )
      : failedFinished(
          Code.INVALID_ARGUMENT,
          `executable "${program}" was not found on agent ${agentId}'s PATH`,
        );
  }
  if (e.code === "EACCES") {
    return failedFinished(
      Code.FAILED_PRECONDITION,
      `cannot execute "${program}" on agent ${agentId}: permission denied`,
    );
  }
  return failedFinished(Code.INTERNAL, `cannot start "${program}" on agent ${agentId}: ${e.message}`);
}
