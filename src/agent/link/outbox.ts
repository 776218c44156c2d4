// The outbox: messages waiting for the hub's stream, written in order under its backpressure. Events and
// credit grants share one FIFO lane (a grant never overtakes the Finished that freed its slot); heartbeats
// and Goodbye jump ahead. Bounded in events and bytes: output producers wait for room.
//
// Resume: every task event written stays here, unacknowledged, until the hub's Ack counts it. When the
// stream breaks and the agent holds its tasks (suspend), producers may go on: the lane takes up to
// memoryBytes in memory and then spills to a file, up to spillMaxBytes. On the resumed session the
// events the hub did not receive go out again first (resume).
import { AgentMessage } from "../../gen/switchboard/v1/agent.js";
import { Fifo } from "../fifo.js";
import { RetainArena, type ArenaCopy } from "./retain-arena.js";
import { SpillQueue } from "./spill-queue.js";

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
/** While the link is down: event bytes held in memory before spilling to the file. */
export const DEFAULT_RESUME_MEMORY_BYTES = 64 * 1024 * 1024;
/** While the link is down: most event bytes spilled to the file; past it, producers wait. */
export const DEFAULT_RESUME_SPILL_MAX_BYTES = 1024 * 1024 * 1024;

/** Memory an event costs beyond its output bytes (objects, ids), for the memory cap. */
const EVENT_OVERHEAD_BYTES = 256;

export interface OutboxResumeOptions {
  /** Where the lane spills while the link is down; absent: it waits at memoryBytes instead. */
  spillPath?: string;
  memoryBytes?: number;
  spillMaxBytes?: number;
}

function outputData(msg: AgentMessage): Uint8Array {
  return msg.body?.$case === "event" && msg.body.value.event?.$case === "output"
    ? msg.body.value.event.value.data
    : new Uint8Array(0);
}

export function outputBytes(msg: AgentMessage): number {
  return msg.body?.$case === "event" && msg.body.value.event?.$case === "output"
    ? msg.body.value.event.value.data.length
    : 0;
}

function isEvent(msg: AgentMessage): boolean {
  return msg.body?.$case === "event";
}

/** A written event kept for re-sending: its output copied into the arena, the rest as it was. */
interface Retained {
  msg: AgentMessage;
  copy: ArenaCopy | undefined;
}

const NO_DATA = Buffer.alloc(0);

/** The event with its output data replaced (the message objects are shared otherwise). */
function withData(msg: AgentMessage, data: Buffer): AgentMessage {
  if (msg.body?.$case !== "event" || msg.body.value.event?.$case !== "output") return msg;
  const ev = msg.body.value;
  const out = ev.event!.value as { stream: number; data: Buffer };
  return {
    body: { $case: "event", value: { ...ev, event: { $case: "output", value: { ...out, data } } } },
  };
}

export class Outbox {
  readonly capacity: number;
  readonly maxBytes: number;
  readonly memoryBytes: number;
  readonly spillMaxBytes: number;
  private readonly spills: boolean;
  private bytes = 0;
  private readonly events: SpillQueue<AgentMessage>;
  private readonly urgent = new Fifo<AgentMessage>();
  /** Task events written on this session and not acknowledged yet, oldest first. */
  private readonly unacked = new Fifo<Retained>();
  private readonly arena = new RetainArena();
  private unackedBytes = 0;
  private acked = 0;
  private ackBlocked = false;
  /** The link is down and the agent holds its tasks: the lane may grow into the spill file. */
  private holding = false;
  private writer: StreamWriter | undefined;
  /** Bumped on every attach/detach so a stale 'drain' from an old stream is ignored. */
  private generation = 0;
  private blocked = false;
  private pumping = false;
  private roomWaiters: (() => void)[] = [];
  private emptyWaiters: (() => void)[] = [];
  private readonly hooks: OutboxHooks;

  constructor(
    capacity: number,
    hooks: OutboxHooks = {},
    maxBytes = DEFAULT_OUTBOX_MAX_BYTES,
    resume: OutboxResumeOptions = {},
  ) {
    if (!(capacity >= 1)) throw new RangeError(`outbox capacity must be at least 1, got ${capacity}`);
    this.capacity = capacity;
    this.maxBytes = maxBytes;
    this.hooks = hooks;
    this.memoryBytes = resume.memoryBytes ?? DEFAULT_RESUME_MEMORY_BYTES;
    this.spillMaxBytes = resume.spillMaxBytes ?? DEFAULT_RESUME_SPILL_MAX_BYTES;
    this.spills = resume.spillPath !== undefined;
    this.events = new SpillQueue<AgentMessage>({
      ...(resume.spillPath !== undefined ? { path: resume.spillPath } : {}),
      memoryBytes: this.memoryBytes,
      codec: {
        encode: (m) => AgentMessage.encode(m).finish(),
        decode: (b) => AgentMessage.decode(b),
        size: (m) => outputBytes(m) + EVENT_OVERHEAD_BYTES,
      },
    });
  }

  /** Task events written and not acknowledged by the hub. */
  get unackedCount(): number {
    return this.unacked.length;
  }

  /** Event bytes spilled to the file now, and ever. */
  get spilledBytes(): number {
    return this.events.fileBytes;
  }

  get spilledTotal(): number {
    return this.events.spilledTotal;
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
    if (this.holding) {
      return this.spills
        ? this.events.fileBytes < this.spillMaxBytes
        : this.events.memoryBytes < this.memoryBytes;
    }
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
    this.forget();
    this.settled(dropped > 0);
    return dropped;
  }

  /** The hub received this many task events on this session (cumulative): forget them. */
  ack(received: number): void {
    while (this.acked < received) {
      const r = this.unacked.shift();
      if (!r) break;
      if (r.copy) {
        this.unackedBytes -= r.copy.length;
        this.arena.release(r.copy);
      }
      this.acked += 1;
    }
    if (this.ackBlocked && this.unackedBytes < this.memoryBytes) {
      this.ackBlocked = false;
      this.pump();
    }
  }

  /**
   * The stream broke and the agent keeps its tasks: session-bound messages (credits, probe replies,
   * heartbeats, Goodbye) are dropped, task events are kept, and the lane may spill.
   */
  suspend(): void {
    this.holding = true;
    this.urgent.clear();
    this.events.removeWhere((m) => !isEvent(m));
    this.settled(true);
  }

  /**
   * A new session resumed the broken one, whose hub had received `received` events: the rest of
   * the unacknowledged ones go out again first, then what was queued.
   */
  resume(received: number): void {
    // Attached first, the queued events would overtake the ones re-sent here.
    if (this.writer) throw new Error("outbox.resume must come before attach");
    this.ack(received);
    // Re-sent from copies of their own: the arena's slabs are reused from here on.
    const again = this.unacked
      .clear()
      .map((r) => (r.copy ? withData(r.msg, RetainArena.read(r.copy)) : r.msg));
    this.arena.reset();
    for (const m of again) this.bytes += outputBytes(m);
    this.events.prepend(again);
    this.unackedBytes = 0;
    this.acked = 0;
    this.ackBlocked = false;
    this.holding = false;
    this.pump();
  }

  /** A new session that resumes nothing: the old session's unacknowledged events are gone. */
  forget(): void {
    this.unacked.clear();
    this.arena.reset();
    this.unackedBytes = 0;
    this.acked = 0;
    this.ackBlocked = false;
    this.holding = false;
  }

  /** Drops the queued events of these tasks (the hub no longer holds them); returns how many. */
  dropTasks(taskIds: ReadonlySet<string>): number {
    const removed = this.events.removeWhere(
      (m) => m.body?.$case === "event" && taskIds.has(m.body.value.taskId),
    );
    for (const m of removed) this.bytes -= outputBytes(m);
    if (removed.length > 0) this.settled(true);
    return removed.length;
  }

  /** Ids of the tasks with events queued or unacknowledged. */
  taskIdsWithEvents(): Set<string> {
    const ids = new Set<string>();
    for (const r of this.unacked) if (r.msg.body?.$case === "event") ids.add(r.msg.body.value.taskId);
    for (const m of this.events) if (m.body?.$case === "event") ids.add(m.body.value.taskId);
    return ids;
  }

  /** Deletes the spill file (shutdown). */
  close(): void {
    this.events.close();
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
          if (this.unackedBytes >= this.memoryBytes) {
            // The hub acknowledges far sooner than this: until it does, hold back.
            this.ackBlocked = true;
            break;
          }
          msg = this.events.shift();
          if (!msg) break;
          this.bytes -= outputBytes(msg);
        }
        wrote = true;
        const ok = this.writer.write(msg);
        if (isEvent(msg)) {
          const n = outputBytes(msg);
          if (n > 0) {
            const copy = this.arena.copy(outputData(msg));
            this.unacked.push({ msg: withData(msg, NO_DATA), copy });
            this.unackedBytes += n;
          } else {
            this.unacked.push({ msg, copy: undefined });
          }
        }
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
