// The writes waiting for the next commit, as the PostgreSQL store batches them: a WriteBatch, plus a
// pending "every agent disconnected", which the SQLite store writes at once instead.
import type { AgentRecord } from "../interfaces.js";
import { WriteBatch } from "../write-batch.js";

export class PendingBatch extends WriteBatch {
  /** markAllAgentsDisconnected() was called: runs before this batch's agent upserts. */
  disconnectAll = false;

  override clear(): void {
    super.clear();
    this.disconnectAll = false;
  }

  override takeInFront(older: this): void {
    super.takeInFront(older);
    this.disconnectAll ||= older.disconnectAll;
  }

  /** Made before this batch's markAllAgentsDisconnected(): that call applies to it too. */
  protected override olderAgent(agent: AgentRecord): AgentRecord {
    return this.disconnectAll ? { ...agent, connected: false } : agent;
  }
}
