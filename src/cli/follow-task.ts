// Runs a task and relays it as if it ran here: its stdout and stderr stream to ours as they come, Ctrl-C
// (or SIGTERM) cancels it and a second one stops waiting, and a closed stdout pipe (`| head`) cancels it.
import { once } from "node:events";
import type { SwitchboardClient, TaskRequest } from "../client/index.js";
import { OutputStream, type Finished } from "../gen/switchboard/v1/task.js";
import { CliError, EXIT } from "./cli-error.js";
import { onPipeClosed } from "./pipe-closed.js";
import { cancelOnInterrupt } from "./signals.js";

export interface FollowedTask {
  taskId: string;
  finished: Finished;
}

export async function followTask(client: SwitchboardClient, req: TaskRequest): Promise<FollowedTask> {
  let taskId: string | undefined;
  const cancelNow = (): void => {
    if (!taskId) return;
    client.cancel(taskId, "cancelled from the command line (Ctrl-C)").catch((e: unknown) => {
      process.stderr.write(`switchboard: could not cancel task ${taskId}: ${(e as Error).message}\n`);
    });
  };
  const interrupt = cancelOnInterrupt({
    onInterrupt: () => {
      process.stderr.write(
        `\nswitchboard: cancelling task ${taskId ?? "(being submitted)"}; Ctrl-C again to stop waiting\n`,
      );
    },
    again: () => {
      process.stderr.write(`switchboard: stopped waiting; task ${taskId ?? "?"} may still be cancelling\n`);
      process.exit(EXIT.interrupted);
    },
  });
  interrupt.signal.addEventListener("abort", cancelNow);
  const unregister = onPipeClosed(async () => {
    if (taskId) await client.cancel(taskId, "its output was no longer read (closed pipe)");
  });
  let finished: Finished | undefined;
  try {
    for await (const ev of client.run(req, {
      onTaskId: (id) => {
        taskId = id;
        if (interrupt.signal.aborted) cancelNow();
      },
    })) {
      const e = ev.event;
      if (ev.gapBytes > 0) process.stderr.write(`[switchboard: ${ev.gapBytes} bytes of output not kept]\n`);
      if (e?.$case === "output") {
        const out = e.value.stream === OutputStream.OUTPUT_STREAM_STDERR ? process.stderr : process.stdout;
        if (!out.write(e.value.data)) await once(out, "drain");
      } else if (e?.$case === "finished") {
        finished = e.value;
      }
    }
  } finally {
    interrupt.dispose();
    unregister();
  }
  if (!finished) throw new CliError(`the hub ended the stream of task ${taskId ?? "?"} without a result`);
  return { taskId: taskId ?? "?", finished };
}
