// Process groups: each shell task leads its own group (spawned detached, so setsid), so one signal to
// -pgid reaches the whole tree it started, grandchildren included.
import { readdirSync, readFileSync } from "node:fs";
import type { ExecutionContext } from "../executor.js";

/** Signals every process of the group. "gone" when none is left; other failures are thrown. */
export function signalGroup(pgid: number, signal: NodeJS.Signals): "sent" | "gone" {
  // kill(-0) or kill(-1) would hit our own group or every process we may signal: never.
  if (!Number.isInteger(pgid) || pgid <= 1) throw new RangeError(`refusing to signal process group ${pgid}`);
  try {
    process.kill(-pgid, signal);
    return "sent";
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return "gone";
    throw e;
  }
}

/** The live (not zombie) pids of a process group, from /proc; empty where /proc does not exist. */
export function groupMembers(pgid: number): number[] {
  return procMembers("pgrp", pgid);
}

/** Processes whose session is `sid` (a terminal's leader and everything it started), from /proc. */
export function sessionMembers(sid: number): number[] {
  if (!Number.isInteger(sid) || sid <= 1) return [];
  return procMembers("session", sid);
}

/** Whether a process exists (EPERM: it does, and is someone else's). */
export function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The live pids whose process group or session is `id`. */
function procMembers(by: "pgrp" | "session", id: number): number[] {
  const field = by === "pgrp" ? 2 : 3;
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  const out: number[] = [];
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // exited while we looked
    }
    // "pid (comm) state ppid pgrp session ...": comm may hold spaces and parentheses, so cut at the last ')'.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const state = fields[0];
    if (Number(fields[field]) === id && state !== "Z" && state !== "X") out.push(Number(name));
  }
  return out;
}

/** signalGroup for a task's run: a failure is logged, not thrown, for the run goes on ending. */
export function signalTaskGroup(
  pgid: number,
  signal: NodeJS.Signals,
  ctx: Pick<ExecutionContext, "logger" | "taskId">,
): void {
  if (pgid <= 1) return;
  try {
    signalGroup(pgid, signal);
  } catch (e) {
    ctx.logger.warn(
      { err: e, taskId: ctx.taskId, pid: pgid, signal },
      "cannot signal the task's process group",
    );
  }
}
