// The writes a batch takes, as the batching writer (batch-writer.ts) queues them: inserts and node
// writes that a caller awaits, task patches merged per task, agent records and token touches
// (the latest wins), output into its task's buffer, audit entries; and the reads that see what is
// pending and in flight. When the batch commits is the writer's.
import type { Logger } from "../../common/logger.js";
import { isTerminal } from "../../common/task-state.js";
import { serializeDetail } from "./audit-detail.js";
import type { BatchCommitter } from "./batch-committer.js";
import type { BatchSettings } from "./batch-settings.js";
import { MAX_HELD_AUDITS } from "./batch-settings.js";
import { closedError, notAccepted } from "./errors.js";
import { withPendingAgent, withPendingTouch } from "./held-reads.js";
import type {
  AgentRecord,
  AuditEntry,
  NewTask,
  NodeRow,
  OutputStreamName,
  TaskPatch,
  TokenRecord,
} from "./interfaces.js";
import { OutputBuffer, streamIndex } from "./output-buffer.js";
import type { HeldOutputs } from "./output-writes.js";
import type { WriteBatch } from "./write-batch.js";
import type { StoreWriteFailure } from "./write-failure.js";
import type { WriteOutage } from "./write-outage.js";

export abstract class BatchIntake<B extends WriteBatch> implements HeldOutputs {
  batch: B;
  readonly outputs = new Map<string, OutputBuffer>();
  readonly unsavedTails = new Set<OutputBuffer>();
  /**
   * Tasks this writer inserted that have neither output in memory nor finished: they have nothing
   * stored to carry on from, so their first output starts a buffer without reading the store.
   */
  protected readonly fresh = new Set<string>();
  /** The batch whose commit is under way (asynchronous committers only). */
  protected inflight: B | undefined;
  protected isClosed = false;
  protected abstract readonly outage: WriteOutage;

  constructor(
    protected readonly committer: BatchCommitter<B>,
    protected readonly newBatch: () => B,
    protected readonly settings: BatchSettings,
    protected readonly logger: Logger,
  ) {
    this.batch = newBatch();
  }

  /** Set while commits fail for want of the target. */
  abstract get failure(): StoreWriteFailure | undefined;

  /** A write joined the batch; `urgent`: someone waits for its commit. */
  abstract enqueued(urgent?: boolean): void;

  assertOpen(): void {
    if (this.isClosed) throw closedError();
  }

  // ---- queueing writes

  /** Queues an insert; resolves once the transaction holding its row has committed. */
  insert(task: NewTask): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    if (this.failure) return Promise.reject(notAccepted(this.failure, task.id));
    const done = new Promise<void>((resolve, reject) => this.batch.inserts.push({ task, resolve, reject }));
    this.enqueued(true);
    return done;
  }

  /** Queues a node row (null: its deletion); resolves once committed, or held while the store cannot write. */
  writeNode(id: string, row: NodeRow | null): Promise<void> {
    this.batch.nodes.set(id, row);
    if (this.failure) {
      this.batch.ops++;
      return Promise.resolve();
    }
    const done = new Promise<void>((resolve, reject) => this.batch.nodeWaiters.push({ resolve, reject }));
    this.enqueued(true);
    return done;
  }

  /** Queues a task's patch; it merges with the task's pending one. */
  updateTask(id: string, patch: TaskPatch): void {
    this.assertOpen();
    if (patch.state !== undefined && isTerminal(patch.state)) this.fresh.delete(id);
    this.batch.addUpdate(id, patch);
    this.enqueued();
  }

  /** Queues an agent record; a second one before the commit keeps the first's first-seen time, as the row would. */
  upsertAgent(agent: AgentRecord): void {
    this.assertOpen();
    const agents = this.batch.agents;
    const pending = agents.get(agent.id);
    agents.set(agent.id, pending ? { ...agent, firstSeenAt: pending.firstSeenAt } : agent);
    this.enqueued();
  }

  /** Queues a token's last use; the latest wins. */
  touchToken(id: string, at: number): void {
    this.assertOpen();
    this.batch.addTouch(id, at);
    this.enqueued();
  }

  /** A stored agent as it will be once the upserts pending and in flight commit. */
  agentWithPending(id: string, stored: AgentRecord | undefined): AgentRecord | undefined {
    const inflight = withPendingAgent(stored, this.inflight?.agents.get(id));
    return withPendingAgent(inflight, this.batch.agents.get(id));
  }

  /** A stored token with the touches pending and in flight applied. */
  tokenWithPending(token: TokenRecord | undefined): TokenRecord | undefined {
    if (!token) return token;
    withPendingTouch(token, this.inflight?.touches.get(token.id));
    return withPendingTouch(token, this.batch.touches.get(token.id));
  }

  /** Queues output of a task; empty output is no write. */
  appendOutput(taskId: string, stream: OutputStreamName, data: Uint8Array): void {
    this.assertOpen();
    if (data.length === 0) return;
    let buffer = this.outputs.get(taskId);
    if (!buffer && this.fresh.delete(taskId)) {
      buffer = new OutputBuffer(taskId, this.settings.outputCapBytes);
      this.outputs.set(taskId, buffer);
    } else if (!buffer && this.committer.persistedOutput) {
      // After a restart, or late output after the task finished: carry on from what is stored.
      const persisted = this.committer.persistedOutput(taskId);
      buffer = new OutputBuffer(taskId, this.settings.outputCapBytes, persisted);
      this.outputs.set(taskId, buffer);
    }
    if (!buffer) {
      // The same, where the stored output is read in the next commit: until then the bytes wait
      // here (copied).
      let chunks = this.batch.unrestored.get(taskId);
      if (!chunks) this.batch.unrestored.set(taskId, (chunks = []));
      chunks.push({ stream: streamIndex(stream), data: data.slice() });
    } else {
      buffer.append(streamIndex(stream), data);
      this.batch.outputs.add(buffer);
      if (buffer.tailChanged) this.unsavedTails.add(buffer);
    }
    this.enqueued();
  }

  /** Queues an audit entry; while the store cannot write, past MAX_HELD_AUDITS it is only counted. */
  audit(entry: AuditEntry): void {
    this.assertOpen();
    if (this.failure && this.batch.audits.length >= MAX_HELD_AUDITS) {
      if (this.outage.dropAudit()) {
        this.logger.error(
          { held: this.batch.audits.length },
          "store cannot write and holds as many audit entries as it may: further ones are counted, not kept",
        );
      }
      return;
    }
    this.batch.audits.push({
      at: entry.at,
      actor: entry.actor,
      action: entry.action,
      subject: entry.subject,
      detail: serializeDetail(entry, this.logger),
    });
    this.enqueued();
  }
}
