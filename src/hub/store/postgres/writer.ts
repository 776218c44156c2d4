// The PostgreSQL store's write path: the batching writer (batch-writer.ts), committing each batch
// in one statement (its own transaction) on a pooled connection while writes go on. Write faults are the database's:
// refused or lost connections, a restart, a full disk. Reads and direct writes (tokens,
// forgetting an agent) run on the pool, and name the database when it is out of reach.
import { randomUUID } from "node:crypto";
import type pg from "pg";
import type { Logger } from "../../../common/logger.js";
import { BatchWriter, type BatchCommitter, type CommitRound } from "../batch-writer.js";
import { errorMessage } from "../errors.js";
import { committedBatches, writeAll, writeUnitByUnit } from "./commit-plan.js";
import { faultCode, isWriteFault, unreachable, withoutSecrets } from "./errors.js";
import type { Settings } from "./options.js";
import { persistedOutputs } from "./output.js";
import { PendingBatch } from "./pending-batch.js";
import type { Sql } from "./sql.js";

/** Commits a batch in one statement on a connection of the pool, counting the statements sent. */
export class PostgresCommitter implements BatchCommitter<PendingBatch> {
  readonly locationKind = "database";
  readonly subjectField = "database";
  readonly concurrent = true;
  /** Statements sent, BEGIN and COMMIT included where sent: what the batching saves, measured. */
  statements = 0;
  /** The pool, counting statements, for reads and direct writes. */
  readonly sql: Sql;
  /** Names this store's commits in commit_marks. */
  private readonly writerId = randomUUID();

  constructor(
    private readonly pool: pg.Pool,
    /** The database as shown: URL without password, and schema. */
    readonly location: string,
    private readonly secrets: readonly string[],
    private readonly logger: Logger,
  ) {
    this.sql = this.counting(pool);
  }

  get subject(): string {
    return this.location;
  }

  isWriteFault(err: unknown): boolean {
    return isWriteFault(err);
  }

  faultCode(err: unknown): string {
    return faultCode(err);
  }

  /** An error's message as it may be shown: without the password. */
  message(err: unknown): string {
    return withoutSecrets(errorMessage(err), this.secrets);
  }

  async commit(round: CommitRound<PendingBatch>): Promise<void> {
    let client: pg.PoolClient | undefined;
    let broken: unknown;
    // A connection that dies while checked out and between statements says so as an 'error'
    // event: unheard, it would end the process. The next statement on it fails and says why.
    const lost = (err: Error): void => {
      broken ??= err;
    };
    try {
      client = await this.pool.connect();
      client.on("error", lost);
      const sql = this.counting(client);
      if (round.uncertain.length > 0)
        round.settle(await committedBatches(sql, this.writerId, round.uncertain));
      const unrestored = round.unrestored;
      if (unrestored.length > 0) round.restore(await persistedOutputs(sql, [...unrestored]));
      const plan = round.take();
      if (!plan) return;
      const { batch, outputs, failures } = plan;
      const mark = { writer: this.writerId, batch: plan.number };
      try {
        // One statement: its own transaction.
        await writeAll(sql, mark, batch, outputs, this.logger);
      } catch (err) {
        round.writingUnitByUnit(err);
        await transaction(sql, () => writeUnitByUnit(sql, mark, batch, outputs, failures, this.logger));
      }
    } catch (err) {
      broken = err;
      throw err;
    } finally {
      // A connection that failed is not given back to the pool: it may be half-dead.
      client?.off("error", lost);
      client?.release(broken === undefined ? undefined : true);
    }
  }

  counting(target: pg.Pool | pg.PoolClient): Sql {
    return {
      query: <R extends pg.QueryResultRow>(text: string, values?: unknown[], name?: string) => {
        this.statements++;
        return name === undefined ? target.query<R>(text, values) : target.query<R>({ text, values, name });
      },
    };
  }
}

/** The batching writer on a PostgreSQL database, with the reads and direct writes the store makes. */
export class PostgresWriter extends BatchWriter<PendingBatch> {
  private readonly db: PostgresCommitter;

  constructor(
    pool: pg.Pool,
    location: string,
    secrets: readonly string[],
    settings: Settings,
    logger: Logger,
  ) {
    const db = new PostgresCommitter(pool, location, secrets, logger);
    super(db, () => new PendingBatch(), settings, logger);
    this.db = db;
  }

  get location(): string {
    return this.db.location;
  }

  /** Statements sent, BEGIN and COMMIT included. */
  get statements(): number {
    return this.db.statements;
  }

  /** The pool, counting statements. */
  get sql(): Sql {
    return this.db.sql;
  }

  message(err: unknown): string {
    return this.db.message(err);
  }

  /** Runs a read on the pool; a database out of reach is UNAVAILABLE, naming it. */
  async read<T>(what: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
    this.assertOpen();
    try {
      return await fn(this.db.sql);
    } catch (err) {
      if (!isWriteFault(err)) throw err;
      const e = unreachable(this.db.location, what, this.db.message(err));
      e.cause = err;
      throw e;
    }
  }

  /**
   * A write made at once (tokens, forgetting an agent), after the commits asked for: refused while
   * the store cannot write; one that fails for want of the database makes the store fail, and the
   * caller hears so.
   */
  async direct<T>(what: string, fn: (sql: Sql) => Promise<T>): Promise<T> {
    this.assertOpen();
    this.refuseWhileFailing(what);
    await this.afterCommits();
    try {
      return await fn(this.db.sql);
    } catch (err) {
      this.failIfWriteFault(err, what);
      throw err;
    }
  }
}

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
