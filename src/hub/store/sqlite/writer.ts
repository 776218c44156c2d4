// The SQLite store's write path: the batching writer (batch-writer.ts), committing each batch in
// one better-sqlite3 transaction, synchronously, so that a commit asked for before a read is done
// when the read runs. Write faults are the disk's: full, I/O error, locked by another process.
import { dirname } from "node:path";
import type { Database as Db, Transaction } from "better-sqlite3";
import type { Logger } from "../../../common/logger.js";
import { BatchWriter, type BatchCommitter, type CommitPlan, type CommitRound } from "../batch-writer.js";
import { errorMessage } from "../errors.js";
import type { PersistedOutput } from "../output-buffer.js";
import { WriteBatch } from "../write-batch.js";
import { writePlan, writePlanUnitByUnit } from "./commit-plan.js";
import { isWriteFault, sqliteCode } from "./errors.js";
import type { Settings } from "./options.js";
import type { SqliteQueries } from "./queries.js";

/** Commits a batch in one transaction on the store's file; no await, no other connection. */
export class SqliteCommitter implements BatchCommitter<WriteBatch> {
  readonly location: string;
  readonly locationKind = "data dir";
  readonly subjectField = "path";
  readonly concurrent = false;
  private readonly commitAll: Transaction<(plan: CommitPlan<WriteBatch>) => void>;
  private readonly commitEach: Transaction<(plan: CommitPlan<WriteBatch>) => void>;

  constructor(
    db: Db,
    private readonly q: SqliteQueries,
    /** The store's file. */
    readonly subject: string,
    logger: Logger,
  ) {
    this.location = dirname(subject);
    this.commitAll = db.transaction((plan: CommitPlan<WriteBatch>) => writePlan(q, plan, logger));
    // Called inside a transaction, a better-sqlite3 transaction function is a savepoint.
    const savepoint = db.transaction((unit: () => void) => unit());
    this.commitEach = db.transaction((plan: CommitPlan<WriteBatch>) =>
      writePlanUnitByUnit(q, plan, savepoint, logger),
    );
  }

  isWriteFault(err: unknown): boolean {
    return isWriteFault(err);
  }

  faultCode(err: unknown): string {
    return sqliteCode(err) ?? "SQLITE_ERROR";
  }

  message(err: unknown): string {
    return errorMessage(err);
  }

  persistedOutput(taskId: string): PersistedOutput | undefined {
    return this.q.output.persisted(taskId);
  }

  commit(round: CommitRound<WriteBatch>): void {
    const plan = round.take();
    if (!plan) return;
    try {
      this.commitAll.immediate(plan);
    } catch (err) {
      round.writingUnitByUnit(err);
      this.commitEach.immediate(plan);
    }
  }
}

/** The batching writer on a SQLite file, with the synchronous reads-after-writes the store needs. */
export class SqliteWriter extends BatchWriter<WriteBatch> {
  constructor(db: Db, q: SqliteQueries, path: string, settings: Settings, logger: Logger) {
    super(new SqliteCommitter(db, q, path, logger), () => new WriteBatch(), settings, logger);
  }

  /** Commits pending writes before a read, so that the read sees them (held ones: see held-reads.ts). */
  override beforeRead(): undefined {
    // A synchronous commit is done on return: there is no promise to wait for.
    void super.beforeRead();
    return undefined;
  }

  /** Before reading a task's output: commits what is pending, its tail included. */
  beforeOutputRead(taskId: string): void {
    void super.beforeRead(this.outputs.get(taskId));
  }
}
