// How one commit's plan (batch-writer.ts takes it) is written: in one statement, write_batch()
// (migrations/002-write-batch.ts), that applies every kind of write (tasks inserted, tasks
// updated, totals, output rows, agents, audit, touches, nodes) as a multi-row statement over its
// arrays, so a commit costs one round trip whatever its size. A batch that fails for a reason of
// its own is written again unit by unit, statement by statement, each in a savepoint, so that one
// bad write fails alone.
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
import { WRITE_BATCH_ARITY } from "./migrations/002-write-batch.js";
import type { Sql } from "./sql.js";
import type { UncertainBatch } from "../batch-committer.js";

const SELECT_TASK_IDS = `SELECT id FROM tasks WHERE id = ANY($1::text[])`;

/** A commit written statement by statement leaves its mark too (inside its transaction). */
const INSERT_COMMIT_MARK = `
INSERT INTO commit_marks (writer, batch, at) VALUES ($1, $2, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)`;

/** Which of a writer's batches committed. */
const SELECT_COMMIT_MARKS = `SELECT batch FROM commit_marks WHERE writer = $1 AND batch = ANY($2::bigint[])`;
import * as tasks from "./tasks.js";
import * as tokens from "./tokens.js";

const WRITE_BATCH = `SELECT inserted, updated FROM write_batch(${Array.from(
  { length: WRITE_BATCH_ARITY },
  (_, i) => `$${i + 1}`,
).join(", ")})`;

// A commit of inserts alone (a client waits for each): the task rows, in one statement lighter
// than write_batch() and its 69 arguments (a single task: tasks.INSERT_TASK, lighter still). It
// leaves no mark: its rows are one (committedBatches).
const WRITE_INSERTS = `
WITH ins AS (${tasks.INSERT_TASKS})
SELECT coalesce(array_agg(id), '{}') AS inserted, '{}'::text[] AS updated FROM ins`;

/** The batch holds task inserts and nothing else. */
function insertsOnly(batch: PendingBatch, outputs: readonly OutputWrite[]): boolean {
  const others = batch.updates.size + batch.agents.size + batch.audits.length + batch.touches.size;
  return others + batch.nodes.size + outputs.length === 0 && !batch.disconnectAll;
}

/**
 * Writes the batch and the output writes in one statement (write_batch(), one round trip, its own
 * transaction; WRITE_INSERTS for inserts alone), and marks the inserts that were duplicates.
 */
export async function writeAll(
  sql: Sql,
  mark: CommitMark,
  batch: PendingBatch,
  outputs: readonly OutputWrite[],
  logger: Logger,
): Promise<void> {
  let written: Written | undefined;
  if (!insertsOnly(batch, outputs)) {
    written = (await sql.query<Written>(WRITE_BATCH, batchParams(mark, batch, outputs), "write_batch"))
      .rows[0];
  } else if (batch.inserts.length === 1) {
    const { rows } = await sql.query<{ id: string }>(
      tasks.INSERT_TASK,
      tasks.insertRowParams(batch.inserts[0]!.task),
      "insert_task",
    );
    written = { inserted: rows.map((r) => r.id), updated: [] };
  } else {
    const params = tasks.insertParams(batch.inserts.map((i) => i.task));
    written = (await sql.query<Written>(WRITE_INSERTS, params, "write_inserts")).rows[0];
  }
  const inserted = new Set(written?.inserted);
  const seen = new Set<string>();
  for (const insert of batch.inserts) {
    const id = insert.task.id;
    if (!inserted.has(id) || seen.has(id)) insert.error = duplicateTaskError(id);
    seen.add(id);
  }
  const updated = new Set(written?.updated);
  for (const id of batch.updates.keys()) {
    if (!updated.has(id)) logger.warn({ taskId: id }, "store update of an unknown task ignored");
  }
}

interface Written {
  inserted: string[];
  updated: string[];
}

/** write_batch()'s arguments, in order. */
function batchParams(mark: CommitMark, batch: PendingBatch, outputs: readonly OutputWrite[]): unknown[] {
  const out = outputParts(outputs);
  const nodeWrites = nodes.splitWrites(batch.nodes);
  return [
    ...tasks.insertParams(batch.inserts.map((i) => i.task)),
    ...tasks.updateParams(batch.updates, new Map(out.totals.map((t) => [t.taskId, t.totals]))),
    out.tails,
    ...output.rowParams(out.rows),
    batch.disconnectAll,
    ...agents.upsertParams([...batch.agents.values()]),
    ...audit.insertParams(batch.audits),
    ...tokens.touchParams(batch.touches),
    nodeWrites.deleted,
    ...nodes.upsertParams(nodeWrites.rows),
    mark.writer,
    mark.batch,
  ];
}

/** A commit's output writes by statement: totals to set, tasks whose tail is rewritten, rows to write. */
function outputParts(outputs: readonly OutputWrite[]): {
  totals: output.TotalsWrite[];
  tails: string[];
  rows: output.OutputRowWrite[];
} {
  const totals: output.TotalsWrite[] = [];
  const tails: string[] = [];
  const rows: output.OutputRowWrite[] = [];
  for (const w of outputs) {
    const taskId = w.buffer.taskId;
    if (w.totals) totals.push({ taskId, totals: w.totals });
    if (w.tail) tails.push(taskId);
    for (const r of w.head) rows.push({ ...r, taskId, part: "head" });
    for (const r of w.tail ?? []) rows.push({ ...r, taskId, part: "tail" });
  }
  return { totals, tails, rows };
}

async function writeOutputs(sql: Sql, outputs: readonly OutputWrite[]): Promise<void> {
  const { totals, tails, rows } = outputParts(outputs);
  await output.setTotals(sql, totals);
  await output.deleteTails(sql, tails);
  await output.insertOutputRows(sql, rows);
}

/**
 * Writes the batch unit by unit, each in its own savepoint, collecting those that fail for a
 * reason of their own in `failures`; a fault of the database still throws, for the batch to wait.
 */
export async function writeUnitByUnit(
  sql: Sql,
  mark: CommitMark,
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
  await sql.query(INSERT_COMMIT_MARK, [mark.writer, mark.batch]);
}

/** Who wrote a commit and its batch's number: the mark it leaves (see write_batch()). */
export interface CommitMark {
  writer: string;
  batch: number;
}

/**
 * Which of the writer's uncertain batches committed: those that left their mark, and those whose
 * inserted tasks are there (a batch is one statement: all of it committed, or none).
 */
export async function committedBatches(
  sql: Sql,
  writer: string,
  batches: readonly UncertainBatch[],
): Promise<Set<number>> {
  const numbers = batches.map((b) => b.number);
  const { rows } = await sql.query<{ batch: string }>(SELECT_COMMIT_MARKS, [writer, numbers]);
  const committed = new Set(rows.map((r) => Number(r.batch)));
  const firsts = batches.flatMap((b) => (b.inserted.length > 0 ? [b.inserted[0]!] : []));
  if (firsts.length > 0) {
    const found = await sql.query<{ id: string }>(SELECT_TASK_IDS, [firsts]);
    const there = new Set(found.rows.map((r) => r.id));
    for (const b of batches) if (b.inserted.length > 0 && there.has(b.inserted[0]!)) committed.add(b.number);
  }
  return committed;
}
