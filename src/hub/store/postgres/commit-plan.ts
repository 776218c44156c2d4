// The statements that write one commit's plan (batch-writer.ts takes it): one multi-row statement
// per kind of write (tasks inserted, tasks updated, totals, agents, output rows, audit, touches,
// nodes), so a commit costs a dozen round trips at most whatever its size. A batch that fails for a reason of
// its own is written again unit by unit, each in a savepoint, so that one bad write fails alone.
import type { Logger } from "../../../common/logger.js";
import type { UnitFailure } from "../batch-writer.js";
import { errorMessage } from "../errors.js";
import type { OutputWrite } from "../output-writes.js";
import * as agents from "./agents.js";
import * as audit from "./audit.js";
import { duplicateTaskError, isWriteFault, taskInsertError } from "./errors.js";
import * as nodes from "./nodes.js";
import * as output from "./output.js";
import type { PendingBatch } from "./pending-batch.js";
import type { Sql } from "./sql.js";
import * as tasks from "./tasks.js";
import * as tokens from "./tokens.js";

/** Writes the batch and the output writes; called inside the commit's transaction. */
export async function writeAll(
  sql: Sql,
  batch: PendingBatch,
  outputs: readonly OutputWrite[],
  logger: Logger,
): Promise<void> {
  const inserted = await tasks.insertTasks(
    sql,
    batch.inserts.map((i) => i.task),
  );
  const seen = new Set<string>();
  for (const insert of batch.inserts) {
    const id = insert.task.id;
    if (!inserted.has(id) || seen.has(id)) insert.error = duplicateTaskError(id);
    seen.add(id);
  }
  const updated = await tasks.updateTasks(sql, batch.updates);
  for (const id of batch.updates.keys()) {
    if (!updated.has(id)) logger.warn({ taskId: id }, "store update of an unknown task ignored");
  }
  await writeOutputs(sql, outputs);
  if (batch.disconnectAll) await agents.markAllAgentsDisconnected(sql);
  await agents.upsertAgents(sql, [...batch.agents.values()]);
  await audit.insertAudit(sql, batch.audits);
  await tokens.touchTokens(sql, batch.touches);
  await nodes.writeNodes(sql, batch.nodes);
}

async function writeOutputs(sql: Sql, outputs: readonly OutputWrite[]): Promise<void> {
  if (outputs.length === 0) return;
  await output.setTotals(
    sql,
    outputs.flatMap((w) => (w.totals ? [{ taskId: w.buffer.taskId, totals: w.totals }] : [])),
  );
  await output.deleteTails(
    sql,
    outputs.filter((w) => w.tail).map((w) => w.buffer.taskId),
  );
  const rows: output.OutputRowWrite[] = [];
  for (const w of outputs) {
    const taskId = w.buffer.taskId;
    for (const r of w.head) rows.push({ ...r, taskId, part: "head" });
    for (const r of w.tail ?? []) rows.push({ ...r, taskId, part: "tail" });
  }
  await output.insertOutputRows(sql, rows);
}

/**
 * Writes the batch unit by unit, each in its own savepoint, collecting those that fail for a
 * reason of their own in `failures`; a fault of the database still throws, for the batch to wait.
 */
export async function writeUnitByUnit(
  sql: Sql,
  batch: PendingBatch,
  outputs: readonly OutputWrite[],
  failures: UnitFailure[],
  logger: Logger,
): Promise<void> {
  const unit = async (
    what: string,
    subject: string,
    write: () => Promise<void>,
  ): Promise<Error | undefined> => {
    await sql.query("SAVEPOINT unit");
    try {
      await write();
      await sql.query("RELEASE SAVEPOINT unit");
      return undefined;
    } catch (err) {
      if (isWriteFault(err)) throw err;
      await sql.query("ROLLBACK TO SAVEPOINT unit");
      failures.push({ what, subject, err });
      return err instanceof Error ? err : new Error(errorMessage(err));
    }
  };
  for (const insert of batch.inserts) {
    const id = insert.task.id;
    const err = await unit("task insert", id, async () => {
      if ((await tasks.insertTasks(sql, [insert.task])).size === 0) insert.error = duplicateTaskError(id);
    });
    if (err) insert.error = taskInsertError(id, err);
  }
  for (const [id, patch] of batch.updates) {
    await unit("task update", id, async () => {
      if ((await tasks.updateTasks(sql, new Map([[id, patch]]))).size === 0)
        logger.warn({ taskId: id }, "store update of an unknown task ignored");
    });
  }
  for (const w of outputs) {
    const err = await unit("task output", w.buffer.taskId, () => writeOutputs(sql, [w]));
    if (err) w.error = err;
  }
  if (batch.disconnectAll) await unit("agents disconnect", "*", () => agents.markAllAgentsDisconnected(sql));
  for (const a of batch.agents.values())
    await unit("agent upsert", a.id, () => agents.upsertAgents(sql, [a]));
  for (const e of batch.audits) await unit("audit entry", e.action, () => audit.insertAudit(sql, [e]));
  for (const [id, at] of batch.touches)
    await unit("token touch", id, () => tokens.touchTokens(sql, new Map([[id, at]])));
  for (const [id, node] of batch.nodes)
    await unit("node write", id, () => nodes.writeNodes(sql, new Map([[id, node]])));
}
