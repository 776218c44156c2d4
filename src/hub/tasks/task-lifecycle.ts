// A task's life in the hub, from its submission to its end: accepted and recorded, queued or given to
// an agent (TaskDispatch), moved on by its agent's events, cancelled or timed out, and finished once
// with what clients and the store are told.
import { Code, shownName, SwitchboardError } from "../../common/errors.js";
import { newTaskId } from "../../common/ids.js";
import type { Logger } from "../../common/logger.js";
import { isTerminal, stateFromWire, stateToWire, type TaskStateName } from "../../common/task-state.js";
import type { AgentTaskEvent } from "../../gen/switchboard/v1/agent.js";
import type { SubmitRequest } from "../../gen/switchboard/v1/client.js";
import { OutputStream, TaskSpec, type Finished } from "../../gen/switchboard/v1/task.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { AgentSession } from "../agents/agent-session.js";
import { poolAllowed, type Principal } from "../auth.js";
import type { HubConfig } from "../config.js";
import { LiveTask, type FinishInfo } from "./live-task.js";
import { describeTarget, type Scheduler, type Target } from "../scheduler.js";
import { auditShellSession } from "../shell-sessions.js";
import { writeFailureSentence, type Store, type TaskRecord } from "../store/index.js";
import type { TaskDispatch } from "./task-dispatch.js";
import { asBuffer, EMPTY } from "./task-reader.js";
import type { TaskTable } from "./task-table.js";

export class TaskLifecycle {
  private warnedUnknownEvent = new WeakSet<AgentSession>();

  constructor(
    private readonly config: HubConfig,
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly agents: AgentRegistry,
    private readonly tasks: TaskTable,
    private readonly scheduler: Scheduler,
    private readonly dispatch: TaskDispatch,
    /** Whether the hub is draining: it takes no new work then. */
    private readonly draining: () => boolean,
  ) {}

  async submit(p: Principal, req: SubmitRequest): Promise<LiveTask> {
    this.refuseNewWork();
    const { kind, target, spec } = validateSubmit(req);
    if (target.pool && !poolAllowed(p, target.pool)) {
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `token ${p.name} may not reach pool ${target.pool} (scoped to ${p.pools.join(", ")})`,
      );
    }
    if (target.agentId && p.pools.length > 0) {
      const pool = await this.agents.poolOf(target.agentId);
      if (pool !== undefined && !poolAllowed(p, pool)) {
        throw new SwitchboardError(
          Code.PERMISSION_DENIED,
          `token ${p.name} may not reach agent ${target.agentId} in pool ${pool}`,
        );
      }
      // The hub may have begun to drain, or the store to fail, while the agent's pool was read.
      this.refuseNewWork();
    }
    const now = Date.now();
    const id = newTaskId();
    const t = this.newLiveTask(
      id,
      kind,
      spec,
      target,
      p.name,
      p.pools,
      now,
      req.timeoutMs ? now + req.timeoutMs : null,
      req.waitForAgent,
    );
    const decision = this.scheduler.submit({ id, kind, target, allowedPools: p.pools }, req.waitForAgent);
    const session = "assign" in decision ? this.agents.get(decision.assign)! : undefined;
    this.tasks.add(t);
    // Queued before anything else, so that watchers see Queued before Assigned.
    t.emit({ $case: "queued", value: { queuedAtMs: now } });
    // A task that has an agent at once is inserted as assigned: the assignment rides the insert's
    // commit, and the Assign goes out after it (assign() without a write of its own).
    const inserted = this.store.insertTask({
      id,
      kind,
      target,
      spec: TaskSpec.encode(spec).finish(),
      requester: p.name,
      createdAt: now,
      deadlineAt: t.deadlineAt,
      ...(session ? { state: "assigned" as const, agentId: session.agentId, assignedAt: now } : {}),
    });
    if (session) this.dispatch.assign(t, session, { at: now, recorded: true });
    try {
      await inserted;
    } catch (err) {
      // Not accepted: nothing of it may remain, and no agent has heard of it.
      this.tasks.delete(id);
      if (t.assignPending) this.dispatch.unassign(t, { record: false });
      this.scheduler.remove(id);
      throw err;
    }
    if (session) this.dispatch.insertCommitted(t, session);
    this.store.audit({
      at: now,
      actor: p.name,
      action: "task.submit",
      subject: id,
      detail: { kind, target },
    });
    if (t.deadlineAt !== null && !t.terminal) this.armDeadline(t);
    return t;
  }

  /** While the hub drains or the store cannot write, no task is accepted. */
  private refuseNewWork(): void {
    if (this.draining()) {
      throw new SwitchboardError(
        Code.UNAVAILABLE,
        "hub is shutting down: retry against another hub or in a moment",
      );
    }
    const storeDown = this.store.writeFailure;
    if (storeDown) {
      throw new SwitchboardError(
        Code.UNAVAILABLE,
        `${writeFailureSentence(storeDown)}: no new tasks until it writes again; submit again in a moment`,
      );
    }
  }

  private newLiveTask(
    id: string,
    kind: string,
    spec: TaskSpec,
    target: Target,
    requester: string,
    allowedPools: readonly string[],
    createdAt: number,
    deadlineAt: number | null,
    wait: boolean,
  ): LiveTask {
    const t: LiveTask = new LiveTask(
      id,
      kind,
      spec,
      target,
      requester,
      allowedPools,
      createdAt,
      deadlineAt,
      wait,
      this.config.outputWindowBytes,
      (bytes) => {
        const s = this.agents.holderOf(t);
        if (s?.connected)
          s.send({ body: { $case: "window", value: { taskId: id, bytes, grantedTotal: t.outputGranted } } });
        else t.unsentWindow += bytes; // the link is down: granted when the agent resumes
      },
    );
    return t;
  }

  /** A queued task of the store, held again after a restart until its deadline. */
  requeueRecovered(r: TaskRecord, spec: TaskSpec, deadlineAt: number): void {
    const t = this.newLiveTask(r.id, r.kind, spec, r.target, r.requester, [], r.createdAt, deadlineAt, true);
    t.emit({ $case: "queued", value: { queuedAtMs: r.createdAt } });
    this.tasks.add(t);
    this.scheduler.requeue({ id: r.id, kind: r.kind, target: r.target, allowedPools: [] });
    this.armDeadline(t);
  }

  private armDeadline(t: LiveTask): void {
    const ms = Math.max(0, (t.deadlineAt ?? 0) - Date.now());
    t.deadlineTimer = setTimeout(() => this.onDeadline(t), ms);
    t.deadlineTimer.unref();
  }

  private onDeadline(t: LiveTask): void {
    if (t.terminal) return;
    const budget = t.deadlineAt! - t.createdAt;
    if (t.assignPending) this.dispatch.unassign(t); // its agent never heard of it: it ends here
    if (t.state === "queued") {
      this.scheduler.remove(t.id);
      this.finishLocal(
        t,
        "timed_out",
        Code.DEADLINE_EXCEEDED,
        `deadline of ${budget} ms passed while the task waited for ${describeTarget(t.target)}`,
      );
      return;
    }
    // On an agent: ask it to stop; its CANCELLED reads as TIMED_OUT. If it never answers, end it here.
    t.deadlineHit = true;
    const s = this.agents.get(t.agentId);
    s?.send({
      body: {
        $case: "cancel",
        value: { taskId: t.id, reason: `deadline of ${budget} ms passed`, graceMs: 0 },
      },
    });
    const grace = stopGrace(t.spec) + 5_000;
    setTimeout(() => {
      if (!t.terminal)
        this.finishLocal(
          t,
          "timed_out",
          Code.DEADLINE_EXCEEDED,
          `deadline of ${budget} ms passed; the agent did not confirm the stop`,
        );
    }, grace).unref();
  }

  /** Cancels a live task at once (before this returns); a task not in memory is read for its state. */
  async cancel(p: Principal, taskId: string, reason: string): Promise<TaskStateName> {
    const t = this.tasks.get(taskId);
    if (!t) {
      const rec = await this.store.getTask(taskId);
      if (!rec)
        throw new SwitchboardError(Code.NOT_FOUND, `no task ${shownName(taskId)}: see switchboard tasks`);
      return rec.state;
    }
    if (t.terminal) return t.state;
    if (p.pools.length > 0) {
      const pool = t.target.pool ?? this.agents.get(t.agentId)?.pool;
      if (pool !== undefined && !poolAllowed(p, pool)) {
        throw new SwitchboardError(
          Code.PERMISSION_DENIED,
          `token ${p.name} may not cancel tasks in pool ${pool}`,
        );
      }
    }
    const why = reason || `cancelled by ${p.name}`;
    this.store.audit({
      at: Date.now(),
      actor: p.name,
      action: "task.cancel",
      subject: taskId,
      detail: { reason: why },
    });
    if (t.assignPending) this.dispatch.unassign(t); // its agent never heard of it: it ends here
    if (t.state === "queued") {
      this.scheduler.remove(t.id);
      this.finishLocal(t, "cancelled", Code.CANCELLED, why);
      return t.state;
    }
    t.cancelReason = why;
    const s = this.agents.get(t.agentId);
    s?.send({ body: { $case: "cancel", value: { taskId: t.id, reason: why, graceMs: 0 } } });
    return t.state;
  }

  /** End a task from the hub's side (lost, cancelled while queued, timed out, ...). */
  finishLocal(t: LiveTask, state: TaskStateName, errorCode: number | null, reason: string): void {
    this.finishTask(t, {
      state,
      exitCode: null,
      signal: null,
      errorCode,
      errorMessage: errorCode === null ? null : reason,
      reason,
      durationMs: t.startedAt ? Date.now() - t.startedAt : null,
      result: null,
    });
  }

  private finishTask(t: LiveTask, info: FinishInfo): void {
    if (!t.transition(info.state)) return;
    t.assignPending = false;
    const now = Date.now();
    const holder = this.agents.holderOf(t);
    if (holder?.tasks.delete(t.id)) holder.completedTotal++;
    this.store.updateTask(t.id, {
      state: info.state,
      finishedAt: now,
      exitCode: info.exitCode,
      signal: info.signal,
      errorCode: info.errorCode,
      errorMessage: info.errorMessage,
      reason: info.reason,
      durationMs: info.durationMs,
      result: info.result,
    });
    const finished: Finished = {
      state: stateToWire(info.state),
      exitCode: info.exitCode ?? -1,
      signal: info.signal ?? "",
      error: info.errorCode === null ? undefined : { code: info.errorCode, message: info.errorMessage ?? "" },
      durationMs: info.durationMs ?? 0,
      result: info.result ? asBuffer(info.result) : EMPTY,
      reason: info.reason ?? "",
    };
    t.emit({ $case: "finished", value: finished });
    auditShellSession(this.store, t, info, now);
    t.complete(info, now);
    this.tasks.finished(t, now);
  }

  /** An event of a task from the agent's session that holds it (others are ignored). */
  onAgentEvent(s: AgentSession, ev: AgentTaskEvent): void {
    const t = this.tasks.get(ev.taskId);
    if (!t || t.sessionId !== s.sessionId || t.terminal) {
      if (!this.warnedUnknownEvent.has(s)) {
        this.warnedUnknownEvent.add(s);
        this.logger.warn(
          { agent_id: s.agentId, task_id: ev.taskId },
          "event for a task this session does not hold; ignoring",
        );
      }
      return;
    }
    if (ev.seq <= t.lastAgentSeq) return; // a duplicate
    t.lastAgentSeq = ev.seq;
    const e = ev.event;
    switch (e?.$case) {
      case "started": {
        if (!t.transition("running")) return;
        t.startedAt = e.value.startedAtMs || Date.now();
        this.store.updateTask(t.id, { state: "running", startedAt: t.startedAt });
        t.emit({ $case: "started", value: e.value });
        return;
      }
      case "output": {
        const data = e.value.data;
        const stream = e.value.stream === OutputStream.OUTPUT_STREAM_STDERR ? "stderr" : "stdout";
        if (stream === "stderr") t.stderrBytes += data.length;
        else t.stdoutBytes += data.length;
        this.store.appendOutput(t.id, stream, data);
        t.emit({ $case: "output", value: e.value }, data.length);
        return;
      }
      case "finished": {
        const f = e.value;
        let state = stateFromWire(f.state) ?? "failed";
        if (!isTerminal(state)) state = "failed";
        if (state === "cancelled" && t.deadlineHit) state = "timed_out";
        const reason = state === "cancelled" && t.cancelReason && !f.reason ? t.cancelReason : f.reason;
        this.finishTask(t, {
          state,
          exitCode: state === "succeeded" || state === "failed" || f.exitCode !== -1 ? f.exitCode : null,
          signal: f.signal || null,
          errorCode: f.error ? f.error.code : state === "timed_out" ? Code.DEADLINE_EXCEEDED : null,
          errorMessage: f.error ? f.error.message : null,
          reason: reason || null,
          durationMs: f.durationMs,
          result: f.result.length > 0 ? f.result : null,
        });
        return;
      }
      default:
        return;
    }
  }
}

function validateSubmit(req: SubmitRequest): { kind: string; target: Target; spec: TaskSpec } {
  const tg = req.target;
  const labels = tg && Object.keys(tg.labels).length > 0 ? tg.labels : undefined;
  const set = [tg?.agentId ? 1 : 0, tg?.pool ? 1 : 0, labels ? 1 : 0].reduce((a, b) => a + b, 0);
  if (!tg || set !== 1) {
    throw new SwitchboardError(
      Code.INVALID_ARGUMENT,
      "a task needs exactly one target: an agent id, a pool, or labels",
    );
  }
  const target: Target = tg.agentId ? { agentId: tg.agentId } : tg.pool ? { pool: tg.pool } : { labels };
  const spec = req.spec;
  const kind = spec?.kind?.$case;
  if (!spec || !kind) throw new SwitchboardError(Code.INVALID_ARGUMENT, "a task needs a spec: echo or shell");
  if (spec.kind?.$case === "shell") {
    const sh = spec.kind.value;
    const hasArgv = sh.argv.length > 0;
    const hasScript = sh.script.length > 0;
    if (hasArgv === hasScript) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        "a shell task needs either argv or a script, not both and not neither",
      );
    }
    if (hasArgv && !sh.argv[0])
      throw new SwitchboardError(Code.INVALID_ARGUMENT, "a shell task's argv[0] must name a program");
  }
  return { kind, target, spec };
}

/** How long the agent may take to stop a task once asked: its kill grace, or a container's stop timeout. */
function stopGrace(spec: TaskSpec): number {
  if (spec.kind?.$case === "shell" && spec.kind.value.killGraceMs > 0) return spec.kind.value.killGraceMs;
  if (spec.kind?.$case === "docker") return (spec.kind.value.stopTimeoutSecs || 10) * 1000;
  return 5_000;
}
