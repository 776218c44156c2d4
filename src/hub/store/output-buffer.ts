// One task's output as the cap keeps it: the first headCap bytes (interleaved stdout and stderr)
// go to head chunks that are persisted once; after that a rolling tail of the last tailCap bytes
// lives in memory and is persisted from time to time; the bytes in between are counted and
// dropped. Memory is bounded by the cap whatever the stream's length.
import type { OutputStreamName } from "./interfaces.js";

export type StreamIndex = 0 | 1;

export const STREAM_NAMES: readonly [OutputStreamName, OutputStreamName] = ["stdout", "stderr"];

export function streamIndex(stream: OutputStreamName): StreamIndex {
  return stream === "stdout" ? 0 : 1;
}

/** A run of bytes of one stream, as persisted. */
export interface OutputRow {
  seq: number;
  stream: StreamIndex;
  gapBefore: number;
  data: Uint8Array;
}

/** The head and tail sizes for a cap: the head gets cap/2 rounded down, the tail the rest. */
export function splitCap(capBytes: number): { headCap: number; tailCap: number } {
  const headCap = Math.floor(capBytes / 2);
  return { headCap, tailCap: capBytes - headCap };
}

/**
 * The last `capacity` bytes appended, in a ring that grows by doubling up to `capacity`, with the
 * stream of each byte kept as runs (adjacent bytes of one stream form one run).
 */
export class TailRing {
  private buf = new Uint8Array(0);
  private start = 0;
  size = 0;
  /** Bytes per stream currently held. */
  readonly bytes: [number, number] = [0, 0];
  private readonly runStreams: StreamIndex[] = [];
  private readonly runLengths: number[] = [];
  private firstRun = 0;

  constructor(readonly capacity: number) {}

  /** Appends data (copying it) and returns how many of the oldest bytes fell out. */
  push(stream: StreamIndex, data: Uint8Array): number {
    let dropped = 0;
    let src = data;
    if (src.length > this.capacity) {
      dropped += src.length - this.capacity;
      src = src.subarray(src.length - this.capacity);
    }
    const over = this.size + src.length - this.capacity;
    if (over > 0) {
      this.dropOldest(over);
      dropped += over;
    }
    if (src.length === 0) return dropped;

    this.reserve(this.size + src.length);
    const cap = this.buf.length;
    const at = (this.start + this.size) % cap;
    const first = Math.min(src.length, cap - at);
    this.buf.set(first === src.length ? src : src.subarray(0, first), at);
    if (first < src.length) this.buf.set(src.subarray(first), 0);
    this.size += src.length;
    this.bytes[stream] += src.length;

    const last = this.runStreams.length - 1;
    if (last >= this.firstRun && this.runStreams[last] === stream) this.runLengths[last]! += src.length;
    else {
      this.runStreams.push(stream);
      this.runLengths.push(src.length);
    }
    return dropped;
  }

  /** The runs, oldest first. A run's data is a view of the ring unless it wraps around its end. */
  runs(): { stream: StreamIndex; data: Uint8Array }[] {
    const out: { stream: StreamIndex; data: Uint8Array }[] = [];
    const cap = this.buf.length;
    let at = this.start;
    for (let i = this.firstRun; i < this.runStreams.length; i++) {
      const len = this.runLengths[i]!;
      let data: Uint8Array;
      if (at + len <= cap) data = this.buf.subarray(at, at + len);
      else {
        data = new Uint8Array(len);
        data.set(this.buf.subarray(at), 0);
        data.set(this.buf.subarray(0, len - (cap - at)), cap - at);
      }
      out.push({ stream: this.runStreams[i]!, data });
      at = (at + len) % cap;
    }
    return out;
  }

  private dropOldest(count: number): void {
    let n = count;
    while (n > 0) {
      const i = this.firstRun;
      const len = this.runLengths[i]!;
      const take = Math.min(len, n);
      this.bytes[this.runStreams[i]!] -= take;
      this.start = (this.start + take) % this.buf.length;
      this.size -= take;
      n -= take;
      if (take === len) this.firstRun++;
      else this.runLengths[i] = len - take;
    }
    if (this.firstRun > 64 && this.firstRun * 2 > this.runStreams.length) {
      this.runStreams.splice(0, this.firstRun);
      this.runLengths.splice(0, this.firstRun);
      this.firstRun = 0;
    }
    if (this.size === 0) this.start = 0;
  }

  private reserve(needed: number): void {
    const cap = this.buf.length;
    if (cap >= needed) return;
    const next = new Uint8Array(Math.min(this.capacity, Math.max(needed, cap * 2, 256)));
    const firstPart = Math.min(this.size, cap - this.start);
    next.set(this.buf.subarray(this.start, this.start + firstPart), 0);
    if (firstPart < this.size) next.set(this.buf.subarray(0, this.size - firstPart), firstPart);
    this.buf = next;
    this.start = 0;
  }
}

/** What the database already holds for a task, to carry on after a restart. */
export interface PersistedOutput {
  totals: [number, number];
  /** The task is in a terminal state already (this is late output). */
  finished?: boolean;
  rows: { seq: number; stream: StreamIndex; part: "head" | "tail"; data: Uint8Array }[];
}

export class OutputBuffer {
  readonly headCap: number;
  /** Bytes produced per stream, dropped ones included. */
  readonly totals: [number, number] = [0, 0];
  /** Bytes of the head so far, all streams. */
  headSize = 0;
  /** Head chunks not yet persisted (copies: the caller may reuse its buffers). */
  readonly pendingHead: { stream: StreamIndex; data: Uint8Array }[] = [];
  /** The seq the next head row gets: head rows already persisted. */
  headRows = 0;
  /** Bytes dropped between head and tail, all streams. */
  dropped = 0;
  readonly tail: TailRing;
  /** The tail changed since it was last persisted. */
  tailChanged = false;
  tailPersistedAt = 0;
  /** The task has finished: the store releases this buffer once what it holds is written. */
  finished = false;

  constructor(
    readonly taskId: string,
    capBytes: number,
    persisted?: PersistedOutput,
  ) {
    const { headCap, tailCap } = splitCap(capBytes);
    this.headCap = headCap;
    this.tail = new TailRing(tailCap);
    if (persisted) {
      this.restore(persisted);
      this.finished = persisted.finished ?? false;
    }
  }

  append(stream: StreamIndex, data: Uint8Array): void {
    if (data.length === 0) return;
    this.totals[stream] += data.length;
    let rest = data;
    if (this.headSize < this.headCap) {
      const take = Math.min(rest.length, this.headCap - this.headSize);
      this.pendingHead.push({ stream, data: rest.slice(0, take) });
      this.headSize += take;
      if (take === rest.length) return;
      rest = rest.subarray(take);
    }
    this.dropped += this.tail.push(stream, rest);
    this.tailChanged = true;
  }

  /** Pending head chunks as rows, adjacent chunks of one stream merged. */
  pendingHeadRows(): OutputRow[] {
    const rows: OutputRow[] = [];
    let i = 0;
    while (i < this.pendingHead.length) {
      const stream = this.pendingHead[i]!.stream;
      let j = i + 1;
      while (j < this.pendingHead.length && this.pendingHead[j]!.stream === stream) j++;
      const data =
        j === i + 1
          ? this.pendingHead[i]!.data
          : Buffer.concat(this.pendingHead.slice(i, j).map((c) => c.data));
      rows.push({ seq: this.headRows + rows.length, stream, gapBefore: 0, data });
      i = j;
    }
    return rows;
  }

  /** The tail as rows, numbered after every head row; the first one carries the dropped count. */
  tailRows(headRowCount: number): OutputRow[] {
    return this.tail.runs().map((run, i) => ({
      seq: headRowCount + i,
      stream: run.stream,
      gapBefore: i === 0 ? this.dropped : 0,
      data: run.data,
    }));
  }

  private restore(persisted: PersistedOutput): void {
    const kept: [number, number] = [0, 0];
    let headBytes = 0;
    let hasTail = false;
    for (const row of persisted.rows) {
      kept[row.stream] += row.data.length;
      if (row.part === "head") {
        headBytes += row.data.length;
        this.headRows = Math.max(this.headRows, row.seq + 1);
      } else {
        hasTail = true;
        this.tail.push(row.stream, row.data);
      }
    }
    // Once a tail exists the head is closed, even if the cap has grown since it was written.
    this.headSize = hasTail ? Math.max(headBytes, this.headCap) : headBytes;
    for (const s of [0, 1] as const) this.totals[s] = Math.max(persisted.totals[s], kept[s]);
    // Bytes produced after the last tail write and lost with the process count as dropped.
    this.dropped = this.totals[0] + this.totals[1] - headBytes - this.tail.size;
  }
}
