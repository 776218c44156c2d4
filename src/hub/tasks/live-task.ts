// A task while the hub holds it in memory: its state machine, the events clients see (numbered
// by the hub from 1), the watchers attached to it, and the output window that lets the agent
// send only as far ahead of the slowest watcher as the hub is willing to buffer.
import type { TaskEvent, TaskSpec } from "../../gen/switchboard/v1/task.js";
import { canTransition, isTerminal, type TaskStateName } from "../../common/task-state.js";
import type { Target } from "../scheduler.js";

/** Output kept in memory per task for watchers that attach late; older output is trimmed. */
export const RETAINED_OUTPUT_BYTES = 2 * 1024 * 1024;

export interface Watcher {
  /** Hand an event to the watcher; call `consumed` once it has left the hub (written out). */
  deliver(ev: TaskEvent, consumed: () => void): void;
  /** Output bytes this watcher has consumed, counted from the task's first output byte. */
  consumedBytes: number;
}

export interface FinishInfo {
  state: TaskStateName;
  exitCode: number | null;
  signal: string | null;
  errorCode: number | null;
  errorMessage: string | null;
  reason: string | null;
  durationMs: number | null;
  result: Uint8Array | null;
}

export class LiveTask {
  state: TaskStateName = "queued";
  agentId: string | null = null;
  sessionId: string | null = null;
  assignedAt: number | null = null;
  startedAt: number | null = null;
  finishedAt: number | null = null;
  finish: FinishInfo | undefined;
  stdoutBytes = 0;
  stderrBytes = 0;
  /** Set when the hub ended it for its deadline, so the agent's CANCELLED reads as TIMED_OUT. */
  deadlineHit = false;
  cancelReason: string | null = null;
  deadlineTimer: NodeJS.Timeout | undefined;
  lastAgentSeq = 0;
  /** Output window granted while the agent's link was down, sent when it resumes. */
  unsentWindow = 0;
  /**
   * Assigned to an agent, whose Assign waits for the assignment's record to commit: the agent has
   * not heard of the task yet, so it can still be taken back without running.
   */
  assignPending = false;
  /**
   * Set on a task another hub of the cluster runs (its agent is there): this hub relays its
   * events to its own clients and never writes it, schedules it or ends it itself.
   */
  remoteHub: string | undefined;

  private seq = 0;
  private readonly events: TaskEvent[] = [];
  private retainedOutput = 0;
  private trimmedBefore = 0; // output events with seq < this were trimmed
  private trimmedBytes = 0;
  readonly watchers = new Set<Watcher>();
  private readonly finishListeners: ((t: LiveTask) => void)[] = [];

  /** Output flow control: bytes received from the agent, and bytes it was allowed to send. */
  private received = 0;
  private granted: number;

  constructor(
    readonly id: string,
    readonly kind: string,
    readonly spec: TaskSpec,
    readonly target: Target,
    readonly requester: string,
    readonly allowedPools: readonly string[],
    readonly createdAt: number,
    readonly deadlineAt: number | null,
    readonly waitForAgent: boolean,
    private readonly window: number,
    private readonly sendWindow: (bytes: number) => void,
  ) {
    this.granted = window;
  }

  /** All the output the agent may send for this task (its initial window included); 0: no flow control. */
  get outputGranted(): number {
    return this.window > 0 ? this.granted : 0;
  }

  get terminal(): boolean {
    return isTerminal(this.state);
  }

  /** Move to a new state if the state machine allows it. */
  transition(to: TaskStateName): boolean {
    if (this.state === to || !canTransition(this.state, to)) return false;
    this.state = to;
    return true;
  }

  /**
   * Add an event, numbered next, and hand it to every watcher. `relayed`: an event another hub of
   * the cluster numbered (cluster/task-relay.ts), kept at its number; a number past the next one
   * follows output that hub no longer held (gapBytes of it).
   */
  emit(event: TaskEvent["event"], outputBytes = 0, relayed?: { seq: number; gapBytes: number }): TaskEvent {
    if (relayed && relayed.seq > this.seq + 1) {
      this.trimmedBefore = relayed.seq;
      this.trimmedBytes += relayed.gapBytes;
      this.seq = relayed.seq - 1;
    }
    const ev: TaskEvent = { taskId: this.id, seq: ++this.seq, event, gapBytes: relayed?.gapBytes ?? 0 };
    this.events.push(ev);
    if (outputBytes > 0) {
      this.received += outputBytes;
      this.retainedOutput += outputBytes;
      this.trim();
    }
    for (const w of this.watchers) {
      w.deliver(ev, outputBytes > 0 ? () => this.consumedBy(w, outputBytes) : noop);
    }
    if (outputBytes > 0) this.maybeGrant();
    return ev;
  }

  /** Attach a watcher: replay what is retained after `afterSeq`, then follow live. */
  attach(w: Watcher, afterSeq: number): void {
    // Output trimmed from memory after afterSeq is announced once, on the first replayed event.
    let gap = this.trimmedBefore > afterSeq + 1 ? this.trimmedBytes : 0;
    for (const ev of this.events) {
      if (ev.seq <= afterSeq) continue;
      w.deliver(gap > 0 ? { ...ev, gapBytes: gap } : ev, noop);
      gap = 0;
    }
    // Replayed output does not hold back the agent: this watcher counts from what is here now.
    w.consumedBytes = this.received;
    if (!this.terminal) this.watchers.add(w);
  }

  detach(w: Watcher): void {
    if (this.watchers.delete(w)) this.maybeGrant();
  }

  onFinish(listener: (t: LiveTask) => void): void {
    if (this.terminal && this.finish) listener(this);
    else this.finishListeners.push(listener);
  }

  /** Record the terminal outcome and tell everyone waiting. */
  complete(info: FinishInfo, finishedAt: number): void {
    this.finish = info;
    this.finishedAt = finishedAt;
    clearTimeout(this.deadlineTimer);
    this.watchers.clear();
    for (const l of this.finishListeners.splice(0)) l(this);
  }

  get lastSeq(): number {
    return this.seq;
  }

  private consumedBy(w: Watcher, bytes: number): void {
    w.consumedBytes += bytes;
    this.maybeGrant();
  }

  private maybeGrant(): void {
    if (this.terminal || this.window === 0) return;
    let consumed = this.received;
    for (const w of this.watchers) if (w.consumedBytes < consumed) consumed = w.consumedBytes;
    // Keep at most `window` bytes outstanding beyond what the slowest watcher took; top up in
    // quarter-window steps so that a fast stream does not cost one message per chunk.
    const more = consumed + this.window - this.granted;
    if (more >= this.window / 4) {
      this.granted += more;
      this.sendWindow(more);
    }
  }

  private trim(): void {
    while (this.retainedOutput > RETAINED_OUTPUT_BYTES) {
      const i = this.events.findIndex((e) => e.event?.$case === "output");
      if (i < 0) return;
      const ev = this.events[i]!;
      const n = ev.event?.$case === "output" ? ev.event.value.data.length : 0;
      this.events.splice(i, 1);
      this.retainedOutput -= n;
      this.trimmedBytes += n;
      this.trimmedBefore = ev.seq + 1;
    }
  }
}

function noop(): void {}
