// Queries on task_output, the kept head and tail chunks of each task's output, and on the output
// totals kept on the task row. A commit writes every task's new rows in one statement, replaces
// the tails it rewrites with one delete, and sets every changed total with one update.
import { isTerminal, type TaskStateName } from "../../../common/task-state.js";
import type { StoredOutput } from "../interfaces.js";
import { STREAM_NAMES, streamIndex, type PersistedOutput } from "../output-buffer.js";
import { toStoredOutput, type OutputRowRecord } from "../stored-output.js";
import { int } from "../records.js";
import { bytes, type Sql } from "./sql.js";

/** A row to write: a head row, or a row of a rewritten tail. */
export interface OutputRowWrite {
  taskId: string;
  seq: number;
  stream: 0 | 1;
  part: "head" | "tail";
  gapBefore: number;
  data: Uint8Array;
}

const DELETE_TAILS = `DELETE FROM task_output WHERE part = 'tail' AND task_id = ANY($1::text[])`;

// A row already there (a commit whose outcome was lost with its connection, then retried) is
// overwritten with the same bytes rather than failing the batch.
const INSERT_ROWS = `
INSERT INTO task_output (task_id, seq, stream, part, gap_before, data)
SELECT * FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::bigint[], $6::bytea[])
ON CONFLICT (task_id, seq) DO UPDATE SET
  stream = excluded.stream, part = excluded.part, gap_before = excluded.gap_before, data = excluded.data`;

const UPDATE_TOTALS = `
UPDATE tasks AS t SET stdout_bytes = u.stdout_bytes, stderr_bytes = u.stderr_bytes
FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS u(id, stdout_bytes, stderr_bytes)
WHERE t.id = u.id`;

const SELECT_ROWS = `
SELECT seq, stream, part, gap_before, data FROM task_output WHERE task_id = $1 ORDER BY seq`;

const SELECT_TOTALS = `SELECT stdout_bytes, stderr_bytes FROM tasks WHERE id = $1`;

const SELECT_PERSISTED_ROWS = `
SELECT task_id, seq, stream, part, data FROM task_output WHERE task_id = ANY($1::text[]) ORDER BY task_id, seq`;

const SELECT_PERSISTED_TASKS = `
SELECT id, stdout_bytes, stderr_bytes, state FROM tasks WHERE id = ANY($1::text[])`;

export async function deleteTails(sql: Sql, taskIds: readonly string[]): Promise<void> {
  if (taskIds.length > 0) await sql.query(DELETE_TAILS, [taskIds]);
}

export async function insertOutputRows(sql: Sql, rows: readonly OutputRowWrite[]): Promise<void> {
  if (rows.length > 0) await sql.query(INSERT_ROWS, rowParams(rows));
}

/** The 6 arrays of output rows. */
export function rowParams(rows: readonly OutputRowWrite[]): unknown[] {
  return [
    rows.map((r) => r.taskId),
    rows.map((r) => r.seq),
    rows.map((r) => STREAM_NAMES[r.stream]),
    rows.map((r) => r.part),
    rows.map((r) => r.gapBefore),
    rows.map((r) => bytes(r.data)),
  ];
}

export interface TotalsWrite {
  taskId: string;
  totals: readonly [number, number];
}

export async function setTotals(sql: Sql, totals: readonly TotalsWrite[]): Promise<void> {
  if (totals.length > 0) await sql.query(UPDATE_TOTALS, totalsParams(totals));
}

/** The 3 arrays of output totals: task id, stdout bytes, stderr bytes. */
export function totalsParams(totals: readonly TotalsWrite[]): unknown[] {
  return [totals.map((t) => t.taskId), totals.map((t) => t.totals[0]), totals.map((t) => t.totals[1])];
}

/** A task's kept output as read back (zeros for an unknown task). */
export async function getOutput(sql: Sql, taskId: string): Promise<StoredOutput> {
  const [rows, totals] = await Promise.all([
    sql.query<Omit<OutputRowRecord, "gap_before"> & { gap_before: string }>(SELECT_ROWS, [taskId]),
    sql.query<{ stdout_bytes: string; stderr_bytes: string }>(SELECT_TOTALS, [taskId]),
  ]);
  const t = totals.rows[0];
  return toStoredOutput(
    rows.rows.map((r) => ({ ...r, gap_before: int(r.gap_before) })),
    t ? [int(t.stdout_bytes), int(t.stderr_bytes)] : [0, 0],
  );
}

/** What the output buffers of these tasks need to carry on from the database, by task id. */
export async function persistedOutputs(
  sql: Sql,
  taskIds: readonly string[],
): Promise<Map<string, PersistedOutput>> {
  const out = new Map<string, PersistedOutput>();
  if (taskIds.length === 0) return out;
  for (const id of taskIds) out.set(id, { totals: [0, 0], finished: false, rows: [] });
  const tasks = await sql.query<{
    id: string;
    stdout_bytes: string;
    stderr_bytes: string;
    state: TaskStateName;
  }>(SELECT_PERSISTED_TASKS, [taskIds]);
  for (const t of tasks.rows) {
    const p = out.get(t.id)!;
    p.totals = [int(t.stdout_bytes), int(t.stderr_bytes)];
    p.finished = isTerminal(t.state);
  }
  const rows = await sql.query<
    Pick<OutputRowRecord, "seq" | "stream" | "part" | "data"> & { task_id: string }
  >(SELECT_PERSISTED_ROWS, [taskIds]);
  for (const r of rows.rows) {
    out.get(r.task_id)!.rows.push({ seq: r.seq, stream: streamIndex(r.stream), part: r.part, data: r.data });
  }
  return out;
}
