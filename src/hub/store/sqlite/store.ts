// The embedded store: one SQLite file in WAL mode, implementing the Store interface. This class
// says what each call reads and writes; the SqliteWriter (writer.ts) decides when writes commit
// and holds them while the disk refuses them, and the per-table queries (tasks.ts, agents.ts, ...)
// hold the SQL. Reads commit the pending batch first, so they see every write made before them,
// except where they read through it (held-reads.ts).
//
// better-sqlite3 reads and writes synchronously: the Store's promised calls are async methods that
// do their work before they return, so a write "at once" is committed when the call returns and
// a failure becomes a rejection, as the Store promises, at the cost of one promise per call.
/* eslint-disable @typescript-eslint/require-await -- see above: async without await on purpose */
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import Database, { type Database as Db } from "better-sqlite3";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { silentLogger, type Logger } from "../../../common/logger.js";
import { isTerminal } from "../../../common/task-state.js";
import type {
  AgentRecord,
  AuditFilter,
  AuditRecord,
  NodeRow,
  Store,
  StoredOutput,
  TaskFilter,
  TaskRecord,
  TokenRecord,
} from "../interfaces.js";
import { toStoredOutput } from "../stored-output.js";
import { Checkpointer } from "./checkpointer.js";
import { writeNode } from "./commit-plan.js";
import { asError } from "../errors.js";
import { isWriteFault, tokenInsertError, wrapOpenError } from "./errors.js";
import {
  withHeldAgents,
  withHeldNodes,
  withHeldUpdate,
  withPendingAgent,
  withPendingTouch,
} from "../held-reads.js";
import { migrate } from "./migrate.js";
import { MIGRATIONS } from "./migrations/index.js";
import { sqliteSettings, type Settings, type SqliteStoreOptions } from "./options.js";
import { prepareQueries, type SqliteQueries } from "./queries.js";
import { SqliteWriter } from "./writer.js";
import { BatchedStore } from "../batched-store.js";
import type { WriteBatch } from "../write-batch.js";

/** Opens (creating it and its directory if needed) and migrates the store at `path`. */
export function openSqliteStore(path: string, opts: SqliteStoreOptions = {}): SqliteStore {
  const logger = opts.logger ?? silentLogger();
  const settings = sqliteSettings(opts);
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  let db: Db;
  try {
    db = new Database(path, { timeout: settings.busyTimeoutMs });
  } catch (err) {
    throw wrapOpenError(path, err);
  }
  try {
    // WAL with synchronous=NORMAL: a committed transaction survives the process being killed
    // (not necessarily a power cut), and a commit costs no fsync.
    db.pragma("journal_mode = WAL");
    db.pragma("synchronous = NORMAL");
    db.pragma(`busy_timeout = ${settings.busyTimeoutMs}`);
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

export class SqliteStore extends BatchedStore<WriteBatch> implements Store {
  private readonly q: SqliteQueries;
  protected readonly writer: SqliteWriter;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly db: Db,
    readonly path: string,
    readonly schemaVersion: number,
    settings: Settings,
    private readonly logger: Logger,
    private readonly checkpointer?: Checkpointer,
  ) {
    super();
    this.q = prepareQueries(db);
    this.writer = new SqliteWriter(db, this.q, path, settings, logger);
  }

  // ---- health

  // ---- tasks

  async getTask(id: string): Promise<TaskRecord | undefined> {
    this.writer.beforeRead();
    const task = this.q.tasks.get(id);
    return task && this.asHeld(task);
  }

  async listTasks(filter: TaskFilter): Promise<TaskRecord[]> {
    this.writer.beforeRead();
    const rows = this.q.tasks.list(filter);
    return this.writer.failure ? rows.map((r) => this.asHeld(r)) : rows;
  }

  async listUnfinishedTasks(): Promise<TaskRecord[]> {
    this.writer.beforeRead();
    const rows = this.q.tasks.listUnfinished();
    return this.writer.failure ? rows.map((r) => this.asHeld(r)).filter((r) => !isTerminal(r.state)) : rows;
  }

  async countTasks(): Promise<number> {
    this.writer.beforeRead();
    return this.q.tasks.count();
  }

  /** A stored task as it will be once the held writes commit (while the store cannot write). */
  private asHeld(task: TaskRecord): TaskRecord {
    if (!this.writer.failure) return task;
    return withHeldUpdate(task, this.writer.batch.updates.get(task.id), this.writer.outputs.get(task.id));
  }

  // ---- output

  async getOutput(taskId: string): Promise<StoredOutput> {
    this.writer.beforeOutputRead(taskId);
    return toStoredOutput(this.q.output.rows(taskId), this.q.output.totals(taskId));
  }

  /** Tasks whose output buffer (rolling tail included) is in memory: a figure for metrics. */
  get outputBuffersInMemory(): number {
    return this.writer.outputs.size;
  }

  // ---- agents

  async getAgent(id: string): Promise<AgentRecord | undefined> {
    this.writer.assertOpen();
    // Read through the pending batch instead of committing it first: the hub reads an agent on
    // every connect; a commit for each made a reconnect storm of 10,000 agents crawl.
    return withPendingAgent(this.q.agents.get(id), this.writer.batch.agents.get(id));
  }

  async listAgents(): Promise<AgentRecord[]> {
    this.writer.beforeRead();
    const stored = this.q.agents.list();
    const held = this.writer.batch.agents;
    if (!this.writer.failure || held.size === 0) return stored;
    return withHeldAgents(stored, held);
  }

  async forgetAgent(id: string): Promise<boolean> {
    this.writer.assertOpen();
    // Written at once, like nodes: rare, and an admin's release must not wait for (or be undone by) a batch.
    const pending = this.writer.batch.agents.delete(id);
    return this.q.agents.delete(id) || pending;
  }

  markAllAgentsDisconnected(): void {
    this.writer.beforeRead(); // pending upserts first, so that they do not reconnect anyone afterwards
    this.q.agents.markAllDisconnected();
  }

  // ---- nodes (written at once: rare, and a spawn's intent must outlive a crash; while the store
  // cannot write they are held with the batch, so that a heartbeat never fails on a full disk)

  async upsertNode(node: NodeRow): Promise<void> {
    this.writer.assertOpen();
    this.writeNodeNow(node.id, { ...node });
  }

  async deleteNode(id: string): Promise<void> {
    this.writer.assertOpen();
    this.writeNodeNow(id, null);
  }

  async listNodes(): Promise<NodeRow[]> {
    this.writer.assertOpen();
    const stored = this.q.nodes.list();
    const held = this.writer.batch.nodes;
    return held.size === 0 ? stored : withHeldNodes(stored, held);
  }

  private writeNodeNow(id: string, row: NodeRow | null): void {
    const held = this.writer.batch.nodes;
    if (!this.writer.failure && !held.has(id)) {
      try {
        writeNode(this.q, id, row);
        return;
      } catch (err) {
        if (!isWriteFault(err)) throw err;
        this.writer.enterFailure(err);
      }
    }
    held.set(id, row);
    this.writer.enqueued();
  }

  // ---- tokens (written at once: rare, and a revocation must take effect immediately)

  async insertToken(token: TokenRecord): Promise<void> {
    this.writer.assertOpen();
    this.writer.refuseWhileFailing("the token was not created");
    try {
      this.q.tokens.insert(token);
    } catch (err) {
      this.writer.failIfWriteFault(err, "the token was not created");
      throw tokenInsertError(token, err);
    }
  }

  async findTokenByHash(hash: string): Promise<TokenRecord | undefined> {
    // No flush: the only token writes that wait in the batch are touches, applied here instead,
    // so that authenticating a call never forces a commit.
    this.writer.assertOpen();
    return this.withTouch(this.q.tokens.byHash(hash));
  }

  async findToken(idOrName: string): Promise<TokenRecord | undefined> {
    this.writer.assertOpen();
    return this.withTouch(this.q.tokens.byId(idOrName) ?? this.q.tokens.liveByName(idOrName));
  }

  async listTokens(includeRevoked: boolean): Promise<TokenRecord[]> {
    this.writer.assertOpen();
    const touches = this.writer.batch.touches;
    return this.q.tokens.list(includeRevoked).map((t) => withPendingTouch(t, touches.get(t.id)));
  }

  async revokeToken(id: string, at: number): Promise<void> {
    this.writer.assertOpen();
    this.writer.refuseWhileFailing("the token was not revoked");
    let revoked: boolean;
    try {
      revoked = this.q.tokens.revoke(id, at);
    } catch (err) {
      this.writer.failIfWriteFault(err, "the token was not revoked");
      throw err;
    }
    if (revoked) return;
    if (!this.q.tokens.byId(id)) throw new SwitchboardError(Code.NOT_FOUND, `no token has the id ${id}`);
    // Already revoked: keep the first revocation time.
  }

  private withTouch(token: TokenRecord | undefined): TokenRecord | undefined {
    return token && withPendingTouch(token, this.writer.batch.touches.get(token.id));
  }

  // ---- audit

  async listAudit(filter: AuditFilter): Promise<AuditRecord[]> {
    this.writer.beforeRead();
    return this.q.audit.list(filter);
  }

  // ---- lifecycle

  close(opts: { waitWritableMs?: number } = {}): Promise<void> {
    this.closing ??= this.shutdown(opts.waitWritableMs ?? 0);
    return this.closing;
  }

  private async shutdown(waitWritableMs: number): Promise<void> {
    const failure = await this.writer.stop(waitWritableMs);
    // The worker's connection goes first, so that this one, the last, checkpoints the WAL whole.
    await this.checkpointer?.stop();
    this.db.close();
    this.logger.info({ path: this.path }, "store closed");
    if (failure !== undefined) throw asError(failure);
  }
}
