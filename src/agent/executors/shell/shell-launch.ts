// The command line a shell task is spawned with: the confinement's prefix (join the cgroup, set
// rlimits), then setpriv to become the task's user, then the program. Each step execs the next, so
// the pid the agent holds is the program's from start to end.
import { stat } from "node:fs/promises";
import type { TaskConfinement } from "./confinement.js";
import type { ShellPlan } from "./shell-policy.js";
import { switchUserArgv } from "./user-identity.js";

export interface ShellLaunch {
  /** Absolute path of what to spawn. */
  file: string;
  args: string[];
  /** argv[0] for the program when it is spawned directly (no prefix); undefined otherwise. */
  argv0: string | undefined;
  /** The whole environment, the confinement's marker included. Holds secrets: never log it. */
  env: NodeJS.ProcessEnv;
  /** Empty: the agent's working directory. */
  cwd: string;
}

export function shellLaunch(plan: ShellPlan, confined: TaskConfinement, setpriv: string): ShellLaunch {
  const prefix = [...confined.launchPrefix, ...(plan.identity ? switchUserArgv(setpriv, plan.identity) : [])];
  const env = { ...plan.env, ...confined.env };
  if (prefix.length === 0) return { file: plan.file, args: plan.args, argv0: plan.argv0, env, cwd: plan.cwd };
  return {
    file: prefix[0]!,
    args: [...prefix.slice(1), plan.file, ...plan.args],
    argv0: undefined,
    env,
    cwd: plan.cwd,
  };
}

/** Why a task's cwd cannot be used, or undefined when it can. */
export async function cwdProblem(cwd: string, agentId: string): Promise<string | undefined> {
  try {
    const st = await stat(cwd);
    return st.isDirectory() ? undefined : `cwd "${cwd}" is not a directory on agent ${agentId}`;
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return `cwd "${cwd}" does not exist on agent ${agentId}`;
    if (code === "EACCES") return `cwd "${cwd}" is not accessible on agent ${agentId}: permission denied`;
    return `cwd "${cwd}" cannot be used on agent ${agentId}: ${(e as Error).message}`;
  }
}
