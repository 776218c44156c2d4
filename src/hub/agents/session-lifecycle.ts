// An agent's sessions, from admission to their end: who may open one (pool, pinned id, the id's
// owner, a second process), a resume that takes over a broken link's tasks, a link lost and held
// for the resume grace, and the end that loses what still ran. Health is re-derived here each tick.
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { Code, SwitchboardError } from "../../common/errors.js";
import { newSessionId } from "../../common/ids.js";
import type { Logger } from "../../common/logger.js";
import { VERSION } from "../../common/version.js";
import type { AgentMessage, Hello, HubMessage, ResumeResult } from "../../gen/switchboard/v1/agent.js";
import type { AgentRegistry } from "./agent-registry.js";
import { AgentSession } from "./agent-session.js";
import { agentIdClaim, poolAllowed, type AgentIdClaim, type Principal } from "../auth.js";
import type { HubConfig } from "../config.js";
import type { LiveTask } from "../tasks/live-task.js";
import type { NodeOrchestrator } from "../nodes/node-orchestrator.js";
import type { Scheduler } from "../scheduler.js";
import type { Store } from "../store/index.js";
import type { TaskDispatch } from "../tasks/task-dispatch.js";
import type { TaskInputs } from "../tasks/task-input.js";
import type { TaskLifecycle } from "../tasks/task-lifecycle.js";
import type { TaskTable } from "../tasks/task-table.js";

const MAX_ID = 128;

/** A Hello found admissible by SessionLifecycle.admit(): its id and pool, and why the id is the caller's. */
export interface Admission {
  agentId: string;
  pool: string;
  claim: AgentIdClaim;
}

export class SessionLifecycle {
  constructor(
    private readonly config: HubConfig,
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly agents: AgentRegistry,
    private readonly tasks: TaskTable,
    private readonly scheduler: Scheduler,
    private readonly dispatch: TaskDispatch,
    private readonly lifecycle: TaskLifecycle,
    private readonly inputs: TaskInputs,
    private readonly nodes: NodeOrchestrator,
    /** Whether the hub is draining: a lost link is not held for a resume then. */
    private readonly draining: () => boolean,
  ) {}

  /**
   * Whether the Hello may open a session: its id and pool, the token's scope, and the id's owner
   * (read from the store). Nothing is changed: open() acts on the admission, at once after it.
   */
  async admit(p: Principal, hello: Hello): Promise<Admission> {
    const agentId = hello.agentId.trim();
    if (!agentId || agentId.length > MAX_ID || !/^[\w.@:-]+$/.test(agentId)) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `agent id "${agentId}" is not allowed: use 1-128 letters, digits and . _ - @ :`,
      );
    }
    const pool = hello.pool.trim() || "default";
    if (!/^[\w.@:-]{1,128}$/.test(pool)) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `pool "${pool}" is not allowed: use 1-128 letters, digits and . _ - @ :`,
      );
    }
    if (!poolAllowed(p, pool)) {
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `agent token ${p.name} may register only into pool ${p.pools.join(", ")}, not ${pool}: use a token for pool ${pool}`,
      );
    }
    if (p.agentId && p.agentId !== agentId) {
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `agent token ${p.name} is pinned to agent ${p.agentId}, not ${agentId}`,
      );
    }
    // Before anything about a live or detached session of the id: an impostor learns nothing and moves nothing.
    const claim = await agentIdClaim(p, agentId, pool, await this.store.getAgent(agentId), (id) =>
      this.store.findToken(id),
    );
    return { agentId, pool, claim };
  }

  /**
   * Opens the session an admission allows: a new one, or the resume of the one whose link broke.
   * Synchronous, so that nothing about the agent's sessions changes between the checks and the act.
   */
  open(
    call: ServerDuplexStream<AgentMessage, HubMessage>,
    p: Principal,
    hello: Hello,
    { agentId, pool, claim }: Admission,
  ): AgentSession {
    if (claim !== "new" && claim !== "owner") {
      this.logger.warn(
        { agent_id: agentId, pool, token: p.name, claim },
        "agent id claimed by another token",
      );
    }
    const existing = this.agents.get(agentId);
    const resume = hello.resume;
    const sameInstance = hello.instanceId !== "" && hello.instanceId === existing?.hello.instanceId;
    if (existing && !existing.closed && resume && resume.sessionId === existing.sessionId && sameInstance) {
      return this.resume(call, p, { ...hello, agentId, pool }, existing);
    }
    if (existing && !existing.closed && existing.detachedAt !== undefined) {
      // The agent came back as a new process (or without its session): what the old one ran is gone.
      this.close(
        existing,
        sameInstance ? "the agent reconnected without resuming" : "the agent restarted as a new process",
      );
    }
    if (existing && !existing.closed) {
      // The same agent process (same instance id) dialling again: its link broke on its side
      // first (a blip), so the old session is stale. It takes over; the old stream is fenced:
      // closed, and anything still arriving on it is ignored.
      const sameProcess = hello.instanceId !== "" && hello.instanceId === existing.hello.instanceId;
      const silent = Date.now() - existing.lastSeenAt;
      if (!sameProcess && !p.allowTakeover && silent <= 2 * this.config.heartbeatIntervalMs) {
        this.logger.warn(
          {
            agent_id: agentId,
            session_id: existing.sessionId,
            live_instance: existing.hello.instanceId,
            refused_instance: hello.instanceId,
          },
          "refused a second process presenting a connected agent's id",
        );
        throw new SwitchboardError(
          Code.ALREADY_EXISTS,
          `agent ${agentId} is already connected from another process (session ${existing.sessionId}): give each agent its own --agent-id`,
        );
      }
      const why = sameProcess
        ? "taken over by the same agent's new connection"
        : p.allowTakeover
          ? "taken over by another process (its token allows takeover)"
          : "replaced by a new connection of the same agent";
      this.logger.warn(
        {
          agent_id: agentId,
          session_id: existing.sessionId,
          instance_id: hello.instanceId,
          same_process: sameProcess,
        },
        sameProcess
          ? "agent reconnected: taking over its stale session"
          : "replacing a silent session of the same agent",
      );
      this.close(existing, why);
      existing.end(Code.ABORTED, why);
    }
    const session = new AgentSession(newSessionId(), { ...hello, agentId, pool }, p, call);
    this.agents.add(session);
    this.scheduler.upsertAgent(session.sched);
    let resumeResult: ResumeResult | undefined;
    if (resume) {
      // Nothing to resume here (the grace passed, the hub restarted, or this is another hub):
      // whatever the agent still runs of that session, nobody waits for any more.
      resumeResult = {
        resumed: false,
        eventsReceived: 0,
        stopTaskIds: resume.taskIds,
        reason: `session ${resume.sessionId} cannot be resumed on this hub (its tasks ended lost after the ${this.config.resumeGraceMs / 1000}s grace, or it belonged to another hub run)`,
      };
      this.logger.warn(
        { agent_id: agentId, session_id: resume.sessionId, tasks: resume.taskIds.length },
        "agent asked to resume a session this hub no longer holds: telling it to stop those tasks",
      );
    }
    this.welcome(session, resumeResult);
    this.agents.persist(session, true);
    const at = Date.now();
    this.store.audit({
      at,
      actor: p.name,
      action: "agent.connect",
      subject: agentId,
      detail: {
        pool,
        session: session.sessionId,
        version: hello.version,
        ...(claim === "owner" ? {} : { claim }),
      },
    });
    this.logger.info(
      { agent_id: agentId, session_id: session.sessionId, pool, version: hello.version },
      "agent connected",
    );
    return session;
  }

  private welcome(s: AgentSession, resume: ResumeResult | undefined): void {
    s.send({
      body: {
        $case: "welcome",
        value: {
          sessionId: s.sessionId,
          heartbeatIntervalMs: this.config.heartbeatIntervalMs,
          offlineAfterMs: this.config.offlineAfterMs,
          maxMessageBytes: this.config.maxMessageBytes,
          initialOutputWindowBytes: this.config.outputWindowBytes,
          hubVersion: VERSION,
          hubTimeMs: Date.now(),
          acceptsBatches: true,
          inputOffsets: true,
          resumeGraceMs: this.config.resumeGraceMs,
          resume,
        },
      },
    });
    // After the Welcome, in the same write: what the registry and the agent disagree on is mended.
    this.nodes.sessionOpened(s);
    // Input that waited while the agent's link was down goes out on its new session; on a resumed one,
    // first what was sent before the break and not acknowledged (the agent skips what it has).
    this.inputs.sessionOpened(s, resume?.resumed ?? false);
  }

  /**
   * The agent is back with the session whose stream broke: a new session takes over its tasks
   * (fencing the old stream, if the hub still had it open) and tells the agent how many of its
   * events arrived, so it re-sends exactly the rest.
   */
  private resume(
    call: ServerDuplexStream<AgentMessage, HubMessage>,
    p: Principal,
    hello: Hello,
    old: AgentSession,
  ): AgentSession {
    const agentId = hello.agentId;
    const wasDetached = old.detachedAt !== undefined;
    const downMs = Date.now() - (old.detachedAt ?? old.lastSeenAt);
    old.closed = true;
    old.sched.accepting = false;
    if (wasDetached) old.streamGone();
    else old.end(Code.ABORTED, "taken over by the same agent's resumed session");
    const session = new AgentSession(newSessionId(), hello, p, call);
    this.agents.add(session);
    this.scheduler.upsertAgent(session.sched);
    const held = new Set(hello.resume?.taskIds ?? []);
    const stop = [...held].filter((id) => !old.tasks.has(id));
    const missing: LiveTask[] = [];
    for (const id of old.tasks) {
      const t = this.tasks.get(id);
      if (!t || t.terminal) continue;
      if (!held.has(id)) {
        missing.push(t);
        continue;
      }
      t.sessionId = session.sessionId;
      session.tasks.add(id);
    }
    old.tasks.clear();
    this.welcome(session, {
      resumed: true,
      eventsReceived: old.eventsReceived,
      stopTaskIds: stop,
      reason: "",
    });
    // What the hub meant to tell the agent while the link was down.
    for (const id of session.tasks) {
      const t = this.tasks.get(id)!;
      // The window as a total: what was granted while the link was down, and any grant lost with it.
      if (t.outputGranted > 0) {
        session.send({
          body: {
            $case: "window",
            value: { taskId: id, bytes: t.unsentWindow, grantedTotal: t.outputGranted },
          },
        });
        t.unsentWindow = 0;
      }
      if (t.cancelReason !== null || t.deadlineHit) {
        const reason = t.cancelReason ?? "deadline passed";
        session.send({ body: { $case: "cancel", value: { taskId: id, reason, graceMs: 0 } } });
      }
    }
    // Assigned while the link was breaking, never received: the agent does not know them.
    for (const t of missing) {
      if (t.state === "assigned") {
        this.dispatch.requeue(t);
      } else {
        this.lifecycle.finishLocal(
          t,
          "lost",
          Code.ABORTED,
          `agent ${agentId} resumed its session without this task (it no longer runs there)`,
        );
      }
    }
    this.agents.persist(session, true);
    this.store.audit({
      at: Date.now(),
      actor: p.name,
      action: "agent.resume",
      subject: agentId,
      detail: {
        from_session: old.sessionId,
        session: session.sessionId,
        tasks: session.tasks.size,
        down_ms: downMs,
      },
    });
    this.logger.info(
      {
        agent_id: agentId,
        session_id: session.sessionId,
        resumed_session_id: old.sessionId,
        tasks: session.tasks.size,
        requeued: missing.filter((t) => t.state === "queued").length,
        stop: stop.length,
        events_received: old.eventsReceived,
        down_ms: downMs,
      },
      "agent resumed its session",
    );
    return session;
  }

  /** The agent's stream ended without a goodbye: hold its tasks for the grace, or end them now. */
  streamGone(s: AgentSession, why: string): void {
    if (s.closed || s.detachedAt !== undefined) return;
    if (
      !s.resumable ||
      this.config.resumeGraceMs <= 0 ||
      s.tasks.size === 0 ||
      s.leaving ||
      this.draining()
    ) {
      this.close(s, why);
      return;
    }
    s.detachedAt = Date.now();
    s.detachedWhy = why;
    s.streamGone();
    this.nodes.sessionClosed(s);
    this.scheduler.removeAgent(s.agentId);
    s.evaluate(Date.now(), this.config.heartbeatIntervalMs);
    this.recordDisconnect(s, { why, held_tasks: s.tasks.size });
    this.logger.warn(
      {
        agent_id: s.agentId,
        session_id: s.sessionId,
        why,
        tasks: s.tasks.size,
        grace_ms: this.config.resumeGraceMs,
      },
      "agent link lost: holding its tasks for it to resume",
    );
  }

  /** A session ended: its unfinished tasks are lost, clients are told. */
  close(s: AgentSession, why: string): void {
    if (this.agents.remove(s)) this.scheduler.removeAgent(s.agentId);
    if (s.closed && s.tasks.size === 0 && s.health === "offline") return;
    s.closed = true;
    s.sched.accepting = false;
    this.nodes.sessionClosed(s);
    s.evaluate(Date.now(), this.config.heartbeatIntervalMs);
    for (const id of [...s.tasks]) {
      const t = this.tasks.get(id);
      if (!t || t.terminal) continue;
      if (t.assignPending) {
        // Its Assign never went out: it waits for another agent instead of ending lost.
        this.dispatch.requeue(t);
        continue;
      }
      this.lifecycle.finishLocal(
        t,
        "lost",
        Code.ABORTED,
        `agent ${s.agentId} disconnected while the task was running (${why})`,
      );
    }
    s.tasks.clear();
    this.recordDisconnect(s, { why });
    this.logger.info({ agent_id: s.agentId, session_id: s.sessionId, why }, "agent disconnected");
  }

  /** The agent's record goes offline, and the audit log says why (with `detail` beside the session). */
  private recordDisconnect(s: AgentSession, detail: Record<string, unknown>): void {
    this.agents.persist(s, false);
    this.store.audit({
      at: Date.now(),
      actor: s.principal.name,
      action: "agent.disconnect",
      subject: s.agentId,
      detail: { session: s.sessionId, ...detail },
    });
  }

  /** The token was revoked: the sessions it opened end. */
  revoke(tokenId: string): void {
    for (const s of this.agents.all()) {
      if (s.principal.tokenId !== tokenId) continue;
      this.close(s, "its token was revoked");
      s.end(Code.UNAUTHENTICATED, `token ${s.principal.name} was revoked`);
    }
  }

  /** Health and offline detection, once a second. */
  tick(now = Date.now()): void {
    for (const s of this.agents.all()) {
      if (s.detachedAt !== undefined) {
        if (now - s.detachedAt >= this.config.resumeGraceMs) {
          this.close(
            s,
            `${s.detachedWhy}; it did not resume within the ${this.config.resumeGraceMs / 1000}s grace`,
          );
        }
        continue;
      }
      if (now - s.lastSeenAt > this.config.offlineAfterMs) {
        const why = `no heartbeat for ${Math.round((now - s.lastSeenAt) / 1000)}s`;
        s.end(Code.UNAVAILABLE, `${why}: marked offline`);
        this.streamGone(s, why);
        continue;
      }
      s.sendProbe(now, this.config.heartbeatIntervalMs);
      this.reevaluate(s, now);
    }
  }

  /** Re-derives an agent's health; logs a change, and hands it work if it can take some again. */
  reevaluate(s: AgentSession, now: number): void {
    const wasAccepting = s.sched.accepting;
    if (s.evaluate(now, this.config.heartbeatIntervalMs)) {
      this.logger.info(
        { agent_id: s.agentId, health: s.health, reason: s.healthReason },
        "agent health changed",
      );
    }
    if (!wasAccepting && s.sched.accepting) this.dispatch.dispatch(s);
  }
}
