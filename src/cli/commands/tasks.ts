// Looking at tasks: `tasks` (list), `task` (one), `logs` (kept output, or --follow live), `cancel`.
// `logs --node` prints a supervised node's log instead (see nodes.ts).
import { once } from "node:events";
import type { Command } from "commander";
import {
  ALL_STATES,
  isTerminal,
  stateFromWire,
  stateToWire,
  type TaskStateName,
} from "../../common/task-state.js";
import { OutputStream, type TaskResult } from "../../gen/switchboard/v1/task.js";
import { usageError } from "../cli-error.js";
import { clientCommand, withClient } from "../client-command.js";
import { intFlag } from "../flags.js";
import { isoTime, outputFormat, printList, printObject, TASK_COLUMNS, taskRow } from "../output.js";
import { bytesFlag, DEFAULT_TAIL_BYTES, followNodeLog, withNodeClient } from "./nodes.js";
import { cancelOnInterrupt } from "../signals.js";

export function registerTasks(program: Command): void {
  clientCommand(program, "tasks", "list recent tasks, newest first")
    .option("--agent <id>", "only tasks of this agent")
    .option("--pool <name>", "only tasks aimed at this pool")
    .option("--state <states>", `only these states, comma-separated (${ALL_STATES.join(", ")})`)
    .option("--limit <n>", "at most this many (default 50, max 1000)")
    .option("--before <task-id>", "page: tasks older than this one")
    .option("-o, --output <format>", "table or json", "table")
    .action(
      async (
        f: {
          agent?: string;
          pool?: string;
          state?: string;
          limit?: string;
          before?: string;
          output?: string;
        },
        cmd: Command,
      ) => {
        const format = outputFormat(f.output);
        const states = (f.state ?? "")
          .split(",")
          .map((s) => s.trim().toLowerCase())
          .filter(Boolean)
          .map((s) => {
            if (!ALL_STATES.includes(s as TaskStateName))
              throw usageError(`--state: unknown state "${s}"`, `use one of ${ALL_STATES.join(", ")}`);
            return stateToWire(s as TaskStateName);
          });
        const tasks = await withClient(cmd, (c) =>
          c.listTasks({
            limit: f.limit ? intFlag("--limit", f.limit, 1) : 50,
            agentId: f.agent ?? "",
            pool: f.pool ?? "",
            states,
            beforeTaskId: f.before ?? "",
          }),
        );
        printList(tasks.map(taskRow), TASK_COLUMNS, format, "no tasks match");
      },
    );

  clientCommand(program, "task", "show one task: state, agent, exit code, timing, output sizes")
    .argument("<task-id>")
    .option("-o, --output <format>", "table or json", "table")
    .action(async (taskId: string, f: { output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const r = await withClient(cmd, (c) => c.getTask(taskId));
      if (!r.info) throw usageError(`the hub returned no information for task ${taskId}`);
      const row = taskRow(r.info);
      const spec = r.info.spec?.kind;
      const detail = {
        ...row,
        spec:
          spec?.$case === "shell"
            ? spec.value.argv.length
              ? { argv: spec.value.argv, cwd: spec.value.cwd || undefined }
              : { script: spec.value.script, cwd: spec.value.cwd || undefined }
            : spec?.$case === "echo"
              ? { payloadBytes: spec.value.payload.length }
              : undefined,
        outputTruncated: r.outputTruncated,
      };
      if (format === "json") return printObject(detail, format);
      printObject(
        {
          task: row.taskId,
          kind: row.kind,
          state: row.state + (row.reason ? ` (${row.reason})` : ""),
          target: row.target,
          agent: row.agentId,
          requester: row.requester,
          command: detail.spec,
          exit: row.signal || (row.exitCode ?? undefined),
          error: row.error?.message,
          created: isoTime(row.createdAtMs),
          started: isoTime(row.startedAtMs),
          finished: isoTime(row.finishedAtMs),
          duration: row.finishedAtMs ? `${row.durationMs} ms` : undefined,
          stdout: `${row.stdoutBytes} bytes`,
          stderr: `${row.stderrBytes} bytes${r.outputTruncated ? " (kept: head and tail; see switchboard logs)" : ""}`,
        },
        "table",
      );
    });

  clientCommand(program, "logs", "print a task's output, or with --node a supervised node's log")
    .argument("[task-id]", "the task (or give --node instead)")
    .option("-f, --follow", "stream output live until the task ends (a node's log: until Ctrl-C)")
    .option("--node <id>", "print this node's log instead of a task's output")
    .option("--stderr", "with --node: its stderr log instead of its stdout log")
    .option(
      "--tail <bytes>",
      "with --node: start with the last this many bytes, e.g. 4096, 64k (default 64k)",
    )
    .addHelpText(
      "after",
      `
A task's stdout goes to stdout and its stderr to stderr. A node's log (either one) goes to stdout.

Examples:
  switchboard logs --follow TASK_ID
  switchboard logs --node node-1 --stderr --tail 1m
  switchboard logs --node node-1 --follow --tail 0`,
    )
    .action(async (taskId: string | undefined, f: LogsFlags, cmd: Command) => {
      if (taskId !== undefined && f.node !== undefined)
        throw usageError("give either a task id or --node, not both");
      if (taskId === undefined) {
        if (f.node === undefined)
          throw usageError(
            "say whose output to print",
            "give a task id (switchboard tasks lists them) or --node ID (switchboard nodes lists them)",
          );
        const nodeLog = {
          nodeId: f.node,
          stderr: f.stderr ?? false,
          tailBytes: f.tail !== undefined ? bytesFlag("--tail", f.tail) : DEFAULT_TAIL_BYTES,
          follow: f.follow ?? false,
        };
        await withNodeClient(cmd, (c) => followNodeLog(c, nodeLog));
        return;
      }
      if (f.stderr || f.tail !== undefined) throw usageError("--stderr and --tail apply only with --node");
      await withClient(cmd, async (c) => {
        if (!f.follow) return writeKept(await c.getTask(taskId));
        const interrupt = cancelOnInterrupt({ signals: ["SIGINT"] });
        try {
          for await (const ev of c.watch(taskId, { signal: interrupt.signal })) {
            if (ev.gapBytes > 0)
              process.stderr.write(`\n[switchboard: ${ev.gapBytes} bytes of output not kept]\n`);
            const e = ev.event;
            if (e?.$case === "output") {
              const out =
                e.value.stream === OutputStream.OUTPUT_STREAM_STDERR ? process.stderr : process.stdout;
              if (!out.write(e.value.data)) await once(out, "drain");
            } else if (e?.$case === "finished") {
              process.stderr.write(
                `[switchboard: task ${taskId} ${stateFromWire(e.value.state) ?? "ended"}${e.value.reason ? `: ${e.value.reason}` : ""}]\n`,
              );
            }
          }
        } catch (e) {
          // Ctrl-C ends the watch, not the task.
          if (!interrupt.signal.aborted) throw e;
        } finally {
          interrupt.dispose();
        }
      });
    });

  clientCommand(program, "cancel", "cancel a task: SIGTERM to its process group, SIGKILL after the grace")
    .argument("<task-id...>")
    .option("--reason <text>", "recorded with the task and in the audit log")
    .action(async (ids: string[], f: { reason?: string }, cmd: Command) => {
      await withClient(cmd, async (c) => {
        for (const id of ids) {
          const state = stateFromWire(await c.cancel(id, f.reason ?? "cancelled from the command line"));
          // A running task is stopping (SIGTERM, then SIGKILL after its grace); a finished one stays as it was.
          const shown = state && !isTerminal(state) ? `cancelling (was ${state})` : (state ?? "unknown");
          process.stdout.write(`${id}  ${shown}\n`);
        }
      });
    });
}

interface LogsFlags {
  follow?: boolean;
  node?: string;
  stderr?: boolean;
  tail?: string;
}

function writeKept(r: TaskResult): void {
  process.stdout.write(r.stdout);
  process.stderr.write(r.stderr);
  if (r.outputTruncated) {
    process.stderr.write(
      `[switchboard: output was cut to its head and tail (stdout ${r.info?.stdoutBytes ?? "?"} bytes, stderr ${r.info?.stderrBytes ?? "?"} bytes in all)]\n`,
    );
  }
}
