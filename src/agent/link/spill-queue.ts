// A FIFO that keeps its head in memory and spills its tail to a file once the memory part passes a
// cap: while the link to the hub is down, running tasks go on producing events, and these must
// neither be lost nor grow the agent's memory without bound. Order is kept: once anything is in the
// file, later items go there too, and the file is read back (in slices of a few MiB) only when the
// memory part is empty.
import { closeSync, ftruncateSync, mkdirSync, openSync, readSync, unlinkSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import { Fifo } from "../fifo.js";

export interface SpillCodec<T> {
  encode(item: T): Uint8Array;
  decode(bytes: Uint8Array): T;
  /** What an item costs in memory, in bytes (payload plus a fixed overhead). */
  size(item: T): number;
}

export interface SpillQueueOptions<T> {
  /** The spill file; absent: never spill (the memory part is unbounded, callers bound it). */
  path?: string;
  /** Memory bytes past which new items go to the file. */
  memoryBytes: number;
  codec: SpillCodec<T>;
}

/** Read back this much of the file at once. */
const READ_SLICE_BYTES = 4 * 1024 * 1024;

export class SpillQueue<T> {
  private readonly mem = new Fifo<T>();
  private memBytes = 0;
  private fd: number | undefined;
  /** Bytes written to the file, and the offset up to which it was read back. */
  private writeOffset = 0;
  private readOffset = 0;
  private fileItems = 0;
  /** Bytes ever written to the file. */
  spilledTotal = 0;
  private readonly header = Buffer.alloc(4);

  constructor(private readonly opts: SpillQueueOptions<T>) {}

  get length(): number {
    return this.mem.length + this.fileItems;
  }

  /** Bytes (by codec.size) of the items in memory. */
  get memoryBytes(): number {
    return this.memBytes;
  }

  /** Bytes of the items in the file, not yet read back. */
  get fileBytes(): number {
    return this.writeOffset - this.readOffset;
  }

  push(item: T): void {
    const size = this.opts.codec.size(item);
    if (
      this.opts.path !== undefined &&
      (this.fileItems > 0 || this.memBytes + size > this.opts.memoryBytes)
    ) {
      this.append(item);
      return;
    }
    this.mem.push(item);
    this.memBytes += size;
  }

  /** Puts items back in front, in their order (events to re-send after a reconnect). */
  prepend(items: readonly T[]): void {
    if (items.length === 0) return;
    const rest = this.mem.clear();
    for (const item of items) {
      this.mem.push(item);
      this.memBytes += this.opts.codec.size(item);
    }
    for (const item of rest) this.mem.push(item);
  }

  peek(): T | undefined {
    if (this.mem.length === 0) this.readBack();
    return this.mem.peek();
  }

  shift(): T | undefined {
    if (this.mem.length === 0) this.readBack();
    const item = this.mem.shift();
    if (item !== undefined) this.memBytes -= this.opts.codec.size(item);
    return item;
  }

  /** Removes every item the predicate selects (the file too: it is rewritten); returns them. */
  removeWhere(select: (item: T) => boolean): T[] {
    const all = this.drainAll();
    const removed: T[] = [];
    for (const item of all) {
      if (select(item)) removed.push(item);
      else this.push(item);
    }
    return removed;
  }

  clear(): T[] {
    return this.drainAll();
  }

  /** Memory items, then file items (read back), in order. */
  *[Symbol.iterator](): IterableIterator<T> {
    yield* this.mem;
    if (this.fd === undefined || this.fileItems === 0) return;
    let offset = this.readOffset;
    while (offset < this.writeOffset) {
      const { item, next } = this.readAt(offset);
      offset = next;
      yield item;
    }
  }

  /** Closes and deletes the spill file. */
  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
    try {
      unlinkSync(this.opts.path!);
    } catch {
      // already gone
    }
  }

  private drainAll(): T[] {
    const out: T[] = [];
    for (;;) {
      const item = this.shift();
      if (item === undefined) break;
      out.push(item);
    }
    return out;
  }

  private append(item: T): void {
    if (this.fd === undefined) {
      mkdirSync(dirname(this.opts.path!), { recursive: true });
      this.fd = openSync(this.opts.path!, "w+", 0o600);
    }
    const bytes = this.opts.codec.encode(item);
    this.header.writeUInt32LE(bytes.byteLength, 0);
    writeSync(this.fd, this.header, 0, 4, this.writeOffset);
    writeSync(this.fd, bytes, 0, bytes.byteLength, this.writeOffset + 4);
    this.writeOffset += 4 + bytes.byteLength;
    this.spilledTotal += 4 + bytes.byteLength;
    this.fileItems += 1;
  }

  private readAt(offset: number): { item: T; next: number } {
    readSync(this.fd!, this.header, 0, 4, offset);
    const n = this.header.readUInt32LE(0);
    const buf = Buffer.allocUnsafe(n);
    readSync(this.fd!, buf, 0, n, offset + 4);
    return { item: this.opts.codec.decode(buf), next: offset + 4 + n };
  }

  /** Moves the next slice of the file into memory. */
  private readBack(): void {
    if (this.fd === undefined || this.fileItems === 0) return;
    let read = 0;
    while (this.fileItems > 0 && read < READ_SLICE_BYTES) {
      const { item, next } = this.readAt(this.readOffset);
      read += next - this.readOffset;
      this.readOffset = next;
      this.fileItems -= 1;
      this.mem.push(item);
      this.memBytes += this.opts.codec.size(item);
    }
    if (this.fileItems === 0) {
      // Empty again: start the file over rather than let it grow for ever.
      ftruncateSync(this.fd, 0);
      this.readOffset = 0;
      this.writeOffset = 0;
    }
  }
}
