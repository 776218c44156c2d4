// The embedded store: one SQLite file in WAL mode. Writes queue in a WriteBatch and commit
// together in one transaction every flushIntervalMs or every maxBatchOps calls, whichever comes
// first; insertTask() resolves once the transaction holding its row has committed (group commit).
// Reads commit the pending batch first, so they see every write made before them.
//
// A commit that fails for want of the disk (full, I/O error, locked: a write fault) loses nothing:
// the batch stays in memory, inserts are refused (their callers learn the task was not accepted),
// and a timer retries with backoff until a commit succeeds. Meanwhile reads see the held task
// updates, and the first failure and the recovery are each logged once.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import Database, { type Database as Db, type Transaction } from "better-sqlite3";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { silentLogger, type Logger } from "../../../common/logger.js";
import { isTerminal } from "../../../common/task-state.js";
import { AgentQueries } from "./agents.js";
import { NodeQueries } from "./nodes.js";
import { AuditQueries, type AuditFilter, type AuditInsert } from "./audit.js";
import type {
  AgentRecord,
  NodeRow,
  AuditEntry,
  AuditRecord,
  NewTask,
  OutputStreamName,
  Store,
  StoredOutput,
  StoreOptions,
  TaskFilter,
  TaskPatch,
  TaskRecord,
  TokenRecord,
} from "../interfaces.js";
import { Checkpointer } from "./checkpointer.js";
import { migrate } from "./migrate.js";
import { MIGRATIONS } from "./migrations/index.js";
import { OutputBuffer, streamIndex, type OutputRow } from "../output-buffer.js";
import { OutputQueries, type OutputRowRecord } from "./output.js";
import { TaskQueries } from "./tasks.js";
import { TokenQueries } from "./tokens.js";
import { WriteBatch } from "../write-batch.js";
import { writeFailureSentence, type StoreWriteFailure } from "../write-failure.js";

export const DEFAULT_OUTPUT_CAP_BYTES = 1024 * 1024;
export const DEFAULT_FLUSH_INTERVAL_MS = 10;
export const DEFAULT_MAX_BATCH_OPS = 512;
export const DEFAULT_TAIL_PERSIST_INTERVAL_MS = 250;
export const DEFAULT_BUSY_TIMEOUT_MS = 5_000;
/** While the store cannot write: the first retry, and the longest wait between two. */
export const RETRY_FIRST_MS = 100;
export const RETRY_MAX_MS = 2_000;
/**
 * Audit entries held at most while the store cannot write (about 400 bytes each). Everything else
 * it holds is keyed by task, agent, node or token and so bounded by them; past this, audit entries
 * are counted (the outage's own audit entry says how many), not kept.
 */
export const MAX_HELD_AUDITS = 20_000;

export interface SqliteStoreOptions extends StoreOptions {
  logger?: Logger;
  /** Writes that make the batch commit at once, before flushIntervalMs. Default 512. */
  maxBatchOps?: number;
  /** How often at most a task's rolling output tail is rewritten. Default 250 ms. */
  tailPersistIntervalMs?: number;
  /** How long a write waits for another process's lock on the file. Default 5 s. */
  busyTimeoutMs?: number;
  /** Checkpoint the WAL from a worker thread instead of inside commits. Default: on for files. */
  checkpointInWorker?: boolean;
  /** While the store cannot write: the first retry's delay (doubling up to RETRY_MAX_MS). */
  retryFirstMs?: number;
}

/** Opens (creating it and its directory if needed) and migrates the store at `path`. */
export function openSqliteStore(path: string, opts: SqliteStoreOptions = {}): SqliteStore {
  const logger = opts.logger ?? silentLogger();
  const settings: Settings = {
    // At least one byte of tail, so that dropped bytes always have a tail chunk to mark the gap.
    outputCapBytes: option("outputCapBytes", opts.outputCapBytes, DEFAULT_OUTPUT_CAP_BYTES, 2),
    flushIntervalMs: option("flushIntervalMs", opts.flushIntervalMs, DEFAULT_FLUSH_INTERVAL_MS, 0),
    maxBatchOps: option("maxBatchOps", opts.maxBatchOps, DEFAULT_MAX_BATCH_OPS, 1),
    tailPersistIntervalMs: option(
      "tailPersistIntervalMs",
      opts.tailPersistIntervalMs,
      DEFAULT_TAIL_PERSIST_INTERVAL_MS,
      0,
    ),
  };
  const busyTimeoutMs = option("busyTimeoutMs", opts.busyTimeoutMs, DEFAULT_BUSY_TIMEOUT_MS, 0);
  const retryFirstMs = option("retryFirstMs", opts.retryFirstMs, RETRY_FIRST_MS, 1);

  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  let db: Db;
  try {
    db = new Database(path, { timeout: busyTimeoutMs });
  } catch (err) {
    throw wrapOpenError(path, err);
  }
  try {
    // WAL with synchronous=NORMAL: a committed transaction survives the process being killed
    // (not necessarily a power cut), and a commit costs no fsync.
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    db.pragma(`busy_timeout = ${busyTimeoutMs}`);
    db.pragma("foreign_keys = ON");
    const version = migrate(db, MIGRATIONS, logger);
    // Checkpoints move to a worker thread (never inside a commit on the event loop); the store
    // checkpoints itself on close. In memory there is no WAL to checkpoint.
    const inWorker = (opts.checkpointInWorker ?? true) && path !== ":memory:";
    if (inWorker) db.pragma("wal_autocheckpoint = 0");
    const checkpointer = inWorker ? new Checkpointer(path, logger) : undefined;
    logger.info(
      { path, schemaVersion: version, checkpoints: inWorker ? "worker" : "inline" },
      "store opened",
    );
    return new SqliteStore(db, path, version, { ...settings, retryFirstMs }, logger, checkpointer);
  } catch (err) {
    db.close();
    throw wrapOpenError(path, err);
  }
}

interface Settings {
  outputCapBytes: number;
  flushIntervalMs: number;
  maxBatchOps: number;
  tailPersistIntervalMs: number;
  retryFirstMs?: number;
}

/** One task's output writes in a commit. */
interface OutputWrite {
  buffer: OutputBuffer;
  head: OutputRow[];
  totals: boolean;
  tail: OutputRow[] | undefined;
  /** The task reached a terminal state: drop its buffer from memory once this commits. */
  release: boolean;
  error?: Error;
}

interface FlushPlan {
  batch: WriteBatch;
  outputs: OutputWrite[];
}

type FlushMode = "due" | "all";

/** The audit entry that records a spell without writes; it rides every retry of the batch. */
interface Outage {
  entry: AuditInsert;
  attempts: number;
  droppedAudits: number;
}

/** A unit of a batch that failed on its own; the rest of the batch committed. */
interface UnitFailure {
  what: string;
  subject: string;
  err: unknown;
}

export class SqliteStore implements Store {
  private readonly tasks: TaskQueries;
  private readonly output: OutputQueries;
  private readonly agents: AgentQueries;
  private readonly nodes: NodeQueries;
  private readonly tokens: TokenQueries;
  private readonly auditLog: AuditQueries;

  private readonly batch = new WriteBatch();
  /** Output buffers of tasks that produced output and have not finished. */
  private readonly outputs = new Map<string, OutputBuffer>();
  /** Buffers whose tail changed since it was last written. */
  private readonly unsavedTails = new Set<OutputBuffer>();
  private batchTimer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  private batchTimerImmediate = false;
  private tailTimer: NodeJS.Timeout | undefined;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** close() has begun: its own loop retries, not the timer. */
  private stopping = false;

  /** Set while commits fail for want of the disk; see the module comment. */
  private failure: StoreWriteFailure | undefined;
  private outage: Outage | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryDelayMs: number;
  private readonly failureListeners: ((failure: StoreWriteFailure | undefined) => void)[] = [];
  private commits = 0;
  private commitWaiters: { resolve: () => void; reject: (err: Error) => void }[] = [];

  private readonly commitAll: Transaction<(plan: FlushPlan) => void>;
  private readonly commitEach: Transaction<(plan: FlushPlan, failures: UnitFailure[]) => void>;
  private readonly savepoint: Transaction<(unit: () => void) => void>;

  constructor(
    private readonly db: Db,
    readonly path: string,
    readonly schemaVersion: number,
    private readonly settings: Settings,
    private readonly logger: Logger,
    private readonly checkpointer?: Checkpointer,
  ) {
    this.tasks = new TaskQueries(db);
    this.output = new OutputQueries(db);
    this.agents = new AgentQueries(db);
    this.nodes = new NodeQueries(db);
    this.tokens = new TokenQueries(db);
    this.auditLog = new AuditQueries(db);
    this.commitAll = db.transaction((plan: FlushPlan) => this.writePlan(plan));
    this.commitEach = db.transaction((plan: FlushPlan, failures: UnitFailure[]) =>
      this.writePlanUnitByUnit(plan, failures),
    );
    // Called inside a transaction, a better-sqlite3 transaction function is a savepoint.
    this.savepoint = db.transaction((unit: () => void) => unit());
    this.retryDelayMs = settings.retryFirstMs ?? RETRY_FIRST_MS;
  }

  // ---- health

  get writeFailure(): StoreWriteFailure | undefined {
    return this.failure;
  }

  onWriteFailureChange(listener: (failure: StoreWriteFailure | undefined) => void): void {
    this.failureListeners.push(listener);
  }

  get commitCount(): number {
    return this.commits;
  }

  committed(): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    // Nothing pending: everything written so far is committed.
    if (this.batch.isEmpty()) return Promise.resolve();
    const done = new Promise<void>((resolve, reject) => this.commitWaiters.push({ resolve, reject }));
    if (!this.failure) this.flushAtEndOfTurn();
    return done;
  }

  // ---- tasks

  insertTask(task: NewTask): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    if (this.failure) return Promise.reject(notAccepted(this.failure, task.id));
    const done = new Promise<void>((resolve, reject) => {
      this.batch.inserts.push({ task, resolve, reject });
    });
    this.enqueued(true);
    return done;
  }

  updateTask(id: string, patch: TaskPatch): void {
    this.assertOpen();
    this.batch.addUpdate(id, patch);
    this.enqueued();
  }

  getTask(id: string): TaskRecord | undefined {
    this.beforeRead();
    return this.withHeldUpdate(this.tasks.get(id));
  }

  listTasks(filter: TaskFilter): TaskRecord[] {
    this.beforeRead();
    const rows = this.tasks.list(filter);
    return this.failure ? rows.map((r) => this.withHeldUpdate(r)) : rows;
  }

  listUnfinishedTasks(): TaskRecord[] {
    this.beforeRead();
    const rows = this.tasks.listUnfinished();
    return this.failure ? rows.map((r) => this.withHeldUpdate(r)).filter((r) => !isTerminal(r.state)) : rows;
  }

  countTasks(): number {
    this.beforeRead();
    return this.tasks.count();
  }

  // ---- output

  appendOutput(taskId: string, stream: OutputStreamName, data: Uint8Array): void {
    this.assertOpen();
    if (data.length === 0) return;
    let buffer = this.outputs.get(taskId);
    if (!buffer) {
      // After a restart, or late output after the task finished: carry on from what is stored.
      buffer = new OutputBuffer(taskId, this.settings.outputCapBytes, this.output.persisted(taskId));
      this.outputs.set(taskId, buffer);
    }
    buffer.append(streamIndex(stream), data);
    this.batch.outputs.add(buffer);
    if (buffer.tailChanged) this.unsavedTails.add(buffer);
    this.enqueued();
  }

  getOutput(taskId: string): StoredOutput {
    this.assertOpen();
    const buffer = this.outputs.get(taskId);
    // While the store cannot write, what is stored is what there is (watchers got the rest live).
    if (!this.failure && (!this.batch.isEmpty() || (buffer && buffer.tailChanged)))
      this.flushQuietly("due", buffer);
    return toStoredOutput(this.output.rows(taskId), this.output.totals(taskId));
  }

  // ---- agents

  upsertAgent(agent: AgentRecord): void {
    this.assertOpen();
    // A second upsert before the commit keeps the first one's first-seen time, as the row would.
    const pending = this.batch.agents.get(agent.id);
    this.batch.agents.set(agent.id, pending ? { ...agent, firstSeenAt: pending.firstSeenAt } : agent);
    this.enqueued();
  }

  getAgent(id: string): AgentRecord | undefined {
    this.assertOpen();
    // Read through the pending batch instead of committing it first: agent rows are written only
    // by upsertAgent, so the batch's copy, if any, is the newest. The hub reads an agent on every
    // connect; a commit for each made a reconnect storm of 10,000 agents crawl.
    const stored = this.agents.get(id);
    const pending = this.batch.agents.get(id);
    if (!pending) return stored;
    // The upsert keeps the first first-seen time: so does this read.
    return stored ? { ...pending, firstSeenAt: stored.firstSeenAt } : pending;
  }

  listAgents(): AgentRecord[] {
    this.beforeRead();
    const stored = this.agents.list();
    if (!this.failure || this.batch.agents.size === 0) return stored;
    const held = new Map(this.batch.agents);
    const merged = stored.map((a) => {
      const pending = held.get(a.id);
      held.delete(a.id);
      return pending ? { ...pending, firstSeenAt: a.firstSeenAt } : a;
    });
    return [...merged, ...held.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  forgetAgent(id: string): boolean {
    this.assertOpen();
    // Written at once, like nodes: rare, and an admin's release must not wait for (or be undone by) a batch.
    const pending = this.batch.agents.delete(id);
    return this.agents.delete(id) || pending;
  }

  markAllAgentsDisconnected(): void {
    this.beforeRead(); // pending upserts first, so that they do not reconnect anyone afterwards
    this.agents.markAllDisconnected();
  }

  // ---- nodes (written at once: rare, and a spawn's intent must outlive a crash; while the store
  // cannot write they are held with the batch, so that a heartbeat never fails on a full disk)

  upsertNode(node: NodeRow): void {
    this.assertOpen();
    this.writeNodeNow(node.id, { ...node });
  }

  deleteNode(id: string): void {
    this.assertOpen();
    this.writeNodeNow(id, null);
  }

  listNodes(): NodeRow[] {
    this.assertOpen();
    const stored = this.nodes.list();
    if (this.batch.nodes.size === 0) return stored;
    const held = new Map(this.batch.nodes);
    const out: NodeRow[] = [];
    for (const n of stored) {
      const pending = held.get(n.id);
      held.delete(n.id);
      if (pending === undefined) out.push(n);
      else if (pending !== null) out.push(pending);
    }
    for (const n of held.values()) if (n) out.push(n);
    return out;
  }

  private writeNodeNow(id: string, row: NodeRow | null): void {
    if (!this.failure && !this.batch.nodes.has(id)) {
      try {
        if (row) this.nodes.upsert(row);
        else this.nodes.delete(id);
        return;
      } catch (err) {
        if (!isWriteFault(err)) throw err;
        this.enterFailure(err);
      }
    }
    this.batch.nodes.set(id, row);
    this.enqueued();
  }

  // ---- tokens (written at once: rare, and a revocation must take effect immediately)

  insertToken(token: TokenRecord): void {
    this.assertOpen();
    this.refuseWhileFailing("the token was not created");
    try {
      this.tokens.insert(token);
    } catch (err) {
      this.failIfWriteFault(err, "the token was not created");
      throw tokenInsertError(token, err);
    }
  }

  findTokenByHash(hash: string): TokenRecord | undefined {
    // No flush: the only token writes that wait in the batch are touches, applied here instead,
    // so that authenticating a call never forces a commit.
    this.assertOpen();
    return this.withPendingTouch(this.tokens.byHash(hash));
  }

  findToken(idOrName: string): TokenRecord | undefined {
    this.assertOpen();
    return this.withPendingTouch(this.tokens.byId(idOrName) ?? this.tokens.liveByName(idOrName));
  }

  listTokens(includeRevoked: boolean): TokenRecord[] {
    this.assertOpen();
    return this.tokens.list(includeRevoked).map((t) => this.withPendingTouch(t));
  }

  revokeToken(id: string, at: number): void {
    this.assertOpen();
    this.refuseWhileFailing("the token was not revoked");
    let revoked: boolean;
    try {
      revoked = this.tokens.revoke(id, at);
    } catch (err) {
      this.failIfWriteFault(err, "the token was not revoked");
      throw err;
    }
    if (revoked) return;
    if (!this.tokens.byId(id)) throw new SwitchboardError(Code.NOT_FOUND, `no token has the id ${id}`);
    // Already revoked: keep the first revocation time.
  }

  touchToken(id: string, at: number): void {
    this.assertOpen();
    this.batch.addTouch(id, at);
    this.enqueued();
  }

  // ---- audit

  audit(entry: AuditEntry): void {
    this.assertOpen();
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
      detail: this.serializeDetail(entry),
    });
    this.enqueued();
  }

  listAudit(filter: AuditFilter): AuditRecord[] {
    this.beforeRead();
    return this.auditLog.list(filter);
  }

  /** Tasks whose output buffer (rolling tail included) is in memory: a figure for metrics. */
  get outputBuffersInMemory(): number {
    return this.outputs.size;
  }

  // ---- lifecycle

  flush(): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
    try {
      this.flushNow("all");
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(asError(err));
    }
  }

  close(opts: { waitWritableMs?: number } = {}): Promise<void> {
    this.closing ??= this.shutdown(opts.waitWritableMs ?? 0);
    return this.closing;
  }

  private async shutdown(waitWritableMs: number): Promise<void> {
    let failure: unknown;
    this.stopping = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    try {
      this.flushNow("all");
    } catch (err) {
      failure = err;
    }
    if (failure !== undefined && this.failure && waitWritableMs > 0) {
      // A drain must not lose what the hub holds: give the disk the time the drain allows.
      this.logger.warn(
        { wait_ms: waitWritableMs, ...this.heldCounts() },
        "store cannot write: waiting for it before closing",
      );
      const deadline = Date.now() + waitWritableMs;
      while (this.failure && Date.now() < deadline) {
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
    if (failure !== undefined && this.failure) {
      this.logger.error(
        { err: failure, ...this.heldCounts() },
        "store closed without the writes it held: tasks whose outcome is among them show as lost after a restart",
      );
    }
    this.clearBatchTimer();
    clearTimeout(this.tailTimer);
    this.batchTimer = undefined;
    this.tailTimer = undefined;
    this.closed = true;
    for (const w of this.commitWaiters.splice(0)) w.reject(closedError());
    this.outputs.clear();
    this.unsavedTails.clear();
    // The worker's connection goes first, so that this one, the last, checkpoints the WAL whole.
    await this.checkpointer?.stop();
    this.db.close();
    this.logger.info({ path: this.path }, "store closed");
    if (failure !== undefined) throw asError(failure);
  }

  // ---- the write queue

  /**
   * A write joined the batch. An insert someone awaits (`urgent`) commits as soon as the current
   * turn of the event loop is done, taking everything pending with it; other writes wait up to
   * flushIntervalMs, so that a task's updates share commits with other tasks' instead of each
   * costing one (a commit writes whole WAL pages, and that, not the rows, is what costs).
   * While the store cannot write, only its retry timer commits.
   */
  private enqueued(urgent = false): void {
    const batch = this.batch;
    batch.ops++;
    if (this.failure) return;
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
    if (!this.failure) this.flushQuietly("due");
  };

  private readonly onTailTimer = (): void => {
    this.tailTimer = undefined;
    if (!this.failure) this.flushQuietly("due");
  };

  private readonly onRetryTimer = (): void => {
    this.retryTimer = undefined;
    this.flushQuietly("due");
  };

  /** Commits pending writes before a read, so that the read sees them (held ones: see withHeldUpdate). */
  private beforeRead(): void {
    this.assertOpen();
    if (!this.failure && !this.batch.isEmpty()) this.flushQuietly("due");
  }

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
    const plan = this.plan(mode, now, tailNow);
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
      throw new SwitchboardError(Code.UNAVAILABLE, writeFailureSentence(this.failure!));
    }
    this.afterCommit(plan, now, failures);
  }

  private plan(mode: FlushMode, now: number, tailNow: OutputBuffer | undefined): FlushPlan {
    const batch = this.batch;
    const outputs: OutputWrite[] = [];
    const byBuffer = new Map<OutputBuffer, OutputWrite>();
    const writeFor = (buffer: OutputBuffer): OutputWrite => {
      let write = byBuffer.get(buffer);
      if (!write) {
        write = { buffer, head: [], totals: false, tail: undefined, release: false };
        byBuffer.set(buffer, write);
        outputs.push(write);
      }
      return write;
    };

    for (const buffer of batch.outputs) {
      const write = writeFor(buffer);
      write.head = buffer.pendingHeadRows();
      write.totals = true;
      write.release = buffer.finished;
    }
    if (this.outputs.size > 0) {
      for (const [id, patch] of batch.updates) {
        const buffer =
          patch.state !== undefined && isTerminal(patch.state) ? this.outputs.get(id) : undefined;
        if (buffer) writeFor(buffer).release = true;
      }
    }
    const interval = this.settings.tailPersistIntervalMs;
    for (const buffer of this.unsavedTails) {
      const write = byBuffer.get(buffer);
      const due =
        mode === "all" || buffer === tailNow || write?.release || now - buffer.tailPersistedAt >= interval;
      if (due) {
        const w = write ?? writeFor(buffer);
        w.tail = buffer.tailRows(buffer.headRows + w.head.length);
      }
    }
    return { batch, outputs };
  }

  private writePlan(plan: FlushPlan): void {
    const { batch } = plan;
    for (const insert of batch.inserts) this.tasks.insert(insert.task);
    for (const [id, patch] of batch.updates) this.writeUpdate(id, patch);
    for (const agent of batch.agents.values()) this.agents.upsert(agent);
    for (const write of plan.outputs) this.writeOutput(write);
    for (const entry of batch.audits) this.auditLog.insert(entry);
    for (const [id, at] of batch.touches) this.tokens.touch(id, at);
    for (const [id, node] of batch.nodes) this.writeNode(id, node);
  }

  private writePlanUnitByUnit(plan: FlushPlan, failures: UnitFailure[]): void {
    const { batch } = plan;
    const unit = (what: string, subject: string, write: () => void): Error | undefined => {
      try {
        this.savepoint(write);
        return undefined;
      } catch (err) {
        // The disk, not the write: the whole batch waits for the next attempt.
        if (isWriteFault(err)) throw err;
        failures.push({ what, subject, err });
        return asError(err);
      }
    };
    for (const insert of batch.inserts) {
      const err = unit("task insert", insert.task.id, () => this.tasks.insert(insert.task));
      if (err !== undefined) insert.error = taskInsertError(insert.task.id, err);
    }
    for (const [id, patch] of batch.updates) unit("task update", id, () => this.writeUpdate(id, patch));
    for (const agent of batch.agents.values())
      unit("agent upsert", agent.id, () => this.agents.upsert(agent));
    for (const write of plan.outputs) {
      const err = unit("task output", write.buffer.taskId, () => this.writeOutput(write));
      if (err !== undefined) write.error = err;
    }
    for (const entry of batch.audits) unit("audit entry", entry.action, () => this.auditLog.insert(entry));
    for (const [id, at] of batch.touches) unit("token touch", id, () => this.tokens.touch(id, at));
    for (const [id, node] of batch.nodes) unit("node write", id, () => this.writeNode(id, node));
  }

  private writeUpdate(id: string, patch: TaskPatch): void {
    if (this.tasks.update(id, patch) === 0 && Object.keys(patch).length > 0) {
      this.logger.warn({ taskId: id }, "store update of an unknown task ignored");
    }
  }

  private writeOutput(write: OutputWrite): void {
    const { buffer } = write;
    if (write.head.length > 0) this.output.insertHead(buffer.taskId, write.head);
    if (write.totals) this.output.setTotals(buffer.taskId, buffer.totals);
    if (write.tail) this.output.replaceTail(buffer.taskId, write.tail);
  }

  private writeNode(id: string, node: NodeRow | null): void {
    if (node) this.nodes.upsert(node);
    else this.nodes.delete(id);
  }

  /** After a commit: settle the inserts, move the output buffers on, log what failed alone. */
  private afterCommit(plan: FlushPlan, now: number, failures: UnitFailure[]): void {
    const { batch } = plan;
    this.commits++;
    for (const insert of batch.inserts) {
      if (insert.error) insert.reject(insert.error);
      else insert.resolve();
    }
    for (const write of plan.outputs) {
      const { buffer } = write;
      if (write.error || write.release) {
        // Failed output is dropped rather than retried forever (the failure is logged below).
        this.outputs.delete(buffer.taskId);
        this.unsavedTails.delete(buffer);
        continue;
      }
      if (write.head.length > 0) {
        buffer.headRows += write.head.length;
        buffer.pendingHead.length = 0;
      }
      if (write.tail) {
        buffer.tailChanged = false;
        buffer.tailPersistedAt = now;
        this.unsavedTails.delete(buffer);
      }
    }
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
    if (this.failure) this.writableAgain(now);
    for (const w of this.commitWaiters.splice(0)) w.resolve();
    this.scheduleTailTimer();
  }

  /**
   * Nothing committed, for want of the disk. Inserts are refused (their callers learn at once that
   * the task was not accepted); everything else stays in the batch, output in its buffers, and
   * the retry timer tries again.
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
    this.scheduleRetry();
  }

  /** Commits fail: remember why, hold an audit entry that records it, log and tell listeners once. */
  private enterFailure(err: unknown): void {
    const now = Date.now();
    const code = sqliteCode(err) ?? "SQLITE_ERROR";
    const message = errorMessage(err);
    const previous = this.failure;
    if (previous && previous.code === code && previous.message === message) {
      this.logger.debug(
        { code, attempts: this.outage?.attempts ?? 0 },
        "store commit failed again; retrying",
      );
      return;
    }
    this.failure = { code, message, location: dirname(this.path), since: previous?.since ?? now };
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
    for (const l of this.failureListeners) l(this.failure);
    this.logger.error(
      { code, err: message, path: this.path, ...this.heldCounts() },
      previous
        ? "store still cannot write, for another reason now"
        : "store cannot write: holding its writes in memory and retrying; no new tasks meanwhile",
    );
  }

  private writableAgain(now: number): void {
    const failure = this.failure!;
    this.logger.info(
      {
        down_ms: now - failure.since,
        attempts: this.outage?.attempts ?? 0,
        dropped_audits: this.outage?.droppedAudits ?? 0,
      },
      "store writable again",
    );
    this.failure = undefined;
    this.outage = undefined;
    this.retryDelayMs = this.settings.retryFirstMs ?? RETRY_FIRST_MS;
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
    const f = this.failure;
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

  private scheduleTailTimer(): void {
    if (this.unsavedTails.size > 0 && !this.tailTimer) {
      this.tailTimer = setTimeout(this.onTailTimer, this.settings.tailPersistIntervalMs);
    }
  }

  /** A direct write (tokens) is refused while the store cannot write. */
  private refuseWhileFailing(what: string): void {
    if (this.failure)
      throw new SwitchboardError(Code.UNAVAILABLE, `${writeFailureSentence(this.failure)}: ${what}`);
  }

  /** A direct write failed for want of the disk: the store is failing, and the caller hears so. */
  private failIfWriteFault(err: unknown, what: string): void {
    if (!isWriteFault(err)) return;
    this.enterFailure(err);
    const e = new SwitchboardError(Code.UNAVAILABLE, `${writeFailureSentence(this.failure!)}: ${what}`);
    e.cause = err;
    throw e;
  }

  // ---- helpers

  /** A stored task as it will be once the held writes commit (while the store cannot write). */
  private withHeldUpdate(task: TaskRecord): TaskRecord;
  private withHeldUpdate(task: TaskRecord | undefined): TaskRecord | undefined;
  private withHeldUpdate(task: TaskRecord | undefined): TaskRecord | undefined {
    if (!task || !this.failure) return task;
    const patch = this.batch.updates.get(task.id);
    const buffer = this.outputs.get(task.id);
    if (!patch && !buffer) return task;
    const out: TaskRecord = { ...task };
    if (patch)
      for (const key in patch) {
        const value = patch[key as keyof TaskPatch];
        if (value !== undefined) (out as unknown as Record<string, unknown>)[key] = value;
      }
    if (buffer) [out.stdoutBytes, out.stderrBytes] = buffer.totals;
    return out;
  }

  private withPendingTouch(token: TokenRecord): TokenRecord;
  private withPendingTouch(token: TokenRecord | undefined): TokenRecord | undefined;
  private withPendingTouch(token: TokenRecord | undefined): TokenRecord | undefined {
    if (!token) return token;
    const at = this.batch.touches.get(token.id);
    if (at !== undefined && (token.lastUsedAt === null || token.lastUsedAt < at)) token.lastUsedAt = at;
    return token;
  }

  private serializeDetail(entry: AuditEntry): string | null {
    if (entry.detail === undefined) return null;
    try {
      return JSON.stringify(entry.detail);
    } catch (err) {
      this.logger.warn(
        { err, action: entry.action, subject: entry.subject },
        "store audit detail not serializable",
      );
      return JSON.stringify({ error: `detail could not be serialized: ${errorMessage(err)}` });
    }
  }

  private assertOpen(): void {
    if (this.closed) throw closedError();
  }
}

function toStoredOutput(rows: OutputRowRecord[], totals: [number, number]): StoredOutput {
  const parts = {
    stdout: { head: [] as Buffer[], tail: [] as Buffer[] },
    stderr: { head: [] as Buffer[], tail: [] as Buffer[] },
  };
  const chunks: StoredOutput["chunks"] = [];
  for (const row of rows) {
    parts[row.stream][row.part].push(row.data);
    chunks.push({ stream: row.stream, data: row.data, gapBefore: row.gap_before });
  }
  const stream = (name: OutputStreamName, total: number): StoredOutput["stdout"] => {
    const head = Buffer.concat(parts[name].head);
    const tail = Buffer.concat(parts[name].tail);
    return { head, tail, droppedBytes: Math.max(0, total - head.length - tail.length), totalBytes: total };
  };
  return { stdout: stream("stdout", totals[0]), stderr: stream("stderr", totals[1]), chunks };
}

function option(name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) {
    throw new SwitchboardError(
      Code.INVALID_ARGUMENT,
      `store option ${name} must be an integer >= ${min}, not ${value}`,
    );
  }
  return value;
}

function closedError(): SwitchboardError {
  return new SwitchboardError(Code.UNAVAILABLE, "the store is closed");
}

/** A task insert refused because the store cannot write: the task was not accepted. */
function notAccepted(failure: StoreWriteFailure, taskId: string): SwitchboardError {
  return new SwitchboardError(
    Code.UNAVAILABLE,
    `${writeFailureSentence(failure)}: task ${taskId} was not accepted; submit it again in a moment`,
  );
}

/**
 * Whether a write failed for want of the disk (full, I/O error, locked by another process,
 * read-only, ...) rather than for something in the write itself (a constraint, a bad value). The
 * first kind is held and retried, the second fails alone while the rest of its batch commits.
 */
export function isWriteFault(err: unknown): boolean {
  const code = sqliteCode(err);
  return (
    code !== undefined &&
    /^SQLITE_(FULL|IOERR|BUSY|LOCKED|READONLY|CANTOPEN|NOMEM|CORRUPT|NOTADB|PROTOCOL|NOLFS|PERM)/.test(code)
  );
}

function sqliteCode(err: unknown): string | undefined {
  return err instanceof Database.SqliteError ? err.code : undefined;
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(errorMessage(err));
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function taskInsertError(id: string, err: unknown): SwitchboardError {
  const code = sqliteCode(err);
  const e =
    code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE"
      ? new SwitchboardError(Code.ALREADY_EXISTS, `a task with id ${id} exists already`)
      : code?.startsWith("SQLITE_CONSTRAINT")
        ? new SwitchboardError(Code.INVALID_ARGUMENT, `task ${id} cannot be saved: ${errorMessage(err)}`)
        : new SwitchboardError(Code.UNAVAILABLE, `the store could not save task ${id}: ${errorMessage(err)}`);
  e.cause = err;
  return e;
}

function tokenInsertError(token: TokenRecord, err: unknown): unknown {
  const code = sqliteCode(err);
  if (code !== "SQLITE_CONSTRAINT_UNIQUE" && code !== "SQLITE_CONSTRAINT_PRIMARYKEY") return err;
  const message = errorMessage(err);
  const e = message.includes("tokens.name")
    ? new SwitchboardError(
        Code.ALREADY_EXISTS,
        `a live token named "${token.name}" exists already: revoke it first or choose another name`,
      )
    : message.includes("tokens.hash")
      ? new SwitchboardError(Code.ALREADY_EXISTS, "a token with the same secret exists already")
      : new SwitchboardError(Code.ALREADY_EXISTS, `a token with id ${token.id} exists already`);
  e.cause = err;
  return e;
}

function wrapOpenError(path: string, err: unknown): unknown {
  if (err instanceof SwitchboardError) return err;
  const e = new SwitchboardError(
    Code.FAILED_PRECONDITION,
    `cannot open the store ${path}: ${errorMessage(err)}`,
  );
  e.cause = err;
  return e;
}
