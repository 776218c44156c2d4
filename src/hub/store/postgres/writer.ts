// The PostgreSQL store's write path: writes queue in a PendingBatch (output in its task's buffer)
// and commit together in one transaction every flushIntervalMs or every maxBatchOps calls; an
// awaited insert or node write commits at the end of the current turn (group commit). One commit
// is in flight at a time; what is written meanwhile waits for the next, so a burst costs a few
// commits, never one per write, and the event loop never waits for the database.
//
// A commit that fails for want of the database (refused, lost connection, restart, disk full)
// loses nothing: the batch goes back in front of what was written since, inserts are refused (their
// callers learn the task was not accepted), and a timer retries with backoff until a commit
// succeeds. The first failure and the recovery are each logged once, and told to the listeners.
import { setTimeout as sleep } from "node:timers/promises";
import type pg from "pg";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { Logger } from "../../../common/logger.js";
import type { AuditEntry, NewTask, OutputStreamName } from "../interfaces.js";
import { OutputBuffer, streamIndex } from "../output-buffer.js";
import { serializeDetail } from "../sqlite/audit.js";
import type { AuditInsert } from "../write-batch.js";
import { writeFailureSentence, type StoreWriteFailure } from "../write-failure.js";
import {
  outputsCommitted,
  planOutputs,
  writeAll,
  writeUnitByUnit,
  type FlushMode,
  type HeldOutputs,
  type OutputWrite,
  type UnitFailure,
} from "./commit-plan.js";
import {
  closedError,
  errorMessage,
  faultCode,
  isWriteFault,
  notAccepted,
  unreachable,
  withoutSecrets,
} from "./errors.js";
import { MAX_HELD_AUDITS, RETRY_MAX_MS, type Settings } from "./options.js";
import { persistedOutputs } from "./output.js";
import { mergeHeld, PendingBatch } from "./pending-batch.js";
import type { Sql } from "./sql.js";

/** The audit entry that records a spell without writes; it rides every retry of the batch. */
interface Outage {
  entry: AuditInsert;
  attempts: number;
  droppedAudits: number;
}

/** A commit asked for and not started yet: later requests join it. */
interface QueuedCommit {
  mode: FlushMode;
  tails: Set<OutputBuffer>;
  done: Promise<void>;
}

export class PostgresWriter implements HeldOutputs {
  batch = new PendingBatch();
  readonly outputs = new Map<string, OutputBuffer>();
  readonly unsavedTails = new Set<OutputBuffer>();
  /** The batch whose commit is under way. */
  inflight: PendingBatch | undefined;
  private chain: Promise<void> = Promise.resolve();
  private queued: QueuedCommit | undefined;
  private batchTimer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private tailTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelayMs: number;
  private isClosed = false;
  private stopping = false;

  private currentFailure: StoreWriteFailure | undefined;
  private outage: Outage | undefined;
  private readonly failureListeners: ((failure: StoreWriteFailure | undefined) => void)[] = [];
  private commits = 0;
  /** Statements sent, BEGIN and COMMIT included: what the batching saves, measured. */
  statements = 0;
  /** The pool, counting statements, for reads and direct writes. */
  readonly sql: Sql;

  constructor(
    private readonly pool: pg.Pool,
    /** The database as shown: URL without password, and schema. */
    readonly location: string,
    private readonly secrets: readonly string[],
    private readonly settings: Settings,
    private readonly logger: Logger,
  ) {
    this.retryDelayMs = settings.retryFirstMs;
    this.sql = this.counting(pool);
  }

  // ---- state

  get failure(): StoreWriteFailure | undefined {
    return this.currentFailure;
  }

  onFailureChange(listener: (failure: StoreWriteFailure | undefined) => void): void {
    this.failureListeners.push(listener);
  }

  get commitCount(): number {
    return this.commits;
  }

  assertOpen(): void {
    if (this.isClosed) throw closedError();
  }

  committed(): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    const batch = !this.batch.isEmpty() ? this.batch : this.inflight;
    // Nothing pending or in flight: everything written so far is committed.
    if (!batch) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => batch.waiters.push({ resolve, reject }));
    if (batch === this.batch && !this.currentFailure) this.commitAtEndOfTurn();
    return done;
  }

  // ---- queueing writes

  /** Queues an insert; resolves once the transaction holding its row has committed. */
  insert(task: NewTask): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    if (this.currentFailure) return Promise.reject(notAccepted(this.currentFailure, task.id));
    const done = new Promise<void>((resolve, reject) => this.batch.inserts.push({ task, resolve, reject }));
    this.enqueued(true);
    return done;
  }

  /** Queues a node row (null: its deletion); resolves once committed, or held while the store cannot write. */
  writeNode(id: string, row: NodeRowOrNull): Promise<void> {
    this.batch.nodes.set(id, row);
    if (this.currentFailure) {
      this.batch.ops++;
      return Promise.resolve();
    }
    const done = new Promise<void>((resolve, reject) => this.batch.nodeWaiters.push({ resolve, reject }));
    this.enqueued(true);
    return done;
  }

  appendOutput(taskId: string, stream: OutputStreamName, data: Uint8Array): void {
    const buffer = this.outputs.get(taskId);
    if (!buffer) {
      // After a restart, or late output after the task finished: the buffer carries on from what
      // is stored, read before the next commit; until then the bytes wait here (copied).
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
   * A write joined the batch. An awaited write (`urgent`) commits once the current turn of the
   * event loop is done, taking everything pending with it; others wait up to flushIntervalMs.
   * While the store cannot write, only its retry timer commits.
   */
  enqueued(urgent = false): void {
    this.batch.ops++;
    if (this.currentFailure || this.isClosed) return;
    if (this.batch.ops >= this.settings.maxBatchOps) void this.commitQuietly("due");
    else if (urgent || this.settings.flushIntervalMs === 0) this.commitAtEndOfTurn();
    else this.batchTimer ??= setTimeout(this.onBatchTimer, this.settings.flushIntervalMs);
  }

  // ---- reading after writes

  /** Before a read: commits what is pending (or waits for the commit in flight), so that the read sees it. */
  async beforeRead(tail?: OutputBuffer): Promise<void> {
    this.assertOpen();
    if (this.currentFailure) return; // reads go through what is held instead
    const pending = !this.batch.isEmpty() || this.inflight || this.queued || (tail && tail.tailChanged);
    if (!pending) return;
    try {
      await this.requestCommit("due", tail);
    } catch (err) {
      // The store holds the writes now; the read merges them.
      if (!this.currentFailure) throw err;
    }
  }

  /** Runs a read on the pool; a database out of reach is UNAVAILABLE, naming it. */
  async read<T>(what: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
    this.assertOpen();
    try {
      return await fn(this.sql);
    } catch (err) {
      if (!isWriteFault(err)) throw err;
      const e = unreachable(this.location, what, this.message(err));
      e.cause = err;
      throw e;
    }
  }

  /**
   * A write made at once (tokens, forgetting an agent), after the commit in flight: refused while the
   * store cannot write; one that fails for want of the database makes the store fail, and the
   * caller hears so.
   */
  async direct<T>(what: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
    this.assertOpen();
    this.refuseWhileFailing(what);
    await this.chain;
    try {
      return await fn(this.sql);
    } catch (err) {
      if (!isWriteFault(err)) throw err;
      this.enterFailure(err);
      throw new SwitchboardError(Code.UNAVAILABLE, `${writeFailureSentence(this.currentFailure!)}: ${what}`, {
        cause: err,
      });
    }
  }

  refuseWhileFailing(what: string): void {
    if (this.currentFailure)
      throw new SwitchboardError(Code.UNAVAILABLE, `${writeFailureSentence(this.currentFailure)}: ${what}`);
  }

  // ---- committing

  /** Commits what is pending now, every output tail included; throws UNAVAILABLE if it cannot. */
  flush(): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    return this.requestCommit("all");
  }

  private commitAtEndOfTurn(): void {
    this.immediate ??= setImmediate(this.onImmediate);
  }

  private readonly onImmediate = (): void => {
    this.immediate = undefined;
    if (!this.currentFailure) void this.commitQuietly("due");
  };

  private readonly onBatchTimer = (): void => {
    this.batchTimer = undefined;
    if (!this.currentFailure) void this.commitQuietly("due");
  };

  private readonly onTailTimer = (): void => {
    this.tailTimer = undefined;
    if (!this.currentFailure) void this.commitQuietly("due");
  };

  private readonly onRetryTimer = (): void => {
    this.retryTimer = undefined;
    void this.commitQuietly("due");
  };

  /** A commit whose failure is logged (and told to the inserts it held), not thrown. */
  private async commitQuietly(mode: FlushMode): Promise<void> {
    try {
      await this.requestCommit(mode);
    } catch {
      // commitOnce has logged it and rejected the inserts.
    }
  }

  /** Queues a commit after the one in flight; joins the queued one if there is one. */
  private requestCommit(mode: FlushMode, tail?: OutputBuffer): Promise<void> {
    clearTimeout(this.batchTimer);
    this.batchTimer = undefined;
    const queued = this.queued;
    if (queued) {
      if (mode === "all") queued.mode = "all";
      if (tail) queued.tails.add(tail);
      return queued.done;
    }
    const next: QueuedCommit = { mode, tails: new Set(tail ? [tail] : []), done: Promise.resolve() };
    this.queued = next;
    next.done = this.chain.then(() => {
      if (this.queued === next) this.queued = undefined;
      return this.commitOnce(next.mode, next.tails);
    });
    this.chain = next.done.catch(() => undefined);
    return next.done;
  }

  /**
   * Commits the pending batch and the output tails that are due. A batch that fails as a whole for
   * a reason of its own is written again unit by unit; one that fails for want of the database is
   * held (see hold()), and this throws UNAVAILABLE.
   */
  private async commitOnce(mode: FlushMode, tailsNow: ReadonlySet<OutputBuffer>): Promise<void> {
    if (this.isClosed) return;
    let client: pg.PoolClient | undefined;
    let broken: unknown;
    try {
      client = await this.pool.connect();
      const sql = this.counting(client);
      if (this.batch.unrestored.size > 0) await this.restoreOutputs(sql);
      const batch = this.batch;
      const now = Date.now();
      const outputs = planOutputs(this, batch, this.settings.tailPersistIntervalMs, mode, now, tailsNow);
      if (batch.isEmpty() && outputs.length === 0) {
        this.scheduleTailTimer();
        return;
      }
      this.batch = new PendingBatch();
      this.inflight = batch;
      if (this.outage) {
        this.outage.attempts++;
        this.outage.entry.detail = this.outageDetail(this.outage, now);
      }
      const failures: UnitFailure[] = [];
      try {
        await transaction(sql, () => writeAll(sql, batch, outputs, this.logger));
      } catch (err) {
        if (isWriteFault(err)) throw err;
        this.logger.warn(
          { err: this.message(err), writes: batch.ops },
          "store batch failed; retrying its writes one by one",
        );
        for (const insert of batch.inserts) insert.error = undefined;
        await transaction(sql, () => writeUnitByUnit(sql, batch, outputs, failures, this.logger));
      }
      this.inflight = undefined;
      this.afterCommit(batch, outputs, now, failures);
    } catch (err) {
      broken = err;
      if (this.inflight) {
        mergeHeld(this.inflight, this.batch);
        this.batch = this.inflight;
        this.inflight = undefined;
      }
      this.hold(err);
      throw new SwitchboardError(Code.UNAVAILABLE, writeFailureSentence(this.currentFailure!), {
        cause: err,
      });
    } finally {
      // A connection that failed is not given back to the pool: it may be half-dead.
      client?.release(broken === undefined ? undefined : true);
    }
  }

  /** Reads back the stored output of tasks that produced output with no buffer in memory. */
  private async restoreOutputs(sql: Sql): Promise<void> {
    const persisted = await persistedOutputs(sql, [...this.batch.unrestored.keys()]);
    // Synchronous from here: output appended while the query ran is in the map too.
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
  private afterCommit(
    batch: PendingBatch,
    outputs: OutputWrite[],
    now: number,
    failures: UnitFailure[],
  ): void {
    this.commits++;
    for (const insert of batch.inserts) {
      if (insert.error) insert.reject(insert.error);
      else insert.resolve();
    }
    outputsCommitted(this, outputs, now);
    for (const w of [...batch.waiters, ...batch.nodeWaiters]) w.resolve();
    batch.clear();
    if (failures.length > 0) {
      this.logger.error(
        {
          failed: failures.length,
          first: failures
            .slice(0, 10)
            .map((f) => ({ what: f.what, subject: f.subject, err: this.message(f.err) })),
        },
        "store writes failed and were dropped; the rest of their batch committed",
      );
    }
    if (this.currentFailure) this.writableAgain(now);
    this.scheduleTailTimer();
  }

  private scheduleTailTimer(): void {
    if (this.unsavedTails.size > 0 && !this.tailTimer && !this.isClosed) {
      this.tailTimer = setTimeout(this.onTailTimer, this.settings.tailPersistIntervalMs);
    }
  }

  // ---- while the store cannot write

  /** Nothing committed: inserts are refused, node writes are held, everything else waits for a retry. */
  private hold(err: unknown): void {
    const batch = this.batch;
    this.enterFailure(err);
    const failure = this.currentFailure!;
    for (const insert of batch.inserts) {
      insert.reject(
        new SwitchboardError(Code.UNAVAILABLE, notAccepted(failure, insert.task.id).message, { cause: err }),
      );
    }
    batch.ops -= batch.inserts.length;
    batch.inserts.length = 0;
    for (const w of batch.nodeWaiters.splice(0)) w.resolve();
    this.scheduleRetry();
  }

  /** Commits fail: remember why, hold an audit entry that records it, log and tell listeners once. */
  enterFailure(err: unknown): void {
    const now = Date.now();
    const code = faultCode(err);
    const message = this.message(err);
    const previous = this.currentFailure;
    if (previous && previous.code === code && previous.message === message) {
      this.logger.debug(
        { code, attempts: this.outage?.attempts ?? 0 },
        "store commit failed again; retrying",
      );
      this.scheduleRetry();
      return;
    }
    this.currentFailure = { code, message, location: this.location, since: previous?.since ?? now };
    if (!this.outage) {
      const outage: Outage = {
        entry: { at: now, actor: "system", action: "store.unwritable", subject: this.location, detail: null },
        attempts: 0,
        droppedAudits: 0,
      };
      outage.entry.detail = this.outageDetail(outage, now);
      this.outage = outage;
      // Held at the head of the audit list: every retry writes at least this.
      this.batch.audits.unshift(outage.entry);
      this.batch.ops++;
    }
    this.scheduleRetry();
    for (const l of this.failureListeners) l(this.currentFailure);
    this.logger.error(
      { code, err: message, database: this.location, ...this.heldCounts() },
      previous
        ? "store still cannot write, for another reason now"
        : "store cannot write: holding its writes in memory and retrying; no new tasks meanwhile",
    );
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
    // What was written during the spell waits for no timer.
    if (!this.batch.isEmpty()) this.commitAtEndOfTurn();
  }

  private scheduleRetry(): void {
    if (this.retryTimer || this.stopping || this.isClosed) return;
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

  /** An error's message as it may be shown: without the password. */
  message(err: unknown): string {
    return withoutSecrets(errorMessage(err), this.secrets);
  }

  private counting(target: pg.Pool | pg.PoolClient): Sql {
    return {
      query: <R extends pg.QueryResultRow>(text: string, values?: unknown[]) => {
        this.statements++;
        return target.query<R>(text, values);
      },
    };
  }

  // ---- closing

  /**
   * Commits what is pending and stops: no timer is left, waiters are rejected, later writes are
   * refused. While the store cannot write, retries for up to `waitWritableMs` first. Returns why
   * the last commit failed (undefined: everything is committed); the caller ends the pool.
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
    if (failure !== undefined && this.currentFailure && waitWritableMs > 0) {
      this.logger.warn(
        { wait_ms: waitWritableMs, ...this.heldCounts() },
        "store cannot write: waiting for it before closing",
      );
      const deadline = Date.now() + waitWritableMs;
      while (this.currentFailure && Date.now() < deadline) {
        await sleep(Math.min(this.retryDelayMs, Math.max(0, deadline - Date.now())));
        this.retryDelayMs = Math.min(this.retryDelayMs * 2, RETRY_MAX_MS);
        try {
          await this.requestCommit("all");
          failure = undefined;
        } catch (err) {
          failure = err;
        }
      }
    }
    if (failure !== undefined && this.currentFailure) {
      this.logger.error(
        { err: this.message(failure), ...this.heldCounts() },
        "store closed without the writes it held: tasks whose outcome is among them show as lost after a restart",
      );
    }
    clearTimeout(this.batchTimer);
    clearTimeout(this.tailTimer);
    if (this.immediate) clearImmediate(this.immediate);
    this.isClosed = true;
    for (const w of [...this.batch.waiters, ...this.batch.nodeWaiters]) w.reject(closedError());
    for (const insert of this.batch.inserts) insert.reject(closedError());
    this.batch.clear();
    this.outputs.clear();
    this.unsavedTails.clear();
    return failure;
  }
}

type NodeRowOrNull = Parameters<PendingBatch["nodes"]["set"]>[1];

/** BEGIN, the writes, COMMIT; ROLLBACK if any fails. */
async function transaction(sql: Sql, write: () => Promise<void>): Promise<void> {
  await sql.query("BEGIN");
  try {
    await write();
    await sql.query("COMMIT");
  } catch (err) {
    await sql.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}
