// The hub's heart: agent sessions, the scheduler, tasks while they live, and the store. The gRPC
// services are thin adapters over this class; it never touches a socket itself except through
// AgentSession.send and the watchers that services attach.
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { Code, shownName, SwitchboardError } from "../common/errors.js";
import { newSessionId, newTaskId } from "../common/ids.js";
import type { Logger } from "../common/logger.js";
import { isTerminal, stateFromWire, stateToWire, type TaskStateName } from "../common/task-state.js";
import { VERSION } from "../common/version.js";
import type {
  AgentMessage,
  AgentTaskEvent,
  Hello,
  HubMessage,
  ResumeResult,
} from "../gen/switchboard/v1/agent.js";
import type { SubmitRequest } from "../gen/switchboard/v1/client.js";
import {
  OutputStream,
  TaskSpec,
  type Finished,
  type TaskEvent,
  type TaskInfo,
  type TaskResult,
} from "../gen/switchboard/v1/task.js";
import { NodeOrchestrator } from "./nodes.js";
import { TaskInputQueue } from "./task-input.js";
import { auditShellSession } from "./shell-sessions.js";
import { AgentSession } from "./agent-session.js";
import { agentIdClaim, poolAllowed, type Principal, type TokenAuthority } from "./auth.js";
import type { HubConfig } from "./config.js";
import { LiveTask, type FinishInfo, type Watcher } from "./live-task.js";
import { describeTarget, Scheduler, type Target } from "./scheduler.js";
import {
  writeFailureSentence,
  type AgentRecord,
  type Store,
  type StoreWriteFailure,
  type TaskRecord,
} from "./store/index.js";

/** How long a finished task stays in memory for clients that re-attach with a sequence number. */
const LINGER_MS = 30_000;
const HELLO_TIMEOUT_MS = 10_000;
const MAX_ID = 128;
const EMPTY = Buffer.alloc(0);

/** Generated messages carry bytes as Buffer; views over the same memory cost nothing. */
function asBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

export interface ClientStream {
  principal: Principal;
  end(code: number, details: string): void;
}

export class HubCore {
  readonly sessions = new Map<string, AgentSession>();
  readonly tasks = new Map<string, LiveTask>();
  readonly scheduler: Scheduler;
  readonly startedAt = Date.now();
  readonly clientStreams = new Set<ClientStream>();
  readonly nodes: NodeOrchestrator;
  /** Input on its way to running tasks (Input RPC), by task id. */
  private readonly inputs = new Map<string, TaskInputQueue>();
  draining = false;
  private lingering: { id: string; at: number }[] = [];
  private lingerHead = 0;
  private tickTimer: NodeJS.Timeout | undefined;
  private readonly agentPersistedAt = new Map<string, number>();
  private warnedUnknownEvent = new WeakSet<AgentSession>();
  /**
   * Assignments on their way to the store, each with the store's commit count when it was
   * written: its Assign goes out once a later commit has happened (see assign()).
   */
  private unsentAssigns: { t: LiveTask; after: number }[] = [];
  private awaitingCommit = false;

  constructor(
    readonly config: HubConfig,
    readonly store: Store,
    readonly auth: TokenAuthority,
    readonly logger: Logger,
  ) {
    this.scheduler = new Scheduler(config.queueLimit);
    this.nodes = new NodeOrchestrator(this);
    auth.onRevoke((tokenId) => this.onRevoke(tokenId));
    store.onWriteFailureChange((failure) => this.onStoreWriteFailure(failure));
  }

  start(): void {
    this.tickTimer = setInterval(() => this.tick(), 1000);
    this.tickTimer.unref();
  }

  // ---- submission ---------------------------------------------------------------------------

  async submit(p: Principal, req: SubmitRequest): Promise<LiveTask> {
    if (this.draining) {
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
    const { kind, target, spec } = validateSubmit(req);
    if (target.pool && !poolAllowed(p, target.pool)) {
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `token ${p.name} may not reach pool ${target.pool} (scoped to ${p.pools.join(", ")})`,
      );
    }
    if (target.agentId && p.pools.length > 0) {
      const pool = this.sessions.get(target.agentId)?.pool ?? this.store.getAgent(target.agentId)?.pool;
      if (pool !== undefined && !poolAllowed(p, pool)) {
        throw new SwitchboardError(
          Code.PERMISSION_DENIED,
          `token ${p.name} may not reach agent ${target.agentId} in pool ${pool}`,
        );
      }
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
    const session = "assign" in decision ? this.sessions.get(decision.assign)! : undefined;
    this.tasks.set(id, t);
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
    if (session) this.assign(t, session, { at: now, recorded: true });
    try {
      await inserted;
    } catch (err) {
      // Not accepted: nothing of it may remain, and no agent has heard of it.
      this.tasks.delete(id);
      if (t.assignPending) this.unassign(t, { record: false });
      this.scheduler.remove(id);
      throw err;
    }
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
        const s = t.agentId ? this.sessions.get(t.agentId) : undefined;
        if (s && s.sessionId === t.sessionId && s.connected)
          s.send({ body: { $case: "window", value: { taskId: id, bytes, grantedTotal: t.outputGranted } } });
        else t.unsentWindow += bytes; // the link is down: granted when the agent resumes
      },
    );
    return t;
  }

  /**
   * Gives a task to an agent. The assignment is written first and the Assign goes out only once
   * that write has committed (sendCommittedAssigns): a restarted hub requeues only tasks its store
   * shows queued, so a task that may have reached an agent must never be on record as queued.
   * The write shares the group commit of whatever else this turn wrote (a new task's insert
   * carries it itself: `recorded`), so this costs no commit of its own.
   */
  private assign(t: LiveTask, session: AgentSession, opts: { at?: number; recorded?: boolean } = {}): void {
    if (!session.tasks.has(t.id)) session.noteAssigned(t.id);
    const now = opts.at ?? Date.now();
    t.transition("assigned");
    t.agentId = session.agentId;
    t.sessionId = session.sessionId;
    t.assignedAt = now;
    t.assignPending = true;
    if (!opts.recorded)
      this.store.updateTask(t.id, { state: "assigned", agentId: session.agentId, assignedAt: now });
    this.unsentAssigns.push({ t, after: this.store.commitCount });
    this.awaitCommitForAssigns();
  }

  private awaitCommitForAssigns(): void {
    if (this.awaitingCommit) return;
    this.awaitingCommit = true;
    this.store.committed().then(
      () => {
        this.awaitingCommit = false;
        this.sendCommittedAssigns();
      },
      () => {
        // The store closed: nothing it did not commit may go out.
        this.awaitingCommit = false;
      },
    );
  }

  /** Sends the Assigns whose record has committed; the rest wait for the next commit. */
  private sendCommittedAssigns(): void {
    const committed = this.store.commitCount;
    const rest: { t: LiveTask; after: number }[] = [];
    for (const u of this.unsentAssigns) {
      if (!u.t.assignPending) continue; // taken back meanwhile
      if (u.after < committed) this.sendAssign(u.t);
      else rest.push(u);
    }
    this.unsentAssigns = rest;
    if (rest.length > 0) this.awaitCommitForAssigns();
  }

  private sendAssign(t: LiveTask): void {
    if (t.terminal) return;
    const session = t.agentId ? this.sessions.get(t.agentId) : undefined;
    // The link broke meanwhile: the session's resume or its end takes the task back, unsent.
    if (!session || session.sessionId !== t.sessionId || !session.connected) return;
    t.assignPending = false;
    session.send({
      body: {
        $case: "assign",
        value: { taskId: t.id, spec: t.spec, deadlineMs: t.deadlineAt ?? 0, requester: t.requester },
      },
    });
    t.emit({
      $case: "assigned",
      value: { agentId: session.agentId, assignedAtMs: t.assignedAt ?? Date.now() },
    });
  }

  /**
   * Takes back an assignment its agent never received (its Assign was never sent, or the agent
   * resumed without it): the task is queued again, and so is its record unless `record` is false
   * (a task that was never accepted). The caller puts it back in a queue or ends it.
   */
  private unassign(t: LiveTask, opts: { record?: boolean } = {}): void {
    const s = t.agentId ? this.sessions.get(t.agentId) : undefined;
    if (s && s.sessionId === t.sessionId && s.tasks.delete(t.id)) {
      s.assignedTotal--; // the agent never used the credit
      s.refreshFree();
    }
    const announced = !t.assignPending; // watchers saw Assigned
    t.assignPending = false;
    t.transition("queued");
    t.agentId = null;
    t.sessionId = null;
    t.assignedAt = null;
    if (opts.record ?? true)
      this.store.updateTask(t.id, { state: "queued", agentId: null, assignedAt: null });
    if (announced) t.emit({ $case: "queued", value: { queuedAtMs: Date.now() } });
  }

  /** The store could not write, or writes again: work held back while it could not goes out. */
  private onStoreWriteFailure(failure: StoreWriteFailure | undefined): void {
    // While it fails, submit() refuses and dispatch() hands nothing out; both look at the store.
    if (failure) return;
    for (const s of [...this.sessions.values()]) this.dispatch(s);
  }

  /** Hand queued work to an agent that has capacity. */
  private dispatch(session: AgentSession): void {
    // While the store cannot record an assignment, none is made: queued work stays queued.
    if (session.closed || this.store.writeFailure) return;
    for (const { task } of this.scheduler.drainQueuesFor(session.agentId)) {
      const t = this.tasks.get(task.id);
      if (!t || t.terminal) {
        session.sched.free++;
        continue;
      }
      this.assign(t, session);
    }
  }

  private armDeadline(t: LiveTask): void {
    const ms = Math.max(0, (t.deadlineAt ?? 0) - Date.now());
    t.deadlineTimer = setTimeout(() => this.onDeadline(t), ms);
    t.deadlineTimer.unref();
  }

  private onDeadline(t: LiveTask): void {
    if (t.terminal) return;
    const budget = t.deadlineAt! - t.createdAt;
    if (t.assignPending) this.unassign(t); // its agent never heard of it: it ends here
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
    const s = t.agentId ? this.sessions.get(t.agentId) : undefined;
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

  cancel(p: Principal, taskId: string, reason: string): TaskStateName {
    const t = this.tasks.get(taskId);
    if (!t) {
      const rec = this.store.getTask(taskId);
      if (!rec)
        throw new SwitchboardError(Code.NOT_FOUND, `no task ${shownName(taskId)}: see switchboard tasks`);
      return rec.state;
    }
    if (t.terminal) return t.state;
    if (p.pools.length > 0) {
      const pool = t.target.pool ?? (t.agentId ? this.sessions.get(t.agentId)?.pool : undefined);
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
    if (t.assignPending) this.unassign(t); // its agent never heard of it: it ends here
    if (t.state === "queued") {
      this.scheduler.remove(t.id);
      this.finishLocal(t, "cancelled", Code.CANCELLED, why);
      return t.state;
    }
    t.cancelReason = why;
    const s = t.agentId ? this.sessions.get(t.agentId) : undefined;
    s?.send({ body: { $case: "cancel", value: { taskId: t.id, reason: why, graceMs: 0 } } });
    return t.state;
  }

  // ---- task outcomes ------------------------------------------------------------------------

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
    if (t.agentId) {
      const s = this.sessions.get(t.agentId);
      if (s && s.sessionId === t.sessionId && s.tasks.delete(t.id)) s.completedTotal++;
    }
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
    this.lingering.push({ id: t.id, at: now });
  }

  // ---- agent sessions -----------------------------------------------------------------------

  /** Whether an agent of the pool that runs this kind of task is connected now. */
  hasConnectedAgent(pool: string, kind: string): boolean {
    for (const s of this.sessions.values()) {
      if (s.pool === pool && s.connected && s.sched.kinds.has(kind)) return true;
    }
    return false;
  }

  /**
   * Serve one agent's Connect stream from Hello to its end (authenticated: by a bridge that did it;
   * resumable false: a bridge whose agents cannot resume a session, so their tasks end with the stream).
   */
  connect(
    call: ServerDuplexStream<AgentMessage, HubMessage>,
    authenticated?: Principal,
    opts: { resumable?: boolean } = {},
  ): void {
    let principal: Principal;
    try {
      principal = authenticated ?? this.auth.requireAgent(call.metadata);
    } catch (err) {
      endCall(call, err);
      return;
    }
    let session: AgentSession | undefined;
    const helloTimer = setTimeout(
      () =>
        endCall(
          call,
          new SwitchboardError(
            Code.INVALID_ARGUMENT,
            `no Hello within ${HELLO_TIMEOUT_MS / 1000}s: the first message must be Hello`,
          ),
        ),
      HELLO_TIMEOUT_MS,
    );
    call.on("data", (msg: AgentMessage) => {
      try {
        if (!session) {
          if (msg.body?.$case !== "hello") {
            throw new SwitchboardError(
              Code.INVALID_ARGUMENT,
              "the first message on the agent stream must be Hello",
            );
          }
          clearTimeout(helloTimer);
          session = this.openSession(call, principal, msg.body.value);
          if (opts.resumable === false) session.resumable = false;
          return;
        }
        if (msg.body?.$case === "batch") {
          for (const m of msg.body.value.messages) {
            if (m.body?.$case === "batch" || m.body?.$case === "hello") {
              throw new SwitchboardError(Code.INVALID_ARGUMENT, `a batch may not hold ${m.body.$case}`);
            }
            this.onAgentMessage(session, m);
          }
        } else {
          this.onAgentMessage(session, msg);
        }
        // What this message brought is acknowledged in the same write as the replies to it.
        if (session.eventsReceived !== session.eventsAcked && !session.closed) session.sendAck();
      } catch (err) {
        clearTimeout(helloTimer);
        this.logger.warn({ agent_id: session?.agentId, err: (err as Error).message }, "agent stream refused");
        if (session) this.closeSession(session, (err as Error).message);
        endCall(call, err);
      }
    });
    const onGone = (why: string) => () => {
      clearTimeout(helloTimer);
      if (session) this.streamGone(session, why);
    };
    call.on("end", () => {
      onGone("the agent closed its stream")();
      if (session) session.end();
      else endCall(call, new SwitchboardError(Code.INVALID_ARGUMENT, "the stream ended before Hello"));
    });
    call.on("error", (e: Error) => onGone(`stream error: ${e.message}`)());
    call.on("cancelled", onGone("the connection dropped"));
    call.on("close", onGone("the connection closed"));
  }

  private openSession(
    call: ServerDuplexStream<AgentMessage, HubMessage>,
    p: Principal,
    hello: Hello,
  ): AgentSession {
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
    const claim = agentIdClaim(p, agentId, pool, this.store.getAgent(agentId), (id) =>
      this.store.findToken(id),
    );
    if (claim !== "new" && claim !== "owner") {
      this.logger.warn(
        { agent_id: agentId, pool, token: p.name, claim },
        "agent id claimed by another token",
      );
    }
    const existing = this.sessions.get(agentId);
    const resume = hello.resume;
    const sameInstance = hello.instanceId !== "" && hello.instanceId === existing?.hello.instanceId;
    if (existing && !existing.closed && resume && resume.sessionId === existing.sessionId && sameInstance) {
      return this.resumeSession(call, p, { ...hello, agentId, pool }, existing);
    }
    if (existing && !existing.closed && existing.detachedAt !== undefined) {
      // The agent came back as a new process (or without its session): what the old one ran is gone.
      this.closeSession(
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
      this.closeSession(existing, why);
      existing.end(Code.ABORTED, why);
    }
    const session = new AgentSession(newSessionId(), { ...hello, agentId, pool }, p, call);
    this.sessions.set(agentId, session);
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
    this.sendWelcome(session, resumeResult);
    this.persistAgent(session, true);
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

  private sendWelcome(s: AgentSession, resume: ResumeResult | undefined): void {
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
    for (const [taskId, q] of this.inputs) {
      if (this.tasks.get(taskId)?.agentId !== s.agentId) continue;
      if (resume?.resumed) q.resend();
      q.pump();
    }
  }

  /**
   * The agent is back with the session whose stream broke: a new session takes over its tasks
   * (fencing the old stream, if the hub still had it open) and tells the agent how many of its
   * events arrived, so it re-sends exactly the rest.
   */
  private resumeSession(
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
    this.sessions.set(agentId, session);
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
    this.sendWelcome(session, {
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
        this.unassign(t);
        this.scheduler.requeue({ id: t.id, kind: t.kind, target: t.target, allowedPools: t.allowedPools });
      } else {
        this.finishLocal(
          t,
          "lost",
          Code.ABORTED,
          `agent ${agentId} resumed its session without this task (it no longer runs there)`,
        );
      }
    }
    this.persistAgent(session, true);
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
  private streamGone(s: AgentSession, why: string): void {
    if (s.closed || s.detachedAt !== undefined) return;
    if (!s.resumable || this.config.resumeGraceMs <= 0 || s.tasks.size === 0 || s.leaving || this.draining) {
      this.closeSession(s, why);
      return;
    }
    s.detachedAt = Date.now();
    s.detachedWhy = why;
    s.streamGone();
    this.nodes.sessionClosed(s);
    this.scheduler.removeAgent(s.agentId);
    s.evaluate(Date.now(), this.config.heartbeatIntervalMs);
    this.persistAgent(s, false);
    this.store.audit({
      at: Date.now(),
      actor: s.principal.name,
      action: "agent.disconnect",
      subject: s.agentId,
      detail: { session: s.sessionId, why, held_tasks: s.tasks.size },
    });
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

  private onAgentMessage(s: AgentSession, msg: AgentMessage): void {
    // A session that was closed (taken over, revoked, timed out) can no longer act.
    if (s.closed) return;
    s.lastSeenAt = Date.now();
    const body = msg.body;
    switch (body?.$case) {
      case "credits":
        if (s.grant(body.value.grantedTotal)) this.dispatch(s);
        return;
      case "heartbeat": {
        s.lastHeartbeat = body.value;
        if (body.value.nodes.length > 0) this.nodes.onHeartbeat(s, body.value.nodes);
        // No reply: the agent ignores hub heartbeats, and the probe sent once per interval already
        // reaches it; at 10,000 agents a reply to each would be 2,000 messages a second for nothing.
        this.reevaluate(s, Date.now());
        this.maybePersistAgent(s);
        return;
      }
      case "event": {
        const ev = body.value;
        const bytes = ev.event?.$case === "output" ? ev.event.value.data.length : 0;
        if (s.noteEvent(bytes)) s.sendAck();
        this.onAgentEvent(s, ev);
        return;
      }
      case "nodeReply":
        this.nodes.onReply(s, body.value);
        return;
      case "inputWindow": {
        const t = this.tasks.get(body.value.taskId);
        if (t && !t.terminal && t.agentId === s.agentId)
          this.inputFor(t).grant(body.value.bytes, body.value.received, body.value.grantedTotal);
        return;
      }
      case "probeReply": {
        if (s.probeAnswered(body.value.id)) this.reevaluate(s, Date.now());
        return;
      }
      case "goodbye":
        s.leaving = true;
        s.evaluate(Date.now(), this.config.heartbeatIntervalMs);
        this.logger.info({ agent_id: s.agentId, reason: body.value.reason }, "agent is leaving");
        return;
      case "hello":
        this.logger.warn({ agent_id: s.agentId }, "ignoring a second Hello on an open session");
        return;
      default:
        return;
    }
  }

  private onAgentEvent(s: AgentSession, ev: AgentTaskEvent): void {
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

  /** A session ended: its unfinished tasks are lost, clients are told. */
  closeSession(s: AgentSession, why: string): void {
    if (this.sessions.get(s.agentId) === s) {
      this.sessions.delete(s.agentId);
      this.scheduler.removeAgent(s.agentId);
    }
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
        this.unassign(t);
        this.scheduler.requeue({ id: t.id, kind: t.kind, target: t.target, allowedPools: t.allowedPools });
        continue;
      }
      this.finishLocal(
        t,
        "lost",
        Code.ABORTED,
        `agent ${s.agentId} disconnected while the task was running (${why})`,
      );
    }
    s.tasks.clear();
    this.persistAgent(s, false);
    this.store.audit({
      at: Date.now(),
      actor: s.principal.name,
      action: "agent.disconnect",
      subject: s.agentId,
      detail: { session: s.sessionId, why },
    });
    this.logger.info({ agent_id: s.agentId, session_id: s.sessionId, why }, "agent disconnected");
  }

  private persistAgent(s: AgentSession, connected: boolean): void {
    const prev = this.store.getAgent(s.agentId);
    const rec: AgentRecord = {
      id: s.agentId,
      pool: s.pool,
      labels: s.labels,
      hostname: s.hello.hostname,
      platform: s.hello.platform,
      version: s.hello.version,
      taskKinds: [...s.hello.taskKinds],
      maxConcurrency: s.hello.maxConcurrency,
      firstSeenAt: prev?.firstSeenAt ?? s.connectedAt,
      lastSeenAt: s.lastSeenAt,
      lastSessionId: s.sessionId,
      connected,
      // The session was admitted by agentIdClaim: its token is the id's owner from now on.
      tokenId: s.principal.tokenId,
    };
    this.store.upsertAgent(rec);
    this.agentPersistedAt.set(s.agentId, Date.now());
  }

  private maybePersistAgent(s: AgentSession): void {
    if (Date.now() - (this.agentPersistedAt.get(s.agentId) ?? 0) > 30_000) this.persistAgent(s, true);
  }

  private onRevoke(tokenId: string): void {
    for (const s of [...this.sessions.values()]) {
      if (s.principal.tokenId !== tokenId) continue;
      this.closeSession(s, "its token was revoked");
      s.end(Code.UNAUTHENTICATED, `token ${s.principal.name} was revoked`);
    }
    for (const c of [...this.clientStreams]) {
      if (c.principal.tokenId === tokenId)
        c.end(Code.UNAUTHENTICATED, `token ${c.principal.name} was revoked`);
    }
  }

  /** Health, offline detection and housekeeping, once a second. */
  tick(now = Date.now()): void {
    for (const s of [...this.sessions.values()]) {
      if (s.detachedAt !== undefined) {
        if (now - s.detachedAt >= this.config.resumeGraceMs) {
          this.closeSession(
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
    this.nodes.tick(now);
    while (this.lingerHead < this.lingering.length && this.lingering[this.lingerHead]!.at < now - LINGER_MS) {
      const { id } = this.lingering[this.lingerHead++]!;
      const t = this.tasks.get(id);
      if (t?.terminal) this.tasks.delete(id);
    }
    if (this.lingerHead > 4096) {
      this.lingering = this.lingering.slice(this.lingerHead);
      this.lingerHead = 0;
    }
  }

  /** Re-derives an agent's health; logs a change, and hands it work if it can take some again. */
  private reevaluate(s: AgentSession, now: number): void {
    const wasAccepting = s.sched.accepting;
    if (s.evaluate(now, this.config.heartbeatIntervalMs)) {
      this.logger.info(
        { agent_id: s.agentId, health: s.health, reason: s.healthReason },
        "agent health changed",
      );
    }
    if (!wasAccepting && s.sched.accepting) this.dispatch(s);
  }

  // ---- task input ---------------------------------------------------------------------------

  /** The input queue of a live task (made on first use, dropped when the task ends). */
  inputFor(t: LiveTask): TaskInputQueue {
    let q = this.inputs.get(t.id);
    if (!q) {
      const queue = new TaskInputQueue((m) => {
        const s = t.agentId ? this.sessions.get(t.agentId) : undefined;
        if (!s?.connected || t.terminal) return false;
        s.send({ body: { $case: "input", value: m } });
        return true;
      });
      q = queue;
      this.inputs.set(t.id, q);
      if (t.terminal) q.close();
      else
        t.onFinish(() => {
          queue.close();
          this.inputs.delete(t.id);
        });
    }
    return q;
  }

  // ---- reading tasks ------------------------------------------------------------------------

  taskInfo(t: LiveTask): TaskInfo {
    const f = t.finish;
    return toInfo(
      {
        id: t.id,
        kind: t.kind,
        target: t.target,
        state: t.state,
        agentId: t.agentId,
        requester: t.requester,
        createdAt: t.createdAt,
        assignedAt: t.assignedAt,
        startedAt: t.startedAt,
        finishedAt: t.finishedAt,
        deadlineAt: t.deadlineAt,
        exitCode: f?.exitCode ?? null,
        signal: f?.signal ?? null,
        errorCode: f?.errorCode ?? null,
        errorMessage: f?.errorMessage ?? null,
        reason: f?.reason ?? null,
        durationMs: f?.durationMs ?? null,
        stdoutBytes: t.stdoutBytes,
        stderrBytes: t.stderrBytes,
      },
      t.spec,
    );
  }

  recordInfo(r: TaskRecord, withSpec: boolean): TaskInfo {
    return toInfo(r, withSpec ? safeDecodeSpec(r.spec) : undefined);
  }

  /** The whole result of a task, live or stored. */
  /**
   * Refuses a principal scoped to pools a task outside them: the pool it was aimed at, or the
   * pool of the agent it ran on. Unscoped principals see every task.
   */
  assertTaskVisible(p: Principal, taskId: string): void {
    if (p.pools.length === 0) return;
    const t = this.tasks.get(taskId);
    let pool: string | undefined;
    let agentId: string | null = null;
    if (t) {
      pool = t.target.pool || undefined;
      agentId = t.agentId;
    } else {
      const rec = this.store.getTask(taskId);
      if (!rec) return; // NOT_FOUND comes from the call itself
      pool = rec.target.pool;
      agentId = rec.agentId;
    }
    pool ??= agentId ? (this.sessions.get(agentId)?.pool ?? this.store.getAgent(agentId)?.pool) : undefined;
    if (pool === undefined || !poolAllowed(p, pool)) {
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `token ${p.name} may not see task ${taskId} (scoped to pools ${p.pools.join(", ")})`,
      );
    }
  }

  result(taskId: string): TaskResult {
    const t = this.tasks.get(taskId);
    if (t) return this.liveResult(t);
    const rec = this.store.getTask(taskId);
    if (!rec)
      throw new SwitchboardError(Code.NOT_FOUND, `no task ${shownName(taskId)}: see switchboard tasks`);
    const out = rec.stdoutBytes + rec.stderrBytes > 0 ? this.storedOutput(taskId) : undefined;
    return {
      info: this.recordInfo(rec, true),
      stdout: out?.stdout ?? EMPTY,
      stderr: out?.stderr ?? EMPTY,
      result: rec.result ? asBuffer(rec.result) : EMPTY,
      outputTruncated: out?.truncated ?? false,
    };
  }

  liveResult(t: LiveTask): TaskResult {
    const out = t.stdoutBytes + t.stderrBytes > 0 ? this.storedOutput(t.id) : undefined;
    return {
      info: this.taskInfo(t),
      stdout: out?.stdout ?? EMPTY,
      stderr: out?.stderr ?? EMPTY,
      result: t.finish?.result ? asBuffer(t.finish.result) : EMPTY,
      outputTruncated: out?.truncated ?? false,
    };
  }

  private storedOutput(id: string): { stdout: Buffer; stderr: Buffer; truncated: boolean } {
    const o = this.store.getOutput(id);
    return {
      stdout: Buffer.concat([o.stdout.head, o.stdout.tail]),
      stderr: Buffer.concat([o.stderr.head, o.stderr.tail]),
      truncated: o.stdout.droppedBytes + o.stderr.droppedBytes > 0,
    };
  }

  /**
   * Attach a watcher to a task, replaying events after `afterSeq`. A live (or recently finished)
   * task replays from memory with the numbering clients saw live; an older task is replayed
   * from the store as Queued(1), Assigned(2), Started(3), its kept output chunks, Finished.
   * Returns false when the task is already finished (everything has been delivered).
   */
  watch(taskId: string, afterSeq: number, w: Watcher): boolean {
    const t = this.tasks.get(taskId);
    if (t) {
      t.attach(w, afterSeq);
      return !t.terminal;
    }
    const rec = this.store.getTask(taskId);
    if (!rec)
      throw new SwitchboardError(Code.NOT_FOUND, `no task ${shownName(taskId)}: see switchboard tasks`);
    for (const ev of this.replayFromStore(rec)) if (ev.seq > afterSeq) w.deliver(ev, () => undefined);
    return !isTerminal(rec.state);
  }

  private *replayFromStore(r: TaskRecord): Iterable<TaskEvent> {
    let seq = 0;
    const ev = (event: TaskEvent["event"], gapBytes = 0): TaskEvent => ({
      taskId: r.id,
      seq: ++seq,
      event,
      gapBytes,
    });
    yield ev({ $case: "queued", value: { queuedAtMs: r.createdAt } });
    if (r.agentId)
      yield ev({ $case: "assigned", value: { agentId: r.agentId, assignedAtMs: r.assignedAt ?? 0 } });
    if (r.startedAt) yield ev({ $case: "started", value: { startedAtMs: r.startedAt, pid: 0 } });
    if (r.stdoutBytes + r.stderrBytes > 0) {
      for (const c of this.store.getOutput(r.id).chunks) {
        const stream =
          c.stream === "stderr" ? OutputStream.OUTPUT_STREAM_STDERR : OutputStream.OUTPUT_STREAM_STDOUT;
        yield ev({ $case: "output", value: { stream, data: asBuffer(c.data) } }, c.gapBefore);
      }
    }
    if (isTerminal(r.state)) {
      yield ev({
        $case: "finished",
        value: {
          state: stateToWire(r.state),
          exitCode: r.exitCode ?? -1,
          signal: r.signal ?? "",
          error: r.errorCode !== null ? { code: r.errorCode, message: r.errorMessage ?? "" } : undefined,
          durationMs: r.durationMs ?? 0,
          result: r.result ? asBuffer(r.result) : EMPTY,
          reason: r.reason ?? "",
        },
      });
    }
  }

  // ---- recovery and shutdown -----------------------------------------------------------------

  /** After a restart: nothing accepted goes missing. */
  recover(): { requeued: number; lost: number } {
    this.store.markAllAgentsDisconnected();
    let requeued = 0;
    let lost = 0;
    const now = Date.now();
    for (const r of this.store.listUnfinishedTasks()) {
      if (r.state === "queued" && (r.deadlineAt === null || r.deadlineAt > now)) {
        const spec = safeDecodeSpec(r.spec);
        // A task without a deadline gets a bounded wait for its agents to come back.
        const deadline = r.deadlineAt ?? now + 2 * this.config.offlineAfterMs;
        const t = this.newLiveTask(
          r.id,
          r.kind,
          spec,
          r.target,
          r.requester,
          [],
          r.createdAt,
          deadline,
          true,
        );
        t.emit({ $case: "queued", value: { queuedAtMs: r.createdAt } });
        this.tasks.set(r.id, t);
        this.scheduler.requeue({ id: r.id, kind: r.kind, target: r.target, allowedPools: [] });
        this.armDeadline(t);
        requeued++;
        continue;
      }
      // Assigned or running: it may have run on its agent (an assignment is on record before its
      // Assign is sent), so it never runs again.
      const reason =
        r.state === "queued"
          ? "its deadline passed while the hub was down"
          : `hub restarted while the task was on agent ${r.agentId ?? "(none)"}: it may have run there, so it is not run again`;
      this.store.updateTask(r.id, {
        state: r.state === "queued" ? "timed_out" : "lost",
        finishedAt: now,
        errorCode: r.state === "queued" ? Code.DEADLINE_EXCEEDED : Code.ABORTED,
        errorMessage: reason,
        reason,
      });
      lost++;
    }
    if (requeued + lost > 0) this.logger.info({ requeued, lost }, "recovered unfinished tasks");
    return { requeued, lost };
  }

  /** Tasks on agents now (an assignment whose Assign has not gone out is not on an agent yet). */
  inFlight(): number {
    let n = 0;
    for (const t of this.tasks.values()) if (onAgent(t)) n++;
    return n;
  }

  async shutdown(graceMs: number): Promise<void> {
    this.draining = true;
    this.logger.info(
      { in_flight: this.inFlight(), grace_ms: graceMs },
      "draining: no new work; waiting for running tasks",
    );
    const deadline = Date.now() + graceMs;
    // Idle agents go at once, busy ones as soon as their last task ends: an agent that knows
    // other hubs moves to the next one while this one finishes its work.
    const handedOver = new Set<AgentSession>();
    const handOverIdle = (): void => {
      for (const s of [...this.sessions.values()]) {
        if (s.tasks.size > 0 || handedOver.has(s)) continue;
        handedOver.add(s);
        s.send({ body: { $case: "drain", value: { reason: "hub shutting down" } } });
        this.closeSession(s, "hub shut down");
        s.end();
      }
    };
    handOverIdle();
    while (this.inFlight() > 0 && Date.now() < deadline) {
      await sleep(50);
      handOverIdle();
    }
    // Assignments not sent yet are not among them: closing the sessions below queues them again.
    const left = [...this.tasks.values()].filter(onAgent);
    if (left.length > 0) {
      this.logger.warn({ tasks: left.length }, "grace over: cancelling what still runs");
      for (const t of left) {
        t.cancelReason = "hub shut down";
        const s = t.agentId ? this.sessions.get(t.agentId) : undefined;
        s?.send({ body: { $case: "cancel", value: { taskId: t.id, reason: "hub shut down", graceMs: 0 } } });
      }
      const stopBy = Date.now() + 5_000;
      while (left.some((t) => !t.terminal) && Date.now() < stopBy) await sleep(50);
      for (const t of left)
        if (!t.terminal) this.finishLocal(t, "cancelled", Code.CANCELLED, "hub shut down");
    }
    clearInterval(this.tickTimer);
    for (const s of [...this.sessions.values()]) {
      s.send({ body: { $case: "drain", value: { reason: "hub shutting down" } } });
      this.closeSession(s, "hub shut down");
      s.end();
    }
    for (const c of [...this.clientStreams]) {
      c.end(
        Code.UNAVAILABLE,
        "hub shut down: queued tasks stay queued and run when it is back; watch them again then",
      );
    }
    for (const t of this.tasks.values()) clearTimeout(t.deadlineTimer);
  }
}

function onAgent(t: LiveTask): boolean {
  return (t.state === "assigned" && !t.assignPending) || t.state === "running";
}

/** A task as the wire describes it, from what the hub knows of it live or stored. */
function toInfo(r: Omit<TaskRecord, "spec" | "result">, spec: TaskSpec | undefined): TaskInfo {
  return {
    taskId: r.id,
    kind: r.kind,
    target: { agentId: r.target.agentId ?? "", pool: r.target.pool ?? "", labels: r.target.labels ?? {} },
    state: stateToWire(r.state),
    agentId: r.agentId ?? "",
    requester: r.requester,
    createdAtMs: r.createdAt,
    assignedAtMs: r.assignedAt ?? 0,
    startedAtMs: r.startedAt ?? 0,
    finishedAtMs: r.finishedAt ?? 0,
    exitCode: r.exitCode ?? -1,
    signal: r.signal ?? "",
    error: r.errorCode !== null ? { code: r.errorCode, message: r.errorMessage ?? "" } : undefined,
    reason: r.reason ?? "",
    durationMs: r.durationMs ?? 0,
    deadlineMs: r.deadlineAt ?? 0,
    stdoutBytes: r.stdoutBytes,
    stderrBytes: r.stderrBytes,
    spec,
  };
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

function safeDecodeSpec(bytes: Uint8Array): TaskSpec {
  try {
    return TaskSpec.decode(bytes);
  } catch {
    return { kind: undefined };
  }
}

/** How long the agent may take to stop a task once asked: its kill grace, or a container's stop timeout. */
function stopGrace(spec: TaskSpec): number {
  if (spec.kind?.$case === "shell" && spec.kind.value.killGraceMs > 0) return spec.kind.value.killGraceMs;
  if (spec.kind?.$case === "docker") return (spec.kind.value.stopTimeoutSecs || 10) * 1000;
  return 5_000;
}

function endCall(call: ServerDuplexStream<AgentMessage, HubMessage>, err: unknown): void {
  const code = err instanceof SwitchboardError ? err.code : Code.INTERNAL;
  const details = err instanceof Error ? err.message : String(err);
  try {
    call.emit("error", Object.assign(new Error(details), { code, details }));
  } catch {
    // the stream is already gone
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
