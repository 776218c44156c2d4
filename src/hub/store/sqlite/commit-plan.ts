// What one commit writes: the pending batch and the output rows that are due, as a plan, and
// the statements that write it. Every row costs one run of a statement prepared once; a plan
// written unit by unit (after the batch failed as a whole) puts each unit in its own savepoint,
// so that one bad write fails alone.
import type { Logger } from "../../../common/logger.js";
import { isTerminal } from "../../../common/task-state.js";
import type { NodeRow, TaskPatch } from "../interfaces.js";
import type { OutputBuffer, OutputRow } from "../output-buffer.js";
import type { WriteBatch } from "../write-batch.js";
import { asError, isWriteFault, taskInsertError } from "./errors.js";
import type { SqliteQueries } from "./queries.js";

/** What the store holds between commits: the batch, and the output buffers of live tasks. */
export interface PendingWrites {
  readonly batch: WriteBatch;
  /** Output buffers of tasks that produced output and have not finished. */
  readonly outputs: Map<string, OutputBuffer>;
  /** Buffers whose tail changed since it was last written. */
  readonly unsavedTails: Set<OutputBuffer>;
}

/** One task's output writes in a commit. */
export interface OutputWrite {
  buffer: OutputBuffer;
  head: OutputRow[];
  totals: boolean;
  tail: OutputRow[] | undefined;
  /** The task reached a terminal state: drop its buffer from memory once this commits. */
  release: boolean;
  error?: Error;
}

export interface FlushPlan {
  batch: WriteBatch;
  outputs: OutputWrite[];
}

/** "due": the batch and the tails whose interval has passed; "all": every tail as well. */
export type FlushMode = "due" | "all";

/** A unit of a batch that failed on its own; the rest of the batch committed. */
export interface UnitFailure {
  what: string;
  subject: string;
  err: unknown;
}

/** The output rows a commit writes: new head rows and totals, tails that are due, buffers to release. */
export function planFlush(
  pending: PendingWrites,
  tailPersistIntervalMs: number,
  mode: FlushMode,
  now: number,
  tailNow: OutputBuffer | undefined,
): FlushPlan {
  const { batch } = pending;
  const outputs: OutputWrite[] = [];
  const byBuffer = new Map<OutputBuffer, OutputWrite>();
  const writeFor = (buffer: OutputBuffer): OutputWrite => {
    let write = byBuffer.get(buffer);
    if (!write) {
      write = { buffer, head: [], totals: false, tail: undefined, release: false };
      byBuffer.set(buffer, write);
      outputs.push(write);
    }
    return write;
  };

  for (const buffer of batch.outputs) {
    const write = writeFor(buffer);
    write.head = buffer.pendingHeadRows();
    write.totals = true;
    write.release = buffer.finished;
  }
  if (pending.outputs.size > 0) {
    for (const [id, patch] of batch.updates) {
      const buffer =
        patch.state !== undefined && isTerminal(patch.state) ? pending.outputs.get(id) : undefined;
      if (buffer) writeFor(buffer).release = true;
    }
  }
  for (const buffer of pending.unsavedTails) {
    const write = byBuffer.get(buffer);
    const due =
      mode === "all" ||
      buffer === tailNow ||
      write?.release ||
      now - buffer.tailPersistedAt >= tailPersistIntervalMs;
    if (due) {
      const w = write ?? writeFor(buffer);
      w.tail = buffer.tailRows(buffer.headRows + w.head.length);
    }
  }
  return { batch, outputs };
}

/** Writes the plan's rows; called inside the commit's transaction. */
export function writePlan(q: SqliteQueries, plan: FlushPlan, logger: Logger): void {
  const { batch } = plan;
  for (const insert of batch.inserts) q.tasks.insert(insert.task);
  for (const [id, patch] of batch.updates) writeUpdate(q, id, patch, logger);
  for (const agent of batch.agents.values()) q.agents.upsert(agent);
  for (const write of plan.outputs) writeOutput(q, write);
  for (const entry of batch.audits) q.audit.insert(entry);
  for (const [id, at] of batch.touches) q.tokens.touch(id, at);
  for (const [id, node] of batch.nodes) writeNode(q, id, node);
}

/**
 * Writes the plan's units each in its own savepoint (`savepoint`), collecting those that fail for
 * a reason of their own in `failures`; a write fault still throws, for the whole batch to wait.
 */
export function writePlanUnitByUnit(
  q: SqliteQueries,
  plan: FlushPlan,
  failures: UnitFailure[],
  savepoint: (unit: () => void) => void,
  logger: Logger,
): void {
  const { batch } = plan;
  const unit = (what: string, subject: string, write: () => void): Error | undefined => {
    try {
      savepoint(write);
      return undefined;
    } catch (err) {
      // The disk, not the write: the whole batch waits for the next attempt.
      if (isWriteFault(err)) throw err;
      failures.push({ what, subject, err });
      return asError(err);
    }
  };
  for (const insert of batch.inserts) {
    const err = unit("task insert", insert.task.id, () => q.tasks.insert(insert.task));
    if (err !== undefined) insert.error = taskInsertError(insert.task.id, err);
  }
  for (const [id, patch] of batch.updates) unit("task update", id, () => writeUpdate(q, id, patch, logger));
  for (const agent of batch.agents.values()) unit("agent upsert", agent.id, () => q.agents.upsert(agent));
  for (const write of plan.outputs) {
    const err = unit("task output", write.buffer.taskId, () => writeOutput(q, write));
    if (err !== undefined) write.error = err;
  }
  for (const entry of batch.audits) unit("audit entry", entry.action, () => q.audit.insert(entry));
  for (const [id, at] of batch.touches) unit("token touch", id, () => q.tokens.touch(id, at));
  for (const [id, node] of batch.nodes) unit("node write", id, () => writeNode(q, id, node));
}

/** After the plan committed: move the output buffers on, and drop those of finished tasks. */
export function outputsCommitted(pending: PendingWrites, plan: FlushPlan, now: number): void {
  for (const write of plan.outputs) {
    const { buffer } = write;
    if (write.error || write.release) {
      // Failed output is dropped rather than retried forever (the failure is logged with the commit).
      pending.outputs.delete(buffer.taskId);
      pending.unsavedTails.delete(buffer);
      continue;
    }
    if (write.head.length > 0) {
      buffer.headRows += write.head.length;
      buffer.pendingHead.length = 0;
    }
    if (write.tail) {
      buffer.tailChanged = false;
      buffer.tailPersistedAt = now;
      pending.unsavedTails.delete(buffer);
    }
  }
}

function writeUpdate(q: SqliteQueries, id: string, patch: TaskPatch, logger: Logger): void {
  if (q.tasks.update(id, patch) === 0 && Object.keys(patch).length > 0) {
    logger.warn({ taskId: id }, "store update of an unknown task ignored");
  }
}

function writeOutput(q: SqliteQueries, write: OutputWrite): void {
  const { buffer } = write;
  if (write.head.length > 0) q.output.insertHead(buffer.taskId, write.head);
  if (write.totals) q.output.setTotals(buffer.taskId, buffer.totals);
  if (write.tail) q.output.replaceTail(buffer.taskId, write.tail);
}

/** A node row, or its deletion (null). */
export function writeNode(q: SqliteQueries, id: string, node: NodeRow | null): void {
  if (node) q.nodes.upsert(node);
  else q.nodes.delete(id);
}
