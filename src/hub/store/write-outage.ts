// A spell during which the store cannot write, as the batching writer (batch-writer.ts) keeps it:
// why commits fail, since when, the audit entry that records the spell (it rides every retry, so
// that a commit that succeeds writes it), the backoff between retries, and the listeners told when
// the spell begins and ends. The first failure, a change of reason and the recovery are each
// logged once.
import type { Logger } from "../../common/logger.js";
import type { BatchCommitter } from "./batch-committer.js";
import { RETRY_MAX_MS } from "./batch-settings.js";
import type { AuditInsert, WriteBatch } from "./write-batch.js";
import type { StoreWriteFailure } from "./write-failure.js";

type Listener = (failure: StoreWriteFailure | undefined) => void;

/** The spell's audit entry and its counts. */
interface Spell {
  entry: AuditInsert;
  attempts: number;
  droppedAudits: number;
}

export class WriteOutage {
  private current: StoreWriteFailure | undefined;
  private spell: Spell | undefined;
  private readonly listeners: Listener[] = [];
  private delayMs: number;

  constructor(
    private readonly committer: BatchCommitter<WriteBatch>,
    private readonly retryFirstMs: number,
    private readonly logger: Logger,
    /** What the store holds in memory, for the log lines. */
    private readonly held: () => Record<string, number>,
  ) {
    this.delayMs = retryFirstMs;
  }

  /** Why commits fail; undefined while they do not. */
  get failure(): StoreWriteFailure | undefined {
    return this.current;
  }

  onChange(listener: Listener): void {
    this.listeners.push(listener);
  }

  /**
   * A commit failed for want of the target. Returns the audit entry that records the spell when
   * one begins (the caller holds it at the head of its audit list), else undefined.
   */
  enter(err: unknown): AuditInsert | undefined {
    const now = Date.now();
    const code = this.committer.faultCode(err);
    const message = this.committer.message(err);
    const previous = this.current;
    if (previous && previous.code === code && previous.message === message) {
      this.logger.debug({ code, attempts: this.spell?.attempts ?? 0 }, "store commit failed again; retrying");
      return undefined;
    }
    const { location, locationKind, subject, subjectField } = this.committer;
    this.current = { code, message, location, locationKind, since: previous?.since ?? now };
    let started: AuditInsert | undefined;
    if (!this.spell) {
      const spell: Spell = {
        entry: { at: now, actor: "system", action: "store.unwritable", subject, detail: null },
        attempts: 0,
        droppedAudits: 0,
      };
      this.spell = spell;
      spell.entry.detail = this.detail(spell, now);
      started = spell.entry;
    }
    for (const l of this.listeners) l(this.current);
    this.logger.error(
      { code, err: message, [subjectField]: subject, ...this.held() },
      previous
        ? "store still cannot write, for another reason now"
        : "store cannot write: holding its writes in memory and retrying; no new tasks meanwhile",
    );
    return started;
  }

  /** A commit is about to try again: its audit entry says how many times so far. */
  attempt(now: number): void {
    if (!this.spell) return;
    this.spell.attempts++;
    this.spell.entry.detail = this.detail(this.spell, now);
  }

  /** An audit entry the store would not hold: counted; true for the first of the spell. */
  dropAudit(): boolean {
    return this.spell !== undefined && this.spell.droppedAudits++ === 0;
  }

  /** A commit succeeded: the spell is over. */
  over(now: number): void {
    const failure = this.current;
    if (!failure) return;
    this.logger.info(
      {
        down_ms: now - failure.since,
        attempts: this.spell?.attempts ?? 0,
        dropped_audits: this.spell?.droppedAudits ?? 0,
      },
      "store writable again",
    );
    this.current = undefined;
    this.spell = undefined;
    this.delayMs = this.retryFirstMs;
    for (const l of this.listeners) l(undefined);
  }

  /** How long to wait before the next retry; each call doubles it, up to RETRY_MAX_MS. */
  nextDelayMs(): number {
    const delay = this.delayMs;
    this.delayMs = Math.min(this.delayMs * 2, RETRY_MAX_MS);
    return delay;
  }

  private detail(spell: Spell, now: number): string {
    const f = this.current;
    return JSON.stringify({
      cause: f ? `${f.code}: ${f.message}` : undefined,
      since: f?.since ?? spell.entry.at,
      until: now,
      attempts: spell.attempts,
      dropped_audit_entries: spell.droppedAudits,
    });
  }
}
