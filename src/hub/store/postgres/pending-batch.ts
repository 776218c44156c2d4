// The writes waiting for the next commit, as the SQLite store batches them (WriteBatch), plus what
// an asynchronous commit needs: who awaits it, a pending "every agent disconnected", output of
// tasks whose buffer is still to be read back from the database, and how a batch whose commit
// failed goes back in front of the writes made while it was in flight.
import type { StreamIndex } from "../output-buffer.js";
import { WriteBatch } from "../write-batch.js";

export interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

export class PendingBatch extends WriteBatch {
  /** markAllAgentsDisconnected() was called: runs before this batch's agent upserts. */
  disconnectAll = false;
  /** committed() callers: settled when this batch commits (or the store closes). */
  readonly waiters: Waiter[] = [];
  /** Node writes: settled when this batch commits, or when the store holds it (as SQLite's do). */
  readonly nodeWaiters: Waiter[] = [];
  /** Output of tasks with no buffer in memory yet, replayed once it is restored. */
  readonly unrestored = new Map<string, { stream: StreamIndex; data: Uint8Array }[]>();

  override clear(): void {
    super.clear();
    this.disconnectAll = false;
    this.waiters.length = 0;
    this.nodeWaiters.length = 0;
    this.unrestored.clear();
  }
}

/**
 * Puts the writes of `older` (a batch whose commit failed) in front of those of `newer` (made
 * while it was in flight), into `newer`: a later write to the same task, agent, node or token
 * wins field by field, as it would have had both committed in order.
 */
export function mergeHeld(older: PendingBatch, newer: PendingBatch): void {
  for (const [id, patch] of older.updates) {
    const later = newer.updates.get(id);
    newer.updates.set(id, later ? { ...patch, ...later } : patch);
  }
  for (const [id, agent] of older.agents) {
    const later = newer.agents.get(id);
    if (later) newer.agents.set(id, { ...later, firstSeenAt: agent.firstSeenAt });
    // Made before the newer batch's markAllAgentsDisconnected(): that call applies to it too.
    else newer.agents.set(id, newer.disconnectAll ? { ...agent, connected: false } : agent);
  }
  newer.disconnectAll ||= older.disconnectAll;
  newer.audits.unshift(...older.audits);
  for (const [id, at] of older.touches) newer.addTouch(id, at);
  for (const buffer of older.outputs) newer.outputs.add(buffer);
  for (const [id, node] of older.nodes) if (!newer.nodes.has(id)) newer.nodes.set(id, node);
  newer.inserts.unshift(...older.inserts);
  newer.waiters.unshift(...older.waiters);
  newer.nodeWaiters.unshift(...older.nodeWaiters);
  for (const [id, chunks] of older.unrestored) {
    newer.unrestored.set(id, [...chunks, ...(newer.unrestored.get(id) ?? [])]);
  }
  newer.ops += older.ops;
}
