// The output a commit writes, as both stores plan it: per task buffer, the head rows not yet
// written, the totals, the rolling tail when it is due, and whether the buffer is released once
// the commit is done. A buffer keeps taking output while an asynchronous commit runs, so a plan
// says how much it took, and the buffer moves on by exactly that when the commit is done.
import { isTerminal } from "../../common/task-state.js";
import type { TaskPatch } from "./interfaces.js";
import type { OutputBuffer, OutputRow } from "./output-buffer.js";

/** What the store holds between commits besides the batch: the output buffers of live tasks. */
export interface HeldOutputs {
  /** Output buffers of tasks that produced output and have not finished. */
  readonly outputs: Map<string, OutputBuffer>;
  /** Buffers whose tail changed since it was last written. */
  readonly unsavedTails: Set<OutputBuffer>;
}

/** One task's output writes in a commit. */
export interface OutputWrite {
  buffer: OutputBuffer;
  /** Pending head chunks this write takes (more may arrive while it commits). */
  headChunks: number;
  head: OutputRow[];
  totals: [number, number] | undefined;
  tail: OutputRow[] | undefined;
  /** Bytes the task had produced when planned: unchanged at commit, the tail written is the latest. */
  produced: number;
  /** The task reached a terminal state: drop its buffer from memory once this commits. */
  release: boolean;
  error?: Error;
}

/** "due": the batch and the tails whose interval has passed; "all": every tail as well. */
export type FlushMode = "due" | "all";

/** How a commit plans its output. */
export interface OutputPlanning {
  mode: FlushMode;
  now: number;
  tailPersistIntervalMs: number;
  /** Buffers whose tail is written now whatever its interval (a read of that task's output waits). */
  tailsNow: ReadonlySet<OutputBuffer>;
  /** Copy the tail's bytes: the commit runs while the buffer takes more output. */
  copyTails: boolean;
}

/** The output writes of a commit: new head rows and totals, tails that are due, buffers to release. */
export function planOutputs(
  held: HeldOutputs,
  batch: { readonly outputs: ReadonlySet<OutputBuffer>; readonly updates: ReadonlyMap<string, TaskPatch> },
  planning: OutputPlanning,
): OutputWrite[] {
  const writes = new Map<OutputBuffer, OutputWrite>();
  const writeFor = (buffer: OutputBuffer): OutputWrite => {
    let w = writes.get(buffer);
    if (!w) {
      const produced = buffer.totals[0] + buffer.totals[1];
      w = { buffer, headChunks: 0, head: [], totals: undefined, tail: undefined, produced, release: false };
      writes.set(buffer, w);
    }
    return w;
  };
  for (const buffer of batch.outputs) {
    const w = writeFor(buffer);
    w.headChunks = buffer.pendingHead.length;
    w.head = buffer.pendingHeadRows();
    w.totals = [buffer.totals[0], buffer.totals[1]];
    w.release = buffer.finished;
  }
  if (held.outputs.size > 0) {
    for (const [id, patch] of batch.updates) {
      const buffer = patch.state !== undefined && isTerminal(patch.state) ? held.outputs.get(id) : undefined;
      if (buffer) writeFor(buffer).release = true;
    }
  }
  const { mode, now, tailPersistIntervalMs, tailsNow } = planning;
  for (const buffer of held.unsavedTails) {
    const w = writes.get(buffer);
    const due =
      mode === "all" ||
      tailsNow.has(buffer) ||
      w?.release ||
      now - buffer.tailPersistedAt >= tailPersistIntervalMs;
    if (!due) continue;
    const write = w ?? writeFor(buffer);
    const tail = buffer.tailRows(buffer.headRows + write.head.length);
    write.tail = planning.copyTails ? tail.map((row) => ({ ...row, data: Buffer.from(row.data) })) : tail;
  }
  return [...writes.values()];
}

/** After the commit: move the buffers on by what it wrote, and drop those of finished tasks. */
export function outputsCommitted(held: HeldOutputs, writes: readonly OutputWrite[], now: number): void {
  for (const w of writes) {
    const { buffer } = w;
    const unchanged = buffer.totals[0] + buffer.totals[1] === w.produced;
    if (w.error) {
      // Failed output is dropped rather than retried forever (the failure is logged with the commit).
      held.outputs.delete(buffer.taskId);
      held.unsavedTails.delete(buffer);
      continue;
    }
    if (w.headChunks > 0) {
      buffer.pendingHead.splice(0, w.headChunks);
      buffer.headRows += w.head.length;
    }
    if (w.tail) {
      buffer.tailPersistedAt = now;
      if (unchanged) {
        buffer.tailChanged = false;
        held.unsavedTails.delete(buffer);
      }
    }
    if (w.release) {
      if (unchanged) {
        held.outputs.delete(buffer.taskId);
        held.unsavedTails.delete(buffer);
      } else buffer.finished = true; // late output arrived meanwhile: released with its commit
    }
  }
}
