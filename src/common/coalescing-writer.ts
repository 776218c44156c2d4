// Writes the messages of one turn of the event loop as one gRPC message. grpc-js spends far more
// on each message (framing, HTTP/2 bookkeeping, callbacks on both ends) than on its bytes, and a
// busy hub or agent produces many small messages per turn: a task's Finished and the credit it
// frees, the Assigns for a burst of submissions, the results of tasks that ended together.
//
// Flushes at setImmediate, after the current I/O phase, so that everything the phase produced
// shares a write, at a cost of microseconds. (Writing the first message of each turn at once was
// measured too: it gained nothing in round-trip time and lost a sixth of the throughput.) Large
// messages are never held: they go out at once, after what was pending, so ordering is kept and a
// batch stays far below the message size limit.

export interface CoalescingWriterOptions<T> {
  /** Writes one message to the stream; false means its buffer is full (backpressure). */
  write(message: T): boolean;
  /** Calls back once the stream has room again, after a write returned false. */
  onceDrain?(cb: () => void): void;
  /** Wraps several messages into one. */
  batch(messages: T[]): T;
  /** Bytes a message carries in payload (output data, results); small messages count 0. */
  payloadBytes?(message: T): number;
  /** Flush when this many are pending. Default 256. */
  maxMessages?: number;
  /** Messages with more payload than this are written alone. Default 64 KiB. */
  maxPayloadBytes?: number;
}

export class CoalescingWriter<T> {
  private pending: T[] = [];
  private pendingBytes = 0;
  private scheduled: NodeJS.Immediate | undefined;
  private lastWriteOk = true;
  private awaitingDrain = false;
  private readonly maxMessages: number;
  private readonly maxPayloadBytes: number;

  constructor(private readonly opts: CoalescingWriterOptions<T>) {
    this.maxMessages = opts.maxMessages ?? 256;
    this.maxPayloadBytes = opts.maxPayloadBytes ?? 64 * 1024;
  }

  /** Queues a message; returns the stream's backpressure as of the last write. */
  write(message: T): boolean {
    const bytes = this.opts.payloadBytes?.(message) ?? 0;
    if (bytes > this.maxPayloadBytes) {
      this.flush();
      this.wrote(this.opts.write(message));
      return this.lastWriteOk;
    }
    this.pending.push(message);
    this.pendingBytes += bytes;
    if (this.pending.length >= this.maxMessages || this.pendingBytes > this.maxPayloadBytes) this.flush();
    else this.scheduled ??= setImmediate(this.flush);
    return this.lastWriteOk;
  }

  /** Writes what is pending now: call it before ending the stream. */
  readonly flush = (): void => {
    if (this.scheduled) {
      clearImmediate(this.scheduled);
      this.scheduled = undefined;
    }
    const messages = this.pending;
    if (messages.length === 0) return;
    this.pending = [];
    this.pendingBytes = 0;
    this.wrote(this.opts.write(messages.length === 1 ? messages[0]! : this.opts.batch(messages)));
  };

  private wrote(ok: boolean): void {
    this.lastWriteOk = ok;
    if (ok || this.awaitingDrain || !this.opts.onceDrain) return;
    this.awaitingDrain = true;
    this.opts.onceDrain(() => {
      this.awaitingDrain = false;
      this.lastWriteOk = true;
    });
  }

  /** Drops what is pending (the stream is gone). */
  discard(): void {
    if (this.scheduled) clearImmediate(this.scheduled);
    this.scheduled = undefined;
    this.pending = [];
    this.pendingBytes = 0;
  }

  get pendingCount(): number {
    return this.pending.length;
  }
}
