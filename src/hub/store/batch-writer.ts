// The write path both stores share: writes queue in a WriteBatch (batch-intake.ts; output in its
// task's buffer) and commit together every flushIntervalMs or every maxBatchOps calls, whichever
// comes first; an awaited write commits at the end of the current turn (group commit). One commit
// runs at a time; what is written meanwhile waits for the next, so a burst costs a few commits,
// never one a write. Where commits are asynchronous, pending inserts commit alone beside the one
// under way, so that a submission waits for its own row only (commitInserts).
//
// A commit that fails for want of the store's target (a full disk, a database out of reach: a
// write fault) loses nothing: the batch goes back in front of what was written since, inserts are
// refused (their callers learn the task was not accepted), and a timer retries with backoff until
// a commit succeeds. The spell itself (why, since when, its audit entry, the backoff, the log lines
// and listeners) is write-outage.ts's. How a batch is written, and which errors are write faults,
// is the BatchCommitter's.
import { setTimeout as sleep } from "node:timers/promises";
import { Code, SwitchboardError } from "../../common/errors.js";
import { isTerminal } from "../../common/task-state.js";
import type { Logger } from "../../common/logger.js";
import type { BatchSettings } from "./batch-settings.js";
import { asError, closedError, notAccepted } from "./errors.js";
import { OutputBuffer, type PersistedOutput } from "./output-buffer.js";
import { outputsCommitted, planOutputs, type FlushMode } from "./output-writes.js";
import type { BatchCommitter, CommitPlan, CommitRound } from "./batch-committer.js";
import type { WriteBatch } from "./write-batch.js";

export type { BatchCommitter, CommitPlan, CommitRound, UnitFailure } from "./batch-committer.js";
import { writeFailureSentence, type StoreWriteFailure } from "./write-failure.js";
import { WriteOutage } from "./write-outage.js";
import { BatchIntake } from "./batch-intake.js";
import { UncertainCommits } from "./uncertain-commits.js";

/** A commit asked for: joined by later requests until it takes the batch. */
interface Round<B extends WriteBatch> {
  mode: FlushMode;
  tails: Set<OutputBuffer>;
  plan: CommitPlan<B> | undefined;
  taken: boolean;
  now: number;
  /** Set while it runs asynchronously, or while it is queued. */
  done: Promise<void> | undefined;
}

const ignore = (): void => undefined;

/**
 * Insert commits at once at most: inserts never touch the same row (each is a new task), so a
 * submission need not wait for another's commit to end before its own starts.
 */
const MAX_INSERT_ROUNDS = 2;

/** The batch ends the task: it holds a patch to a terminal state. */
function endsIn(batch: WriteBatch, id: string): boolean {
  const state = batch.updates.get(id)?.state;
  return state !== undefined && isTerminal(state);
}

export class BatchWriter<B extends WriteBatch> extends BatchIntake<B> {
  private current: Round<B> | undefined;
  private queued: { round: Round<B>; start: () => void } | undefined;
  private batchTimer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private tailTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  /** close() has begun: its own loop retries, not the timer. */
  private stopping = false;

  protected readonly outage: WriteOutage;
  private readonly uncertain = new UncertainCommits();
  /** Commits of inserts alone under way, MAX_INSERT_ROUNDS at most (asynchronous committers; see commitInserts). */
  private readonly insertRounds = new Set<Promise<void>>();
  private commits = 0;
  /** The number of the pending batch; batches commit in this order. */
  private batchNumber = 1;
  private committedNumber = 0;
  private closing: Promise<void> | undefined;

  constructor(committer: BatchCommitter<B>, newBatch: () => B, settings: BatchSettings, logger: Logger) {
    super(committer, newBatch, settings, logger);
    this.outage = new WriteOutage(committer, settings.retryFirstMs, logger, () => this.heldCounts());
  }

  // ---- state

  /** Set while commits fail for want of the target; see the module comment. */
  override get failure(): StoreWriteFailure | undefined {
    return this.outage.failure;
  }

  onFailureChange(listener: (failure: StoreWriteFailure | undefined) => void): void {
    this.outage.onChange(listener);
  }

  get commitCount(): number {
    return this.commits;
  }

  /** The batch a write made now joins: it is committed once committedBatch reaches this. */
  get pendingBatch(): number {
    return this.batchNumber;
  }

  /** The last batch committed: every write of a batch up to it is committed. */
  get committedBatch(): number {
    return this.committedNumber;
  }

  committed(): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    const batch = !this.batch.isEmpty() ? this.batch : this.inflight;
    // Nothing pending or in flight: everything written so far is committed.
    if (!batch) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => batch.waiters.push({ resolve, reject }));
    if (batch === this.batch && !this.failure) this.commitAtEndOfTurn();
    return done;
  }

  /**
   * A write joined the batch. An awaited write (`urgent`) commits as soon as the current turn of
   * the event loop is done, taking everything pending with it; other writes wait up to
   * flushIntervalMs, so that a task's updates share commits with other tasks' instead of each
   * costing one. While the store cannot write, only its retry timer commits.
   */
  override enqueued(urgent = false): void {
    this.batch.ops++;
    if (this.failure || this.isClosed) return;
    if (this.batch.ops >= this.settings.maxBatchOps) this.commitQuietly("due");
    else if (urgent || this.settings.flushIntervalMs === 0) this.commitAtEndOfTurn();
    else this.batchTimer ??= setTimeout(this.onBatchTimer, this.settings.flushIntervalMs);
  }

  // ---- reading after writes

  /**
   * Before a read: commits what is pending, `tail`'s output tail included (or waits for the
   * commit under way), so that the read sees it. While the store cannot write, reads go through
   * what it holds instead (held-reads.ts). With a synchronous committer, done on return.
   */
  beforeRead(tail?: OutputBuffer): Promise<void> | undefined {
    this.assertOpen();
    if (this.failure) return undefined;
    const pending =
      !this.batch.isEmpty() ||
      this.current ||
      this.queued ||
      this.insertRounds.size > 0 ||
      (tail && tail.tailChanged);
    if (!pending) return undefined;
    try {
      return this.requestCommit("due", tail)?.catch(this.unlessHeld);
    } catch (err) {
      this.unlessHeld(err);
      return undefined;
    }
  }

  /** A commit before a read failed: the read goes on if the store now holds the writes (it reads through them). */
  private readonly unlessHeld = (err: unknown): void => {
    if (!this.failure) throw err;
  };

  /** Resolves once the commits asked for so far are done (whether they succeeded or not). */
  afterCommits(): Promise<void> {
    const last = this.queued?.round.done ?? this.current?.done;
    const all = [...this.insertRounds, ...(last ? [last] : [])];
    return Promise.all(all.map((p) => p.catch(ignore))).then(ignore);
  }

  // ---- direct writes (written at once, not batched)

  /** A direct write is refused while the store cannot write. */
  refuseWhileFailing(what: string): void {
    if (this.failure)
      throw new SwitchboardError(Code.UNAVAILABLE, `${writeFailureSentence(this.failure)}: ${what}`);
  }

  /** A direct write failed for want of the target: the store is failing, and the caller hears so. */
  failIfWriteFault(err: unknown, what: string): void {
    if (!this.committer.isWriteFault(err)) return;
    this.enterFailure(err);
    throw new SwitchboardError(Code.UNAVAILABLE, `${writeFailureSentence(this.failure!)}: ${what}`, {
      cause: err,
    });
  }

  // ---- committing

  /** Commits what is pending now, every output tail included; rejects with UNAVAILABLE if it cannot. */
  flush(): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    try {
      return this.requestCommit("all") ?? Promise.resolve();
    } catch (err) {
      return Promise.reject(asError(err));
    }
  }

  private commitAtEndOfTurn(): void {
    this.immediate ??= setImmediate(this.onImmediate);
  }

  private readonly onImmediate = (): void => {
    this.immediate = undefined;
    if (this.failure) return;
    const batch = this.batch;
    if (!this.committer.concurrent || batch.inserts.length === 0) {
      this.commitQuietly("due");
      return;
    }
    // Inserts wait for no other write: they go in a commit of their own (see commitInserts), and the
    // rest waits for its timer unless someone waits for it.
    // Not while another commit waits for the insert commits to end: it takes the inserts along.
    if (!this.queued && this.insertRounds.size < MAX_INSERT_ROUNDS) this.startInsertRound();
    const urgent = batch.waiters.length + batch.nodeWaiters.length > 0 || this.settings.flushIntervalMs === 0;
    if (urgent) this.commitQuietly("due");
    else if (!batch.isEmpty())
      this.batchTimer ??= setTimeout(this.onBatchTimer, this.settings.flushIntervalMs);
  };

  /**
   * Commits the pending inserts alone, beside the commit under way if there is one: a client's
   * submission waits for its own row only. Safe beside it: that commit cannot write to a task not
   * yet inserted, and no other commit starts until the insert commits are done (requestCommit).
   */
  private async commitInserts(): Promise<void> {
    const batch = this.newBatch();
    batch.inserts.push(...this.batch.inserts.splice(0));
    batch.ops = batch.inserts.length;
    this.batch.ops -= batch.ops;
    const plan: CommitPlan<B> = { batch, outputs: [], failures: [], number: this.batchNumber++ };
    try {
      await this.committer.commit({
        uncertain: this.uncertain.batches,
        settle: (committed) => this.uncertain.settle(committed, this.batch, this.logger),
        unrestored: [],
        restore: ignore,
        take: () => plan,
        writingUnitByUnit: (err) => this.writingUnitByUnit(plan, err),
      });
      this.commits++;
      this.settleInserts(batch);
      if (this.failure) this.writableAgain(Date.now());
    } catch (err) {
      // As a failed commit: its inserts are refused, and it may have committed all the same.
      this.uncertain.note(plan);
      if (this.committer.isWriteFault(err)) {
        this.batch.inserts.unshift(...batch.inserts);
        this.batch.ops += batch.ops;
        this.hold(err);
      } else for (const insert of batch.inserts) insert.reject(asError(err));
    }
  }

  private startInsertRound(): void {
    const round: Promise<void> = this.commitInserts().finally(() => {
      this.insertRounds.delete(round);
      // A commit that waited for the insert commits goes first; else the inserts that came meanwhile.
      if (this.queued) {
        if (!this.current) this.startQueued();
      } else if (this.batch.inserts.length > 0 && !this.failure && !this.isClosed) this.commitAtEndOfTurn();
    });
    this.insertRounds.add(round);
  }

  private readonly onBatchTimer = (): void => {
    this.batchTimer = undefined;
    if (!this.failure) this.commitQuietly("due");
  };

  private readonly onTailTimer = (): void => {
    this.tailTimer = undefined;
    if (!this.failure) this.commitQuietly("due");
  };

  private readonly onRetryTimer = (): void => {
    this.retryTimer = undefined;
    this.commitQuietly("due");
  };

  /** A commit whose failure is logged (and told to the inserts it held), not thrown. */
  private commitQuietly(mode: FlushMode): void {
    try {
      this.requestCommit(mode)?.catch(ignore);
    } catch {
      // commit() has logged it and rejected the inserts.
    }
  }

  /**
   * Asks for a commit. It joins one that has not taken the batch yet; else it runs after the one
   * under way; else now. Returns a promise for an asynchronous commit; a synchronous one is done
   * on return, and throws if it failed.
   */
  private requestCommit(mode: FlushMode, tail?: OutputBuffer): Promise<void> | undefined {
    // Whatever commit this joins or starts takes every write pending now: no timer is needed.
    clearTimeout(this.batchTimer);
    this.batchTimer = undefined;
    if (this.immediate) clearImmediate(this.immediate);
    this.immediate = undefined;
    const joinable = this.queued?.round ?? (this.current && !this.current.taken ? this.current : undefined);
    if (joinable) {
      if (mode === "all") joinable.mode = "all";
      if (tail) joinable.tails.add(tail);
      return joinable.done;
    }
    const round: Round<B> = {
      mode,
      tails: new Set(tail ? [tail] : []),
      plan: undefined,
      taken: false,
      now: 0,
      done: undefined,
    };
    if (!this.current && this.insertRounds.size === 0) return this.run(round);
    // After the commit under way, which may have taken only part of what is pending now.
    let start!: () => void;
    round.done = new Promise<void>((resolve) => (start = resolve)).then(() => {
      this.queued = undefined;
      return this.run(round);
    });
    this.queued = { round, start };
    return round.done;
  }

  /** Runs one round: the committer writes it; then the next queued round starts. */
  private run(round: Round<B>): Promise<void> | undefined {
    if (this.isClosed) return undefined;
    this.current = round;
    let result: void | Promise<void>;
    try {
      result = this.committer.commit(this.roundFor(round));
    } catch (err) {
      this.current = undefined;
      this.startQueued();
      this.failed(round, err);
    }
    if (!(result instanceof Promise)) {
      this.current = undefined;
      this.succeeded(round);
      this.startQueued();
      return undefined;
    }
    round.done = result.then(
      () => this.succeeded(round),
      (err: unknown) => this.failed(round, err),
    );
    void round.done.catch(ignore).finally(() => {
      this.current = undefined;
      this.startQueued();
    });
    return round.done;
  }

  private startQueued(): void {
    // Not beside an insert commit: the next round may patch a task it inserts (see commitInserts).
    if (this.insertRounds.size === 0) this.queued?.start();
  }

  /** The committer's view of a round. */
  private roundFor(round: Round<B>): CommitRound<B> {
    const batchOf = (): B => this.batch;
    return {
      uncertain: this.uncertain.batches,
      settle: (committed) => this.uncertain.settle(committed, this.batch, this.logger),
      get unrestored() {
        return [...batchOf().unrestored.keys()];
      },
      restore: (persisted) => this.restoreOutputs(persisted),
      take: () => this.take(round),
      writingUnitByUnit: (err) => this.writingUnitByUnit(round.plan, err),
    };
  }

  /** A batch failed as a whole: a write fault is rethrown, else it is written again unit by unit. */
  private writingUnitByUnit(plan: CommitPlan<B> | undefined, err: unknown): void {
    if (this.committer.isWriteFault(err)) throw err;
    this.logger.warn(
      { err: this.committer.message(err), writes: plan?.batch.ops ?? 0 },
      "store batch failed; retrying its writes one by one",
    );
    for (const insert of plan?.batch.inserts ?? []) insert.error = undefined;
  }

  /** Takes the pending batch and the output writes that are due; undefined: nothing to write. */
  private take(round: Round<B>): CommitPlan<B> | undefined {
    round.taken = true;
    const batch = this.batch;
    const now = Date.now();
    const outputs = planOutputs(this, batch, {
      mode: round.mode,
      now,
      tailPersistIntervalMs: this.settings.tailPersistIntervalMs,
      tailsNow: round.tails,
      copyTails: this.committer.concurrent,
    });
    if (batch.isEmpty() && outputs.length === 0) {
      this.scheduleTailTimer(); // a timer that fired a little early comes back
      return undefined;
    }
    this.batch = this.newBatch();
    this.inflight = batch;
    const number = this.batchNumber++;
    this.outage.attempt(now);
    round.now = now;
    round.plan = { batch, outputs, failures: [], number };
    return round.plan;
  }

  /** Output of tasks with no buffer in memory: their buffers carry on from what is stored. */
  private restoreOutputs(persisted: ReadonlyMap<string, PersistedOutput>): void {
    // Synchronous from here: output appended while the committer read is in the map too.
    for (const [taskId, chunks] of this.batch.unrestored) {
      const buffer = new OutputBuffer(taskId, this.settings.outputCapBytes, persisted.get(taskId));
      for (const c of chunks) buffer.append(c.stream, c.data);
      this.outputs.set(taskId, buffer);
      this.batch.outputs.add(buffer);
      if (buffer.tailChanged) this.unsavedTails.add(buffer);
    }
    this.batch.unrestored.clear();
  }

  /** After a commit: settle the inserts and waiters, move the output buffers on, log what failed alone. */
  private succeeded(round: Round<B>): void {
    const plan = round.plan;
    this.inflight = undefined;
    if (!plan) return;
    const { batch, outputs, failures } = plan;
    this.commits++;
    // Batches commit one at a time, in order; a failed one joined the pending batch, whose number
    // is higher.
    this.committedNumber = plan.number;
    this.settleInserts(batch);
    outputsCommitted(this, outputs, round.now);
    for (const w of batch.waiters) w.resolve();
    for (const w of batch.nodeWaiters) w.resolve();
    batch.clear();
    if (failures.length > 0) {
      this.logger.error(
        {
          failed: failures.length,
          first: failures
            .slice(0, 10)
            .map((f) => ({ what: f.what, subject: f.subject, err: this.committer.message(f.err) })),
        },
        "store writes failed and were dropped; the rest of their batch committed",
      );
    }
    if (this.failure) this.writableAgain(round.now);
    this.scheduleTailTimer();
  }

  /** The inserts of a committed batch: each resolves, or rejects with its own failure. */
  private settleInserts(batch: B): void {
    for (const insert of batch.inserts) {
      if (insert.error) insert.reject(insert.error);
      else {
        // Its output can come only once it is committed (its Assign waits for that), unless it
        // ended meanwhile (cancelled while queued).
        const id = insert.task.id;
        if (!endsIn(batch, id) && !endsIn(this.batch, id)) this.fresh.add(id);
        insert.resolve();
      }
    }
  }

  /** Nothing committed: the batch goes back in front, the store holds it, and this throws UNAVAILABLE. */
  private failed(round: Round<B>, err: unknown): never {
    const inflight = this.inflight;
    // It may have committed all the same, its answer lost with the connection: asked when it can be.
    if (round.plan && this.committer.concurrent) this.uncertain.note(round.plan);
    if (round.plan && inflight) {
      this.batch.takeInFront(inflight);
      this.inflight = undefined;
    }
    this.hold(err);
    throw new SwitchboardError(Code.UNAVAILABLE, writeFailureSentence(this.failure!), { cause: err });
  }

  private scheduleTailTimer(): void {
    if (this.unsavedTails.size > 0 && !this.tailTimer && !this.isClosed) {
      this.tailTimer = setTimeout(this.onTailTimer, this.settings.tailPersistIntervalMs);
    }
  }

  // ---- while the store cannot write

  /**
   * Nothing committed, for want of the target. Inserts are refused (their callers learn at once
   * that the task was not accepted); node writes are held; everything else stays in the batch,
   * output in its buffers, and the retry timer tries again.
   */
  private hold(err: unknown): void {
    const batch = this.batch;
    this.enterFailure(err);
    const failure = this.failure!;
    for (const insert of batch.inserts) {
      const rejection = notAccepted(failure, insert.task.id);
      rejection.cause = err;
      insert.reject(rejection);
    }
    batch.ops -= batch.inserts.length;
    batch.inserts.length = 0;
    for (const w of batch.nodeWaiters.splice(0)) w.resolve();
    this.scheduleRetry();
  }

  /** Commits fail: the outage remembers why; the audit entry that records a new spell is held first. */
  enterFailure(err: unknown): void {
    const started = this.outage.enter(err);
    if (started) {
      // Held at the head of the audit list: every retry writes at least this, so a success means
      // the store writes again.
      this.batch.audits.unshift(started);
      this.batch.ops++;
    }
    this.scheduleRetry();
  }

  private writableAgain(now: number): void {
    this.outage.over(now);
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    // What was written during the spell waits for no timer.
    if (!this.batch.isEmpty()) this.commitAtEndOfTurn();
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.stopping || this.isClosed) return;
    this.retryTimer = setTimeout(this.onRetryTimer, this.outage.nextDelayMs());
  }

  /** What the store holds in memory, for the log lines about a spell without writes. */
  private heldCounts(): Record<string, number> {
    const b = this.batch;
    return {
      held_task_updates: b.updates.size,
      held_outputs: b.outputs.size + b.unrestored.size,
      held_audits: b.audits.length,
      held_agents: b.agents.size,
      held_nodes: b.nodes.size,
    };
  }

  // ---- closing

  /**
   * Closes once (a second call gets the first's promise): stop(), then `release` the target (the
   * file, the pool). Rejects with why the last commit failed, if it did.
   */
  close(waitWritableMs: number, release: () => void | Promise<void>): Promise<void> {
    this.closing ??= this.shutdown(waitWritableMs, release);
    return this.closing;
  }

  private async shutdown(waitWritableMs: number, release: () => void | Promise<void>): Promise<void> {
    const failure = await this.stop(waitWritableMs);
    await release();
    this.logger.info({ [this.committer.subjectField]: this.committer.subject }, "store closed");
    if (failure !== undefined) throw asError(failure);
  }

  /**
   * Commits what is pending and stops: no timer is left, waiters are rejected, and later writes
   * are refused. While the store cannot write, retries for up to `waitWritableMs` first. Returns
   * why the last commit failed (undefined: everything is committed); the caller closes the target.
   */
  async stop(waitWritableMs: number): Promise<unknown> {
    let failure: unknown;
    this.stopping = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    try {
      await this.requestCommit("all");
    } catch (err) {
      failure = err;
    }
    if (failure !== undefined && this.failure && waitWritableMs > 0) {
      // A drain must not lose what the hub holds: give the target the time the drain allows.
      this.logger.warn(
        { wait_ms: waitWritableMs, ...this.heldCounts() },
        "store cannot write: waiting for it before closing",
      );
      const deadline = Date.now() + waitWritableMs;
      while (this.failure && Date.now() < deadline) {
        await sleep(Math.min(this.outage.nextDelayMs(), Math.max(0, deadline - Date.now())));
        try {
          await this.requestCommit("all");
          failure = undefined;
        } catch (err) {
          failure = err;
        }
      }
    }
    if (failure !== undefined && this.failure) {
      this.logger.error(
        { err: this.committer.message(failure), ...this.heldCounts() },
        "store closed without the writes it held: tasks whose outcome is among them show as lost after a restart",
      );
    }
    clearTimeout(this.batchTimer);
    clearTimeout(this.tailTimer);
    if (this.immediate) clearImmediate(this.immediate);
    this.batchTimer = undefined;
    this.tailTimer = undefined;
    this.immediate = undefined;
    this.isClosed = true;
    for (const w of [...this.batch.waiters, ...this.batch.nodeWaiters]) w.reject(closedError());
    for (const insert of this.batch.inserts) insert.reject(closedError());
    this.batch.clear();
    this.outputs.clear();
    this.unsavedTails.clear();
    this.fresh.clear();
    return failure;
  }
}
