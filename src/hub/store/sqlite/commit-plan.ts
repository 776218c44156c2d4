// The statements that write one commit's plan (batch-writer.ts takes it). Every row costs one run
// of a statement prepared once; a plan written unit by unit (after the batch failed as a whole)
// puts each unit in its own savepoint, so that one bad write fails alone.
import type { Logger } from "../../../common/logger.js";
import type { CommitPlan } from "../batch-writer.js";
import { asError } from "../errors.js";
import type { NodeRow, TaskPatch } from "../interfaces.js";
import type { OutputWrite } from "../output-writes.js";
import type { WriteBatch } from "../write-batch.js";
import { isWriteFault, taskInsertError } from "./errors.js";
import type { SqliteQueries } from "./queries.js";

/** Writes the plan's rows; called inside the commit's transaction. */
export function writePlan(q: SqliteQueries, plan: CommitPlan<WriteBatch>, logger: Logger): void {
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
  plan: CommitPlan<WriteBatch>,
  savepoint: (unit: () => void) => void,
  logger: Logger,
): void {
  const { batch, failures } = plan;
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

function writeUpdate(q: SqliteQueries, id: string, patch: TaskPatch, logger: Logger): void {
  if (q.tasks.update(id, patch) === 0 && Object.keys(patch).length > 0) {
    logger.warn({ taskId: id }, "store update of an unknown task ignored");
  }
}

function writeOutput(q: SqliteQueries, write: OutputWrite): void {
  const { buffer } = write;
  if (write.head.length > 0) q.output.insertHead(buffer.taskId, write.head);
  if (write.totals) q.output.setTotals(buffer.taskId, write.totals);
  if (write.tail) q.output.replaceTail(buffer.taskId, write.tail);
}

/** A node row, or its deletion (null). */
export function writeNode(q: SqliteQueries, id: string, node: NodeRow | null): void {
  if (node) q.nodes.upsert(node);
  else q.nodes.delete(id);
}
