// A task's kept output as both stores read it back: the head and tail rows of task_output, turned
// into the StoredOutput the hub serves (head and tail per stream, the chunks in produced order).
import type { OutputStreamName, StoredOutput } from "./interfaces.js";

export type OutputPart = "head" | "tail";

/** One row of task_output as read back. */
export interface OutputRowRecord {
  seq: number;
  stream: OutputStreamName;
  part: OutputPart;
  gap_before: number;
  data: Buffer;
}

/** A task's kept output as read back: head and tail per stream, and the chunks in produced order. */
export function toStoredOutput(rows: OutputRowRecord[], totals: [number, number]): StoredOutput {
  const parts = {
    stdout: { head: [] as Buffer[], tail: [] as Buffer[] },
    stderr: { head: [] as Buffer[], tail: [] as Buffer[] },
  };
  const chunks: StoredOutput["chunks"] = [];
  for (const row of rows) {
    parts[row.stream][row.part].push(row.data);
    chunks.push({ stream: row.stream, data: row.data, gapBefore: row.gap_before });
  }
  const stream = (name: OutputStreamName, total: number): StoredOutput["stdout"] => {
    const head = Buffer.concat(parts[name].head);
    const tail = Buffer.concat(parts[name].tail);
    return { head, tail, droppedBytes: Math.max(0, total - head.length - tail.length), totalBytes: total };
  };
  return { stdout: stream("stdout", totals[0]), stderr: stream("stderr", totals[1]), chunks };
}
