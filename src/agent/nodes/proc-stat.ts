// What /proc tells of a node's processes: a process's start time (with its pid, the identity that survives
// an agent restart and tells a reused pid apart) and the resident memory of a whole process tree, which
// the memory limit is checked against.
import { readdirSync, readFileSync } from "node:fs";

/** /proc/PID/stat field 22 (start time in clock ticks), or null when there is no such live process. */
export function procStartOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // A zombie (killed, not yet reaped by whoever inherited it) is not running.
    if (rest[0] === "Z" || rest[0] === "X") return null;
    return Number(rest[19]);
  } catch {
    return null;
  }
}

/** A snapshot of every process's parent and RSS; the function sums a process tree's RSS in bytes. */
export function processTreeRss(): (root: number) => number {
  const children = new Map<number, number[]>();
  const rss = new Map<number, number>();
  const page = 4096;
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ppid = Number(rest[1]);
      rss.set(pid, Number(rest[21]) * page);
      const list = children.get(ppid) ?? [];
      list.push(pid);
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  return (root) => {
    let total = 0;
    const stack = [root];
    while (stack.length > 0) {
      const p = stack.pop()!;
      total += rss.get(p) ?? 0;
      stack.push(...(children.get(p) ?? []));
    }
    return total;
  };
}
