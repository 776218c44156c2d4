// Interactive shell tasks (a terminal, or a stdin kept open) as the hub sees them: each one is in the
// audit log as shell.session when it ends (who opened it, on which agent, for how long), and a terminal
// whose client's input stream broke without an end of input is hung up rather than left running.
import type { ShellSpec } from "../gen/switchboard/v1/task.js";
import type { FinishInfo, LiveTask } from "./tasks/live-task.js";
import type { Store } from "./store/interfaces.js";
import type { TaskInputQueue } from "./tasks/task-input.js";

/** The task's shell spec when it takes input while it runs (tty or stdin_stream). */
export function interactiveShell(t: LiveTask): ShellSpec | undefined {
  const k = t.spec.kind;
  return k?.$case === "shell" && (k.value.tty || k.value.stdinStream) ? k.value : undefined;
}

/** Audits the end of an interactive shell task; other tasks are left alone. */
export function auditShellSession(store: Store, t: LiveTask, info: FinishInfo, now: number): void {
  const s = interactiveShell(t);
  if (!s) return;
  store.audit({
    at: now,
    actor: t.requester,
    action: "shell.session",
    subject: t.id,
    detail: {
      agent: t.agentId ?? "",
      tty: s.tty,
      ...(s.user !== "" ? { user: s.user } : {}),
      startedAt: t.startedAt,
      endedAt: now,
      durationMs: t.startedAt !== null ? now - t.startedAt : 0,
      state: info.state,
      exitCode: info.exitCode,
    },
  });
}

/** The client of a terminal went away mid-stream: hang the terminal up (the agent sends SIGHUP). */
export function hangUpOrphanedTerminal(t: LiveTask | undefined, queue: TaskInputQueue): void {
  if (!t || t.terminal || !interactiveShell(t)?.tty) return;
  queue.push({ taskId: t.id, data: Buffer.alloc(0), eof: true, resize: undefined, sha256: "", offset: 0 });
}
