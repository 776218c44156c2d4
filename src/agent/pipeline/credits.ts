// Task-slot credits of one hub session. The agent grants a cumulative total (Credits.granted_total);
// the hub assigns at most that many tasks. Each freed slot is owed back to the hub, and the owed
// slots are granted only when the pipeline allows it (outbox below threshold, not shutting down).
export class CreditLedger {
  /** Cumulative grants announced in this session. */
  private granted = 0;
  /** Assigns counted against the grants. */
  private assigned = 0;
  /** Freed slots not granted yet (withheld while the outbox is above threshold). */
  private owed = 0;
  /** Slots to swallow as they come free, after the agent's concurrency was lowered. */
  private debt = 0;

  /** A new session: `free` slots are available to grant at once. */
  begin(free: number): void {
    this.granted = 0;
    this.assigned = 0;
    this.owed = Math.max(0, free);
  }

  get grantedTotal(): number {
    return this.granted;
  }

  get assignedTotal(): number {
    return this.assigned;
  }

  get owedSlots(): number {
    return this.owed;
  }

  /** Counts an Assign against the grants; false means the hub exceeded them (a protocol violation). */
  tryAssign(): boolean {
    if (this.assigned >= this.granted) return false;
    this.assigned += 1;
    return true;
  }

  /** A slot came free: it is owed back to the hub (unless the concurrency was lowered). */
  release(): void {
    if (this.debt > 0) this.debt -= 1;
    else this.owed += 1;
  }

  /** The concurrency changed by `delta` slots: more to grant, or fewer to give back as they free. */
  resize(delta: number): void {
    if (delta > 0) {
      const paid = Math.min(this.debt, delta);
      this.debt -= paid;
      this.owed += delta - paid;
    } else if (delta < 0) {
      const taken = Math.min(this.owed, -delta);
      this.owed -= taken;
      this.debt += -delta - taken;
    }
  }

  /** Grants what is owed; returns the new cumulative total, or undefined when nothing changed. */
  grantOwed(): number | undefined {
    if (this.owed === 0) return undefined;
    this.granted += this.owed;
    this.owed = 0;
    return this.granted;
  }

  /** Grants the initial total even when it is zero, so the hub learns where it stands. */
  grantInitial(): number {
    this.granted += this.owed;
    this.owed = 0;
    return this.granted;
  }
}
