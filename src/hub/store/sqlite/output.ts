// Queries on task_output, the kept head and tail chunks of each task's output.
import type { Database, Statement } from "better-sqlite3";
import { STREAM_NAMES, streamIndex, type OutputRow, type PersistedOutput } from "../output-buffer.js";
import { isTerminal, type TaskStateName } from "../../../common/task-state.js";
import type { OutputStreamName } from "../interfaces.js";
import type { OutputPart, OutputRowRecord } from "../stored-output.js";

const INSERT_OUTPUT = `
INSERT INTO task_output (task_id, seq, stream, part, gap_before, data)
VALUES (?, ?, ?, ?, ?, ?)`;

const DELETE_TAIL = `DELETE FROM task_output WHERE task_id = ? AND part = 'tail'`;

const SELECT_OUTPUT = `
SELECT seq, stream, part, gap_before, data FROM task_output
WHERE task_id = ?
ORDER BY seq`;

// The totals per stream live on the task row, where listings show them.
const SELECT_OUTPUT_TOTALS = `SELECT stdout_bytes, stderr_bytes, state FROM tasks WHERE id = ?`;

const UPDATE_OUTPUT_TOTALS = `UPDATE tasks SET stdout_bytes = ?, stderr_bytes = ? WHERE id = ?`;

export class OutputQueries {
  private readonly insertStmt: Statement<[string, number, OutputStreamName, OutputPart, number, Uint8Array]>;
  private readonly deleteTailStmt: Statement<[string]>;
  private readonly selectStmt: Statement<[string], OutputRowRecord>;
  private readonly totalsStmt: Statement<
    [string],
    { stdout_bytes: number; stderr_bytes: number; state: TaskStateName }
  >;
  private readonly setTotalsStmt: Statement<[number, number, string]>;

  constructor(db: Database) {
    this.insertStmt = db.prepare(INSERT_OUTPUT);
    this.deleteTailStmt = db.prepare(DELETE_TAIL);
    this.selectStmt = db.prepare(SELECT_OUTPUT);
    this.totalsStmt = db.prepare(SELECT_OUTPUT_TOTALS);
    this.setTotalsStmt = db.prepare(UPDATE_OUTPUT_TOTALS);
  }

  insertHead(taskId: string, rows: OutputRow[]): void {
    for (const row of rows) {
      this.insertStmt.run(taskId, row.seq, STREAM_NAMES[row.stream], "head", row.gapBefore, row.data);
    }
  }

  /** Replaces the task's tail rows with these. */
  replaceTail(taskId: string, rows: OutputRow[]): void {
    this.deleteTailStmt.run(taskId);
    for (const row of rows) {
      this.insertStmt.run(taskId, row.seq, STREAM_NAMES[row.stream], "tail", row.gapBefore, row.data);
    }
  }

  setTotals(taskId: string, totals: readonly [number, number]): void {
    this.setTotalsStmt.run(totals[0], totals[1], taskId);
  }

  /** Every kept chunk of the task, in the order produced. */
  rows(taskId: string): OutputRowRecord[] {
    return this.selectStmt.all(taskId);
  }

  /** Bytes produced per stream, as last recorded on the task (zeros for an unknown task). */
  totals(taskId: string): [number, number] {
    const row = this.totalsStmt.get(taskId);
    return row ? [row.stdout_bytes, row.stderr_bytes] : [0, 0];
  }

  /** What a task's output buffer needs to carry on from the database. */
  persisted(taskId: string): PersistedOutput {
    const task = this.totalsStmt.get(taskId);
    return {
      totals: task ? [task.stdout_bytes, task.stderr_bytes] : [0, 0],
      finished: task ? isTerminal(task.state) : false,
      rows: this.rows(taskId).map((r) => ({
        seq: r.seq,
        stream: streamIndex(r.stream),
        part: r.part,
        data: r.data,
      })),
    };
  }
}
