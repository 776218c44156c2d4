// Input for a running task on its way from a client to the agent: held in order, forwarded only
// within the input window the agent granted (InputWindow), so that a fast client is paused rather
// than buffered: the hub holds at most HOLD_BYTES per task before forwarding. Each forwarded message
// carries its offset in the task's input and is kept until the agent acknowledges it
// (InputWindow.received), so that what a broken link lost is sent again when the session resumes (the
// agent skips what it has): at most one input window per task.
import type { TaskInput } from "../../gen/switchboard/v1/task.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { AgentSession } from "../agents/agent-session.js";
import type { LiveTask } from "./live-task.js";

/** Input bytes held per task before the client's stream is paused. */
export const HOLD_BYTES = 1024 * 1024;
/** Forwarded, unacknowledged input kept per task at most (an agent that never acknowledges is not resent). */
const UNACKED_LIMIT_BYTES = 16 * 1024 * 1024;

export class TaskInputQueue {
  private readonly queue: TaskInput[] = [];
  private queuedBytes = 0;
  private window = 0;
  private closed = false;
  /** Forwarded with its offset, not acknowledged yet: sent again when a broken link resumes. */
  private readonly unacked: TaskInput[] = [];
  private unackedBytes = 0;
  private roomWaiters: (() => void)[] = [];
  private drainWaiters: (() => void)[] = [];
  /** Data bytes forwarded to the agent. */
  forwarded = 0;

  /** send: hands one TaskInput to the task's agent; false when it has no connected session now. */
  constructor(private readonly send: (m: TaskInput) => boolean) {}

  get ended(): boolean {
    return this.closed;
  }

  push(m: TaskInput): void {
    if (this.closed) return;
    this.queue.push(m);
    this.queuedBytes += m.data.length;
    this.pump();
  }

  /**
   * The agent takes this many more data bytes, and has taken `received` in all (when it says). With
   * `grantedTotal` (all it has granted), the window is that minus what was forwarded: a grant that a
   * broken link lost is made good.
   */
  grant(bytes: number, received?: number, grantedTotal?: number): void {
    if (received !== undefined) this.acknowledge(received);
    if (grantedTotal !== undefined && grantedTotal > 0) this.window = grantedTotal - this.forwarded;
    else this.window += bytes;
    this.pump();
  }

  /** The agent's session resumed after a broken link: what it may not have received goes again, in order. */
  resend(): void {
    if (this.closed) return;
    for (const m of this.unacked) if (!this.send(m)) return;
  }

  hasRoom(): boolean {
    return this.closed || this.queuedBytes < HOLD_BYTES;
  }

  onceRoom(cb: () => void): void {
    if (this.hasRoom()) cb();
    else this.roomWaiters.push(cb);
  }

  /** Resolves once everything pushed has been forwarded, or the task ended. */
  whenDrained(): Promise<void> {
    if (this.closed || this.queue.length === 0) return Promise.resolve();
    return new Promise((r) => this.drainWaiters.push(r));
  }

  /** The task ended: nothing more is forwarded; waiters are released. */
  close(): void {
    this.closed = true;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.wake();
  }

  /** Forwards what the window allows; control messages (resize, eof) go as soon as they are first. */
  pump(): void {
    while (!this.closed && this.queue.length > 0) {
      const head = this.queue[0]!;
      if (head.data.length > 0) {
        if (this.window <= 0) break;
        if (head.data.length > this.window) {
          // Send what fits; the rest waits for more window.
          const part = head.data.subarray(0, this.window);
          if (
            !this.forward({
              taskId: head.taskId,
              data: Buffer.from(part),
              eof: false,
              resize: undefined,
              sha256: "",
              offset: 0,
            })
          )
            break;
          head.data = head.data.subarray(this.window);
          this.account(part.length);
          continue;
        }
      }
      if (!this.forward(head)) break;
      this.queue.shift();
      this.account(head.data.length);
    }
    this.wake();
  }

  /** Sends one message numbered with its offset, and keeps it until acknowledged. */
  private forward(m: TaskInput): boolean {
    const out: TaskInput = { ...m, offset: this.forwarded };
    if (!this.send(out)) return false;
    this.unacked.push(out);
    this.unackedBytes += out.data.length;
    while (this.unackedBytes > UNACKED_LIMIT_BYTES && this.unacked.length > 0) this.dropOldest();
    return true;
  }

  private acknowledge(received: number): void {
    for (;;) {
      const m = this.unacked[0];
      if (!m) return;
      const taken = m.data.length > 0 ? m.offset + m.data.length <= received : m.offset < received;
      if (!taken) return;
      this.dropOldest();
    }
  }

  private dropOldest(): void {
    const m = this.unacked.shift();
    if (m) this.unackedBytes -= m.data.length;
  }

  private account(n: number): void {
    this.window -= n;
    this.queuedBytes -= n;
    this.forwarded += n;
  }

  private wake(): void {
    if (this.hasRoom() && this.roomWaiters.length > 0) {
      const w = this.roomWaiters;
      this.roomWaiters = [];
      for (const cb of w) cb();
    }
    if ((this.closed || this.queue.length === 0) && this.drainWaiters.length > 0) {
      const w = this.drainWaiters;
      this.drainWaiters = [];
      for (const cb of w) cb();
    }
  }
}

/** The input queues of the live tasks, each sending to whichever session of its agent is connected. */
export class TaskInputs {
  private readonly queues = new Map<string, { task: LiveTask; queue: TaskInputQueue }>();

  constructor(private readonly agents: AgentRegistry) {}

  /** The input queue of a live task (made on first use, dropped when the task ends). */
  inputFor(t: LiveTask): TaskInputQueue {
    const held = this.queues.get(t.id);
    if (held) return held.queue;
    const queue = new TaskInputQueue((m) => {
      const s = this.agents.get(t.agentId);
      if (!s?.connected || t.terminal) return false;
      s.send({ body: { $case: "input", value: m } });
      return true;
    });
    this.queues.set(t.id, { task: t, queue });
    if (t.terminal) queue.close();
    else
      t.onFinish(() => {
        queue.close();
        this.queues.delete(t.id);
      });
    return queue;
  }

  /**
   * A session of the agent opened: input that waited while its link was down goes out on it; on a
   * resumed one, first what was sent before the break and not acknowledged (the agent skips what it has).
   */
  sessionOpened(s: AgentSession, resumed: boolean): void {
    for (const { task, queue } of this.queues.values()) {
      if (task.agentId !== s.agentId) continue;
      if (resumed) queue.resend();
      queue.pump();
    }
  }
}
