// The agent's work pipeline (seed 001): Assign -> bounded inbox -> executor pool -> outbox. It grants
// task-slot credits (withheld while the outbox is above its threshold) and answers every Assign with
// exactly one Finished, refusals included. It knows nothing of gRPC: the link feeds it per session.
import type { Logger } from "../../common/logger.js";
import { Code } from "../../common/errors.js";
import { MAX_AGENT_CONCURRENCY } from "../../common/limits.js";
import type {
  AgentTaskEvent,
  Assign,
  Heartbeat,
  HubMessage,
  NodeCommand,
  Resume,
} from "../../gen/switchboard/v1/agent.js";
import { TaskState, type DatasourceHealth, type Finished } from "../../gen/switchboard/v1/task.js";
import type { NodeRecord } from "../../gen/switchboard/v1/node.js";
import { checkAssign } from "./assign-check.js";
import { CreditLedger } from "./credits.js";
import { failedFinished, type Executor, type StopCause } from "../executors/executor.js";
import { IdleWaiters } from "./idle-waiters.js";
import { Inbox } from "./inbox.js";
import type { Outbox } from "../link/outbox.js";
import { newSession, rememberTask, type Session, type SessionStart } from "./pipeline-session.js";
import { SessionResume } from "./session-resume.js";
import type { AgentStats } from "../stats.js";
import { TaskRun } from "./task-run.js";

export interface PipelineOptions {
  agentId: string;
  poolSize: number;
  /** Percent of the outbox capacity at or above which credits are withheld. */
  threshold: number;
  inboxCapacity: number;
  outbox: Outbox;
  executors: readonly Executor[];
  stats: AgentStats;
  logger: Logger;
  /** The agent's SQL datasources, for heartbeats: their health, and the trouble one that is down makes. */
  datasources?: { health(): DatasourceHealth[]; trouble(): string | undefined };
  /** Supervised nodes, for heartbeats: the table, and the trouble a crash-looping node makes. */
  nodes?: { list(): NodeRecord[]; trouble(): string | undefined };
  /** A NodeCommand from the hub; the answer goes out as a NodeReply. */
  nodeCommand?: (cmd: NodeCommand) => void;
}

export class Pipeline {
  private readonly opts: PipelineOptions;
  private readonly inbox: Inbox<TaskRun>;
  /** Every task not finished yet, whatever its session: each holds one executor slot. */
  private readonly runs = new Map<string, TaskRun>();
  private readonly executors = new Map<string, Executor>();
  /** Tasks run at once; starts at opts.poolSize, the hub may change it (SetConcurrency). */
  private poolSize: number;
  private busy = 0;
  private session: Session | undefined;
  /** A broken session's tasks, held for the hub to resume. */
  private readonly resume: SessionResume;
  private granting = true;
  private readonly idle: IdleWaiters;
  private droppedEvents = 0;
  private readonly thresholdDepth: number;

  constructor(opts: PipelineOptions) {
    this.opts = opts;
    this.inbox = new Inbox(opts.inboxCapacity);
    for (const e of opts.executors) this.executors.set(e.kind, e);
    this.poolSize = opts.poolSize;
    this.thresholdDepth = (opts.outbox.capacity * opts.threshold) / 100;
    this.idle = new IdleWaiters((epoch) => this.holding(epoch));
    this.resume = new SessionResume({
      outbox: opts.outbox,
      inbox: this.inbox,
      runs: this.runs,
      logger: opts.logger,
      pushInputWindow: (r, bytes) => this.pushInputWindow(r, bytes),
      notifyIdle: () => this.notifyIdle(),
    });
  }

  get currentEpoch(): number | undefined {
    return this.session?.epoch;
  }

  /** Tasks held (queued or running), optionally only those of one session. */
  holding(epoch?: number): number {
    if (epoch === undefined) return this.runs.size;
    let n = 0;
    for (const r of this.runs.values()) if (r.epoch === epoch) n += 1;
    return n;
  }

  /** Tasks it runs at once now. */
  get poolSizeNow(): number {
    return this.poolSize;
  }

  get running(): number {
    return this.busy;
  }

  get inboxDepth(): number {
    return this.inbox.depth;
  }

  get inboxCapacity(): number {
    return this.inbox.capacity;
  }

  get grantedTotal(): number {
    return this.session?.ledger.grantedTotal ?? 0;
  }

  /** Credits the hub has not used yet in this session: Assigns it may still send (or have in flight). */
  get unusedCredits(): number {
    const l = this.session?.ledger;
    return l ? l.grantedTotal - l.assignedTotal : 0;
  }

  /** What the next Hello asks to resume, if the agent holds the tasks of a broken session. */
  resumeRequest(): Resume | undefined {
    return this.resume.request();
  }

  /** Whether the agent holds a broken session's tasks (its next dial should go to the same hub). */
  get holdingForResume(): boolean {
    return this.resume.holding;
  }

  /** A session was welcomed: take over a held session's tasks if the hub resumed it; grant free slots. */
  beginSession(start: SessionStart): void {
    if (this.session) this.endSession(this.session.epoch, "replaced by a new session");
    this.resume.takeOver(start);
    const ledger = new CreditLedger();
    // Tasks of an earlier session may still be dying; their slots come back as they end.
    ledger.begin(this.granting ? this.poolSize - this.runs.size : 0);
    this.session = newSession(start, ledger);
    this.pushCredits(ledger.grantInitial());
  }

  /** InputWindow for a run: `bytes` more, with what it took and the total granted (which the hub goes by). */
  private pushInputWindow(r: TaskRun, bytes: number): void {
    this.opts.outbox.push({
      body: {
        $case: "inputWindow",
        value: { taskId: r.taskId, bytes, received: r.inputReceived, grantedTotal: r.inputGranted },
      },
    });
  }

  /**
   * The session's stream ended. With `hold` (the link broke; the hub keeps the tasks for its resume
   * grace) running tasks go on and their events wait in the outbox for the resumed session. Without,
   * or once the grace passes, running ones are stopped (their process trees killed), queued ones
   * discarded, queued events dropped.
   */
  endSession(epoch: number, reason: string, hold = false): void {
    if (this.session?.epoch !== epoch) return;
    const s = this.session;
    this.session = undefined;
    const holding =
      this.holding(epoch) > 0 || this.opts.outbox.depth > 0 || this.opts.outbox.unackedCount > 0;
    if (hold && s.sessionId !== "" && s.resumeGraceMs > 0 && holding && !s.draining) {
      this.resume.hold(epoch, s.sessionId, s.resumeGraceMs, reason);
      this.opts.logger.warn(
        {
          epoch,
          reason,
          holding: this.holding(epoch),
          queuedEvents: this.opts.outbox.depth,
          graceMs: s.resumeGraceMs,
        },
        "link lost: tasks keep running; their events wait for the session to resume",
      );
      return;
    }
    const discarded = this.inbox.removeWhere((r) => r.epoch === epoch);
    for (const r of discarded)
      r.stop({ cause: "lost", reason: "link to the hub lost before the task started" });
    let cancelled = 0;
    for (const r of [...this.runs.values()]) {
      if (r.epoch !== epoch || r.state === "finished") continue;
      cancelled += 1;
      r.stop({ cause: "lost", reason: "link to the hub lost" });
    }
    const dropped = this.opts.outbox.clear() + this.droppedEvents;
    this.droppedEvents = 0;
    if (cancelled + discarded.length + dropped > 0) {
      this.opts.logger.warn(
        {
          epoch,
          reason,
          cancelledTasks: cancelled,
          discardedTasks: discarded.length,
          droppedEvents: dropped,
        },
        "session lost: its tasks were stopped and their unsent events dropped",
      );
    }
    this.notifyIdle();
  }

  /** A message from the hub on a session. Never throws on bad input: it is logged and answered. */
  handle(epoch: number, msg: HubMessage): void {
    if (this.stalled) {
      this.stalledMessages.push({ epoch, msg });
      return;
    }
    if (this.session?.epoch !== epoch) {
      this.opts.logger.debug({ epoch, kind: msg.body?.$case }, "message for an ended session ignored");
      return;
    }
    const body = msg.body;
    switch (body?.$case) {
      case "assign":
        this.onAssign(body.value);
        return;
      case "setConcurrency":
        this.setPoolSize(body.value.maxConcurrency);
        return;
      case "probe":
        // Answered in the event lane, behind the task events already queued: a reply means the
        // work path moves, not merely that the stream is open.
        this.opts.outbox.push({ body: { $case: "probeReply", value: { id: body.value.id } } });
        return;
      case "cancel": {
        const run = this.runs.get(body.value.taskId);
        if (!run) {
          this.opts.logger.debug(
            { taskId: body.value.taskId },
            "CancelTask for a task this agent does not hold",
          );
          return;
        }
        run.stop({
          cause: "cancelled",
          reason: body.value.reason || "cancelled by the hub",
          ...(body.value.graceMs > 0 ? { graceMs: body.value.graceMs } : {}),
        });
        return;
      }
      case "window": {
        const run = this.runs.get(body.value.taskId);
        if (!run) {
          this.opts.logger.debug(
            { taskId: body.value.taskId },
            "OutputWindow for a task this agent does not hold",
          );
          return;
        }
        run.grantWindow(body.value.bytes, body.value.grantedTotal);
        return;
      }
      case "drain":
        this.session.draining = true;
        this.opts.logger.info(
          { epoch, reason: body.value.reason, holding: this.holding(epoch) },
          "the hub is draining: finishing what this session holds, then reconnecting",
        );
        this.notifyIdle();
        return;
      case "ack":
        this.opts.outbox.ack(body.value.eventsReceived);
        return;
      case "input": {
        const run = this.runs.get(body.value.taskId);
        if (!run) {
          this.opts.logger.debug(
            { taskId: body.value.taskId },
            "TaskInput for a task this agent does not hold",
          );
          return;
        }
        const r = body.value.resize;
        run.input(
          {
            // A view of the decoded message (not reused by the transport), not a copy.
            data: Buffer.from(body.value.data.buffer, body.value.data.byteOffset, body.value.data.byteLength),
            eof: body.value.eof,
            ...(r ? { resize: { cols: r.cols, rows: r.rows } } : {}),
            ...(body.value.sha256 ? { sha256: body.value.sha256 } : {}),
          },
          this.session?.inputOffsets ? body.value.offset : undefined,
        );
        return;
      }
      case "nodeCommand":
        if (this.opts.nodeCommand) this.opts.nodeCommand(body.value);
        else
          this.opts.outbox.pushUrgent({
            body: {
              $case: "nodeReply",
              value: {
                id: body.value.id,
                code: Code.UNIMPLEMENTED,
                errorMessage: `agent ${this.opts.agentId} runs no nodes`,
                nodes: [],
                logs: undefined,
              },
            },
          });
        return;
      case "heartbeat":
      case "welcome":
        return;
      default:
        this.opts.logger.debug({ epoch }, "empty or unknown message from the hub ignored");
    }
  }

  /** Shutdown: no more credits, in this session or any later one. */
  stopGranting(): void {
    this.granting = false;
  }

  /** Stops every task this agent holds (shutdown after its grace). */
  stopAll(cause: StopCause, reason: string): number {
    let n = 0;
    for (const r of [...this.runs.values()]) {
      if (r.state === "finished") continue;
      n += 1;
      r.stop({ cause, reason });
    }
    return n;
  }

  /** Resolves true once no task (of the session, if given) is held, false at the deadline. */
  whenIdle(timeoutMs: number, epoch?: number): Promise<boolean> {
    return this.idle.wait(timeoutMs, epoch);
  }

  /** Whether the session was drained by the hub. */
  isDraining(epoch: number): boolean {
    return this.session?.epoch === epoch && this.session.draining;
  }

  /** The outbox shrank: credits withheld above the threshold may be grantable now. */
  outboxShrank(): void {
    this.maybeGrant();
  }

  /** The load part of a Heartbeat. */
  heartbeat(): Omit<Heartbeat, "sentAtMs"> {
    const { degraded, reason } = this.trouble();
    return {
      running: this.busy,
      inboxDepth: this.inbox.depth,
      outboxDepth: this.opts.outbox.depth,
      outboxCapacity: this.opts.outbox.capacity,
      lastCompletedTaskId: this.opts.stats.lastCompletedTaskId,
      completedTotal: this.opts.stats.completed,
      degraded,
      degradedReason: reason,
      datasources: this.opts.datasources?.health() ?? [],
      nodes: this.opts.nodes?.list() ?? [],
    };
  }

  /** Degraded while the inbox is full, the outbox is above its threshold, or a datasource is down. */
  trouble(): { degraded: boolean; reason: string } {
    if (this.inbox.isFull()) {
      return { degraded: true, reason: `inbox full (${this.inbox.depth}/${this.inbox.capacity} tasks)` };
    }
    const depth = this.opts.outbox.depth;
    if (depth >= this.thresholdDepth) {
      return {
        degraded: true,
        reason: `outbox above threshold (${depth}/${this.opts.outbox.capacity} events, threshold ${this.opts.threshold}%)`,
      };
    }
    const ds = this.opts.datasources?.trouble();
    if (ds) return { degraded: true, reason: ds };
    const node = this.opts.nodes?.trouble();
    if (node) return { degraded: true, reason: node };
    return { degraded: false, reason: "" };
  }

  // ---- assigns ----

  private onAssign(a: Assign): void {
    const session = this.session!;
    const stats = this.opts.stats;
    stats.fetched += 1;
    if (!session.ledger.tryAssign()) {
      // The hub exceeded the credits it was granted: refuse, and grant nothing back for it.
      this.opts.logger.warn(
        { taskId: a.taskId, granted: session.ledger.grantedTotal, assigned: session.ledger.assignedTotal },
        "Assign beyond the granted credits refused (hub protocol violation)",
      );
      this.refuse(
        a.taskId,
        Code.RESOURCE_EXHAUSTED,
        `agent ${this.opts.agentId} has no free task slot (the hub exceeded its credits)`,
        false,
      );
      return;
    }
    const refusal = checkAssign(a, {
      agentId: this.opts.agentId,
      known: (id) => this.runs.has(id) || session.seen.has(id),
      executors: this.executors,
    });
    if (refusal) {
      this.refuse(a.taskId, refusal.code, refusal.message, true);
      return;
    }
    rememberTask(session, a.taskId);
    const run = new TaskRun({
      assign: a,
      epoch: session.epoch,
      executor: this.executors.get(a.spec!.kind!.$case)!,
      outputWindowBytes: session.outputWindow,
      ...(session.maxChunkBytes !== undefined ? { maxChunkBytes: session.maxChunkBytes } : {}),
      room: this.opts.outbox,
      owner: {
        emit: (r, ev) => this.emit(r, ev),
        ended: (r, f) => this.ended(r, f),
        // In the event lane, behind the task's Started: the hub forwards input only to a running task.
        // While the link is down the grant is kept on the run and sent when its session resumes: a grant
        // dropped then would leave the task's input window shut for good.
        grantInput: (r, bytes) => {
          r.inputGranted += bytes;
          if (this.session?.epoch === r.epoch) this.pushInputWindow(r, bytes);
          else r.ungrantedInput += bytes;
        },
      },
      logger: this.opts.logger,
    });
    if (!this.inbox.offer(run)) {
      this.refuse(
        a.taskId,
        Code.RESOURCE_EXHAUSTED,
        `agent ${this.opts.agentId}'s inbox is full (${this.inbox.capacity} tasks)`,
        true,
      );
      return;
    }
    this.runs.set(a.taskId, run);
    this.opts.logger.debug({ taskId: a.taskId, kind: run.kind, requester: a.requester }, "task accepted");
    this.dispatch();
  }

  /** Answers an Assign that will not run with its one Finished (seq 1, no Started). */
  private refuse(taskId: string, code: Code, message: string, counted: boolean): void {
    this.opts.logger.info({ taskId, code, reason: message }, "task refused");
    this.opts.stats.failed += 1;
    this.pushEvent({ taskId, seq: 1, event: { $case: "finished", value: failedFinished(code, message) } });
    if (counted) {
      this.session?.ledger.release();
      this.maybeGrant();
    }
  }

  private stalled = false;
  private stalledMessages: { epoch: number; msg: HubMessage }[] = [];

  /**
   * Test hook: a stalled pipeline takes no hub message (Assigns and probes wait) while the stream
   * and its heartbeats stay up: the "deaf agent" the hub must find by probing.
   */
  setStalled(stalled: boolean): void {
    this.stalled = stalled;
    this.opts.logger.warn(
      { stalled },
      stalled ? "pipeline stalled (test hook)" : "pipeline resumed (test hook)",
    );
    if (stalled) return;
    for (const { epoch, msg } of this.stalledMessages.splice(0)) this.handle(epoch, msg);
  }

  /** Runs up to `n` tasks at once from now on; running tasks are left alone. */
  setPoolSize(n: number): void {
    if (!Number.isInteger(n) || n < 1 || n > MAX_AGENT_CONCURRENCY) {
      this.opts.logger.warn({ requested: n }, "SetConcurrency out of range ignored");
      return;
    }
    const delta = n - this.poolSize;
    if (delta === 0) return;
    this.opts.logger.info(
      { from: this.poolSize, to: n, running: this.busy },
      "concurrency changed by the hub",
    );
    this.poolSize = n;
    this.session?.ledger.resize(delta);
    this.maybeGrant();
    this.dispatch();
  }

  private dispatch(): void {
    while (this.busy < this.poolSize) {
      const run = this.inbox.take();
      if (!run) return;
      if (run.state !== "queued") continue; // stopped while it waited
      this.busy += 1;
      run.start();
    }
  }

  // ---- events and ends of runs ----

  private emit(run: TaskRun, event: AgentTaskEvent): void {
    if (this.session?.epoch !== run.epoch && this.resume.epoch !== run.epoch) {
      this.droppedEvents += 1; // its session is gone; nobody is listening
      return;
    }
    this.pushEvent(event);
  }

  private pushEvent(event: AgentTaskEvent): void {
    this.opts.outbox.push({ body: { $case: "event", value: event } });
  }

  private ended(run: TaskRun, f: Finished): void {
    this.runs.delete(run.taskId);
    if (run.wasStarted) {
      this.busy -= 1;
      this.opts.stats.processed += 1;
    }
    if (f.state !== TaskState.TASK_STATE_SUCCEEDED) this.opts.stats.failed += 1;
    const out = run.outputStats();
    this.opts.logger.debug(
      {
        taskId: run.taskId,
        state: TaskState[f.state],
        exitCode: f.exitCode,
        reason: f.reason,
        durationMs: f.durationMs,
        outputBytes: out.sentBytes,
        droppedOutputBytes: out.droppedBytes,
      },
      "task finished",
    );
    // Any freed slot is owed to the live session, even one freed by a task of an earlier session: the
    // session began with only the slots that were free then.
    this.session?.ledger.release();
    this.maybeGrant();
    this.dispatch();
    this.notifyIdle();
  }

  // ---- credits ----

  private maybeGrant(): void {
    const s = this.session;
    if (!s || !this.granting || s.draining || s.ledger.owedSlots === 0) return;
    const depth = this.opts.outbox.depth;
    if (depth >= this.thresholdDepth) {
      if (!s.withholding) {
        s.withholding = true;
        this.opts.logger.info(
          { outboxDepth: depth, outboxCapacity: this.opts.outbox.capacity, threshold: this.opts.threshold },
          "outbox above threshold: withholding credits",
        );
      }
      return;
    }
    if (s.withholding) {
      s.withholding = false;
      this.opts.logger.info(
        { outboxDepth: depth, outboxCapacity: this.opts.outbox.capacity, owed: s.ledger.owedSlots },
        "outbox below threshold: granting withheld credits",
      );
    }
    const total = s.ledger.grantOwed();
    if (total !== undefined) this.pushCredits(total);
  }

  private pushCredits(grantedTotal: number): void {
    this.opts.outbox.push({ body: { $case: "credits", value: { grantedTotal } } });
  }

  private notifyIdle(): void {
    this.idle.notify();
  }
}
