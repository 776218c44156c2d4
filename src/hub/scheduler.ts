// Where tasks run. Pure bookkeeping, no I/O: the hub tells it about agents, capacity and tasks,
// and applies its decisions. Targets: one agent, a pool, or agents whose labels match. The pick is
// the eligible agent with the most free credits, ties broken at random (an impaired agent gets a
// pool's work only while no healthy one is there); a task that cannot run now waits in a bounded
// FIFO queue per target.
import { shownName } from "../common/errors.js";
import { Code, SwitchboardError } from "../common/errors.js";

export interface Target {
  agentId?: string;
  pool?: string;
  labels?: Record<string, string>;
}

export interface SchedAgent {
  id: string;
  pool: string;
  labels: Record<string, string>;
  kinds: ReadonlySet<string>;
  /** Credits granted and not yet used. */
  free: number;
  /** May get new work: healthy, or Degraded only by trouble it reports itself (see impaired). */
  accepting: boolean;
  /**
   * Degraded by its own report (a datasource down, a node crash-looping) yet answering: it runs what
   * names it, and a pool's or labels' work only while no healthy agent of that target is there to.
   */
  impaired: boolean;
}

export interface SchedTask {
  id: string;
  kind: string;
  target: Target;
  /** Pools the requester may reach; empty: all. */
  allowedPools: readonly string[];
}

export type SubmitDecision = { assign: string } | { queued: true };

export function targetKey(t: Target): string {
  if (t.agentId) return `agent:${t.agentId}`;
  if (t.pool) return `pool:${t.pool}`;
  const labels = Object.entries(t.labels ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
  return `labels:${labels.map(([k, v]) => `${k}=${v}`).join(",")}`;
}

export function describeTarget(t: Target): string {
  if (t.agentId) return `agent ${t.agentId}`;
  if (t.pool) return `pool ${t.pool}`;
  return `labels ${Object.entries(t.labels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",")}`;
}

export function matchesTarget(a: Pick<SchedAgent, "id" | "pool" | "labels">, t: Target): boolean {
  if (t.agentId) return a.id === t.agentId;
  if (t.pool) return a.pool === t.pool;
  for (const [k, v] of Object.entries(t.labels ?? {})) if (a.labels[k] !== v) return false;
  return true;
}

/** A FIFO with O(1) push/shift and removal by id (lazy: removed entries are skipped). */
class TaskQueue {
  private items: (SchedTask | undefined)[] = [];
  private head = 0;
  private index = new Map<string, number>();
  get size(): number {
    return this.index.size;
  }
  push(t: SchedTask): void {
    this.index.set(t.id, this.items.length);
    this.items.push(t);
  }
  peek(): SchedTask | undefined {
    while (this.head < this.items.length && this.items[this.head] === undefined) this.head++;
    return this.items[this.head];
  }
  shift(): SchedTask | undefined {
    const t = this.peek();
    if (t) {
      this.items[this.head++] = undefined;
      this.index.delete(t.id);
      this.compact();
    }
    return t;
  }
  remove(id: string): boolean {
    const i = this.index.get(id);
    if (i === undefined) return false;
    this.items[i] = undefined;
    this.index.delete(id);
    this.compact();
    return true;
  }
  *values(): Iterable<SchedTask> {
    for (let i = this.head; i < this.items.length; i++) {
      const t = this.items[i];
      if (t) yield t;
    }
  }
  private compact(): void {
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
      this.index.clear();
      this.items.forEach((t, i) => t && this.index.set(t.id, i));
    }
  }
}

export class Scheduler {
  private readonly agents = new Map<string, SchedAgent>();
  private readonly queues = new Map<string, { target: Target; queue: TaskQueue }>();
  private readonly queuedKey = new Map<string, string>();

  constructor(
    private readonly queueLimit: number,
    private readonly random: () => number = Math.random,
  ) {}

  // ---- agents -------------------------------------------------------------------------------

  upsertAgent(a: SchedAgent): void {
    this.agents.set(a.id, a);
  }

  removeAgent(id: string): void {
    this.agents.delete(id);
  }

  getAgent(id: string): SchedAgent | undefined {
    return this.agents.get(id);
  }

  /** Credits changed or the agent became eligible: hand it queued work. Returns the assignments. */
  drainQueuesFor(agentId: string): { task: SchedTask; agentId: string }[] {
    const out: { task: SchedTask; agentId: string }[] = [];
    const a = this.agents.get(agentId);
    if (!a) return out;
    for (const [key, q] of this.queues) {
      if (!matchesTarget(a, q.target)) continue;
      if (a.impaired && !q.target.agentId && this.hasHealthy(q.target)) continue;
      while (a.accepting && a.free > 0) {
        const next = this.firstFor(q.queue, a);
        if (!next) break;
        q.queue.remove(next.id);
        this.queuedKey.delete(next.id);
        a.free--;
        out.push({ task: next, agentId: a.id });
      }
      if (q.queue.size === 0) this.queues.delete(key);
      if (!a.accepting || a.free <= 0) break;
    }
    return out;
  }

  /** The first task of a queue this agent may run; FIFO among those it can. */
  private firstFor(q: TaskQueue, a: SchedAgent): SchedTask | undefined {
    const head = q.peek();
    if (head && this.eligible(a, head)) return head;
    for (const t of q.values()) if (this.eligible(a, t)) return t;
    return undefined;
  }

  /** Whether a healthy agent that accepts work matches the target (it will take the target's queue). */
  private hasHealthy(target: Target): boolean {
    for (const a of this.candidates(target)) if (a.accepting && !a.impaired) return true;
    return false;
  }

  private eligible(a: SchedAgent, t: SchedTask): boolean {
    return (
      a.accepting &&
      a.kinds.has(t.kind) &&
      matchesTarget(a, t.target) &&
      (t.allowedPools.length === 0 || t.allowedPools.includes(a.pool))
    );
  }

  // ---- tasks --------------------------------------------------------------------------------

  /**
   * Place a new task: assign it at once, queue it, or refuse with a status saying why.
   * `wait` queues even when no agent of the target is connected.
   */
  submit(t: SchedTask, wait: boolean): SubmitDecision {
    const key = targetKey(t.target);
    const q = this.queues.get(key);
    const matching = [...this.candidates(t.target)].filter(
      (a) => t.allowedPools.length === 0 || t.allowedPools.includes(a.pool),
    );
    if (matching.length === 0 && !wait) {
      throw new SwitchboardError(Code.UNAVAILABLE, noAgentSentence(t.target));
    }
    if (matching.length > 0 && !matching.some((a) => a.kinds.has(t.kind)) && !wait) {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `no agent of ${describeTarget(t.target)} accepts ${t.kind} tasks` +
          (t.kind === "shell" ? ": start the agent with --shell or set [shell] enabled = true" : "") +
          (t.kind === "http" ? ": list the URL prefixes it may reach in [http] allow in its config" : "") +
          (t.kind === "file"
            ? ": list the directories file tasks may use in [files] roots in its config"
            : ""),
      );
    }
    // FIFO per target: only jump the queue when nothing is waiting for this target.
    if (!q || q.queue.size === 0) {
      const pick = this.pick(t, matching);
      if (pick) {
        pick.free--;
        return { assign: pick.id };
      }
    }
    if ((q?.queue.size ?? 0) >= this.queueLimit) {
      throw new SwitchboardError(
        Code.RESOURCE_EXHAUSTED,
        `queue for ${describeTarget(t.target)} is full (${this.queueLimit} tasks): retry later or add agents`,
      );
    }
    this.enqueue(key, t);
    return { queued: true };
  }

  /**
   * What this hub could give the task now: the free credits of the agents that may run it (0: they
   * are busy), or undefined when none is connected. In a cluster, a hub compares it with the others'.
   */
  capacity(t: SchedTask): number | undefined {
    let free: number | undefined;
    for (const a of this.candidates(t.target)) {
      if (!this.eligible(a, t)) continue;
      free = (free ?? 0) + Math.max(0, a.free);
    }
    return free;
  }

  /** Put a task back in its queue (hub restart, or an agent left before taking it). */
  requeue(t: SchedTask): void {
    this.enqueue(targetKey(t.target), t);
  }

  private enqueue(key: string, t: SchedTask): void {
    let q = this.queues.get(key);
    if (!q) {
      q = { target: t.target, queue: new TaskQueue() };
      this.queues.set(key, q);
    }
    q.queue.push(t);
    this.queuedKey.set(t.id, key);
  }

  /** Remove a queued task (cancelled, expired). True when it was queued. */
  remove(taskId: string): boolean {
    const key = this.queuedKey.get(taskId);
    if (!key) return false;
    this.queuedKey.delete(taskId);
    const q = this.queues.get(key);
    const removed = q?.queue.remove(taskId) ?? false;
    if (q && q.queue.size === 0) this.queues.delete(key);
    return removed;
  }

  isQueued(taskId: string): boolean {
    return this.queuedKey.has(taskId);
  }

  queuedCount(): number {
    return this.queuedKey.size;
  }

  /** The ids of the tasks queued for this target, in queue order. */
  queuedIds(target: Target): string[] {
    const q = this.queues.get(targetKey(target));
    return q ? [...q.queue.values()].map((t) => t.id) : [];
  }

  queuedFor(match: (target: Target) => boolean): number {
    let n = 0;
    for (const q of this.queues.values()) if (match(q.target)) n += q.queue.size;
    return n;
  }

  /**
   * The least-loaded eligible agent (most free credits), ties broken at random; an impaired agent only
   * for work that names it, or while no healthy agent of the target is connected.
   */
  pick(t: SchedTask, among: Iterable<SchedAgent> = this.candidates(t.target)): SchedAgent | undefined {
    let best: SchedAgent | undefined;
    let ties = 0;
    let healthyThere: boolean | undefined; // asked only when an impaired agent comes up
    for (const a of among) {
      if (a.free <= 0 || !this.eligible(a, t)) continue;
      if (a.impaired && !t.target.agentId && (healthyThere ??= this.hasHealthy(t.target))) continue;
      if (!best || a.free > best.free) {
        best = a;
        ties = 1;
      } else if (a.free === best.free) {
        // Reservoir sampling over equals: each tie wins with equal probability.
        ties++;
        if (this.random() * ties < 1) best = a;
      }
    }
    return best;
  }

  private *candidates(target: Target): Iterable<SchedAgent> {
    if (target.agentId) {
      const a = this.agents.get(target.agentId);
      if (a) yield a;
      return;
    }
    for (const a of this.agents.values()) if (matchesTarget(a, target)) yield a;
  }
}

function noAgentSentence(t: Target): string {
  if (t.agentId)
    return `agent ${shownName(t.agentId)} is not connected: check 'switchboard agents --all', or pass --wait`;
  if (t.pool)
    return `no agent of pool ${shownName(t.pool)} is connected; start one with 'switchboard agent --pool ${shownName(t.pool)}', or pass --wait`;
  return `no connected agent has ${describeTarget(t)}; start one with matching --labels, or pass --wait`;
}
