// Per-task output flow control: the agent sends at most the window the hub granted for the task (the
// initial window plus every OutputWindow), and only while the outbox has room. The rest is held here
// (at most what the source read before it paused) and the source is asked to pause until then.
import { OutputStream } from "../gen/switchboard/v1/task.js";
import { Fifo } from "./fifo.js";

/** Where the gate's output goes next: the outbox, seen as room or no room. */
export interface OutputRoom {
  hasRoom(): boolean;
  onceRoom(cb: () => void): void;
}

/** What a source of output (an executor) writes to. */
export interface OutputSink {
  /** false: pause the source until onceWritable fires. Nothing written is lost either way. */
  write(stream: OutputStream, data: Buffer): boolean;
  onceWritable(cb: () => void): void;
}

/** holding: keep what cannot go yet (normal). discarding: the task is stopping, drop it instead. */
type GateMode = "holding" | "discarding";

interface HeldChunk {
  stream: OutputStream;
  data: Buffer;
}

export class OutputGate implements OutputSink {
  private window: number;
  private readonly held = new Fifo<HeldChunk>();
  private heldBytes = 0;
  private mode: GateMode = "holding";
  private waitingForRoom = false;
  private writableWaiters: (() => void)[] = [];
  private flushedWaiters: (() => void)[] = [];
  /** Output bytes handed to send(). */
  sentBytes = 0;
  /** Output bytes dropped because the task was stopping and they did not fit the window. */
  droppedBytes = 0;

  /** window: bytes the hub allows now; Infinity when the hub does not flow-control output. */
  constructor(
    window: number,
    private readonly room: OutputRoom,
    private readonly send: (stream: OutputStream, data: Buffer) => void,
  ) {
    this.window = window;
  }

  get windowBytes(): number {
    return this.window;
  }

  get pendingBytes(): number {
    return this.heldBytes;
  }

  write(stream: OutputStream, data: Buffer): boolean {
    if (data.length > 0) {
      this.held.push({ stream, data });
      this.heldBytes += data.length;
      this.pump();
    }
    return this.held.length === 0;
  }

  onceWritable(cb: () => void): void {
    if (this.held.length === 0) queueMicrotask(cb);
    else this.writableWaiters.push(cb);
  }

  /**
   * More window from the hub (OutputWindow). With `grantedTotal` (all the hub has granted, the initial
   * window included) the window is that minus what was sent: a grant a broken link lost is made good.
   */
  grant(bytes: number, grantedTotal = 0): void {
    if (grantedTotal > 0 && Number.isFinite(this.window)) {
      this.window = grantedTotal - this.sentBytes;
      this.pump();
      return;
    }
    if (!(bytes > 0)) return;
    this.window += bytes;
    this.pump();
  }

  /** The task is stopping: send what fits now, drop the rest, and never make the source wait again. */
  stopHolding(): void {
    this.mode = "discarding";
    this.pump();
  }

  /** Resolves once nothing is held (everything sent, or dropped after stopHolding). */
  whenFlushed(): Promise<void> {
    if (this.held.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.flushedWaiters.push(resolve));
  }

  private pump(): void {
    while (this.held.length > 0) {
      if (this.window <= 0 || !this.room.hasRoom()) {
        if (this.mode === "discarding") {
          for (const c of this.held.clear()) this.droppedBytes += c.data.length;
          this.heldBytes = 0;
          break;
        }
        if (this.window > 0) this.waitForRoom();
        return;
      }
      const head = this.held.peek()!;
      if (head.data.length <= this.window) {
        this.held.shift();
        this.take(head.stream, head.data);
      } else {
        // The window ends inside this chunk: send exactly what it allows, keep the rest in place.
        const n = this.window;
        this.take(head.stream, head.data.subarray(0, n));
        head.data = head.data.subarray(n);
      }
    }
    this.notifyDrained();
  }

  private take(stream: OutputStream, data: Buffer): void {
    this.window -= data.length;
    this.heldBytes -= data.length;
    this.sentBytes += data.length;
    this.send(stream, data);
  }

  private waitForRoom(): void {
    if (this.waitingForRoom) return;
    this.waitingForRoom = true;
    this.room.onceRoom(() => {
      this.waitingForRoom = false;
      this.pump();
    });
  }

  private notifyDrained(): void {
    if (this.held.length !== 0) return;
    if (this.writableWaiters.length > 0) {
      const waiters = this.writableWaiters;
      this.writableWaiters = [];
      for (const w of waiters) w();
    }
    if (this.flushedWaiters.length > 0) {
      const waiters = this.flushedWaiters;
      this.flushedWaiters = [];
      for (const w of waiters) w();
    }
  }
}
