// The embedded store: one SQLite file in WAL mode. Writes queue in a WriteBatch and commit
// together in one transaction every flushIntervalMs or every maxBatchOps calls, whichever comes
// first; insertTask() resolves once the transaction holding its row has committed (group commit).
// Reads commit the pending batch first, so they see every write made before them.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database, { type Database as Db, type Transaction } from "better-sqlite3";
import { Code, SwitchboardError } from "../../common/errors.js";
import { silentLogger, type Logger } from "../../common/logger.js";
import { isTerminal } from "../../common/task-state.js";
import { AgentQueries } from "./agents.js";
import { NodeQueries } from "./nodes.js";
import { AuditQueries, type AuditFilter } from "./audit.js";
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
} from "./interfaces.js";
import { Checkpointer } from "./checkpointer.js";
import { migrate } from "./migrate.js";
import { MIGRATIONS } from "./migrations/index.js";
import { OutputBuffer, streamIndex, type OutputRow } from "./output-buffer.js";
import { OutputQueries, type OutputRowRecord } from "./output.js";
import { TaskQueries } from "./tasks.js";
import { TokenQueries } from "./tokens.js";
import { WriteBatch } from "./write-batch.js";

export const DEFAULT_OUTPUT_CAP_BYTES = 1024 * 1024;
export const DEFAULT_FLUSH_INTERVAL_MS = 10;
export const DEFAULT_MAX_BATCH_OPS = 512;
export const DEFAULT_TAIL_PERSIST_INTERVAL_MS = 250;
export const DEFAULT_BUSY_TIMEOUT_MS = 5_000;

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
    return new SqliteStore(db, path, version, settings, logger, checkpointer);
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
  }

  // ---- tasks

  insertTask(task: NewTask): Promise<void> {
    if (this.closed) return Promise.reject(closedError());
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
    return this.tasks.get(id);
  }

  listTasks(filter: TaskFilter): TaskRecord[] {
    this.beforeRead();
    return this.tasks.list(filter);
  }

  listUnfinishedTasks(): TaskRecord[] {
    this.beforeRead();
    return this.tasks.listUnfinished();
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
    if (!this.batch.isEmpty() || (buffer && buffer.tailChanged)) this.flushQuietly("due", buffer);
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
    return this.agents.list();
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

  // ---- nodes (written at once: rare, and a spawn's intent must outlive a crash)

  upsertNode(node: NodeRow): void {
    this.assertOpen();
    this.nodes.upsert(node);
  }

  deleteNode(id: string): void {
    this.assertOpen();
    this.nodes.delete(id);
  }

  listNodes(): NodeRow[] {
    this.assertOpen();
    return this.nodes.list();
  }

  // ---- tokens (written at once: rare, and a revocation must take effect immediately)

  insertToken(token: TokenRecord): void {
    this.assertOpen();
    try {
      this.tokens.insert(token);
    } catch (err) {
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
    if (this.tokens.revoke(id, at)) return;
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

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    let failure: unknown;
    try {
      this.flushNow("all");
    } catch (err) {
      failure = err;
    }
    this.clearBatchTimer();
    clearTimeout(this.tailTimer);
    this.batchTimer = undefined;
    this.tailTimer = undefined;
    this.closed = true;
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
   */
  private enqueued(urgent = false): void {
    const batch = this.batch;
    batch.ops++;
    if (batch.ops >= this.settings.maxBatchOps) {
      this.flushQuietly("due");
      return;
    }
    if (urgent || this.settings.flushIntervalMs === 0) {
      if (this.batchTimer !== undefined && this.batchTimerImmediate) return;
      this.clearBatchTimer();
      this.batchTimer = setImmediate(this.onBatchTimer);
      this.batchTimerImmediate = true;
    } else if (this.batchTimer === undefined) {
      this.batchTimer = setTimeout(this.onBatchTimer, this.settings.flushIntervalMs);
      this.batchTimerImmediate = false;
    }
  }

  private clearBatchTimer(): void {
    if (this.batchTimer === undefined) return;
    if ("hasRef" in this.batchTimer && "refresh" in this.batchTimer) clearTimeout(this.batchTimer);
    else clearImmediate(this.batchTimer);
  }

  private readonly onBatchTimer = (): void => {
    this.batchTimer = undefined;
    this.flushQuietly("due");
  };

  private readonly onTailTimer = (): void => {
    this.tailTimer = undefined;
    this.flushQuietly("due");
  };

  /** Commits pending writes before a read, so that the read sees them. */
  private beforeRead(): void {
    this.assertOpen();
    if (!this.batch.isEmpty()) this.flushQuietly("due");
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
   * and `tailNow`'s). If the batch fails as a whole, its writes are retried one by one in one
   * transaction, so that one bad write (a duplicate task id, output for an unknown task) fails
   * alone. Throws only when nothing could be committed.
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

    const failures: UnitFailure[] = [];
    try {
      try {
        this.commitAll.immediate(plan);
      } catch (err) {
        this.logger.warn({ err, writes: batch.ops }, "store batch failed; retrying its writes one by one");
        this.commitEach.immediate(plan, failures);
      }
    } catch (err) {
      this.failBatch(plan, err);
      throw new SwitchboardError(Code.UNAVAILABLE, `the store could not commit: ${errorMessage(err)}`);
    }
    this.committed(plan, now, failures);
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
  }

  private writePlanUnitByUnit(plan: FlushPlan, failures: UnitFailure[]): void {
    const { batch } = plan;
    const unit = (what: string, subject: string, write: () => void): Error | undefined => {
      try {
        this.savepoint(write);
        return undefined;
      } catch (err) {
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

  /** After a commit: settle the inserts, move the output buffers on, log what failed alone. */
  private committed(plan: FlushPlan, now: number, failures: UnitFailure[]): void {
    const { batch } = plan;
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
    this.scheduleTailTimer();
  }

  /** Nothing committed: reject every insert, and drop the rest of the batch with a log line. */
  private failBatch(plan: FlushPlan, err: unknown): void {
    const { batch } = plan;
    this.logger.error(
      {
        err,
        inserts: batch.inserts.length,
        updates: batch.updates.size,
        agents: batch.agents.size,
        outputs: plan.outputs.length,
        audits: batch.audits.length,
        touches: batch.touches.size,
      },
      "store batch could not be committed; its writes are lost",
    );
    for (const insert of batch.inserts) {
      const rejection = new SwitchboardError(
        Code.UNAVAILABLE,
        `the store could not save task ${insert.task.id}: ${errorMessage(err)}`,
      );
      rejection.cause = err;
      insert.reject(rejection);
    }
    // Head chunks go with the batch (the buffers still count them, so they show as dropped);
    // tails stay unsaved and are written again by the next flush.
    for (const write of plan.outputs) write.buffer.pendingHead.length = 0;
    batch.clear();
    this.scheduleTailTimer();
  }

  private scheduleTailTimer(): void {
    if (this.unsavedTails.size > 0 && !this.tailTimer) {
      this.tailTimer = setTimeout(this.onTailTimer, this.settings.tailPersistIntervalMs);
    }
  }

  // ---- helpers

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
