// `switchboard docker`: the Docker Engine of an agent's machine, through the hub. ps and images print a
// table (or the engine's JSON with -o json); run streams the container's output and exits with its exit
// code (Ctrl-C stops the container), or with --detach prints its id; stop, rm, logs and inspect act on a
// container by id or name.
import type { Command } from "commander";
import { docker, type DockerOptions, type TaskRequest } from "../../client/index.js";
import { Code, codeName } from "../../common/errors.js";
import { TaskState, type Finished, type TaskInfo } from "../../gen/switchboard/v1/task.js";
import { CliError, EXIT, usageError } from "../cli-error.js";
import {
  addConnectionOptions,
  addTargetOptions,
  describeTarget,
  targetFrom,
  withClient,
  type TargetFlags,
} from "../client-command.js";
import {
  CONTAINER_COLUMNS,
  IMAGE_COLUMNS,
  containerRows,
  imageRows,
  type EngineContainer,
  type EngineImage,
} from "../docker-output.js";
import { collect, durationFlag, intFlag } from "../flags.js";
import { followTask } from "../follow-task.js";
import { outputFormat, printList } from "../output.js";
import { exitCodeOf } from "./exec.js";
import { cancelOnInterrupt } from "../signals.js";

interface RunFlags {
  detach?: boolean;
  rm?: boolean;
  env?: string[];
  name?: string;
  stopTimeout?: string;
  timeout?: string;
}

export function registerDocker(program: Command): void {
  const group = addTargetOptions(
    addConnectionOptions(
      program
        .command("docker")
        .description("the Docker Engine on an agent's machine: ps, images, run, stop, rm, logs, inspect")
        .enablePositionalOptions(),
    ),
  ).addHelpText(
    "after",
    `
The agent needs [docker] enabled = true (and socket = the engine's socket) in its config. Images are
never pulled: they must be on the agent's machine already (docker load, podman import).

Examples:
  switchboard docker --pool edge ps --all
  switchboard docker --agent box-7 run --rm busybox sh -c 'echo hi; exit 3'   # exit code 3
  switchboard docker --agent box-7 run -d --name web nginx:1.27
  switchboard docker --agent box-7 logs web --follow --tail 20
  switchboard docker --agent box-7 stop web --time 5`,
  );

  sub(group, "ps", "list containers (running ones; --all: every one)")
    .option("-a, --all", "stopped containers too")
    .option("-o, --output <format>", "table or json (the engine's JSON)", "table")
    .action(async (f: { all?: boolean; output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const result = await answer(cmd, { op: "ps", all: f.all ?? false });
      if (format === "json") return printJson(result);
      printList(
        containerRows(parseList<EngineContainer>(result)),
        CONTAINER_COLUMNS,
        "table",
        "no containers",
      );
    });

  sub(group, "images", "list the images on the agent's machine")
    .option("-o, --output <format>", "table or json (the engine's JSON)", "table")
    .action(async (f: { output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const result = await answer(cmd, { op: "images" });
      if (format === "json") return printJson(result);
      printList(imageRows(parseList<EngineImage>(result)), IMAGE_COLUMNS, "table", "no images");
    });

  sub(group, "run", "run a container: its output streams here, its exit code is this command's")
    .argument("<image>", "an image on the agent's machine (never pulled)")
    .argument("[cmd...]", "the command and its arguments (default: the image's)")
    .option("-d, --detach", "start it, print its id and return")
    .option("--rm", "remove the container once it exited")
    .option("-e, --env <KEY=VALUE>", "set an environment variable (repeatable)", collect)
    .option("--name <name>", "the container's name")
    .option(
      "--stop-timeout <secs>",
      "on Ctrl-C or timeout: SIGTERM, then SIGKILL after this many seconds (default 10)",
    )
    .option("--timeout <duration>", "stop the container after this long (e.g. 30s, 5m); exit code 124")
    // Everything after the image is the container's command, options included (`sh -c ...`).
    .passThroughOptions()
    .action(async (image: string, argv: string[], f: RunFlags, cmd: Command) => {
      const env: Record<string, string> = {};
      for (const kv of f.env ?? []) {
        const eq = kv.indexOf("=");
        if (eq <= 0) throw usageError(`--env: expected KEY=VALUE, got "${kv}"`);
        env[kv.slice(0, eq)] = kv.slice(eq + 1);
      }
      const timeoutMs = f.timeout !== undefined ? durationFlag("--timeout", f.timeout) : 0;
      const opts: DockerOptions = {
        op: "run",
        image,
        cmd: argv,
        env,
        detach: f.detach ?? false,
        remove: f.rm ?? false,
        ...(f.name !== undefined ? { container: f.name } : {}),
        ...(f.stopTimeout !== undefined
          ? { stopTimeoutSecs: intFlag("--stop-timeout", f.stopTimeout, 0) }
          : {}),
      };
      if (opts.detach) {
        const result = await answer(cmd, opts, timeoutMs);
        process.stdout.write(`${(JSON.parse(result.toString("utf8")) as { id: string }).id}\n`);
        return;
      }
      process.exitCode = await stream(cmd, opts, timeoutMs);
    });

  sub(group, "stop", "stop a container: SIGTERM, then SIGKILL after --time seconds")
    .argument("<container>", "its id or name")
    .option("-t, --time <secs>", "seconds to wait before SIGKILL (default 10)")
    .action(async (container: string, f: { time?: string }, cmd: Command) => {
      const t = f.time !== undefined ? intFlag("--time", f.time, 0) : undefined;
      await answer(cmd, { op: "stop", container, ...(t !== undefined ? { stopTimeoutSecs: t } : {}) });
      process.stdout.write(`${container}\n`);
    });

  sub(group, "rm", "remove a container")
    .argument("<container>", "its id or name")
    .option("-f, --force", "a running one too (it is killed)")
    .action(async (container: string, f: { force?: boolean }, cmd: Command) => {
      await answer(cmd, { op: "rm", container, force: f.force ?? false });
      process.stdout.write(`${container}\n`);
    });

  sub(group, "logs", "print a container's output (stdout and stderr apart)")
    .argument("<container>", "its id or name")
    .option("-f, --follow", "go on until the container stops (Ctrl-C to leave)")
    .option("--tail <n>", "only the last n lines")
    .action(async (container: string, f: { follow?: boolean; tail?: string }, cmd: Command) => {
      const tail = f.tail !== undefined ? intFlag("--tail", f.tail, 0) : 0;
      process.exitCode = await stream(cmd, { op: "logs", container, follow: f.follow ?? false, tail });
    });

  sub(group, "inspect", "print everything the engine knows about a container, as JSON")
    .argument("<container>", "its id or name")
    .action(async (container: string, _f: unknown, cmd: Command) => {
      printJson(await answer(cmd, { op: "inspect", container }));
    });
}

/** A subcommand that takes the target and connection flags after its name too. */
function sub(group: Command, name: string, description: string): Command {
  return addTargetOptions(addConnectionOptions(group.command(name).description(description)));
}

function request(cmd: Command, opts: DockerOptions, timeoutMs = 0): TaskRequest {
  return { ...docker(opts), target: targetFrom(cmd.optsWithGlobals<TargetFlags>()), timeoutMs };
}

/** Runs a task that answers with one document and returns its result; Ctrl-C cancels it. */
async function answer(cmd: Command, opts: DockerOptions, timeoutMs = 0): Promise<Buffer> {
  const req = request(cmd, opts, timeoutMs);
  const interrupt = cancelOnInterrupt();
  try {
    const r = await withClient(cmd, (client) => client.execute({ ...req, signal: interrupt.signal }));
    if (r.info?.state !== TaskState.TASK_STATE_SUCCEEDED) throw failure(r.info, opts, req);
    return Buffer.from(r.result);
  } finally {
    interrupt.dispose();
  }
}

/** Runs a task whose output streams (an attached run, logs); returns the exit code to use. */
async function stream(cmd: Command, opts: DockerOptions, timeoutMs = 0): Promise<number> {
  const req = request(cmd, opts, timeoutMs);
  const { taskId, finished } = await withClient(cmd, (client) => followTask(client, req));
  // Failed before the container ran (no image, no engine): an error like the other subcommands', not an exit code.
  if (finished.state === TaskState.TASK_STATE_FAILED && finished.exitCode < 0 && finished.error) {
    throw failure(finishedInfo(finished), opts, req);
  }
  return exitCodeOf(finished, taskId);
}

function finishedInfo(f: Finished): Pick<TaskInfo, "error" | "reason"> {
  return { error: f.error, reason: f.reason };
}

function failure(
  info: Pick<TaskInfo, "error" | "reason"> | undefined,
  opts: DockerOptions,
  req: TaskRequest,
): CliError {
  const code = info?.error?.code ?? Code.UNKNOWN;
  const message = info?.error?.message || info?.reason || `docker ${opts.op} failed`;
  const where = describeTarget(req.target);
  const hints: Partial<Record<number, string>> = {
    [Code.NOT_FOUND]:
      opts.op === "run"
        ? `switchboard docker --${where} images lists the images there`
        : `switchboard docker --${where} ps --all lists the containers there`,
    [Code.UNAVAILABLE]:
      "check the engine runs on the agent's machine and [docker] socket in the agent's config",
  };
  return new CliError(`${message} (${codeName(code)})`, EXIT.failed, hints[code]);
}

function parseList<T>(result: Buffer): T[] {
  const v: unknown = JSON.parse(result.toString("utf8"));
  return Array.isArray(v) ? (v as T[]) : [];
}

function printJson(result: Buffer): void {
  process.stdout.write(`${JSON.stringify(JSON.parse(result.toString("utf8")), null, 2)}\n`);
}
