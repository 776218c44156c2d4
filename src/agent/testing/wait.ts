// Test helper shared by the agent's specs: ask /proc whether a pid still runs. (Polling a condition
// against a deadline is src/common/wait-for.ts.)
import { readFileSync } from "node:fs";

/** True while the process exists and is not a zombie. */
export function pidAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}
