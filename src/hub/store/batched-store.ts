// What the two stores do alike because their writes go through the one batching writer: the health
// they report and the writes that only queue. Each store adds its reads and its writes made at once.
import type { BatchWriter } from "./batch-writer.js";
import type { AgentRecord, AuditEntry, NewTask, OutputStreamName, TaskPatch } from "./interfaces.js";
import type { WriteBatch } from "./write-batch.js";
import type { StoreWriteFailure } from "./write-failure.js";

/** The Store members that a store on a BatchWriter passes straight to it. */
export abstract class BatchedStore<B extends WriteBatch> {
  protected abstract readonly writer: BatchWriter<B>;

  /** Set while the store cannot commit (see Store.writeFailure). */
  get writeFailure(): StoreWriteFailure | undefined {
    return this.writer.failure;
  }

  onWriteFailureChange(listener: (failure: StoreWriteFailure | undefined) => void): void {
    this.writer.onFailureChange(listener);
  }

  get commitCount(): number {
    return this.writer.commitCount;
  }

  get pendingBatch(): number {
    return this.writer.pendingBatch;
  }

  get committedBatch(): number {
    return this.writer.committedBatch;
  }

  committed(): Promise<void> {
    return this.writer.committed();
  }

  flush(): Promise<void> {
    return this.writer.flush();
  }

  async taskSettled(taskId: string): Promise<void> {
    await this.writer.beforeRead(this.writer.outputs.get(taskId));
  }

  insertTask(task: NewTask): Promise<void> {
    return this.writer.insert(task);
  }

  updateTask(id: string, patch: TaskPatch): void {
    this.writer.updateTask(id, patch);
  }

  appendOutput(taskId: string, stream: OutputStreamName, data: Uint8Array): void {
    this.writer.appendOutput(taskId, stream, data);
  }

  upsertAgent(agent: AgentRecord): void {
    this.writer.upsertAgent(agent);
  }

  touchToken(id: string, at: number): void {
    this.writer.touchToken(id, at);
  }

  audit(entry: AuditEntry): void {
    this.writer.audit(entry);
  }
}
