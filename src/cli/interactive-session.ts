// Runs a task that takes input from here, for `switchboard shell` and `exec -i/-t`. With a terminal,
// this one goes into raw mode: every keystroke (Ctrl-C and Ctrl-D included) is a byte for the agent's
// terminal, and window-size changes follow. Without one, stdin streams to the task's stdin and its end
// is the end of input. Output comes back here; the terminal is restored however the task ends.
import type { SwitchboardClient, TaskInputWriter, TaskRequest } from "../client/index.js";
import type { Finished } from "../gen/switchboard/v1/task.js";
import { EXIT } from "./cli-error.js";
import { followed, relayOutput, type FollowedTask } from "./follow-task.js";
import { onPipeClosed } from "./pipe-closed.js";
import { cancelOnInterrupt } from "./signals.js";

export interface InteractiveMode {
  /** The task runs in a terminal on the agent (its spec has tty): send this window's size. */
  terminal: boolean;
  /** Forward this process's stdin (keystrokes in raw mode when it is a terminal). */
  input: boolean;
}

/** This terminal's size, for a tty spec; 80x24 when stdout is not a terminal. */
export function windowSize(): { cols: number; rows: number } {
  const out = process.stdout;
  return out.isTTY ? { cols: out.columns || 80, rows: out.rows || 24 } : { cols: 80, rows: 24 };
}

export async function runInteractive(
  client: SwitchboardClient,
  req: TaskRequest,
  mode: InteractiveMode,
): Promise<FollowedTask> {
  const stdin = process.stdin;
  const raw = mode.terminal && mode.input && stdin.isTTY;
  let taskId: string | undefined;
  let input: TaskInputWriter | undefined;
  let finished: Finished | undefined;

  const cancel = (why: string): void => {
    if (!taskId) return;
    client.cancel(taskId, why).catch((e: unknown) => {
      process.stderr.write(`switchboard: could not cancel task ${taskId}: ${(e as Error).message}\n`);
    });
  };
  // This terminal was closed: hang the remote one up, as ssh does.
  const onHangup = (): void => {
    if (input && mode.terminal) void input.end().catch(() => undefined);
    else cancel("the terminal of the session was closed");
  };
  const onResize = (): void => {
    const { cols, rows } = windowSize();
    void input?.resize(cols, rows).catch(() => undefined);
  };
  const onKeys = (data: Buffer): void => {
    if (!input) return;
    // One write in flight at a time: a task that does not read holds this process back, not its memory.
    stdin.pause();
    input.write(data).then(
      () => stdin.resume(),
      (e: unknown) => inputFailed(e),
    );
  };
  const onStdinEnd = (): void => void input?.end().catch((e: unknown) => inputFailed(e));
  const inputFailed = (e: unknown): void => {
    stopReading();
    if (!finished) process.stderr.write(`switchboard: input to task ${taskId ?? "?"} failed: ${String(e)}\n`);
  };

  const startInput = (id: string): void => {
    if (!mode.input && !mode.terminal) return;
    input = client.openInput(id);
    input.done().catch(() => undefined); // failures surface through write(), end() or the task's end
    // The first message names the task to the hub at once, so that it can hang the terminal up if
    // this process dies before anything is typed.
    if (mode.terminal) {
      onResize();
      if (process.stdout.isTTY) process.stdout.on("resize", onResize);
    } else void input.write(new Uint8Array(0)).catch(() => undefined);
    if (!mode.input) return;
    if (raw) stdin.setRawMode(true);
    stdin.on("data", onKeys);
    stdin.on("end", onStdinEnd);
    stdin.resume();
  };
  function stopReading(): void {
    stdin.off("data", onKeys);
    stdin.off("end", onStdinEnd);
    stdin.pause();
  }
  function restoreTerminal(): void {
    if (raw && stdin.isTTY) stdin.setRawMode(false);
  }

  // Ctrl-C outside raw mode (in raw mode it is a byte for the remote terminal), or a kill.
  const interrupt = cancelOnInterrupt({
    onInterrupt: () => {
      process.stderr.write(`\nswitchboard: cancelling task ${taskId ?? "(being submitted)"}\n`);
    },
    again: () => {
      restoreTerminal();
      process.stderr.write(`switchboard: stopped waiting; task ${taskId ?? "?"} may still be cancelling\n`);
      process.exit(EXIT.interrupted);
    },
  });
  interrupt.signal.addEventListener("abort", () => cancel("cancelled from the command line"));
  process.on("SIGHUP", onHangup);
  process.on("exit", restoreTerminal);
  const unregister = onPipeClosed(async () => {
    restoreTerminal();
    if (taskId) await client.cancel(taskId, "its output was no longer read (closed pipe)");
  });
  try {
    const events = client.run(req, {
      onTaskId: (id) => {
        taskId = id;
        startInput(id);
        if (interrupt.signal.aborted) cancel("cancelled from the command line");
      },
    });
    await relayOutput(events, (f) => (finished = f));
  } finally {
    stopReading();
    restoreTerminal();
    input?.close();
    process.stdout.off("resize", onResize);
    interrupt.dispose();
    process.off("SIGHUP", onHangup);
    process.off("exit", restoreTerminal);
    unregister();
  }
  return followed(taskId, finished);
}
