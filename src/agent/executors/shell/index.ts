// Shell tasks (argv or script, a terminal, or a streamed stdin), as the rest of the agent sees them:
// the executor, the config types it is built from, and the process-group and user lookups the node
// supervisor and the config loader share with it.

/** Runs shell tasks under the [shell] policy; see shell.ts. */
export { ShellExecutor, type ShellExecutorOptions } from "./shell.js";
/** How tasks' processes are tracked and limited (cgroup or process scan); one per agent. */
export { Confinement, type LimitsMode } from "./confinement.js";
/** The `[shell]` rules as the config gives them. */
export type { ShellPolicy } from "./shell-policy.js";
/** A user from the passwd database, for `[shell] users` checked at config load. */
export { lookupUser } from "./user-identity.js";
/** The live pids of a process group, from /proc. */
export { groupMembers } from "./process-group.js";
