// Handing queued tasks to agents. An assignment is written to the store first and its Assign goes
// out only once that write has committed: a restarted hub requeues only tasks its store shows
// queued, so a task that may have reached an agent must never be on record as queued.
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { AgentSession } from "../agents/agent-session.js";
import type { LiveTask } from "./live-task.js";
import type { Scheduler } from "../scheduler.js";
import type { Store, StoreWriteFailure } from "../store/index.js";
import type { TaskTable } from "./task-table.js";

export class TaskDispatch {
  /**
   * Assignments on their way to the store, each with the number of the store's batch that holds
   * its write: its Assign goes out once that batch has committed (see assign()).
   */
  private unsentAssigns: { t: LiveTask; batch: number }[] = [];
  private awaitingCommit = false;

  constructor(
    private readonly store: Store,
    private readonly agents: AgentRegistry,
    private readonly tasks: TaskTable,
    private readonly scheduler: Scheduler,
  ) {
    store.onWriteFailureChange((failure) => this.onStoreWriteFailure(failure));
  }

  /** Hand queued work to an agent that has capacity. */
  dispatch(session: AgentSession): void {
    // While the store cannot record an assignment, none is made: queued work stays queued.
    if (session.closed || this.store.writeFailure) return;
    for (const { task } of this.scheduler.drainQueuesFor(session.agentId)) {
      const t = this.tasks.get(task.id);
      if (!t || t.terminal) {
        session.sched.free++;
        continue;
      }
      this.assign(t, session);
    }
  }

  /**
   * Gives a task to an agent; its Assign goes out once the write has committed (sendCommittedAssigns).
   * The write shares the group commit of whatever else this turn wrote, so this costs no commit of
   * its own. A new task's insert carries it itself (`recorded`): its Assign goes out when the
   * caller says the insert committed (insertCommitted).
   */
  assign(t: LiveTask, session: AgentSession, opts: { at?: number; recorded?: boolean } = {}): void {
    if (!session.tasks.has(t.id)) session.noteAssigned(t.id);
    const now = opts.at ?? Date.now();
    t.transition("assigned");
    t.agentId = session.agentId;
    t.sessionId = session.sessionId;
    t.assignedAt = now;
    t.assignPending = true;
    if (opts.recorded) return;
    this.store.updateTask(t.id, { state: "assigned", agentId: session.agentId, assignedAt: now });
    this.unsentAssigns.push({ t, batch: this.store.pendingBatch });
    this.awaitCommitForAssigns();
  }

  /**
   * The insert that recorded the task as assigned to `session` has committed: its Assign goes out,
   * unless that assignment was taken back meanwhile (a later one waits for its own write).
   */
  insertCommitted(t: LiveTask, session: AgentSession): void {
    if (!t.assignPending || t.sessionId !== session.sessionId) return;
    if (this.unsentAssigns.some((u) => u.t === t)) return;
    this.sendAssign(t);
  }

  /**
   * Takes back an assignment its agent never received (its Assign was never sent, or the agent
   * resumed without it): the task is queued again, and so is its record unless `record` is false
   * (a task that was never accepted). The caller puts it back in a queue or ends it.
   */
  unassign(t: LiveTask, opts: { record?: boolean } = {}): void {
    const s = this.agents.holderOf(t);
    if (s?.tasks.delete(t.id)) {
      s.assignedTotal--; // the agent never used the credit
      s.refreshFree();
    }
    const announced = !t.assignPending; // watchers saw Assigned
    t.assignPending = false;
    t.transition("queued");
    t.agentId = null;
    t.sessionId = null;
    t.assignedAt = null;
    if (opts.record ?? true)
      this.store.updateTask(t.id, { state: "queued", agentId: null, assignedAt: null });
    if (announced) t.emit({ $case: "queued", value: { queuedAtMs: Date.now() } });
  }

  /** unassign(), and the task waits in the scheduler's queues for another agent. */
  requeue(t: LiveTask): void {
    this.unassign(t);
    this.scheduler.requeue({ id: t.id, kind: t.kind, target: t.target, allowedPools: t.allowedPools });
  }

  private awaitCommitForAssigns(): void {
    if (this.awaitingCommit) return;
    this.awaitingCommit = true;
    this.store.committed().then(
      () => {
        this.awaitingCommit = false;
        this.sendCommittedAssigns();
      },
      () => {
        // The store closed: nothing it did not commit may go out.
        this.awaitingCommit = false;
      },
    );
  }

  /** Sends the Assigns whose record has committed; the rest wait for the next commit. */
  private sendCommittedAssigns(): void {
    const committed = this.store.committedBatch;
    const rest: { t: LiveTask; batch: number }[] = [];
    for (const u of this.unsentAssigns) {
      if (!u.t.assignPending) continue; // taken back meanwhile
      if (u.batch <= committed) this.sendAssign(u.t);
      else rest.push(u);
    }
    this.unsentAssigns = rest;
    if (rest.length > 0) this.awaitCommitForAssigns();
  }

  private sendAssign(t: LiveTask): void {
    if (t.terminal) return;
    const session = this.agents.holderOf(t);
    // The link broke meanwhile: the session's resume or its end takes the task back, unsent.
    if (!session?.connected) return;
    t.assignPending = false;
    session.send({
      body: {
        $case: "assign",
        value: { taskId: t.id, spec: t.spec, deadlineMs: t.deadlineAt ?? 0, requester: t.requester },
      },
    });
    t.emit({
      $case: "assigned",
      value: { agentId: session.agentId, assignedAtMs: t.assignedAt ?? Date.now() },
    });
  }

  /** The store could not write, or writes again: work held back while it could not goes out. */
  private onStoreWriteFailure(failure: StoreWriteFailure | undefined): void {
    // While it fails, submit() refuses and dispatch() hands nothing out; both look at the store.
    if (failure) return;
    for (const s of this.agents.all()) this.dispatch(s);
  }
}
