// File tasks (upload and download under the agent's file roots), as the rest of the agent sees them.

/** Runs file tasks; see file.ts. */
export { FileExecutor, type FileExecutorOptions } from "./file.js";
/** The directories file tasks may touch, and the checks that keep a path inside them. */
export { FileRoots } from "./file-roots.js";
