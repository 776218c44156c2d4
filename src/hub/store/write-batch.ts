// The writes waiting for the next commit. Updates to one task coalesce into one patch, agent
// records and token touches into their latest value; output is tracked as the set of task
// buffers that changed, whose bytes wait in the buffers themselves. While the store cannot write,
// the batch is what it holds: everything in it is keyed by what it writes (a task, an agent, a
// node, a token), so it grows only with the audit log, which the store bounds.
import type { AgentRecord, NewTask, NodeRow, TaskPatch } from "./interfaces.js";
import type { OutputBuffer } from "./output-buffer.js";

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
    this.ops = 0;
  }
}
