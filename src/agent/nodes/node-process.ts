// A node's operating-system process: started detached in its own process group, its output appended to
// its log files (not piped: a node the agent re-adopts after its own restart must not die of a broken
// pipe), and signalled as a whole group so that a stop or the memory limit reaches all it started.
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import type { NodeRecord } from "./node-record.js";

export interface NodeCommandLine {
  /** The default binary, and the argv before the node's own arguments. */
  binary: string;
  binaryArgs: string[];
  /** argv of the default binary after binaryArgs: port, data dir, node id. */
  nodeArgs(req: { nodeId: string; port: number; storagePath: string }): string[];
}

/** The node's argv: the default binary's fixed arguments and its own, then the request's, filled in. */
export function nodeArgv(r: NodeRecord, cmd: NodeCommandLine): string[] {
  // The default binary gets its fixed arguments and the port, data dir and id; any other allowlisted
  // command only the request's arguments, in which {port}, {data} and {node_id} are filled in.
  const fill = (x: string): string =>
    x
      .replaceAll("{port}", String(r.port))
      .replaceAll("{data}", r.storagePath)
      .replaceAll("{node_id}", r.nodeId);
  return r.binary === cmd.binary
    ? [...cmd.binaryArgs, ...cmd.nodeArgs(r), ...r.args.map(fill)]
    : r.args.map(fill);
}

/** Starts the node's process; its stdout and stderr append to the given files. */
export function spawnNodeProcess(
  r: NodeRecord,
  argv: string[],
  [outPath, errPath]: [string, string],
): ChildProcess {
  // Rotation copies and truncates, so the node's appending descriptors stay valid.
  const out = openSync(outPath, "a");
  const err = openSync(errPath, "a");
  try {
    return spawn(r.binary, argv, {
      cwd: r.storagePath,
      env: {
        ...process.env,
        SWITCHBOARD_NODE_ID: r.nodeId,
        SWITCHBOARD_NODE_PORT: String(r.port),
        SWITCHBOARD_NODE_DATA: r.storagePath,
        ...r.env,
      },
      stdio: ["ignore", out, err],
      // Its own process group: stop and the memory limit reach everything it started.
      detached: true,
    });
  } finally {
    closeSync(out);
    closeSync(err);
  }
}

/** Sends the signal to the node's process group (to the process alone when the group is gone). */
export function signalNode(pid: number | null, sig: NodeJS.Signals): void {
  if (pid === null) return;
  try {
    process.kill(-pid, sig);
  } catch {
    try {
      process.kill(pid, sig);
    } catch {
      // gone already
    }
  }
}
