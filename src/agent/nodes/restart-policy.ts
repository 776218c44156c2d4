// When a crashed node is started again, and when its restarts amount to a crash loop: exponential backoff
// from backoffInitialMs, capped at backoffMaxMs, and a sliding window of recent restarts that makes the
// agent report Degraded.

export interface RestartPolicyOptions {
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** This many restarts within crashLoopWindowMs is a crash loop. */
  crashLoopRestarts: number;
  crashLoopWindowMs: number;
}

export class RestartPolicy {
  constructor(private readonly o: RestartPolicyOptions) {}

  /** The wait before the next restart of a node restarted `restartCount` times already. */
  delayMs(restartCount: number): number {
    return Math.min(this.o.backoffMaxMs, this.o.backoffInitialMs * 2 ** Math.min(restartCount, 20));
  }

  /** The restart times still inside the window, with a restart at `now` added. */
  recordRestart(recent: readonly number[], now = Date.now()): number[] {
    return [...recent, now].filter((t) => now - t < this.o.crashLoopWindowMs);
  }

  /** Why the node is crash-looping, or undefined: enough recent restarts while it does not run. */
  crashLoop(
    nodeId: string,
    recent: readonly number[],
    lastReason: string | undefined,
    now = Date.now(),
  ): string | undefined {
    const n = recent.filter((t) => now - t < this.o.crashLoopWindowMs).length;
    if (n < this.o.crashLoopRestarts) return undefined;
    return `node ${nodeId} is crash-looping: ${n} restarts in ${this.o.crashLoopWindowMs / 1000}s (last: ${lastReason ?? "?"})`;
  }
}
