// The outbox: messages waiting for the hub's stream, written in order under its backpressure. Events and
// credit grants share one FIFO lane (a grant never overtakes the Finished that freed its slot); heartbeats
// and Goodbye jump ahead. Bounded in events and bytes: output producers wait for room.
import type { AgentMessage } from "../gen/switchboard/v1/agent.js";
import { Fifo } from "./fifo.js";

/** The stream side the outbox writes to (the live gRPC call, or a test's fake). */
export interface StreamWriter {
  /** false: the stream's buffer is full; wait for onceDrain before writing more. */
  write(msg: AgentMessage): boolean;
  onceDrain(cb: () => void): void;
}

export interface OutboxHooks {
  /** A message left the outbox for the stream. */
  written?(msg: AgentMessage): void;
  /** The event lane got shorter (credits may be grantable again). */
  shrank?(): void;
}

/** Output bytes the outbox may hold, whatever the event count: 1000 chunks of 1 MiB would be a GiB. */
export const DEFAULT_OUTBOX_MAX_BYTES = 16 * 1024 * 1024;

export function outputBytes(msg: AgentMessage): number {
  return msg.body?.$case === "event" && msg.body.value.event?.$case === "output"
    ? msg.body.value.event.value.data.length
    : 0;
}

export class Outbox {
  readonly capacity: number;
  readonly maxBytes: number;
  private bytes = 0;
  private readonly events = new Fifo<AgentMessage>();
  private readonly urgent = new Fifo<AgentMessage>();
  private writer: StreamWriter | undefined;
  /** Bumped on every attach/detach so a stale 'drain' from an old stream is ignored. */
  private generation = 0;
  private blocked = false;
  private pumping = false;
  private roomWaiters: (() => void)[] = [];
  private emptyWaiters: (() => void)[] = [];
  private readonly hooks: OutboxHooks;

  constructor(capacity: number, hooks: OutboxHooks = {}, maxBytes = DEFAULT_OUTBOX_MAX_BYTES) {
    if (!(capacity >= 1)) throw new RangeError(`outbox capacity must be at least 1, got ${capacity}`);
    this.capacity = capacity;
    this.maxBytes = maxBytes;
    this.hooks = hooks;
  }

  /** Events and credit grants waiting (heartbeats are not counted: they are not work). */
  get depth(): number {
    return this.events.length;
  }

  get attached(): boolean {
    return this.writer !== undefined;
  }

  /** Output bytes waiting. */
  get queuedBytes(): number {
    return this.bytes;
  }

  /** Whether an output producer may add an event now. */
  hasRoom(): boolean {
    return this.events.length < this.capacity && this.bytes < this.maxBytes;
  }

  /** Calls cb once when the event lane has room again (at once if it has room now). */
  onceRoom(cb: () => void): void {
    if (this.hasRoom()) queueMicrotask(cb);
    else this.roomWaiters.push(cb);
  }

  push(msg: AgentMessage): void {
    this.bytes += outputBytes(msg);
    this.events.push(msg);
    this.pump();
  }

  pushUrgent(msg: AgentMessage): void {
    this.urgent.push(msg);
    this.pump();
  }

  /** Starts writing to a new stream (after its Welcome). */
  attach(writer: StreamWriter): void {
    this.generation += 1;
    this.writer = writer;
    this.blocked = false;
    this.pump();
  }

  /** Stops writing (the stream ended); what is queued stays until clear(). */
  detach(): void {
    this.generation += 1;
    this.writer = undefined;
    this.blocked = false;
  }

  /** Drops everything queued (a lost session's events cannot be delivered); returns how many. */
  clear(): number {
    const dropped = this.events.clear().length + this.urgent.clear().length;
    this.bytes = 0;
    this.settled(dropped > 0);
    return dropped;
  }

  /** Resolves true once everything queued was handed to the stream, false at the deadline. */
  whenEmpty(timeoutMs: number): Promise<boolean> {
    if (this.events.length === 0 && this.urgent.length === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean): void => {
        clearTimeout(timer);
        this.emptyWaiters = this.emptyWaiters.filter((w) => w !== onEmpty);
        resolve(ok);
      };
      const onEmpty = (): void => done(true);
      const timer = setTimeout(() => done(false), timeoutMs);
      this.emptyWaiters.push(onEmpty);
    });
  }

  private pump(): void {
    if (this.pumping) return; // the running loop below picks up what a hook pushed
    this.pumping = true;
    let wrote = false;
    try {
      while (this.writer && !this.blocked) {
        let msg = this.urgent.shift();
        if (!msg) {
          msg = this.events.shift();
          if (!msg) break;
          this.bytes -= outputBytes(msg);
        }
        wrote = true;
        const ok = this.writer.write(msg);
        this.hooks.written?.(msg);
        if (!ok) this.waitForDrain();
      }
    } finally {
      this.pumping = false;
    }
    this.settled(wrote);
  }

  private waitForDrain(): void {
    const writer = this.writer;
    if (!writer) return;
    this.blocked = true;
    const generation = this.generation;
    writer.onceDrain(() => {
      if (generation !== this.generation) return;
      this.blocked = false;
      this.pump();
    });
  }

  /** Tells the waiters what changed after messages left. */
  private settled(shrank: boolean): void {
    if (this.roomWaiters.length > 0 && this.hasRoom()) {
      const waiters = this.roomWaiters;
      this.roomWaiters = [];
      for (const w of waiters) w();
    }
    if (shrank) this.hooks.shrank?.();
    if (this.emptyWaiters.length > 0 && this.events.length === 0 && this.urgent.length === 0) {
      for (const w of [...this.emptyWaiters]) w();
    }
  }
}
