// The state machine every process-like run keeps (a shell task, a terminal, a streamed-stdin task, a
// container): named states, a transition table checked on each move, and the run's timers, which the
// machine owns so that a run that ended cannot leave one behind.

/** Where each state may go next; a state with nowhere to go is terminal. */
export type Transitions<S extends string> = Readonly<Record<S, readonly S[]>>;

/** Whether `table` lets a run move from `from` to `to`. */
export function canMove<S extends string>(table: Transitions<S>, from: S, to: S): boolean {
  return table[from].includes(to);
}

/** setTimeout's largest delay; a longer wait re-arms. */
const MAX_TIMER_MS = 2_147_483_647;

/** A run's current state, its transition table, and its timers. */
export class RunState<S extends string> {
  private current: S;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly table: Transitions<S>,
    initial: S,
    /** Told of a move the table refuses (for a debug log); the run's state does not change. */
    private readonly refused?: (from: S, to: S) => void,
  ) {
    this.current = initial;
  }

  get state(): S {
    return this.current;
  }

  /** The run has reached a state with no way out: nothing more will happen to it. */
  get ended(): boolean {
    return this.table[this.current].length === 0;
  }

  /** Moves to `next` if the table allows it; entering a terminal state clears every timer. */
  move(next: S): boolean {
    if (!canMove(this.table, this.current, next)) {
      this.refused?.(this.current, next);
      return false;
    }
    this.current = next;
    if (this.ended) this.clearTimers();
    return true;
  }

  /** Calls fn after ms, unless the run ends first. Once ended, arms nothing. */
  after(ms: number, fn: () => void): void {
    if (this.ended) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  /** Calls fn at the wall-clock time `at` (ms since the epoch), however far off, unless the run ends first. */
  at(at: number, fn: () => void): void {
    this.after(Math.min(MAX_TIMER_MS, Math.max(0, at - Date.now())), () => {
      if (Date.now() < at) return this.at(at, fn);
      fn();
    });
  }

  /** Drops every pending timer (a run that moved past the waits they were for). */
  clearTimers(): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }
}
