// The inbox: assigned tasks waiting for a free executor, first come first served, never more than
// its capacity (seed 001's task queue). A full inbox refuses, it never grows.
import { Fifo } from "../fifo.js";

export class Inbox<T> {
  readonly capacity: number;
  private readonly queue = new Fifo<T>();

  constructor(capacity: number) {
    if (!(capacity >= 1)) throw new RangeError(`inbox capacity must be at least 1, got ${capacity}`);
    this.capacity = capacity;
  }

  get depth(): number {
    return this.queue.length;
  }

  isFull(): boolean {
    return this.queue.length >= this.capacity;
  }

  /** false when full: the caller refuses the task. */
  offer(item: T): boolean {
    if (this.isFull()) return false;
    this.queue.push(item);
    return true;
  }

  take(): T | undefined {
    return this.queue.shift();
  }

  /** Takes out every queued item the predicate selects (e.g. those of a lost session). */
  removeWhere(select: (item: T) => boolean): T[] {
    return this.queue.removeWhere(select);
  }
}
