// The tasks the hub holds in memory: every unfinished task, and a finished one for LINGER_MS more so
// that a client re-attaching with a sequence number is served from memory. Older finished tasks are
// read from the store.
import type { LiveTask } from "./live-task.js";

/** How long a finished task stays in memory for clients that re-attach with a sequence number. */
const LINGER_MS = 30_000;
/** Swept entries are trimmed off the lingering list once this many have gathered. */
const TRIM_AFTER = 4096;

/** Whether the task is on its agent (an assignment whose Assign has not gone out is not yet). */
export /** On one of this hub's agents now (a task relayed from another hub's agent is not). */
function onAgent(t: LiveTask): boolean {
  return t.remoteHub === undefined && ((t.state === "assigned" && !t.assignPending) || t.state === "running");
}

export class TaskTable {
  private readonly live = new Map<string, LiveTask>();
  private lingering: { id: string; at: number }[] = [];
  private lingerHead = 0;

  get(taskId: string): LiveTask | undefined {
    return this.live.get(taskId);
  }

  add(t: LiveTask): void {
    this.live.set(t.id, t);
  }

  /** Forgets a task that was never accepted. */
  delete(taskId: string): void {
    this.live.delete(taskId);
  }

  /** Every task held, as a copy. */
  all(): LiveTask[] {
    return [...this.live.values()];
  }

  /** Queued, and assigned or running (an assignment not sent yet counts as assigned). */
  counts(): { queued: number; running: number } {
    let queued = 0;
    let running = 0;
    for (const t of this.live.values()) {
      if (t.remoteHub !== undefined) continue; // counted by the hub that runs it
      if (t.state === "queued") queued++;
      else if (t.state === "assigned" || t.state === "running") running++;
    }
    return { queued, running };
  }

  /** The tasks on agents now. */
  onAgents(): LiveTask[] {
    return this.all().filter(onAgent);
  }

  inFlight(): number {
    let n = 0;
    for (const t of this.live.values()) if (onAgent(t)) n++;
    return n;
  }

  /** The task finished at `at`: it stays for LINGER_MS, then sweep() drops it. */
  finished(t: LiveTask, at: number): void {
    this.lingering.push({ id: t.id, at });
  }

  /** Drops the finished tasks whose lingering is over. */
  sweep(now: number): void {
    while (this.lingerHead < this.lingering.length && this.lingering[this.lingerHead]!.at < now - LINGER_MS) {
      const { id } = this.lingering[this.lingerHead++]!;
      const t = this.live.get(id);
      if (t?.terminal) this.live.delete(id);
    }
    if (this.lingerHead > TRIM_AFTER) {
      this.lingering = this.lingering.slice(this.lingerHead);
      this.lingerHead = 0;
    }
  }

  /** The deadline timers of every task held stop (the hub is stopping). */
  clearDeadlines(): void {
    for (const t of this.live.values()) clearTimeout(t.deadlineTimer);
  }
}
