// The writes waiting for the next commit. Updates to one task coalesce into one patch, agent
// records and token touches into their latest value; output is tracked as the set of task
// buffers that changed, whose bytes wait in the buffers themselves. While the store cannot write,
// the batch is what it holds: everything in it is keyed by what it writes (a task, an agent, a
// node, a token), so it grows only with the audit log, which the store bounds.
import type { AgentRecord, NewTask, NodeRow, TaskPatch } from "./interfaces.js";
import type { OutputBuffer, StreamIndex } from "./output-buffer.js";

/** An audit entry as queued: its detail already serialized. */
export interface AuditInsert {
  at: number;
  actor: string;
  action: string;
  subject: string;
  detail: string | null;
}

export interface PendingInsert {
  task: NewTask;
  resolve: () => void;
  reject: (err: Error) => void;
  /** Set when this insert failed on its own while the rest of its batch committed. */
  error?: Error;
}

export interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class WriteBatch {
  readonly inserts: PendingInsert[] = [];
  readonly updates = new Map<string, TaskPatch>();
  readonly agents = new Map<string, AgentRecord>();
  readonly audits: AuditInsert[] = [];
  readonly touches = new Map<string, number>();
  /** Output buffers with head bytes or totals not yet written. */
  readonly outputs = new Set<OutputBuffer>();
  /**
   * Node rows (null: deleted) that could not be written at once because the store could not
   * write; they commit with the batch once it can.
   */
  readonly nodes = new Map<string, NodeRow | null>();
  /** committed() callers: settled when this batch commits (or the store closes). */
  readonly waiters: Waiter[] = [];
  /** Node writes queued with the batch: settled when it commits, or when the store holds it. */
  readonly nodeWaiters: Waiter[] = [];
  /** Output of tasks whose buffer is still to be read back from the store, replayed once it is. */
  readonly unrestored = new Map<string, { stream: StreamIndex; data: Uint8Array }[]>();
  /** Calls since the last commit, coalesced ones included: what the batch size limit counts. */
  ops = 0;

  /** Merges a patch into the task's pending one; undefined fields leave earlier values alone. */
  addUpdate(id: string, patch: TaskPatch): void {
    let pending = this.updates.get(id);
    if (!pending) {
      pending = {};
      this.updates.set(id, pending);
    }
    for (const key in patch) {
      const value = patch[key as keyof TaskPatch];
      if (value !== undefined) (pending as Record<string, unknown>)[key] = value;
    }
  }

  addTouch(id: string, at: number): void {
    const pending = this.touches.get(id);
    if (pending === undefined || pending < at) this.touches.set(id, at);
  }

  isEmpty(): boolean {
    return this.ops === 0;
  }

  clear(): void {
    this.inserts.length = 0;
    this.updates.clear();
    this.agents.clear();
    this.audits.length = 0;
    this.touches.clear();
    this.outputs.clear();
    this.nodes.clear();
    this.waiters.length = 0;
    this.nodeWaiters.length = 0;
    this.unrestored.clear();
    this.ops = 0;
  }

  /**
   * Puts the writes of `older` (a batch whose commit failed) in front of this one's (made while it
   * was in flight): a later write to the same task, agent, node or token wins field by field, as
   * it would have had both committed in order.
   */
  takeInFront(older: this): void {
    for (const [id, patch] of older.updates) {
      const later = this.updates.get(id);
      this.updates.set(id, later ? { ...patch, ...later } : patch);
    }
    for (const [id, agent] of older.agents) {
      const later = this.agents.get(id);
      this.agents.set(id, later ? { ...later, firstSeenAt: agent.firstSeenAt } : this.olderAgent(agent));
    }
    this.audits.unshift(...older.audits);
    for (const [id, at] of older.touches) this.addTouch(id, at);
    for (const buffer of older.outputs) this.outputs.add(buffer);
    for (const [id, node] of older.nodes) if (!this.nodes.has(id)) this.nodes.set(id, node);
    this.inserts.unshift(...older.inserts);
    this.waiters.unshift(...older.waiters);
    this.nodeWaiters.unshift(...older.nodeWaiters);
    for (const [id, chunks] of older.unrestored) {
      this.unrestored.set(id, [...chunks, ...(this.unrestored.get(id) ?? [])]);
    }
    this.ops += older.ops;
  }

  /** An agent record of an older batch that this one does not write again, as this one would keep it. */
  protected olderAgent(agent: AgentRecord): AgentRecord {
    return agent;
  }
}
