// The agents this hub knows now: one session per agent id (connected, or detached and held for a
// resume), and their record in the store. Everything that asks "which session speaks for agent X"
// asks here, so that nobody else holds or walks the map.
import type { AgentSession } from "./agent-session.js";
import type { LiveTask } from "../tasks/live-task.js";
import type { AgentRecord, Store } from "../store/index.js";

/** How often a healthy agent's record is written again (its last-seen time) between connects. */
const PERSIST_EVERY_MS = 30_000;

export class AgentRegistry {
  private readonly sessions = new Map<string, AgentSession>();
  private readonly persistedAt = new Map<string, number>();

  constructor(private readonly store: Store) {}

  /** The session of an agent id (none for null: a task on no agent). */
  get(agentId: string | null): AgentSession | undefined {
    return agentId ? this.sessions.get(agentId) : undefined;
  }

  has(agentId: string): boolean {
    return this.sessions.has(agentId);
  }

  /** Every session, as a copy: callers close sessions while they walk it. */
  all(): AgentSession[] {
    return [...this.sessions.values()];
  }

  connectedCount(): number {
    let n = 0;
    for (const s of this.sessions.values()) if (s.connected) n++;
    return n;
  }

  /** Whether an agent of the pool that runs this kind of task is connected now. */
  hasConnected(pool: string, kind: string): boolean {
    for (const s of this.sessions.values()) {
      if (s.pool === pool && s.connected && s.sched.kinds.has(kind)) return true;
    }
    return false;
  }

  /** The pool of an agent, from its session or, for one not here now, its record. */
  async poolOf(agentId: string): Promise<string | undefined> {
    const s = this.sessions.get(agentId);
    return s ? s.pool : (await this.store.getAgent(agentId))?.pool;
  }

  /** The session that holds the task's current assignment, if its agent is still on that session. */
  holderOf(t: LiveTask): AgentSession | undefined {
    const s = this.get(t.agentId);
    return s && s.sessionId === t.sessionId ? s : undefined;
  }

  /** Told when an agent id comes to this hub (a session speaks for it) and when it leaves. */
  onPresence: ((agentId: string, here: boolean) => void) | undefined;

  /** The session speaks for its agent from now on (it replaces any earlier one). */
  add(s: AgentSession): void {
    const known = this.sessions.has(s.agentId);
    this.sessions.set(s.agentId, s);
    if (!known) this.onPresence?.(s.agentId, true);
  }

  /** Drops the session if it still speaks for its agent; true when it did. */
  remove(s: AgentSession): boolean {
    if (this.sessions.get(s.agentId) !== s) return false;
    this.sessions.delete(s.agentId);
    this.onPresence?.(s.agentId, false);
    return true;
  }

  /**
   * Writes the agent's record: who it is, when it was last seen, and the token that owns its id.
   * Batched, without a read: the store keeps the first-seen time of the id's first record.
   */
  persist(s: AgentSession, connected: boolean): void {
    const rec: AgentRecord = {
      id: s.agentId,
      pool: s.pool,
      labels: s.labels,
      hostname: s.hello.hostname,
      platform: s.hello.platform,
      version: s.hello.version,
      taskKinds: [...s.hello.taskKinds],
      maxConcurrency: s.hello.maxConcurrency,
      firstSeenAt: s.connectedAt,
      lastSeenAt: s.lastSeenAt,
      lastSessionId: s.sessionId,
      connected,
      // The session was admitted by agentIdClaim: its token is the id's owner from now on.
      tokenId: s.principal.tokenId,
    };
    this.store.upsertAgent(rec);
    this.persistedAt.set(s.agentId, Date.now());
  }

  /** persist(), at most once per PERSIST_EVERY_MS for a connected agent (heartbeats call it). */
  persistSometimes(s: AgentSession): void {
    if (Date.now() - (this.persistedAt.get(s.agentId) ?? 0) > PERSIST_EVERY_MS) this.persist(s, true);
  }
}
