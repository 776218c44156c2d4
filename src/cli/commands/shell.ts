// `switchboard shell`: a terminal on an agent, like ssh: a login bash (or the given command) in a
// pseudo-terminal there, this terminal in raw mode here, window-size changes passed on, and the
// remote exit code as ours. With stdin not a terminal, stdin is streamed to the command instead.
import type { Command } from "commander";
import { shell, type TaskRequest } from "../../client/index.js";
import { usageError } from "../cli-error.js";
import { collect } from "../flags.js";
import { clientCommand, targetAction, withClient, type TargetFlags } from "../client-command.js";
import { runInteractive, windowSize } from "../interactive-session.js";
import { exitCodeOf } from "./exec.js";

interface ShellFlags extends TargetFlags {
  user?: string;
  group?: string;
  cwd?: string;
  env?: string[];
}

/** What a session runs when no command is given. */
export const LOGIN_SHELL = ["bash", "-l"];

export function registerShell(program: Command): void {
  const cmd = clientCommand(
    program,
    "shell",
    "open a terminal on an agent (its [shell] pty must be on); exits with the remote exit code",
  )
    .argument(
      "[command...]",
      `what to run in the terminal (put it after --); default: ${LOGIN_SHELL.join(" ")}`,
    )
    .option("--user <name>", "run as this user (one of the agent's [shell] users)")
    .option("--group <name>", "with --user: run with this group of the user's as the primary group")
    .option("--cwd <dir>", "working directory on the agent")
    .option("-e, --env <KEY=VALUE>", "set an environment variable (repeatable)", collect)
    .passThroughOptions()
    .addHelpText(
      "after",
      `
Examples:
  switchboard shell --agent web-1
  switchboard shell --pool edge --user deploy -- htop
  echo 'uname -a' | switchboard shell --agent web-1     # stdin is not a terminal: streamed, no pty

Everything typed goes to the remote terminal, Ctrl-C and Ctrl-D included; the session ends when
its shell exits. Every session is in the hub's audit log (switchboard audit --action shell.session).`,
    );
  targetAction(cmd, async (target, argv: string[], flags: ShellFlags, command: Command) => {
    if (flags.group !== undefined && flags.user === undefined)
      throw usageError("--group needs --user: the group is one of that user's");
    const env: Record<string, string> = {};
    for (const kv of flags.env ?? []) {
      const eq = kv.indexOf("=");
      if (eq <= 0) throw usageError(`--env: expected KEY=VALUE, got "${kv}"`);
      env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    const terminal = process.stdin.isTTY === true;
    const req: TaskRequest = {
      ...shell({
        argv: argv.length > 0 ? argv : LOGIN_SHELL,
        cwd: flags.cwd ?? "",
        env,
        ...(flags.user !== undefined ? { user: flags.user } : {}),
        ...(flags.group !== undefined ? { group: flags.group } : {}),
        ...(terminal ? { tty: true, ...windowSize() } : { stdinStream: true }),
      }),
      target,
    };
    process.exitCode = await withClient(command, async (client) => {
      const { taskId, finished } = await runInteractive(client, req, { terminal, input: true });
      return exitCodeOf(finished, taskId);
    });
  });
}
