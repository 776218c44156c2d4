// `switchboard exec`: run a command on an agent and behave like it ran here: output streams live
// (stdout and stderr apart), the exit code is the remote one, Ctrl-C cancels the remote task.
import { constants } from "node:os";
import type { Command } from "commander";
import { shell, type TaskRequest } from "../../client/index.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../../common/grpc-options.js";
import { TaskState, type Finished } from "../../gen/switchboard/v1/task.js";
import { EXIT, usageError } from "../cli-error.js";
import { clientCommand, targetAction, withClient, type TargetFlags } from "../client-command.js";
import { collect, durationFlag, intFlag } from "../flags.js";
import { followTask } from "../follow-task.js";
import { runInteractive, windowSize } from "../interactive-session.js";

interface ExecFlags extends TargetFlags {
  shell?: string;
  cwd?: string;
  env?: string[];
  stdin?: boolean;
  timeout?: string;
  killGrace?: string;
  wait?: boolean;
  detach?: boolean;
  user?: string;
  group?: string;
  cpus?: string;
  memory?: string;
  maxProcs?: string;
  secret?: string[];
  interactive?: boolean;
  tty?: boolean;
}

export function registerExec(program: Command): void {
  const cmd = clientCommand(
    program,
    "exec",
    "run a command on an agent, streaming its output; exits with its exit code",
  )
    .argument("[command...]", "the command and its arguments (put them after --)")
    .option("--shell <script>", "run this string with bash -c instead of a command")
    .option("--cwd <dir>", "working directory on the agent")
    .option("-e, --env <KEY=VALUE>", "set an environment variable (repeatable)", collect)
    .option("--stdin", "send this process's stdin to the command (read whole, up to 15 MiB)")
    .option("--timeout <duration>", "stop the command after this long (e.g. 30s, 5m); exit code 124")
    .option(
      "--kill-grace <duration>",
      "after SIGTERM on cancel or timeout, SIGKILL after this long (default 5s)",
    )
    .option("--user <name>", "run as this user (one of the agent's [shell] users)")
    .option("--group <name>", "with --user: run with this group of the user's as the primary group")
    .option("--cpus <n>", "limit the command to this share of cores (e.g. 0.5)")
    .option("--memory <MB>", "limit the command's memory; past it the task ends with 'memory limit'")
    .option("--max-procs <n>", "limit the processes (and threads) the command may have at once")
    .option(
      "--secret <NAME>",
      "pass the agent's environment variable NAME to the command (repeatable)",
      collect,
    )
    .option("-i, --interactive", "stream stdin to the command as it comes; its end ends the command's stdin")
    .option("-t, --tty", "run the command in a terminal on the agent ([shell] pty); with -i, raw keystrokes")
    .option("--wait", "queue the task even when no agent of the target is connected (until --timeout)")
    .option("-d, --detach", "submit, print the task id and return at once")
    .passThroughOptions()
    .addHelpText(
      "after",
      `
Examples:
  switchboard exec --pool demo -- uname -a
  switchboard exec --agent web-1 --timeout 1m --shell 'journalctl -u nginx | tail -50'
  echo hello | switchboard exec --pool demo --stdin -- tr a-z A-Z
  switchboard exec --agent build-1 --user builder --memory 2048 --max-procs 256 -- make -j4
  switchboard exec --agent web-1 --secret DEPLOY_KEY --shell './deploy.sh'
  switchboard exec -it --agent web-1 -- top          # a terminal, as with switchboard shell

Exit code: the command's own; 128+N when killed by signal N; 124 on timeout; 130 when
cancelled (Ctrl-C); 1 when the task could not run; 2 on bad usage.`,
    );
  targetAction(cmd, async (target, argv: string[], flags: ExecFlags, command: Command) => {
    if (argv.length > 0 && flags.shell !== undefined)
      throw usageError("give either a command after -- or --shell 'script', not both");
    if (argv.length === 0 && flags.shell === undefined)
      throw usageError(
        "nothing to run",
        "put the command after --, e.g. switchboard exec --pool P -- ls -l, or use --shell 'script'",
      );
    const env: Record<string, string> = {};
    for (const kv of flags.env ?? []) {
      const eq = kv.indexOf("=");
      if (eq <= 0) throw usageError(`--env: expected KEY=VALUE, got "${kv}"`);
      env[kv.slice(0, eq)] = kv.slice(eq + 1);
    }
    const timeoutMs = flags.timeout !== undefined ? durationFlag("--timeout", flags.timeout) : 0;
    const killGraceMs = flags.killGrace !== undefined ? durationFlag("--kill-grace", flags.killGrace) : 0;
    if (flags.group !== undefined && flags.user === undefined)
      throw usageError("--group needs --user: the group is one of that user's");
    const cpus = flags.cpus !== undefined ? cpusFlag(flags.cpus) : 0;
    const memoryMb = flags.memory !== undefined ? intFlag("--memory", flags.memory, 1) : 0;
    const maxProcs = flags.maxProcs !== undefined ? intFlag("--max-procs", flags.maxProcs, 1) : 0;
    if (flags.interactive && flags.stdin)
      throw usageError("give either -i (streamed stdin) or --stdin (read whole)");
    if ((flags.interactive || flags.tty) && flags.detach)
      throw usageError("-i and -t need the command attached: drop --detach");
    // -it needs a terminal here to pass through; without one, stdin is streamed as with -i (as ssh does).
    const terminal = flags.tty === true && (!flags.interactive || process.stdin.isTTY === true);
    if (flags.tty && !terminal)
      process.stderr.write("switchboard: stdin is not a terminal: running without one\n");
    const stdin = flags.stdin ? await readStdin(DEFAULT_MAX_MESSAGE_BYTES - 1024 * 1024) : undefined;
    const req: TaskRequest = {
      ...shell({
        ...(argv.length > 0 ? { argv } : { script: flags.shell! }),
        cwd: flags.cwd ?? "",
        env,
        ...(stdin ? { stdin } : {}),
        timeoutMs,
        killGraceMs,
        ...(flags.user !== undefined ? { user: flags.user } : {}),
        ...(flags.group !== undefined ? { group: flags.group } : {}),
        ...(cpus || memoryMb || maxProcs ? { limits: { cpus, memoryMb, maxProcs } } : {}),
        ...(flags.secret ? { secrets: flags.secret } : {}),
        ...(terminal ? { tty: true, ...windowSize() } : {}),
        ...(flags.interactive ? { stdinStream: true } : {}),
      }),
      target,
      timeoutMs,
      waitForAgent: flags.wait ?? false,
    };
    const code = await withClient(command, async (client) => {
      if (flags.detach) {
        process.stdout.write(`${await client.submit(req)}\n`);
        return EXIT.ok;
      }
      const { taskId, finished } =
        terminal || flags.interactive
          ? await runInteractive(client, req, { terminal, input: flags.interactive === true })
          : await followTask(client, req);
      return exitCodeOf(finished, taskId);
    });
    process.exitCode = code;
  });
}

/** The exit code a local run of the task would have had, with a note on stderr when it did not run to its end. */
export function exitCodeOf(f: Finished, taskId: string): number {
  const why = f.reason || f.error?.message || "";
  const note = (what: string): void => {
    process.stderr.write(`switchboard: task ${taskId} ${what}${why ? `: ${why}` : ""}\n`);
  };
  switch (f.state) {
    case TaskState.TASK_STATE_SUCCEEDED:
      return EXIT.ok;
    case TaskState.TASK_STATE_CANCELLED:
      note("was cancelled");
      return EXIT.interrupted;
    case TaskState.TASK_STATE_TIMED_OUT:
      note("timed out");
      return EXIT.timeout;
    case TaskState.TASK_STATE_LOST:
      note("was lost");
      return EXIT.failed;
    default:
      if (f.signal) {
        const n = (constants.signals as Record<string, number | undefined>)[f.signal];
        note(`was killed by ${f.signal}`);
        return n ? 128 + n : EXIT.failed;
      }
      if (f.exitCode > 0) {
        // A limit that ended the task (memory, processes) is said, as for other failures.
        if (f.error) note("failed");
        return Math.min(f.exitCode, 255);
      }
      note("failed");
      return EXIT.failed;
  }
}

function cpusFlag(raw: string): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0.01)
    throw usageError(`--cpus: expected a number of cores >= 0.01, got "${raw}"`);
  return n;
}

async function readStdin(limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    const b = chunk as Buffer;
    size += b.length;
    if (size > limit)
      throw usageError(
        `--stdin: more than ${limit} bytes on stdin`,
        "copy large inputs to the agent as a file instead",
      );
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}
