// How a shell task is held: its processes tracked (so cancel, timeout and shutdown leave none behind)
// and its limits enforced. With cgroups (v1 or v2) the kernel does both: the task joins its group
// before its program runs, and memory, CPU and process count are the group's. Without them, the
// processes are found by a marker in their environment (process-scan.ts), memory is capped per
// process with rlimits (prlimit) and the tree's RSS and process count are watched.
import type { Logger } from "../../../common/logger.js";
import { CgroupHost, CgroupUnavailable, type TaskCgroup } from "./cgroups.js";
import { TASK_MARKER, taskProcesses } from "./process-scan.js";
import { NO_LIMITS, resolveExecutable, type LimitsMethod, type TaskLimits } from "./shell-policy.js";

/** `[shell] limits`: what the agent should use; "auto": cgroups when usable, else rlimit. */
export type LimitsMode = "auto" | "cgroup" | "rlimit" | "off";

/** One task's hold on its processes, from before its spawn until release(). */
export interface TaskConfinement {
  /** argv to put before the program (joins the cgroup, sets rlimits); empty: none. */
  readonly launchPrefix: string[];
  /** Variables the task's processes carry (the marker). */
  readonly env: Record<string, string>;
  /** How often watch() wants to run while the task runs; undefined: never. */
  readonly watchIntervalMs: number | undefined;
  /** The main process is running (its pid). */
  started(pid: number): void;
  /** Signals every process of the task still alive; how many. */
  signalAll(signal: NodeJS.Signals): number;
  /** While running: a limit the task went past, as the sentence for Finished.reason; undefined: none. */
  watch(): string | undefined;
  /**
   * Once the main process exited: kills what is left, releases the group, and says which limit ended the
   * task, if one did. Never rejects.
   */
  release(): Promise<{ limit?: string; leftBehind: number }>;
}

const KILL_WAIT_MS = 3000;

/** Puts the process in the task's cgroups, as root, before anything else runs: no fork escapes unseen. */
const JOIN_SCRIPT =
  'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || { echo "switchboard: cannot join cgroup $1" >&2; exit 126; }; shift; n=$((n-1)); done; exec "$@"';

export function memoryLimitReason(memoryMb: number): string {
  return `memory limit: the task went past its ${memoryMb} MiB (limits.memory_mb) and was killed`;
}

export function processLimitReason(maxProcs: number): string {
  return `process limit: the task tried to run more than ${maxProcs} processes (limits.max_procs) and was stopped`;
}

class CgroupConfinement implements TaskConfinement {
  readonly launchPrefix: string[];
  readonly env: Record<string, string>;
  readonly watchIntervalMs: number | undefined;

  constructor(
    private readonly group: TaskCgroup,
    private readonly limits: TaskLimits,
    taskId: string,
  ) {
    const files = group.procsFiles;
    this.launchPrefix = ["/bin/sh", "-c", JOIN_SCRIPT, "switchboard-join", String(files.length), ...files];
    this.env = { [TASK_MARKER]: taskId };
    this.watchIntervalMs = limits.memoryMb > 0 || limits.maxProcs > 0 ? 250 : undefined;
  }

  started(): void {}

  signalAll(signal: NodeJS.Signals): number {
    return this.group.signal(signal);
  }

  watch(): string | undefined {
    const c = this.group.counters();
    if (this.limits.memoryMb > 0 && c.oomKills > 0) return memoryLimitReason(this.limits.memoryMb);
    if (this.limits.maxProcs > 0 && c.procsRefused > 0) return processLimitReason(this.limits.maxProcs);
    return undefined;
  }

  async release(): Promise<{ limit?: string; leftBehind: number }> {
    const left = this.group.pids().length;
    const stuck = await this.group.killAll(KILL_WAIT_MS);
    const limit = this.watch();
    if (stuck.length === 0) await this.group.remove();
    return { ...(limit !== undefined ? { limit } : {}), leftBehind: left };
  }
}

class ScanConfinement implements TaskConfinement {
  readonly launchPrefix: string[];
  readonly env: Record<string, string>;
  readonly watchIntervalMs: number | undefined;
  private leader = 0;

  constructor(
    private readonly taskId: string,
    private readonly limits: TaskLimits,
    prlimit: string | undefined,
  ) {
    // Each process alone stays under the memory limit (the kernel refuses it more); the tree's
    // total is watched below.
    const bytes = limits.memoryMb * 1024 * 1024;
    this.launchPrefix =
      limits.memoryMb > 0 && prlimit !== undefined ? [prlimit, `--data=${bytes}:${bytes}`, "--"] : [];
    this.env = { [TASK_MARKER]: taskId };
    this.watchIntervalMs = limits.memoryMb > 0 || limits.maxProcs > 0 ? 500 : undefined;
  }

  started(pid: number): void {
    this.leader = pid;
  }

  signalAll(signal: NodeJS.Signals): number {
    let n = 0;
    for (const p of taskProcesses(this.taskId, this.leader)) {
      try {
        process.kill(p.pid, signal);
        n += 1;
      } catch {
        // gone meanwhile
      }
    }
    return n;
  }

  watch(): string | undefined {
    const procs = taskProcesses(this.taskId, this.leader);
    const rss = procs.reduce((sum, p) => sum + p.rssBytes, 0);
    if (this.limits.memoryMb > 0 && rss > this.limits.memoryMb * 1024 * 1024) {
      return memoryLimitReason(this.limits.memoryMb);
    }
    const tasks = procs.reduce((sum, p) => sum + p.threads, 0);
    if (this.limits.maxProcs > 0 && tasks > this.limits.maxProcs)
      return processLimitReason(this.limits.maxProcs);
    return undefined;
  }

  async release(): Promise<{ limit?: string; leftBehind: number }> {
    const deadline = Date.now() + KILL_WAIT_MS;
    let first = -1;
    for (;;) {
      const n = this.signalAll("SIGKILL");
      if (first < 0) first = n;
      if (n === 0 || Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    return { leftBehind: first };
  }
}

/** The agent's way of confining tasks, chosen once at start. */
export class Confinement {
  private constructor(
    readonly method: LimitsMethod,
    /** Why this method (e.g. why cgroups were not usable), for the start-up log. */
    readonly note: string,
    private readonly cgroups: CgroupHost | undefined,
    private readonly prlimit: string | undefined,
  ) {}

  /**
   * Decides the method: "cgroup" must get cgroups (else throws saying why), "auto" falls back to rlimit,
   * "rlimit" and "off" never touch cgroups. Groups left by an earlier process of this agent are cleaned.
   */
  static async open(mode: LimitsMode, agentId: string, logger?: Logger): Promise<Confinement> {
    if (mode === "off") return new Confinement("off", '[shell] limits = "off"', undefined, undefined);
    const prlimit = findProgram("prlimit");
    if (mode === "cgroup" || mode === "auto") {
      try {
        const host = CgroupHost.open(agentId);
        const stale = await host.cleanStale();
        if (stale.groups > 0) {
          logger?.warn(
            stale,
            "removed the cgroups of tasks of an earlier run of this agent, with their processes",
          );
        }
        return new Confinement(
          host.version === 1 ? "cgroup-v1" : "cgroup-v2",
          host.agentDirs.join(", "),
          host,
          prlimit,
        );
      } catch (e) {
        if (!(e instanceof CgroupUnavailable)) throw e;
        if (mode === "cgroup") throw new Error(`[shell] limits = "cgroup", but ${e.message}`);
        return new Confinement(
          "rlimit",
          `cgroups not usable: ${e.message}${prlimit ? "" : "; prlimit not found: memory is only watched"}`,
          undefined,
          prlimit,
        );
      }
    }
    return new Confinement(
      "rlimit",
      prlimit ? '[shell] limits = "rlimit"' : "prlimit not found: memory is only watched",
      undefined,
      prlimit,
    );
  }

  /** Processes tracked by the scan, no limits: for executors made without an agent (tests, embedding). */
  static withoutLimits(): Confinement {
    return new Confinement("off", "no confinement configured", undefined, undefined);
  }

  /** Makes a task's confinement (its cgroups, with limits written). Throws when the group cannot be made. */
  confine(taskId: string, limits: TaskLimits): TaskConfinement {
    if (this.cgroups) return new CgroupConfinement(this.cgroups.create(taskId, limits), limits, taskId);
    return new ScanConfinement(taskId, this.method === "off" ? NO_LIMITS : limits, this.prlimit);
  }

  /** Removes the agent's cgroups; call once no task runs. */
  close(): void {
    this.cgroups?.close();
  }
}

/** A program's path on the agent's PATH (and the usual system directories), or undefined. */
export function findProgram(name: string): string | undefined {
  const path = [process.env.PATH, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    .filter(Boolean)
    .join(":");
  const found = resolveExecutable(name, path, "/");
  return "path" in found ? found.path : undefined;
}
