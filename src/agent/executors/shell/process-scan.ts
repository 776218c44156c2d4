// Finding a task's processes without cgroups: every process the task starts inherits the marker
// SWITCHBOARD_TASK_ID=<id> in its environment, which survives setsid and double forks (a process
// re-parented to init keeps it); processes of the task's process group or session and descendants
// of its main process count too. Read from /proc; a process that clears its environment *and*
// leaves the session and its parent is beyond this (cgroups are not).
import { readFileSync, readdirSync } from "node:fs";

export const TASK_MARKER = "SWITCHBOARD_TASK_ID";

export interface ProcInfo {
  pid: number;
  ppid: number;
  pgrp: number;
  session: number;
  /** Resident set size in bytes. */
  rssBytes: number;
  threads: number;
}

const PAGE = 4096;

/** One /proc/PID/stat line; comm may hold spaces and parentheses, so fields are cut after the last ')'. */
export function parseStat(pid: number, stat: string): ProcInfo | undefined {
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // f[0] is state (field 3): zombies hold no memory and cannot be killed again.
  if (f.length < 22 || f[0] === "Z" || f[0] === "X") return undefined;
  return {
    pid,
    ppid: Number(f[1]),
    pgrp: Number(f[2]),
    session: Number(f[3]),
    threads: Number(f[17]),
    rssBytes: Number(f[21]) * PAGE,
  };
}

/** Whether a NUL-separated environment block holds KEY=VALUE exactly. */
export function environHas(environ: Buffer, key: string, value: string): boolean {
  const needle = Buffer.from(`${key}=${value}\0`);
  let at = environ.indexOf(needle);
  while (at >= 0) {
    if (at === 0 || environ[at - 1] === 0) return true;
    at = environ.indexOf(needle, at + 1);
  }
  // The last entry may lack its terminating NUL.
  const last = Buffer.from(`${key}=${value}`);
  return (
    environ.length >= last.length &&
    environ.subarray(environ.length - last.length).equals(last) &&
    (environ.length === last.length || environ[environ.length - last.length - 1] === 0)
  );
}

/**
 * The live processes of a task: marked with its id, in the main process's group or session, or
 * descended from it. The agent itself and init are never among them.
 */
export function taskProcesses(taskId: string, leaderPid: number): ProcInfo[] {
  let names: string[];
  try {
    names = readdirSync("/proc");
  } catch {
    return [];
  }
  const all = new Map<number, ProcInfo>();
  for (const name of names) {
    if (!/^\d+$/.test(name)) continue;
    const pid = Number(name);
    if (pid <= 1 || pid === process.pid) continue;
    try {
      const info = parseStat(pid, readFileSync(`/proc/${pid}/stat`, "utf8"));
      if (info) all.set(pid, info);
    } catch {
      // exited while we looked
    }
  }
  const mine = new Set<number>();
  for (const p of all.values()) {
    if (leaderPid > 1 && (p.pid === leaderPid || p.pgrp === leaderPid || p.session === leaderPid)) {
      mine.add(p.pid);
      continue;
    }
    try {
      if (environHas(readFileSync(`/proc/${p.pid}/environ`), TASK_MARKER, taskId)) mine.add(p.pid);
    } catch {
      // gone, or not ours to read
    }
  }
  // Descendants of what we found (a child that cleared its environment but kept its parent).
  let grew = true;
  while (grew) {
    grew = false;
    for (const p of all.values()) {
      if (!mine.has(p.pid) && mine.has(p.ppid)) {
        mine.add(p.pid);
        grew = true;
      }
    }
  }
  return [...mine].map((pid) => all.get(pid)!);
}
