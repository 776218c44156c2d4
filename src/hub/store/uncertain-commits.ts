// Commits whose outcome is unknown: the connection to the database was lost after the batch was
// sent, so it may have committed or not. The writer holds such a batch's writes as if it had not
// (refusing its inserts, keeping the rest for the retry); once the database answers again, the
// committer asks it which of them did commit (a batch leaves a mark; a commit of inserts alone is
// known by its rows) and settles them here:
// - a task whose insert was refused yet committed must never run (its client was told it was not
//   accepted, and may submit it again): it ends `cancelled`, saying why;
// - the audit entries it wrote are not written a second time.
// The other writes are the same whether applied once or twice (rows set to values, output rows
// keyed by their sequence), so the retry writes them again either way.
import type { Logger } from "../../common/logger.js";
import type { CommitPlan, UncertainBatch } from "./batch-committer.js";
import type { AuditInsert, WriteBatch } from "./write-batch.js";

interface Uncertain extends UncertainBatch {
  audits: ReadonlySet<AuditInsert>;
}

export const NOT_ACCEPTED_REASON =
  "not accepted: the database's answer to its commit was lost, and its client was told it was not accepted";

export class UncertainCommits {
  private readonly pending: Uncertain[] = [];

  /** The batches whose outcome is unknown. */
  get batches(): UncertainBatch[] {
    return this.pending.map((u) => ({ number: u.number, inserted: u.inserted }));
  }

  /** A batch failed after it may have reached the database. */
  note(plan: CommitPlan<WriteBatch>): void {
    this.pending.push({
      number: plan.number,
      audits: new Set(plan.batch.audits),
      inserted: plan.batch.inserts.map((i) => i.task.id),
    });
  }

  /** The database says which of them committed: their refused tasks end, their audit entries go. */
  settle(committed: ReadonlySet<number>, batch: WriteBatch, logger: Logger): void {
    const now = Date.now();
    for (const u of this.pending.splice(0)) {
      if (!committed.has(u.number)) continue;
      const audits = batch.audits.filter((a) => !u.audits.has(a));
      batch.ops -= batch.audits.length - audits.length;
      batch.audits.splice(0, batch.audits.length, ...audits);
      for (const id of u.inserted) {
        batch.addUpdate(id, { state: "cancelled", finishedAt: now, reason: NOT_ACCEPTED_REASON });
        batch.ops++;
      }
      logger.warn(
        { batch: u.number, refused_tasks: u.inserted.length },
        "a commit whose answer was lost had committed: the tasks it had refused are ended as cancelled, never run",
      );
    }
  }
}
