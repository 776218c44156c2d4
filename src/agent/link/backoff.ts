// Reconnect delays: exponential growth from a base to a cap, with full jitter (sleep = random(0, cap)),
// so that a fleet of agents that lost the same hub does not redial it in lockstep. The ceiling is
// also held to half the time the outage has lasted (at least 1 s): quick failures (a hub that is
// restarting refuses at once) would otherwise double it to tens of seconds within the first two
// seconds, and a fleet would wait that long to come back to a hub that was down for three.
export interface BackoffOptions {
  baseMs?: number;
  maxMs?: number;
  /** Uniform in [0, 1); injectable so tests can pin the jitter. */
  random?: () => number;
  /** Milliseconds clock; injectable for tests. */
  now?: () => number;
}

/** The ceiling is never held below this by the outage rule. */
export const OUTAGE_FLOOR_MS = 1_000;

export const DEFAULT_BACKOFF_BASE_MS = 100;
export const DEFAULT_BACKOFF_MAX_MS = 30_000;

export class Backoff {
  readonly baseMs: number;
  readonly maxMs: number;
  private readonly random: () => number;
  private readonly now: () => number;
  private attempt = 0;
  /** When the current run of failures began (the first next() after a reset). */
  private since: number | undefined;

  constructor(opts: BackoffOptions = {}) {
    this.baseMs = opts.baseMs ?? DEFAULT_BACKOFF_BASE_MS;
    this.maxMs = opts.maxMs ?? DEFAULT_BACKOFF_MAX_MS;
    this.random = opts.random ?? Math.random;
    this.now = opts.now ?? Date.now;
    if (!(this.baseMs > 0) || !(this.maxMs >= this.baseMs)) {
      throw new RangeError(`backoff needs 0 < baseMs <= maxMs, got ${this.baseMs} and ${this.maxMs}`);
    }
  }

  /** The ceiling the next delay is drawn under: base * 2^attempt, capped at max and by the outage. */
  ceiling(): number {
    // Past 2^40 the cap has long been reached; stop doubling so the number stays finite.
    const doubled = Math.min(this.maxMs, this.baseMs * 2 ** Math.min(this.attempt, 40));
    const outageMs = this.since === undefined ? 0 : this.now() - this.since;
    return Math.min(doubled, Math.max(OUTAGE_FLOOR_MS, outageMs / 2));
  }

  /** The next delay, uniform in [0, ceiling), and one more doubling for the one after. */
  next(): number {
    this.since ??= this.now();
    const cap = this.ceiling();
    this.attempt += 1;
    return Math.min(cap, Math.floor(this.random() * cap));
  }

  /** Called after a connection that worked: the next failure starts small again. */
  reset(): void {
    this.attempt = 0;
    this.since = undefined;
  }
}
