// Runs a task and relays it as if it ran here: its stdout and stderr stream to ours as they come, Ctrl-C
// (or SIGTERM) cancels it and a second one stops waiting, and a closed stdout pipe (`| head`) cancels it.
import { once } from "node:events";
import type { SwitchboardClient, TaskRequest } from "../client/index.js";
import { OutputStream, type Finished, type TaskEvent } from "../gen/switchboard/v1/task.js";
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
    const events = client.run(req, {
      onTaskId: (id) => {
        taskId = id;
        if (interrupt.signal.aborted) cancelNow();
      },
    });
    await relayOutput(events, (f) => (finished = f));
  } finally {
    interrupt.dispose();
    unregister();
  }
  return followed(taskId, finished);
}

/**
 * Writes a task's output here as it comes, its stdout to ours and its stderr to ours, waiting for a
 * slow reader; says where output was not kept, and hands over how the task finished.
 */
export async function relayOutput(
  events: AsyncIterable<TaskEvent>,
  onFinished: (finished: Finished) => void,
): Promise<void> {
  for await (const ev of events) {
    const e = ev.event;
    if (ev.gapBytes > 0) process.stderr.write(`[switchboard: ${ev.gapBytes} bytes of output not kept]\n`);
    if (e?.$case === "output") {
      const out = e.value.stream === OutputStream.OUTPUT_STREAM_STDERR ? process.stderr : process.stdout;
      if (!out.write(e.value.data)) await once(out, "drain");
    } else if (e?.$case === "finished") {
      onFinished(e.value);
    }
  }
}

/** What a relayed task came to, once its stream has ended: without a result, an error. */
export function followed(taskId: string | undefined, finished: Finished | undefined): FollowedTask {
  if (!finished) throw new CliError(`the hub ended the stream of task ${taskId ?? "?"} without a result`);
  return { taskId: taskId ?? "?", finished };
}
