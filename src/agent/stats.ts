// The agent's counters (seed 001's statistics) and the periodic log line that shows them, with the
// same fields every time so a log query can chart them.
import type { Logger } from "../common/logger.js";

export class AgentStats {
  /** Assign messages received. */
  fetched = 0;
  /** Tasks an executor ran to their end. */
  processed = 0;
  /** Finished events written to the hub's stream. */
  completed = 0;
  /** Finished events (emitted) whose state was not SUCCEEDED, refusals included. */
  failed = 0;
  lastCompletedTaskId = "";
}

export interface QueueDepths {
  running: number;
  inboxDepth: number;
  inboxCapacity: number;
  outboxDepth: number;
  outboxCapacity: number;
}

export class StatsReporter {
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly stats: AgentStats,
    private readonly depths: () => QueueDepths,
    private readonly logger: Logger,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.stop();
    this.timer = setInterval(() => this.logNow(), this.intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  logNow(): void {
    const d = this.depths();
    this.logger.info(
      {
        fetched: this.stats.fetched,
        processed: this.stats.processed,
        completed: this.stats.completed,
        failed: this.stats.failed,
        running: d.running,
        inboxDepth: d.inboxDepth,
        inboxCapacity: d.inboxCapacity,
        outboxDepth: d.outboxDepth,
        outboxCapacity: d.outboxCapacity,
      },
      "agent statistics",
    );
  }
}
