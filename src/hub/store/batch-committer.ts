// The contract between the shared batching writer (batch-writer.ts) and a store's backend: what one
// commit is handed (the plan, the output to restore first), and what the backend supplies (how a
// batch is written in one transaction, which errors are the target's faults, how it names itself).
import type { PersistedOutput } from "./output-buffer.js";
import type { OutputWrite } from "./output-writes.js";
import type { WriteBatch } from "./write-batch.js";

/** A unit of a batch that failed on its own; the rest of the batch committed. */
export interface UnitFailure {
  what: string;
  subject: string;
  err: unknown;
}

/** A batch whose commit may or may not have happened: its number, and the tasks it inserted. */
export interface UncertainBatch {
  number: number;
  inserted: readonly string[];
}

/** What one commit writes, taken from the writer when the committer is ready to write it. */
export interface CommitPlan<B extends WriteBatch> {
  batch: B;
  outputs: OutputWrite[];
  /** Filled by a commit written unit by unit: the units that failed alone. */
  failures: UnitFailure[];
  /** The batch's number (BatchWriter.pendingBatch when its writes were made). */
  number: number;
}

/** One commit, as the writer hands it to the committer. */
export interface CommitRound<B extends WriteBatch> {
  /**
   * Batches whose commit failed after it may have reached the target (asynchronous committers):
   * before take(), settle() with the numbers of those that did commit.
   */
  readonly uncertain: readonly UncertainBatch[];
  settle(committed: ReadonlySet<number>): void;
  /** Tasks with output queued and no buffer in memory: restore() their stored output first. */
  readonly unrestored: readonly string[];
  restore(persisted: ReadonlyMap<string, PersistedOutput>): void;
  /** Takes the pending batch and the output writes that are due; undefined: nothing to write. */
  take(): CommitPlan<B> | undefined;
  /** The batch failed as a whole: rethrows a write fault, else logs that it is written unit by unit. */
  writingUnitByUnit(err: unknown): void;
}

/** What differs between the stores: how a batch is written, and how they name their faults. */
export interface BatchCommitter<B extends WriteBatch> {
  /** Where the store writes, as a write failure names it: a data dir's path, a database's URL. */
  readonly location: string;
  /** What `location` is, in the sentence a write failure makes: "data dir", "database". */
  readonly locationKind: string;
  /** The store as its audit entry and log lines about a spell without writes name it. */
  readonly subject: string;
  /** The log field that names the store: "path", "database". */
  readonly subjectField: string;
  /** The commit runs while writes go on (asynchronously): output bytes are copied when planned. */
  readonly concurrent: boolean;
  /** Whether an error is the target's (held and retried) rather than a write's own. */
  isWriteFault(err: unknown): boolean;
  /** The error's code as a write failure shows it. */
  faultCode(err: unknown): string;
  /** An error's message as it may be shown and logged. */
  message(err: unknown): string;
  /** A task's stored output, read at once; absent, it is read back in the commit (round.unrestored). */
  persistedOutput?(taskId: string): PersistedOutput | undefined;
  /**
   * Writes one commit: take()s the plan and writes it in one transaction; if that fails for a
   * reason of its own, writingUnitByUnit(err), then writes it again unit by unit, each in a
   * savepoint, filling plan.failures. Synchronous or not; throws if the commit failed.
   */
  commit(round: CommitRound<B>): void | Promise<void>;
}
