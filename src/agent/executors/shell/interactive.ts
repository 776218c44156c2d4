// Shell tasks that take input while they run: a terminal (ShellSpec.tty, a pseudo-terminal; only on an
// agent whose [shell] pty is on) or a plain process whose stdin stays open (ShellSpec.stdin_stream).
// ShellExecutor hands them here: admitInteractive() says no up front, startInteractive() runs them with
// the shell policy's plan (program, environment, user) and the task's confinement (limits, tracking).
import { resolve } from "node:path";
import { Code } from "../../../common/errors.js";
import type { Finished, ShellSpec, TaskError } from "../../../gen/switchboard/v1/task.js";
import type { Confinement, TaskConfinement } from "./confinement.js";
import { failedFinished, type Execution, type ExecutionContext } from "../executor.js";
import { shellLaunch } from "./shell-launch.js";
import { isRefusal, resolveExecutable, type ShellPlan } from "./shell-policy.js";
import { MAX_TERMINAL_SIDE, PtyRun, SESSION_TERM } from "./pty-run.js";
import { StdinStreamRun } from "./stdin-stream-run.js";
import type { InteractiveLaunch, InteractiveOptions } from "./interactive-run.js";

export type { InteractiveLaunch, InteractiveOptions };

/** What ShellExecutor worked out for the task: the policy's plan, and how its processes are held. */
export interface ShellPlanning {
  plan: ShellPlan | TaskError;
  confinement: Confinement;
  /** setpriv's path, for a task that runs as another user. */
  setpriv: string;
}

export function takesInput(s: ShellSpec): boolean {
  return s.tty || s.stdinStream;
}

/** A refusal for what no interactive run could do on this agent, or undefined. */
export function admitInteractive(
  s: ShellSpec,
  opts: Pick<InteractiveOptions, "agentId" | "pty">,
): TaskError | undefined {
  if (s.tty && !opts.pty) {
    return {
      code: Code.PERMISSION_DENIED,
      message: `interactive sessions are off on agent ${opts.agentId}: set [shell] pty = true in its config`,
    };
  }
  if (!s.tty && (s.cols > 0 || s.rows > 0))
    return { code: Code.INVALID_ARGUMENT, message: "cols and rows are for a terminal: set tty too" };
  if (s.cols > MAX_TERMINAL_SIDE || s.rows > MAX_TERMINAL_SIDE)
    return {
      code: Code.INVALID_ARGUMENT,
      message: `a terminal is at most ${MAX_TERMINAL_SIDE} columns and rows, got ${s.cols}x${s.rows}`,
    };
  return undefined;
}

/**
 * Runs a spec that takesInput(): in a pseudo-terminal when it asks for tty, else with piped stdio. With
 * the executor's planning it runs as the plan says, confined; without, see launchFromSpec.
 */
export function startInteractive(
  spec: ShellSpec,
  ctx: ExecutionContext,
  opts: InteractiveOptions,
  planning?: ShellPlanning,
): Execution {
  const launch = planning ? confinedLaunch(planning, ctx.taskId, opts.agentId) : launchFromSpec(spec, opts);
  if ("code" in launch) return finishedAlready(failedFinished(launch.code, launch.message));
  if (spec.tty && spec.env.TERM === undefined) launch.env = { ...launch.env, TERM: SESSION_TERM };
  const run = spec.tty ? new PtyRun(spec, launch, ctx, opts) : new StdinStreamRun(spec, launch, ctx, opts);
  void run.begin();
  return run;
}

/** The plan, behind the confinement's prefix and setpriv, as ShellRun launches it. */
function confinedLaunch(p: ShellPlanning, taskId: string, agentId: string): InteractiveLaunch | TaskError {
  if (isRefusal(p.plan)) return p.plan;
  let confined: TaskConfinement;
  try {
    confined = p.confinement.confine(taskId, p.plan.limits);
  } catch (e) {
    return {
      code: Code.INTERNAL,
      message: `agent ${agentId} cannot confine the task (${p.confinement.method}): ${(e as Error).message}`,
    };
  }
  const l = shellLaunch(p.plan, confined, p.setpriv);
  return { file: l.file, args: l.args, env: l.env, cwd: l.cwd, confined };
}

/**
 * Without the executor's planning (tests, embedding): the spec's own argv or script as the agent's
 * user with the agent's environment; a spec that asks for a user, limits or secrets is refused.
 */
export function launchFromSpec(s: ShellSpec, opts: InteractiveOptions): InteractiveLaunch | TaskError {
  const asks: string[] = [];
  if (s.user !== "" || s.group !== "") asks.push("a user or group");
  if (s.limits && (s.limits.cpus > 0 || s.limits.memoryMb > 0 || s.limits.maxProcs > 0)) asks.push("limits");
  if (s.secrets.length > 0) asks.push("secrets");
  if (asks.length > 0) {
    // Never run a session as the agent's own user when the client asked for someone else.
    return {
      code: Code.FAILED_PRECONDITION,
      message: `agent ${opts.agentId} cannot apply ${asks.join(", ")} to interactive tasks; send the task without them`,
    };
  }
  const env: NodeJS.ProcessEnv = { ...(opts.baseEnv ?? agentEnvForTasks()), ...s.env };
  const [name, args] = s.script !== "" ? ["bash", ["-c", s.script]] : [s.argv[0]!, s.argv.slice(1)];
  // Searched here so that a missing program is a clear refusal: a pseudo-terminal's child could only
  // print execvp's error into the terminal and exit 1.
  const found = resolveExecutable(name, env.PATH, resolve(s.cwd));
  if ("problem" in found) {
    if (found.problem === "not-executable")
      return {
        code: Code.FAILED_PRECONDITION,
        message: `cannot execute "${name}" on agent ${opts.agentId}: permission denied`,
      };
    return s.script !== ""
      ? {
          code: Code.FAILED_PRECONDITION,
          message: `cannot run the script: bash was not found on agent ${opts.agentId}'s PATH`,
        }
      : {
          code: Code.INVALID_ARGUMENT,
          message: `executable "${name}" was not found on agent ${opts.agentId}'s PATH`,
        };
  }
  return { file: found.path, args, env, cwd: s.cwd };
}

/** The agent's environment minus what a task has no business reading. */
function agentEnvForTasks(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.SWITCHBOARD_TOKEN;
  return env;
}

/** An execution that ended before it began (a refusal found at start). */
function finishedAlready(f: Finished): Execution {
  return { stop: () => undefined, done: Promise.resolve(f) };
}
