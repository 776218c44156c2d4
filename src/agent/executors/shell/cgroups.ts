// Control groups for shell tasks: one group per task (in the memory, cpu and pids hierarchies on
// cgroup v1, one directory on v2), under the agent's *own* cgroup, so that a task's processes are
// known to the kernel whatever they do (setsid, double fork) and held to its limits. The pure parts
// (parsing /proc, locating hierarchies, the files a limit writes) are exported for tests.
import { Code, SwitchboardError } from "../../../common/errors.js";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { processExists } from "./process-group.js";
import type { TaskLimits } from "./shell-policy.js";

export type Controller = "memory" | "cpu" | "pids";
export const CONTROLLERS: readonly Controller[] = ["memory", "cpu", "pids"];

export interface MountEntry {
  /** The path inside the hierarchy that is mounted (not "/" when a subtree is bind-mounted). */
  root: string;
  mountPoint: string;
  fsType: string;
  superOptions: string[];
}

/** /proc/self/mountinfo, see proc(5); octal escapes (\040 for a space) decoded. */
export function parseMountInfo(text: string): MountEntry[] {
  const unescape = (s: string): string =>
    s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const dash = line.indexOf(" - ");
    if (dash < 0) continue;
    const left = line.slice(0, dash).split(" ");
    const right = line.slice(dash + 3).split(" ");
    if (left.length < 5 || right.length < 3) continue;
    out.push({
      root: unescape(left[3]!),
      mountPoint: unescape(left[4]!),
      fsType: right[0]!,
      superOptions: right[2]!.split(","),
    });
  }
  return out;
}

export interface OwnCgroups {
  /** cgroup v1: controller name -> the process's path in that hierarchy. */
  v1: Map<string, string>;
  /** The unified (v2) hierarchy's path, when the process has one. */
  v2: string | undefined;
}

/** /proc/self/cgroup: "hierarchy-id:controller,controller:path" per line; "0::path" is v2. */
export function parseProcCgroup(text: string): OwnCgroups {
  const v1 = new Map<string, string>();
  let v2: string | undefined;
  for (const line of text.split("\n")) {
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    const controllers = line.slice(first + 1, second);
    const path = line.slice(second + 1);
    if (controllers === "") v2 = path;
    else for (const c of controllers.split(",")) v1.set(c, path);
  }
  return { v1, v2 };
}

/** Where the agent's own cgroups are: a directory per controller (v1) or one directory (v2). */
export type CgroupLocation = { version: 1; dirs: Record<Controller, string> } | { version: 2; dir: string };

/** A path inside a hierarchy as a directory under the mount that shows it, or undefined when it shows another subtree. */
function underMount(m: MountEntry, path: string): string | undefined {
  const root = m.root === "/" ? "" : m.root;
  if (root !== "" && path !== root && !path.startsWith(`${root}/`)) return undefined;
  const rel = path.slice(root.length).replace(/^\/+|\/+$/g, "");
  return rel === "" ? m.mountPoint : join(m.mountPoint, rel);
}

/**
 * The agent's own cgroup directories. cgroup v1 wins where the memory, cpu and pids controllers are
 * all mounted as v1 hierarchies (as on hybrid machines, whose v2 mount holds no controllers); else
 * the unified hierarchy, whose controllers the caller still has to check. A string says why neither.
 */
export function locateCgroups(mounts: readonly MountEntry[], own: OwnCgroups): CgroupLocation | string {
  const v1: Partial<Record<Controller, string>> = {};
  for (const c of CONTROLLERS) {
    const path = own.v1.get(c);
    if (path === undefined) continue;
    for (const m of mounts) {
      if (m.fsType !== "cgroup" || !m.superOptions.includes(c)) continue;
      const dir = underMount(m, path);
      if (dir !== undefined) {
        v1[c] = dir;
        break;
      }
    }
  }
  if (v1.memory && v1.cpu && v1.pids)
    return { version: 1, dirs: { memory: v1.memory, cpu: v1.cpu, pids: v1.pids } };
  if (own.v2 !== undefined) {
    for (const m of mounts) {
      if (m.fsType !== "cgroup2") continue;
      const dir = underMount(m, own.v2);
      if (dir !== undefined) return { version: 2, dir };
    }
  }
  const missing = CONTROLLERS.filter((c) => !v1[c]);
  return `no cgroup v2 hierarchy is mounted and cgroup v1 lacks the ${missing.join(", ")} controller${missing.length > 1 ? "s" : ""}`;
}

/** The directory, per hierarchy, that holds one agent process's task groups. */
export function agentGroupName(agentId: string, pid: number): string {
  return `switchboard-${agentId}-${pid}`;
}

/** The pid of the agent process that made a group of agentGroupName(agentId, pid), or undefined. */
export function agentGroupPid(agentId: string, name: string): number | undefined {
  const prefix = `switchboard-${agentId}-`;
  if (!name.startsWith(prefix)) return undefined;
  const rest = name.slice(prefix.length);
  return /^\d+$/.test(rest) ? Number(rest) : undefined;
}

const SAFE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;

/** A task's group directories: one per controller on v1 (memory, cpu, pids, in that order), one on v2. */
export function taskGroupDirs(loc: CgroupLocation, agentGroup: string, taskId: string): string[] {
  if (!SAFE_NAME.test(taskId)) throw new Error(`task id ${JSON.stringify(taskId)} cannot name a cgroup`);
  return loc.version === 1
    ? CONTROLLERS.map((c) => join(loc.dirs[c], agentGroup, taskId))
    : [join(loc.dir, agentGroup, taskId)];
}

export interface LimitWrite {
  controller: Controller;
  file: string;
  value: string;
  /** Written when the file exists (swap accounting, for one, may be off). */
  optional?: boolean;
}

export const CPU_PERIOD_US = 100_000;

/** The files a task's limits are written to, in order (v1 wants memory before memory+swap). */
export function limitWrites(version: 1 | 2, limits: TaskLimits): LimitWrite[] {
  const out: LimitWrite[] = [];
  if (limits.memoryMb > 0) {
    const bytes = String(limits.memoryMb * 1024 * 1024);
    if (version === 1) {
      out.push({ controller: "memory", file: "memory.limit_in_bytes", value: bytes });
      out.push({ controller: "memory", file: "memory.memsw.limit_in_bytes", value: bytes, optional: true });
    } else {
      out.push({ controller: "memory", file: "memory.max", value: bytes });
      out.push({ controller: "memory", file: "memory.swap.max", value: "0", optional: true });
      // The OOM killer ends the whole task, not one of its processes.
      out.push({ controller: "memory", file: "memory.oom.group", value: "1", optional: true });
    }
  }
  if (limits.cpus > 0) {
    const quota = String(Math.max(1000, Math.round(limits.cpus * CPU_PERIOD_US)));
    if (version === 1) {
      out.push({ controller: "cpu", file: "cpu.cfs_period_us", value: String(CPU_PERIOD_US) });
      out.push({ controller: "cpu", file: "cpu.cfs_quota_us", value: quota });
    } else {
      out.push({ controller: "cpu", file: "cpu.max", value: `${quota} ${CPU_PERIOD_US}` });
    }
  }
  if (limits.maxProcs > 0) out.push({ controller: "pids", file: "pids.max", value: String(limits.maxProcs) });
  return out;
}

/** "key value" lines (memory.oom_control, memory.events, pids.events) as numbers. */
export function parseFlatKeyed(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out.set(k, Number(v));
  }
  return out;
}

function readOr(file: string, fallback: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return fallback;
  }
}

function errnoOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? (e as Error).message;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** One task's cgroup(s). Created with its limits; emptied and removed by release(). */
export class TaskCgroup {
  constructor(
    readonly version: 1 | 2,
    /** v1: memory, cpu, pids (or one of them, to empty a group found on disk); v2: the one directory. */
    readonly dirs: readonly string[],
  ) {}

  private dirOf(c: Controller): string {
    return this.dirs.length === 1 ? this.dirs[0]! : this.dirs[CONTROLLERS.indexOf(c)]!;
  }

  /** The files a process writes its pid to, to join the task (one per hierarchy). */
  get procsFiles(): string[] {
    return this.dirs.map((d) => join(d, "cgroup.procs"));
  }

  /** The processes in the task's group now. */
  pids(): number[] {
    return readOr(join(this.dirOf("pids"), "cgroup.procs"), "")
      .split("\n")
      .filter((l) => l !== "")
      .map(Number);
  }

  /** Signals every process in the group; how many were signalled. */
  signal(signal: NodeJS.Signals): number {
    let n = 0;
    for (const pid of this.pids()) {
      if (pid <= 1 || pid === process.pid) continue;
      try {
        process.kill(pid, signal);
        n += 1;
      } catch {
        // gone meanwhile
      }
    }
    return n;
  }

  /** How often the kernel refused the task memory (OOM kills) or a process (fork at pids.max). */
  counters(): { oomKills: number; procsRefused: number } {
    const mem =
      this.version === 1
        ? parseFlatKeyed(readOr(join(this.dirOf("memory"), "memory.oom_control"), ""))
        : parseFlatKeyed(readOr(join(this.dirOf("memory"), "memory.events"), ""));
    const pids = parseFlatKeyed(readOr(join(this.dirOf("pids"), "pids.events"), ""));
    return { oomKills: mem.get("oom_kill") ?? 0, procsRefused: pids.get("max") ?? 0 };
  }

  /**
   * SIGKILLs whatever is left until the group is empty (a process forking meanwhile is caught on the
   * next round; pids.max bounds how many there can be). Resolves with the pids still there at the deadline.
   */
  async killAll(timeoutMs: number): Promise<number[]> {
    const deadline = Date.now() + timeoutMs;
    const killFile = join(this.dirs[0]!, "cgroup.kill");
    for (;;) {
      const left = this.pids();
      if (left.length === 0) return [];
      if (Date.now() > deadline) return left;
      // cgroup.kill (v2, Linux 5.14+) kills the whole group at once, forks in flight included.
      if (existsSync(killFile)) {
        try {
          writeFileSync(killFile, "1");
        } catch {
          this.signal("SIGKILL");
        }
      } else {
        this.signal("SIGKILL");
      }
      await sleep(10);
    }
  }

  /** Removes the directories (children first on v2 is not needed: tasks make no sub-groups we know of). */
  async remove(timeoutMs = 2000): Promise<string[]> {
    const problems: string[] = [];
    for (const d of this.dirs) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          removeTree(d);
          break;
        } catch (e) {
          const code = errnoOf(e);
          if (code === "ENOENT") break;
          // EBUSY: a process is still on its way out.
          if (code !== "EBUSY" || Date.now() > deadline) {
            problems.push(`${d}: ${code}`);
            break;
          }
          await sleep(20);
        }
      }
    }
    return problems;
  }
}

/** rmdir of a cgroup and the groups a task may have made inside it (cgroup dirs are removed with rmdir, never unlink). */
function removeTree(dir: string): void {
  let entries: string[] = [];
  try {
    entries = readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch (e) {
    if (errnoOf(e) === "ENOENT") return;
    throw e;
  }
  for (const name of entries) removeTree(join(dir, name));
  rmdirSync(dir);
}

/** Cgroups cannot confine tasks here (no controller, no delegation): the caller falls back. */
export class CgroupUnavailable extends SwitchboardError {
  constructor(message: string) {
    super(Code.FAILED_PRECONDITION, message);
  }
}

/** The agent process's share of the cgroup hierarchies: creates, and finally removes, its tasks' groups. */
export class CgroupHost {
  private constructor(
    readonly location: CgroupLocation,
    readonly agentGroup: string,
    private readonly agentId: string,
  ) {}

  get version(): 1 | 2 {
    return this.location.version;
  }

  /** The directories holding this agent process's task groups. */
  get agentDirs(): string[] {
    return this.parents().map((p) => join(p, this.agentGroup));
  }

  private parents(): string[] {
    const loc = this.location;
    return loc.version === 1 ? CONTROLLERS.map((c) => loc.dirs[c]) : [loc.dir];
  }

  /**
   * Finds the agent's own cgroups, makes its group under each and proves a task group with limits can be
   * made and removed there. Throws CgroupUnavailable saying why not (not root, read-only, no controllers).
   */
  static open(agentId: string, pid = process.pid): CgroupHost {
    const loc = locateCgroups(
      parseMountInfo(readOr("/proc/self/mountinfo", "")),
      parseProcCgroup(readOr("/proc/self/cgroup", "")),
    );
    if (typeof loc === "string") throw new CgroupUnavailable(loc);
    const host = new CgroupHost(loc, agentGroupName(agentId, pid), agentId);
    try {
      if (loc.version === 2) host.enableV2Controllers(loc.dir);
      for (const d of host.agentDirs) mkdirSync(d, { recursive: true });
      if (loc.version === 2) host.enableV2Controllers(host.agentDirs[0]!);
      const probe = host.create(`probe-${pid}`, { cpus: 1, memoryMb: 1024, maxProcs: 100 });
      const problems = removeNow(probe);
      if (problems.length > 0) throw new Error(`cannot remove a group: ${problems.join("; ")}`);
    } catch (e) {
      host.close();
      throw new CgroupUnavailable(
        `cgroup v${loc.version} under ${host.parents().join(", ")} is not usable: ${(e as Error).message}`,
      );
    }
    return host;
  }

  private enableV2Controllers(dir: string): void {
    const available = readOr(join(dir, "cgroup.controllers"), "").trim().split(/\s+/);
    const missing = CONTROLLERS.filter((c) => !available.includes(c));
    if (missing.length > 0) throw new Error(`${dir} does not offer the ${missing.join(", ")} controller(s)`);
    const enabled = readOr(join(dir, "cgroup.subtree_control"), "").trim().split(/\s+/);
    const want = CONTROLLERS.filter((c) => !enabled.includes(c));
    if (want.length === 0) return;
    try {
      writeFileSync(join(dir, "cgroup.subtree_control"), want.map((c) => `+${c}`).join(" "));
    } catch (e) {
      const code = errnoOf(e);
      throw new Error(
        code === "EBUSY"
          ? `cannot enable ${want.join(", ")} in ${dir}: processes sit in it (start the agent in a leaf of a delegated subtree)`
          : `cannot enable ${want.join(", ")} in ${dir}: ${code}`,
      );
    }
  }

  /** Makes a task's group(s) with its limits written. Throws, having removed what it made, when it cannot. */
  create(taskId: string, limits: TaskLimits): TaskCgroup {
    const dirs = taskGroupDirs(this.location, this.agentGroup, taskId);
    const made: string[] = [];
    try {
      for (const d of dirs) {
        mkdirSync(d);
        made.push(d);
      }
      const group = new TaskCgroup(this.version, dirs);
      for (const w of limitWrites(this.version, limits)) {
        const dir = this.version === 1 ? dirs[CONTROLLERS.indexOf(w.controller)]! : dirs[0]!;
        const file = join(dir, w.file);
        if (w.optional && !existsSync(file)) continue;
        try {
          writeFileSync(file, w.value);
        } catch (e) {
          throw new Error(`cannot write ${w.value} to ${file}: ${errnoOf(e)}`);
        }
      }
      return group;
    } catch (e) {
      for (const d of made.reverse()) {
        try {
          rmdirSync(d);
        } catch {
          // reported by the caller's error already
        }
      }
      throw e;
    }
  }

  /**
   * Groups left by earlier processes of this agent (it was killed, or its machine lost power): their
   * processes are killed, the groups removed. Groups of agent processes still alive are left alone, and
   * of other agents' dead processes only empty groups are removed (rmdir refuses a group in use).
   */
  async cleanStale(): Promise<{ groups: number; killed: number }> {
    let groups = 0;
    let killed = 0;
    const seen = new Set<string>();
    for (const parent of this.parents()) {
      let names: string[];
      try {
        names = readdirSync(parent);
      } catch {
        continue;
      }
      for (const name of names) {
        const m = /^switchboard-.+-(\d+)$/.exec(name);
        if (!m || name === this.agentGroup || processExists(Number(m[1]))) continue;
        const ours = agentGroupPid(this.agentId, name) !== undefined;
        for (const task of readdirSafe(join(parent, name))) {
          const t = new TaskCgroup(this.version, [join(parent, name, task)]);
          if (ours) {
            killed += t.pids().length;
            await t.killAll(2000);
            await t.remove();
            if (!seen.has(`${name}/${task}`)) groups += 1;
            seen.add(`${name}/${task}`);
          } else {
            removeNow(t);
          }
        }
        try {
          rmdirSync(join(parent, name));
        } catch {
          // not empty yet: the next start tries again
        }
      }
    }
    return { groups, killed };
  }

  /** Removes the agent's groups (once its tasks are over); a group still busy is killed first. */
  close(): void {
    for (const d of this.agentDirs) {
      for (const task of readdirSafe(d)) {
        const t = new TaskCgroup(this.version, [join(d, task)]);
        t.signal("SIGKILL");
        removeNow(t);
      }
      try {
        rmdirSync(d);
      } catch {
        // absent, or a process still on its way out
      }
    }
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true })
      .filter((e) => e.isDirectory())
      .map((e) => e.name);
  } catch {
    return [];
  }
}

function removeNow(t: TaskCgroup): string[] {
  const problems: string[] = [];
  for (const d of t.dirs) {
    try {
      removeTree(d);
    } catch (e) {
      if (errnoOf(e) !== "ENOENT") problems.push(`${d}: ${errnoOf(e)}`);
    }
  }
  return problems;
}
