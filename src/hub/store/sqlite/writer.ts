// The SQLite store's write path: writes queue in a WriteBatch (output in its task's buffer) and
// commit together in one transaction every flushIntervalMs or every maxBatchOps calls, whichever
// comes first; an awaited insert commits at the end of the current turn (group commit).
//
// A commit that fails for want of the disk (full, I/O error, locked: a write fault) loses nothing:
// the batch stays in memory, inserts are refused (their callers learn the task was not accepted),
// and a timer retries with backoff until a commit succeeds. The first failure and the recovery are
// each logged once, and told to the listeners.
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Database as Db, Transaction } from "better-sqlite3";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { Logger } from "../../../common/logger.js";
import type { AuditEntry, NewTask, OutputStreamName } from "../interfaces.js";
import { OutputBuffer, streamIndex } from "../output-buffer.js";
import { WriteBatch, type AuditInsert } from "../write-batch.js";
import { writeFailureSentence, type StoreWriteFailure } from "../write-failure.js";
import {
  outputsCommitted,
  planFlush,
  writePlan,
  writePlanUnitByUnit,
  type FlushMode,
  type FlushPlan,
  type PendingWrites,
  type UnitFailure,
} from "./commit-plan.js";
import { serializeDetail } from "./audit.js";
import { asError, closedError, errorMessage, isWriteFault, notAccepted, sqliteCode } from "./errors.js";
import { MAX_HELD_AUDITS, RETRY_MAX_MS, type Settings } from "./options.js";
import type { SqliteQueries } from "./queries.js";

/** The audit entry that records a spell without writes; it rides every retry of the batch. */
interface Outage {
  entry: AuditInsert;
  attempts: number;
  droppedAudits: number;
}

export class SqliteWriter implements PendingWrites {
  readonly batch = new WriteBatch();
  readonly outputs = new Map<string, OutputBuffer>();
  readonly unsavedTails = new Set<OutputBuffer>();
  private batchTimer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private batchTimerImmediate = false;
  private tailTimer: NodeJS.Timeout | undefined;
  private isClosed = false;
  /** close() has begun: its own loop retries, not the timer. */
  private stopping = false;

  private currentFailure: StoreWriteFailure | undefined;
  private outage: Outage | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelayMs: number;
  private readonly failureListeners: ((failure: StoreWriteFailure | undefined) => void)[] = [];
  private commits = 0;
  private commitWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];

  private readonly commitAll: Transaction<(plan: FlushPlan) => void>;
  private readonly commitEach: Transaction<(plan: FlushPlan, failures: UnitFailure[]) => void>;

  constructor(
    db: Db,
    private readonly q: SqliteQueries,
    private readonly path: string,
    private readonly settings: Settings,
    private readonly logger: Logger,
  ) {
    this.commitAll = db.transaction((plan: FlushPlan) => writePlan(q, plan, logger));
    // Called inside a transaction, a better-sqlite3 transaction function is a savepoint.
    const savepoint = db.transaction((unit: () => void) => unit());
    this.commitEach = db.transaction((plan: FlushPlan, failures: UnitFailure[]) =>
      writePlanUnitByUnit(q, plan, failures, savepoint, logger),
    );
    this.retryDelayMs = settings.retryFirstMs;
  }

  // ---- state

  get closed(): boolean {
    return this.isClosed;
  }

  /** Set while commits fail for want of the disk; see the module comment. */
  get failure(): StoreWriteFailure | undefined {
    return this.currentFailure;
  }

  onFailureChange(listener: (failure: StoreWriteFailure | undefined) => void): void {
    this.failureListeners.push(listener);
  }

  get commitCount(): number {
    return this.commits;
  }

  committed(): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    // Nothing pending: everything written so far is committed.
    if (this.batch.isEmpty()) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => this.commitWaiters.push({ resolve, reject }));
    if (!this.currentFailure) this.flushAtEndOfTurn();
    return done;
  }

  assertOpen(): void {
    if (this.isClosed) throw closedError();
  }

  // ---- queueing writes

  /** Queues an insert; resolves once the transaction holding its row has committed. */
  insert(task: NewTask): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    if (this.currentFailure) return Promise.reject(notAccepted(this.currentFailure, task.id));
    const done = new Promise<void>((resolve, reject) => {
      this.batch.inserts.push({ task, resolve, reject });
    });
    this.enqueued(true);
    return done;
  }

  appendOutput(taskId: string, stream: OutputStreamName, data: Uint8Array): void {
    let buffer = this.outputs.get(taskId);
    if (!buffer) {
      // After a restart, or late output after the task finished: carry on from what is stored.
      buffer = new OutputBuffer(taskId, this.settings.outputCapBytes, this.q.output.persisted(taskId));
      this.outputs.set(taskId, buffer);
    }
    buffer.append(streamIndex(stream), data);
    this.batch.outputs.add(buffer);
    if (buffer.tailChanged) this.unsavedTails.add(buffer);
    this.enqueued();
  }

  /** Queues an audit entry; while the store cannot write, past MAX_HELD_AUDITS it is only counted. */
  audit(entry: AuditEntry): void {
    if (this.outage && this.batch.audits.length >= MAX_HELD_AUDITS) {
      if (this.outage.droppedAudits++ === 0) {
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

  /**
   * A write joined the batch. An insert someone awaits (`urgent`) commits as soon as the current
   * turn of the event loop is done, taking everything pending with it; other writes wait up to
   * flushIntervalMs, so that a task's updates share commits with other tasks' instead of each
   * costing one (a commit writes whole WAL pages, and that, not the rows, is what costs).
   * While the store cannot write, only its retry timer commits.
   */
  enqueued(urgent = false): void {
    const batch = this.batch;
    batch.ops++;
    if (this.currentFailure) return;
    if (batch.ops >= this.settings.maxBatchOps) {
      this.flushQuietly("due");
      return;
    }
    if (urgent || this.settings.flushIntervalMs === 0) this.flushAtEndOfTurn();
    else if (this.batchTimer === undefined) {
      this.batchTimer = setTimeout(this.onBatchTimer, this.settings.flushIntervalMs);
      this.batchTimerImmediate = false;
    }
  }

  // ---- committing

  /** Commits pending writes before a read, so that the read sees them (held ones: see held-reads.ts). */
  beforeRead(): void {
    this.assertOpen();
    if (!this.currentFailure && !this.batch.isEmpty()) this.flushQuietly("due");
  }

  /** Before reading a task's output: commits what is pending, its tail included. */
  beforeOutputRead(taskId: string): void {
    this.assertOpen();
    const buffer = this.outputs.get(taskId);
    // While the store cannot write, what is stored is what there is (watchers got the rest live).
    if (!this.currentFailure && (!this.batch.isEmpty() || (buffer && buffer.tailChanged)))
      this.flushQuietly("due", buffer);
  }

  /** Commits what is pending now, every output tail included; throws if it cannot. */
  flush(): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    try {
      this.flushNow("all");
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(asError(err));
    }
  }

  /** Commits what is pending once the current turn of the event loop is done. */
  private flushAtEndOfTurn(): void {
    if (this.batchTimer !== undefined && this.batchTimerImmediate) return;
    this.clearBatchTimer();
    this.batchTimer = setImmediate(this.onBatchTimer);
    this.batchTimerImmediate = true;
  }

  private clearBatchTimer(): void {
    if (this.batchTimer === undefined) return;
    if ("hasRef" in this.batchTimer && "refresh" in this.batchTimer) clearTimeout(this.batchTimer);
    else clearImmediate(this.batchTimer);
  }

  private readonly onBatchTimer = (): void => {
    this.batchTimer = undefined;
    if (!this.currentFailure) this.flushQuietly("due");
  };

  private readonly onTailTimer = (): void => {
    this.tailTimer = undefined;
    if (!this.currentFailure) this.flushQuietly("due");
  };

  private readonly onRetryTimer = (): void => {
    this.retryTimer = undefined;
    this.flushQuietly("due");
  };

  /** A flush whose failure is logged (and reported to the inserts it held), not thrown. */
  private flushQuietly(mode: FlushMode, tailNow?: OutputBuffer): void {
    try {
      this.flushNow(mode, tailNow);
    } catch {
      // flushNow has logged it and rejected the inserts.
    }
  }

  /**
   * Commits the pending batch, and the output tails that are due (all of them in mode "all",
   * and `tailNow`'s). If the batch fails as a whole for a reason of its own, its writes are
   * retried one by one in one transaction, so that one bad write (a duplicate task id, output for
   * an unknown task) fails alone. If it fails for want of the disk, nothing is dropped: the store
   * holds the batch and retries (see hold()), and this throws UNAVAILABLE.
   */
  private flushNow(mode: FlushMode, tailNow?: OutputBuffer): void {
    this.clearBatchTimer();
    this.batchTimer = undefined;
    const batch = this.batch;
    const now = Date.now();
    const plan = planFlush(this, this.settings.tailPersistIntervalMs, mode, now, tailNow);
    if (batch.isEmpty() && plan.outputs.length === 0) {
      this.scheduleTailTimer(); // a timer that fired a little early comes back
      return;
    }
    if (this.outage) {
      this.outage.attempts++;
      this.outage.entry.detail = this.outageDetail(this.outage, now);
    }

    const failures: UnitFailure[] = [];
    try {
      try {
        this.commitAll.immediate(plan);
      } catch (err) {
        if (isWriteFault(err)) throw err;
        this.logger.warn({ err, writes: batch.ops }, "store batch failed; retrying its writes one by one");
        this.commitEach.immediate(plan, failures);
      }
    } catch (err) {
      this.hold(err);
      throw new SwitchboardError(Code.UNAVAILABLE, writeFailureSentence(this.currentFailure!));
    }
    this.afterCommit(plan, now, failures);
  }

  /** After a commit: settle the inserts, move the output buffers on, log what failed alone. */
  private afterCommit(plan: FlushPlan, now: number, failures: UnitFailure[]): void {
    const { batch } = plan;
    this.commits++;
    for (const insert of batch.inserts) {
      if (insert.error) insert.reject(insert.error);
      else insert.resolve();
    }
    outputsCommitted(this, plan, now);
    batch.clear();
    if (failures.length > 0) {
      this.logger.error(
        {
          failed: failures.length,
          first: failures
            .slice(0, 10)
            .map((f) => ({ what: f.what, subject: f.subject, err: errorMessage(f.err) })),
        },
        "store writes failed and were dropped; the rest of their batch committed",
      );
    }
    if (this.currentFailure) this.writableAgain(now);
    for (const w of this.commitWaiters.splice(0)) w.resolve();
    this.scheduleTailTimer();
  }

  private scheduleTailTimer(): void {
    if (this.unsavedTails.size > 0 && !this.tailTimer) {
      this.tailTimer = setTimeout(this.onTailTimer, this.settings.tailPersistIntervalMs);
    }
  }

  // ---- while the store cannot write

  /**
   * Nothing committed, for want of the disk. Inserts are refused (their callers learn at once that
   * the task was not accepted); everything else stays in the batch, output in its buffers, and
   * the retry timer tries again.
   */
  private hold(err: unknown): void {
    const batch = this.batch;
    this.enterFailure(err);
    const failure = this.currentFailure!;
    for (const insert of batch.inserts) {
      const rejection = notAccepted(failure, insert.task.id);
      rejection.cause = err;
      insert.reject(rejection);
    }
    batch.ops -= batch.inserts.length;
    batch.inserts.length = 0;
    this.scheduleRetry();
  }

  /** Commits fail: remember why, hold an audit entry that records it, log and tell listeners once. */
  enterFailure(err: unknown): void {
    const now = Date.now();
    const code = sqliteCode(err) ?? "SQLITE_ERROR";
    const message = errorMessage(err);
    const previous = this.currentFailure;
    if (previous && previous.code === code && previous.message === message) {
      this.logger.debug(
        { code, attempts: this.outage?.attempts ?? 0 },
        "store commit failed again; retrying",
      );
      return;
    }
    this.currentFailure = { code, message, location: dirname(this.path), since: previous?.since ?? now };
    if (!this.outage) {
      const outage: Outage = {
        entry: { at: now, actor: "system", action: "store.unwritable", subject: this.path, detail: null },
        attempts: 0,
        droppedAudits: 0,
      };
      outage.entry.detail = this.outageDetail(outage, now);
      this.outage = outage;
      // Held at the head of the audit list: every retry writes at least this, so a success means
      // the store writes again.
      this.batch.audits.unshift(outage.entry);
      this.batch.ops++;
    }
    this.scheduleRetry();
    for (const l of this.failureListeners) l(this.currentFailure);
    this.logger.error(
      { code, err: message, path: this.path, ...this.heldCounts() },
      previous
        ? "store still cannot write, for another reason now"
        : "store cannot write: holding its writes in memory and retrying; no new tasks meanwhile",
    );
  }

  /** A direct write (tokens) is refused while the store cannot write. */
  refuseWhileFailing(what: string): void {
    if (this.currentFailure)
      throw new SwitchboardError(Code.UNAVAILABLE, `${writeFailureSentence(this.currentFailure)}: ${what}`);
  }

  /** A direct write failed for want of the disk: the store is failing, and the caller hears so. */
  failIfWriteFault(err: unknown, what: string): void {
    if (!isWriteFault(err)) return;
    this.enterFailure(err);
    const e = new SwitchboardError(
      Code.UNAVAILABLE,
      `${writeFailureSentence(this.currentFailure!)}: ${what}`,
    );
    e.cause = err;
    throw e;
  }

  private writableAgain(now: number): void {
    const failure = this.currentFailure!;
    this.logger.info(
      {
        down_ms: now - failure.since,
        attempts: this.outage?.attempts ?? 0,
        dropped_audits: this.outage?.droppedAudits ?? 0,
      },
      "store writable again",
    );
    this.currentFailure = undefined;
    this.outage = undefined;
    this.retryDelayMs = this.settings.retryFirstMs;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    for (const l of this.failureListeners) l(undefined);
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.stopping) return;
    this.retryTimer = setTimeout(this.onRetryTimer, this.retryDelayMs);
    this.retryDelayMs = Math.min(this.retryDelayMs * 2, RETRY_MAX_MS);
  }

  private outageDetail(outage: Outage, now: number): string {
    const f = this.currentFailure;
    return JSON.stringify({
      cause: f ? `${f.code}: ${f.message}` : undefined,
      since: f?.since ?? outage.entry.at,
      until: now,
      attempts: outage.attempts,
      dropped_audit_entries: outage.droppedAudits,
    });
  }

  /** What the store holds in memory, for the log lines about a spell without writes. */
  private heldCounts(): Record<string, number> {
    const b = this.batch;
    return {
      held_task_updates: b.updates.size,
      held_outputs: b.outputs.size,
      held_audits: b.audits.length,
      held_agents: b.agents.size,
      held_nodes: b.nodes.size,
    };
  }

  // ---- closing

  /**
   * Commits what is pending and stops: no timer is left, waiters are rejected, and later writes
   * are refused. While the store cannot write, retries for up to `waitWritableMs` first. Returns
   * why the last commit failed (undefined: everything is committed); the caller closes the file.
   */
  async stop(waitWritableMs: number): Promise<unknown> {
    let failure: unknown;
    this.stopping = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    try {
      this.flushNow("all");
    } catch (err) {
      failure = err;
    }
    if (failure !== undefined && this.currentFailure && waitWritableMs > 0) {
      // A drain must not lose what the hub holds: give the disk the time the drain allows.
      this.logger.warn(
        { wait_ms: waitWritableMs, ...this.heldCounts() },
        "store cannot write: waiting for it before closing",
      );
      const deadline = Date.now() + waitWritableMs;
      while (this.currentFailure && Date.now() < deadline) {
        await sleep(Math.min(this.retryDelayMs, deadline - Date.now()));
        this.retryDelayMs = Math.min(this.retryDelayMs * 2, RETRY_MAX_MS);
        try {
          this.flushNow("all");
          failure = undefined;
        } catch (err) {
          failure = err;
        }
      }
    }
    if (failure !== undefined && this.currentFailure) {
      this.logger.error(
        { err: failure, ...this.heldCounts() },
        "store closed without the writes it held: tasks whose outcome is among them show as lost after a restart",
      );
    }
    this.clearBatchTimer();
    clearTimeout(this.tailTimer);
    this.batchTimer = undefined;
    this.tailTimer = undefined;
    this.isClosed = true;
    for (const w of this.commitWaiters.splice(0)) w.reject(closedError());
    this.outputs.clear();
    this.unsavedTails.clear();
    return failure;
  }
}
