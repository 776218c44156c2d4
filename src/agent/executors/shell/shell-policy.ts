// Shell command policy: which programs, arguments, scripts, environment keys, secrets, users and
// limits a shell task may ask for on this agent. planShellTask() checks a spec against it before
// anything runs and turns it into a ShellPlan (the resolved program, the child's environment, the
// identity and limits to run with); a refusal is a TaskError whose sentence names the rule.
import { accessSync, constants, realpathSync, statSync } from "node:fs";
import { basename, delimiter, isAbsolute, resolve } from "node:path";
import { Code } from "../../../common/errors.js";
import type { ShellSpec, TaskError } from "../../../gen/switchboard/v1/task.js";
import { resolveIdentity, type IdentityRefusal, type UserIdentity } from "./user-identity.js";

/** How an agent holds tasks to their limits (and tracks their processes); see confinement.ts. */
export type LimitsMethod = "cgroup-v1" | "cgroup-v2" | "rlimit" | "off";

/** The `[shell]` rules, as configured (see config.ts); empty lists allow everything they govern. */
export interface ShellPolicy {
  /** Globs on the resolved executable path; empty: any program. */
  allow: string[];
  /** Globs on the resolved executable path; deny wins over allow. */
  deny: string[];
  /** Regular expressions on the argv joined with spaces (a script: `bash -c SCRIPT`). */
  denyArgs: string[];
  /** false: `bash -c` scripts are refused. */
  allowScripts: boolean;
  /** Globs on the names of environment variables a task may set. */
  envAllow: string[];
  /** Globs on the names of the agent's own variables a task may ask for as secrets. */
  secretsAllow: string[];
  /** Users tasks may run as; empty: tasks run as the agent's user. */
  users: string[];
  /** The most a task may ask for. */
  maxCpus: number;
  maxMemoryMb: number;
  maxProcs: number;
  /** Applied when a task asks for none; 0: no limit. */
  defaultMemoryMb: number;
  defaultMaxProcs: number;
}

/** Everything allowed, nothing limited: what a ShellExecutor without a policy enforces. */
export const OPEN_SHELL_POLICY: ShellPolicy = {
  allow: [],
  deny: [],
  denyArgs: [],
  allowScripts: true,
  envAllow: ["*"],
  secretsAllow: [],
  users: [],
  maxCpus: Number.POSITIVE_INFINITY,
  maxMemoryMb: Number.POSITIVE_INFINITY,
  maxProcs: Number.POSITIVE_INFINITY,
  defaultMemoryMb: 0,
  defaultMaxProcs: 0,
};

/** A task's limits in force; 0: none. */
export interface TaskLimits {
  cpus: number;
  memoryMb: number;
  maxProcs: number;
}

export const NO_LIMITS: TaskLimits = { cpus: 0, memoryMb: 0, maxProcs: 0 };

/** What a shell task will run, once the policy admitted it. Holds secret values: never log it. */
export interface ShellPlan {
  /** Absolute path of the program (bash for a script). */
  file: string;
  args: string[];
  /** argv[0] as the task gave it. */
  argv0: string;
  /** The child's whole environment: the agent's base, the task's env, secrets, the user's HOME etc. */
  env: NodeJS.ProcessEnv;
  /** Empty: the agent's own working directory (or the user's home when switching user). */
  cwd: string;
  identity?: UserIdentity;
  limits: TaskLimits;
}

/** What the plan depends on besides the spec and the policy. */
export interface PlanContext {
  agentId: string;
  policy: CompiledShellPolicy;
  /** The environment tasks start from (the agent's, minus its token and secrets). */
  baseEnv: NodeJS.ProcessEnv;
  /** The agent's own environment, where secrets are read from. */
  agentEnv: NodeJS.ProcessEnv;
  method: LimitsMethod;
  /** The agent's effective uid (switching users needs 0). */
  uid: number;
  /** setpriv's path, or undefined when it is not installed. */
  setpriv: string | undefined;
  /** Default: resolveIdentity (the passwd and group databases). */
  lookupIdentity?: (user: string, group: string) => UserIdentity | IdentityRefusal;
}

/** A ShellPolicy with its globs and patterns compiled once. */
export interface CompiledShellPolicy {
  readonly source: ShellPolicy;
  readonly allow: RegExp[];
  readonly deny: RegExp[];
  readonly denyArgs: RegExp[];
  readonly envAllow: RegExp[];
  readonly secretsAllow: RegExp[];
}

export function compileShellPolicy(p: ShellPolicy): CompiledShellPolicy {
  return {
    source: p,
    allow: p.allow.map(globToRegExp),
    deny: p.deny.map(globToRegExp),
    denyArgs: p.denyArgs.map((r) => new RegExp(r)),
    envAllow: p.envAllow.map(globToRegExp),
    secretsAllow: p.secretsAllow.map(globToRegExp),
  };
}

/**
 * A glob as a whole-string RegExp: `*` is any run of characters but `/`, `**` any run including `/`,
 * `?` one character but `/`; everything else is literal (no classes or braces: rules should read plainly).
 */
export function globToRegExp(glob: string): RegExp {
  let out = "^";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!;
    if (c === "*") {
      if (glob[i + 1] === "*") {
        out += ".*";
        i += 1;
      } else {
        out += "[^/]*";
      }
    } else if (c === "?") {
      out += "[^/]";
    } else {
      out += c.replace(/[.+^${}()|[\]\\]/g, "\\$&");
    }
  }
  return new RegExp(`${out}$`, "s");
}

function firstMatch(patterns: readonly RegExp[], sources: readonly string[], ...texts: string[]) {
  for (let i = 0; i < patterns.length; i++) {
    if (texts.some((t) => patterns[i]!.test(t))) return sources[i]!;
  }
  return undefined;
}

/** The rule as it reads in the config file, for a refusal's sentence. */
function rule(key: string, value: readonly string[] | string): string {
  return `[shell] ${key} = ${JSON.stringify(value)}`;
}

type Found = { path: string } | { problem: "not-found" | "not-executable" };

/** execvp's search: a name with a slash is taken as it is (against cwd), else each PATH entry in turn. */
export function resolveExecutable(name: string, pathVar: string | undefined, cwd: string): Found {
  const candidates = name.includes("/")
    ? [resolve(cwd, name)]
    : (pathVar ?? "/usr/local/bin:/usr/bin:/bin")
        .split(delimiter)
        .map((dir) => resolve(cwd, dir === "" ? "." : dir, name));
  let sawFile = false;
  for (const c of candidates) {
    try {
      if (!statSync(c).isFile()) continue;
      sawFile = true;
      accessSync(c, constants.X_OK);
      return { path: c };
    } catch {
      // absent, or not executable: the next candidate
    }
  }
  return { problem: sawFile ? "not-executable" : "not-found" };
}

/**
 * Checks a shell spec against the policy and works out what to run, or says which rule refuses it.
 * Synchronous (admit() is): it reads the filesystem and the user databases, nothing slow.
 */
export function planShellTask(spec: ShellSpec, ctx: PlanContext): ShellPlan | TaskError {
  const { policy, agentId } = ctx;
  const p = policy.source;
  const denied = (message: string): TaskError => ({ code: Code.PERMISSION_DENIED, message });
  const invalid = (message: string): TaskError => ({ code: Code.INVALID_ARGUMENT, message });
  const unable = (message: string): TaskError => ({ code: Code.FAILED_PRECONDITION, message });
  const isScript = spec.script !== "";

  if (isScript && !p.allowScripts) {
    return denied(
      `scripts (bash -c) are not allowed on agent ${agentId}: [shell] allow_scripts = false; send argv instead`,
    );
  }

  // The environment: keys the task sets must be allowed; secrets come from the agent's own env.
  for (const key of Object.keys(spec.env)) {
    if (!policy.envAllow.some((r) => r.test(key))) {
      return denied(
        `environment variable ${JSON.stringify(key)} may not be set by tasks on agent ${agentId}: not in ${rule("env_allow", p.envAllow)}`,
      );
    }
  }
  const secrets: Record<string, string> = {};
  for (const name of spec.secrets) {
    if (name === "" || name.includes("=") || name.includes("\0"))
      return invalid(`invalid secret name ${JSON.stringify(name)}`);
    if (!policy.secretsAllow.some((r) => r.test(name))) {
      return denied(
        `secret ${JSON.stringify(name)} is not allowed on agent ${agentId}: not in ${rule("secrets_allow", p.secretsAllow)}`,
      );
    }
    const value = ctx.agentEnv[name];
    if (value === undefined) {
      return invalid(
        `unknown secret ${JSON.stringify(name)}: agent ${agentId} has no such environment variable`,
      );
    }
    if (name in spec.env) {
      return invalid(`${JSON.stringify(name)} is both in env and in secrets; give it once`);
    }
    secrets[name] = value;
  }

  // Who runs it.
  let identity: UserIdentity | undefined;
  if (spec.group !== "" && spec.user === "")
    return invalid("group needs user: name the user to run as, and the group among theirs");
  if (spec.user !== "") {
    if (p.users.length === 0) {
      return denied(
        `tasks may not run as another user on agent ${agentId}: [shell] users is empty (asked for ${JSON.stringify(spec.user)})`,
      );
    }
    if (!p.users.includes(spec.user)) {
      return denied(
        `user ${JSON.stringify(spec.user)} is not allowed on agent ${agentId}: not in ${rule("users", p.users)}`,
      );
    }
    const found = (ctx.lookupIdentity ?? resolveIdentity)(spec.user, spec.group);
    if ("refusal" in found) {
      const message = `${found.message} on agent ${agentId}`;
      return found.refusal === "unknown" ? invalid(message) : denied(message);
    }
    if (found.uid !== ctx.uid) {
      if (ctx.uid !== 0) {
        return unable(
          `agent ${agentId} runs as uid ${ctx.uid}, not root: it cannot run tasks as ${JSON.stringify(spec.user)}`,
        );
      }
      if (ctx.setpriv === undefined) {
        return unable(
          `running as another user needs setpriv (util-linux), which agent ${agentId} does not have`,
        );
      }
    }
    identity = found;
  }

  // Limits: within the caps, and enforceable by this agent's method.
  const asked = spec.limits ?? { cpus: 0, memoryMb: 0, maxProcs: 0 };
  if (!Number.isFinite(asked.cpus) || asked.cpus < 0)
    return invalid(`limits.cpus must be a positive number of cores, got ${asked.cpus}`);
  if (asked.cpus > 0 && asked.cpus < 0.01)
    return invalid(`limits.cpus must be at least 0.01, got ${asked.cpus}`);
  const over = (what: string, value: number, cap: number, key: string): TaskError =>
    invalid(`limits.${what} = ${value} is above agent ${agentId}'s cap of ${cap} ([shell] ${key})`);
  if (asked.cpus > p.maxCpus) return over("cpus", asked.cpus, p.maxCpus, "max_cpus");
  if (asked.memoryMb > p.maxMemoryMb)
    return over("memory_mb", asked.memoryMb, p.maxMemoryMb, "max_memory_mb");
  if (asked.maxProcs > p.maxProcs) return over("max_procs", asked.maxProcs, p.maxProcs, "max_procs");
  const limits: TaskLimits = {
    cpus: asked.cpus,
    memoryMb: asked.memoryMb || p.defaultMemoryMb,
    maxProcs: asked.maxProcs || p.defaultMaxProcs,
  };
  const askedAny = asked.cpus > 0 || asked.memoryMb > 0 || asked.maxProcs > 0;
  if (askedAny && ctx.method === "off") {
    return unable(
      `agent ${agentId} does not enforce limits ([shell] limits = "off"): send the task without limits`,
    );
  }
  if (asked.cpus > 0 && ctx.method === "rlimit") {
    return unable(
      `agent ${agentId} cannot limit CPU: it has no usable cgroups (its limits method is rlimit); send the task without limits.cpus`,
    );
  }

  // The program: resolved on the task's PATH, then held to allow, deny and deny_args.
  const childEnv: NodeJS.ProcessEnv = { ...ctx.baseEnv, ...spec.env };
  // Another user starts in their home (or / when it does not exist), as a login would.
  const cwd = spec.cwd !== "" ? spec.cwd : identity ? (isDirectory(identity.home) ? identity.home : "/") : "";
  const cwdForLookup = cwd !== "" ? cwd : process.cwd();
  const name = isScript ? "bash" : spec.argv[0]!;
  const found = resolveExecutable(
    name,
    childEnv.PATH,
    isAbsolute(cwdForLookup) ? cwdForLookup : resolve(cwdForLookup),
  );
  if ("problem" in found) {
    if (isScript) return unable(`cannot run the script: bash was not found on agent ${agentId}'s PATH`);
    return found.problem === "not-found"
      ? invalid(`executable "${name}" was not found on agent ${agentId}'s PATH`)
      : unable(`cannot execute "${name}" on agent ${agentId}: permission denied`);
  }
  let real = found.path;
  try {
    real = realpathSync(found.path);
  } catch {
    // raced away: the spawn will say so
  }
  const denyRule = firstMatch(policy.deny, p.deny, found.path, real);
  if (denyRule !== undefined) {
    return denied(`${found.path} is denied on agent ${agentId} by the rule "${denyRule}" in [shell] deny`);
  }
  const argv = isScript ? ["bash", "-c", spec.script] : spec.argv;
  if (policy.allow.length > 0) {
    if (firstMatch(policy.allow, p.allow, found.path, real) === undefined) {
      return denied(
        `${found.path} is not allowed on agent ${agentId}: it matches nothing in ${rule("allow", p.allow)}`,
      );
    }
    // A launcher passes an allow list only by an entry naming it: a pattern such as /usr/bin/* was
    // written for the tools in a directory, not for env or sh, which would run every other program.
    const launcher = launcherOf(found.path, real, argv.slice(1));
    if (launcher !== undefined && !allowsExplicitly(p.allow, found.path, real)) {
      const program = real === found.path ? found.path : `${found.path} (${real})`;
      const refused = isScript
        ? `scripts (bash -c) are not allowed on agent ${agentId}: they run ${program}, which ${launcher.why}`
        : `${program}${launcher.asRun} is not allowed on agent ${agentId}: it ${launcher.why}`;
      return denied(
        `${refused}, and ${rule("allow", p.allow)} admits such a program only by an entry naming it exactly ("${found.path}"), not by a pattern`,
      );
    }
  }
  const joined = argv.join(" ");
  const argsRule = firstMatch(policy.denyArgs, p.denyArgs, joined);
  if (argsRule !== undefined) {
    return denied(
      `the command line is denied on agent ${agentId} by the pattern /${argsRule}/ in [shell] deny_args`,
    );
  }

  const env: NodeJS.ProcessEnv = { ...childEnv, ...secrets };
  if (identity) {
    env.HOME = identity.home;
    env.USER = identity.name;
    env.LOGNAME = identity.name;
    if (identity.shell !== "") env.SHELL = identity.shell;
  }
  return {
    file: found.path,
    args: argv.slice(1),
    argv0: argv[0]!,
    env,
    cwd,
    ...(identity ? { identity } : {}),
    limits,
  };
}

/**
 * Programs whose job is to run another program named in their arguments. Matched on the name of
 * the resolved path and of the file it links to (so /usr/bin/sh -> dash, or a link named `ls` to
 * busybox, is caught); a renamed copy cannot be recognised by name, which is why `allow` (exact
 * paths of programs the operator trusts) is the boundary and this check a second line.
 */
const LAUNCHERS = new Set([
  "env",
  "xargs",
  "nice",
  "nohup",
  "timeout",
  "setsid",
  "stdbuf",
  "sudo",
  "su",
  "doas",
  "runuser",
  "setpriv",
  "pkexec",
  "sg",
  "newgrp",
  "chroot",
  "unshare",
  "nsenter",
  "ionice",
  "taskset",
  "chrt",
  "prlimit",
  "flock",
  "watch",
  "time",
  "script",
  "strace",
  "ltrace",
  "gdb",
  "valgrind",
  "systemd-run",
  "parallel",
  "expect",
]);

/** Multi-call binaries: one file that is sh, env, xargs and every other applet (its name picks one). */
const MULTI_CALL = new Set(["busybox", "toybox"]);

const SHELL =
  /^(sh|ash|bash|rbash|dash|zsh|ksh|ksh93|mksh|pdksh|oksh|yash|posh|csh|tcsh|fish|elvish|nu|xonsh|pwsh)$/;

/**
 * Interpreters run a program given as text in their arguments or input, and every language among
 * them can start processes. awk is one: `awk 'BEGIN { system("rm -rf x") }'` runs /bin/sh -c, and
 * so is dc (`!`); names may carry a version (python3.11, perl5.36.0, lua5.4).
 */
const INTERPRETER =
  /^(python|pypy|perl|ruby|irb|php|lua|luajit|tclsh|wish|node|nodejs|deno|bun|Rscript|R|julia|guile|java|jshell|awk|gawk|mawk|nawk|dc)([0-9][0-9.]*)?$/;

/** The dynamic loader runs any program given to it: `ld-linux-x86-64.so.2 /usr/bin/rm x`. */
const LOADER = /^ld(-[A-Za-z0-9_.-]+)?\.so(\.[0-9]+)*$/;

/** find's primaries that run programs (or delete or overwrite files, rm's and a redirect's job). */
const FIND_ACTIONS = new Set([
  "-exec",
  "-execdir",
  "-ok",
  "-okdir",
  "-delete",
  "-fprint",
  "-fprint0",
  "-fprintf",
  "-fls",
]);

interface Launcher {
  /** Added to the program's path in the refusal ("" or " with -delete"). */
  asRun: string;
  /** Why it counts, for the refusal: a clause after "it" ("runs other programs (env)"). */
  why: string;
}

/** Whether the program runs other programs (find: with these arguments), and why. */
export function launcherOf(path: string, real: string, args: readonly string[]): Launcher | undefined {
  const names = [...new Set([basename(path), basename(real)])];
  for (const name of names) {
    if (MULTI_CALL.has(name)) {
      return {
        asRun: "",
        why: `runs other programs (${name} is a multi-call binary: sh, env, xargs and more)`,
      };
    }
    if (LAUNCHERS.has(name)) return { asRun: "", why: `runs other programs (${name})` };
    if (SHELL.test(name)) return { asRun: "", why: `runs other programs (${name} is a shell)` };
    if (INTERPRETER.test(name)) return { asRun: "", why: `runs other programs (${name} is an interpreter)` };
    if (LOADER.test(name)) return { asRun: "", why: `runs other programs (${name} is the dynamic loader)` };
  }
  if (names.includes("find")) {
    const action = args.find((a) => FIND_ACTIONS.has(a));
    if (action !== undefined) {
      return {
        asRun: ` with ${action}`,
        why: "runs other programs or deletes and writes files (find with -exec, -execdir, -ok, -okdir, -delete, -fprint* or -fls)",
      };
    }
  }
  return undefined;
}

/**
 * An explicit allow entry names the program itself: it has no wildcard (`*`, `?`) and equals the
 * resolved path or the path it links to. `/usr/bin/env` is explicit; `/usr/bin/*` and any `**` glob are not.
 */
export function allowsExplicitly(allow: readonly string[], path: string, real: string): boolean {
  return allow.some((entry) => !/[*?]/.test(entry) && (entry === path || entry === real));
}

function isDirectory(path: string): boolean {
  try {
    return statSync(path).isDirectory();
  } catch {
    return false;
  }
}

export function isRefusal(x: ShellPlan | TaskError): x is TaskError {
  return "code" in x;
}
