// Waiters for the pipeline to hold no task (of one session, or at all): a drain, a shutdown and a session
// replaced each wait for that, every wait with its deadline.

export class IdleWaiters {
  private waiters: { epoch?: number; done: () => void }[] = [];

  /** `holding(epoch)`: how many tasks (of that session, or of any when undefined) are held now. */
  constructor(private readonly holding: (epoch?: number) => number) {}

  /** Resolves true once no task (of the session, if given) is held, false at the deadline. */
  wait(timeoutMs: number, epoch?: number): Promise<boolean> {
    if (this.holding(epoch) === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const waiter = {
        ...(epoch !== undefined ? { epoch } : {}),
        done: () => {
          clearTimeout(timer);
          resolve(true);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(false);
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  /** Tasks ended or were stopped: resolves the waiters whose condition now holds. */
  notify(): void {
    if (this.waiters.length === 0) return;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (this.holding(w.epoch) === 0) w.done();
      else still.push(w);
    }
    this.waiters = still;
  }
}
