// The Node the CLI runs on: 22 or newer (package.json `engines`). A checkout on a machine whose Node
// is older carries its own, which scripts/setup.sh puts in .runtime/; the CLI started by the older
// Node hands the command over to it. This module must load on old Nodes too: node: builtins only.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";

/** The oldest Node major Switchboard supports. */
export const OLDEST_NODE_MAJOR = 22;

export function isSupportedNode(version: string = process.versions.node): boolean {
  return Number(version.split(".")[0]) >= OLDEST_NODE_MAJOR;
}

/** The checkout's own Node, when setup put one in `<root>/.runtime`. */
export function checkoutNode(root: string): string | undefined {
  const node = join(root, ".runtime", "bin", "node");
  return existsSync(node) ? node : undefined;
}

/**
 * Runs `node args` in this process's place and ends this process as it ended: with its exit code,
 * or killed by the same signal. Ctrl-C and Ctrl-\ reach both processes (the terminal signals its
 * whole foreground process group), so this one only ignores them: passing them on would make two,
 * and a second Ctrl-C means "stop waiting" to the CLI. SIGTERM and SIGHUP sent to it are passed on.
 */
export async function handOver(node: string, args: string[]): Promise<never> {
  const child = spawn(node, args, { stdio: "inherit" });
  const ignore = (): void => {};
  const pass = (signal: NodeJS.Signals): void => {
    child.kill(signal);
  };
  process.on("SIGINT", ignore).on("SIGQUIT", ignore).on("SIGTERM", pass).on("SIGHUP", pass);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (c, s) => resolve([c, s]));
  });
  if (signal !== null) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
  }
  process.exit(code ?? 1);
}
