// What one commit writes, and the statements that write it: one multi-row statement per kind of
// write (tasks inserted, tasks updated, totals, agents, output rows, audit, touches, nodes), so a
// commit costs a dozen round trips at most whatever its size. A batch that fails for a reason of
// its own is written again unit by unit, each in a savepoint, so that one bad write fails alone.
import type { Logger } from "../../../common/logger.js";
import { isTerminal } from "../../../common/task-state.js";
import type { OutputBuffer, OutputRow } from "../output-buffer.js";
import * as agents from "./agents.js";
import * as audit from "./audit.js";
import { duplicateTaskError, errorMessage, isWriteFault, taskInsertError } from "./errors.js";
import * as nodes from "./nodes.js";
import * as output from "./output.js";
import type { PendingBatch } from "./pending-batch.js";
import type { Sql } from "./sql.js";
import * as tasks from "./tasks.js";
import * as tokens from "./tokens.js";

/** What the store holds between commits besides the batch: the output buffers of live tasks. */
export interface HeldOutputs {
  readonly outputs: Map<string, OutputBuffer>;
  /** Buffers whose tail changed since it was last written. */
  readonly unsavedTails: Set<OutputBuffer>;
}

/** One task's output writes in a commit; its bytes are copies, as the buffer moves on meanwhile. */
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

export interface UnitFailure {
  what: string;
  subject: string;
  err: unknown;
}

/** The output writes of a commit: new head rows and totals, tails that are due, buffers to release. */
export function planOutputs(
  held: HeldOutputs,
  batch: PendingBatch,
  tailPersistIntervalMs: number,
  mode: FlushMode,
  now: number,
  tailsNow: ReadonlySet<OutputBuffer>,
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
  for (const buffer of held.unsavedTails) {
    const w = writes.get(buffer);
    const due =
      mode === "all" ||
      tailsNow.has(buffer) ||
      w?.release ||
      now - buffer.tailPersistedAt >= tailPersistIntervalMs;
    if (!due) continue;
    const write = w ?? writeFor(buffer);
    write.tail = buffer
      .tailRows(buffer.headRows + write.head.length)
      .map((row) => ({ ...row, data: Buffer.from(row.data) }));
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
