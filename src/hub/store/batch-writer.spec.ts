// The batching writer against committers that only record what they are given: a synchronous one
// (as SQLite's) and an asynchronous one (as PostgreSQL's), each able to fail as its target would.
import { describe, expect, it } from "vitest";
import { Code, SwitchboardError } from "../../common/errors.js";
import { silentLogger } from "../../common/logger.js";
import { waitFor } from "../../common/wait-for.js";
import { batchSettings } from "./batch-settings.js";
import { BatchWriter, type BatchCommitter, type CommitPlan, type CommitRound } from "./batch-writer.js";
import type { StoreWriteFailure } from "./write-failure.js";
import { WriteBatch } from "./write-batch.js";
import { newTask } from "./testing/fixtures.js";

class FaultError extends Error {}

/** Records every plan it commits; `fault` set: every commit fails as a target out of reach. */
class RecordingCommitter implements BatchCommitter<WriteBatch> {
  readonly location = "/data";
  readonly locationKind = "test dir";
  readonly subject = "/data/store";
  readonly subjectField = "path";
  readonly concurrent: boolean;
  readonly plans: CommitPlan<WriteBatch>[] = [];
  fault: string | undefined;
  running = 0;
  mostRunning = 0;

  constructor(readonly delayMs?: number) {
    this.concurrent = delayMs !== undefined;
  }

  isWriteFault(err: unknown): boolean {
    return err instanceof FaultError;
  }

  faultCode(): string {
    return "TEST_FAULT";
  }

  message(err: unknown): string {
    return err instanceof Error ? err.message : String(err);
  }

  /** Takes the plan at once; an asynchronous one then takes `delayMs` to write it. */
  commit(round: CommitRound<WriteBatch>): void | Promise<void> {
    const fault = this.fault;
    const plan = round.take();
    const write = (): void => {
      if (fault !== undefined) throw new FaultError(fault);
      if (plan) this.plans.push({ ...plan, batch: snapshot(plan.batch) });
    };
    if (this.delayMs === undefined) return write();
    return (async () => {
      this.mostRunning = Math.max(this.mostRunning, ++this.running);
      try {
        await new Promise((r) => setTimeout(r, this.delayMs));
        write();
      } finally {
        this.running--;
      }
    })();
  }
}

/** The batch as committed (the writer clears it afterwards). */
function snapshot(batch: WriteBatch): WriteBatch {
  const copy = new WriteBatch();
  copy.inserts.push(...batch.inserts);
  for (const [id, patch] of batch.updates) copy.updates.set(id, { ...patch });
  copy.audits.push(...batch.audits);
  copy.ops = batch.ops;
  return copy;
}

function writer(committer: RecordingCommitter, flushIntervalMs = 10): BatchWriter<WriteBatch> {
  const settings = batchSettings({ flushIntervalMs, retryFirstMs: 5 });
  return new BatchWriter(committer, () => new WriteBatch(), settings, silentLogger());
}

describe("BatchWriter", () => {
  it("commits the writes of one turn together once an awaited insert asks, synchronously", async () => {
    const committer = new RecordingCommitter();
    const w = writer(committer, 1_000);
    const task = newTask();
    const inserted = w.insert(task);
    w.updateTask(task.id, { state: "running" });
    w.updateTask(task.id, { startedAt: 5 });
    await inserted;
    expect(w.commitCount).toBe(1);
    expect(committer.plans).toHaveLength(1);
    expect(committer.plans[0]!.batch.updates.get(task.id)).toEqual({ state: "running", startedAt: 5 });
    // A read commits what is pending before it returns, with no await.
    w.updateTask(task.id, { state: "succeeded" });
    expect(w.beforeRead()).toBeUndefined();
    expect(w.commitCount).toBe(2);
    await w.stop(0);
  });

  it("runs one asynchronous commit at a time; what is written meanwhile goes in the next", async () => {
    const committer = new RecordingCommitter(20);
    const w = writer(committer, 0);
    const first = newTask();
    const firstDone = w.insert(first);
    await waitFor(() => committer.running === 1, { message: "the first commit to start" });
    const rest = Array.from({ length: 50 }, () => newTask());
    const restDone = rest.map((t) => w.insert(t));
    await Promise.all([firstDone, ...restDone]);
    expect(committer.mostRunning).toBe(1);
    expect(committer.plans.map((p) => p.batch.inserts.length)).toEqual([1, 50]);
    await w.stop(0);
  });

  it("counts a write made while a commit is under way as committed only with the next one", async () => {
    // What an Assign waits for: an agent must never get a task whose record is not committed.
    const committer = new RecordingCommitter(20);
    const w = writer(committer, 0);
    w.updateTask("t1", { state: "assigned" });
    const firstBatch = w.pendingBatch;
    const first = w.committed();
    await waitFor(() => committer.running === 1, { message: "the first commit to start" });
    w.updateTask("t2", { state: "assigned" });
    const secondBatch = w.pendingBatch;
    const second = w.committed();
    expect(secondBatch).toBeGreaterThan(firstBatch);
    await first;
    expect(w.committedBatch).toBeGreaterThanOrEqual(firstBatch);
    expect(w.committedBatch).toBeLessThan(secondBatch);
    await second;
    expect(w.committedBatch).toBeGreaterThanOrEqual(secondBatch);
    await w.stop(0);
  });

  it("commits inserts beside a commit under way, but no other writes beside an insert commit", async () => {
    const committer = new RecordingCommitter(30);
    const w = writer(committer, 1_000);
    w.updateTask("t1", { state: "running" });
    const main = w.flush();
    await waitFor(() => committer.running === 1, { message: "the commit of the update to start" });
    await w.insert(newTask()); // a client's submission waits for its own row only
    await main;
    expect(committer.mostRunning).toBe(2);
    expect(committer.plans.map((p) => [p.batch.updates.size, p.batch.inserts.length])).toEqual([
      [1, 0],
      [0, 1],
    ]);

    // The other way round: an update may be the patch of a task being inserted; it waits.
    committer.mostRunning = 0;
    const task = newTask();
    const inserted = w.insert(task);
    await waitFor(() => committer.running === 1, { message: "the insert commit to start" });
    w.updateTask(task.id, { state: "cancelled" });
    await Promise.all([inserted, w.flush()]);
    expect(committer.mostRunning).toBe(1);
    expect(committer.plans.slice(2).map((p) => [p.batch.updates.size, p.batch.inserts.length])).toEqual([
      [0, 1],
      [1, 0],
    ]);
    await w.stop(0);
  });

  it("runs two insert commits at once, and none more while another commit waits for them", async () => {
    const committer = new RecordingCommitter(100);
    const w = writer(committer, 1_000);
    const first = w.insert(newTask());
    await waitFor(() => committer.running === 1, { message: "the first insert commit to start" });
    const second = w.insert(newTask());
    await waitFor(() => committer.mostRunning === 2, { message: "a second insert commit beside it" });
    w.updateTask("t1", { state: "running" });
    const flushed = w.flush(); // waits for the insert commits: it may patch a task they insert
    const third = w.insert(newTask()); // goes with that commit, not in a third insert commit
    await Promise.all([first, second, flushed, third]);
    expect(committer.mostRunning).toBe(2);
    expect(committer.plans.map((p) => [p.batch.updates.size, p.batch.inserts.length])).toEqual([
      [0, 1],
      [0, 1],
      [1, 1],
    ]);
    await w.stop(0);
  });

  it("counts the writes of a failed commit as committed only once the retry holding them commits", async () => {
    const committer = new RecordingCommitter(20);
    const w = writer(committer, 0);
    await w.insert(newTask());
    committer.fault = "lost connection";
    w.updateTask("t1", { state: "running" });
    const held = w.pendingBatch;
    await waitFor(() => w.failure, { message: "the commit to fail" });
    expect(w.committedBatch).toBeLessThan(held);
    committer.fault = undefined;
    await waitFor(() => w.failure === undefined, { message: "the retry to commit" });
    expect(w.committedBatch).toBeGreaterThanOrEqual(held);
    await w.stop(0);
  });

  it("holds writes through a fault, refuses inserts naming the target, and commits them once it can", async () => {
    const committer = new RecordingCommitter();
    const w = writer(committer);
    const changes: (StoreWriteFailure | undefined)[] = [];
    w.onFailureChange((f) => changes.push(f));
    const task = newTask();
    await w.insert(task);

    committer.fault = "target gone";
    w.updateTask(task.id, { state: "running" });
    w.audit({ at: 1, actor: "x", action: "held.entry", subject: task.id });
    await expect(w.flush()).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    expect(w.failure).toMatchObject({ code: "TEST_FAULT", message: "target gone", location: "/data" });
    const refused = await w.insert(newTask()).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(SwitchboardError);
    expect((refused as Error).message).toMatch(/\(test dir \/data\); retrying: task .* was not accepted/);
    expect(w.batch.updates.get(task.id)).toEqual({ state: "running" });

    committer.fault = undefined;
    await waitFor(() => w.failure === undefined, { message: "the retry to commit" });
    expect(changes.map((c) => c === undefined)).toEqual([false, true]);
    const last = committer.plans.at(-1)!;
    expect(last.batch.updates.get(task.id)).toEqual({ state: "running" });
    expect(last.batch.audits.map((a) => a.action)).toEqual(["store.unwritable", "held.entry"]);
    await w.stop(0);
  });

  it("holds the writes of an asynchronous commit that failed in front of those made meanwhile", async () => {
    const committer = new RecordingCommitter(20);
    const w = writer(committer, 0);
    const task = newTask();
    await w.insert(task);
    committer.fault = "lost connection";
    w.updateTask(task.id, { state: "running", startedAt: 1 });
    await waitFor(() => committer.running === 1, { message: "the commit to start" });
    w.updateTask(task.id, { startedAt: 2 });
    await waitFor(() => w.failure, { message: "the commit to fail" });
    committer.fault = undefined;
    await waitFor(() => w.failure === undefined, { message: "the retry to commit" });
    await w.flush();
    // The later write wins field by field, as it would have had both committed in order.
    const committed = committer.plans.slice(1).map((p) => p.batch.updates.get(task.id));
    expect(committed.filter((u) => u !== undefined)).toEqual([{ state: "running", startedAt: 2 }]);
    await w.stop(0);
  });

  it("refuses writes once closed", async () => {
    const w = writer(new RecordingCommitter());
    await w.stop(0);
    await expect(w.insert(newTask())).rejects.toThrow("the store is closed");
    expect(() => w.updateTask("t", {})).toThrow("the store is closed");
    await expect(w.committed()).rejects.toThrow("the store is closed");
  });
});
