// Reconnect delays: exponential growth from a base to a cap, with full jitter (sleep = random(0, cap)),
// so that a fleet of agents that lost the same hub does not redial it in lockstep.
export interface BackoffOptions {
  baseMs?: number;
  maxMs?: number;
  /** Uniform in [0, 1); injectable so tests can pin the jitter. */
  random?: () => number;
}

export const DEFAULT_BACKOFF_BASE_MS = 100;
export const DEFAULT_BACKOFF_MAX_MS = 30_000;

export class Backoff {
  readonly baseMs: number;
  readonly maxMs: number;
  private readonly random: () => number;
  private attempt = 0;

  constructor(opts: BackoffOptions = {}) {
    this.baseMs = opts.baseMs ?? DEFAULT_BACKOFF_BASE_MS;
    this.maxMs = opts.maxMs ?? DEFAULT_BACKOFF_MAX_MS;
    this.random = opts.random ?? Math.random;
    if (!(this.baseMs > 0) || !(this.maxMs >= this.baseMs)) {
      throw new RangeError(`backoff needs 0 < baseMs <= maxMs, got ${this.baseMs} and ${this.maxMs}`);
    }
  }

  /** The ceiling the next delay is drawn under: base * 2^attempt, capped at max. */
  ceiling(): number {
    // Past 2^40 the cap has long been reached; stop doubling so the number stays finite.
    return Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 40));
  }

  /** The next delay, uniform in [0, ceiling), and one more doubling for the one after. */
  next(): number {
    const cap = this.ceiling();
    this.attempt += 1;
    return Math.min(cap, Math.floor(this.random() * cap));
  }

  /** Called after a connection that worked: the next failure starts small again. */
  reset(): void {
    this.attempt = 0;
  }
}
