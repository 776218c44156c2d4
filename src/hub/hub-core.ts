// The hub's heart, composed of its parts: the agents' sessions (AgentRegistry, SessionLifecycle,
// AgentLink), the tasks while they live (TaskTable, TaskLifecycle, TaskDispatch, TaskInputs,
// TaskReader), the scheduler, the supervised nodes and the store. The gRPC services are thin adapters
// over this class, which only wires the parts together and hands each call to the part that owns it.
import type { ServerDuplexStream } from "@grpc/grpc-js";
import { Code, SwitchboardError } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import { isTerminal, type TaskStateName } from "../common/task-state.js";
import type { AgentMessage, HubMessage } from "../gen/switchboard/v1/agent.js";
import type { SubmitRequest } from "../gen/switchboard/v1/client.js";
import type { TaskInfo, TaskResult } from "../gen/switchboard/v1/task.js";
import { AgentLink } from "./agents/agent-link.js";
import type { ClusterMember, HubLoad } from "./cluster/cluster-member.js";
import { AgentRegistry } from "./agents/agent-registry.js";
import type { AgentSession } from "./agents/agent-session.js";
import type { Principal, TokenAuthority } from "./auth.js";
import { ClientStreams } from "./client-streams.js";
import type { HubConfig } from "./config.js";
import { drain } from "./drain.js";
import type { LiveTask, Watcher } from "./tasks/live-task.js";
import { NodeOrchestrator } from "./nodes/node-orchestrator.js";
import { recoverTasks, settleUnfinished } from "./recovery.js";
import { Scheduler } from "./scheduler.js";
import { SessionLifecycle } from "./agents/session-lifecycle.js";
import type { Store, TaskRecord } from "./store/index.js";
import { TaskDispatch } from "./tasks/task-dispatch.js";
import { TaskInputs, type TaskInputQueue } from "./tasks/task-input.js";
import { TaskLifecycle } from "./tasks/task-lifecycle.js";
import { TaskReader } from "./tasks/task-reader.js";
import { TaskTable } from "./tasks/task-table.js";

export class HubCore {
  readonly startedAt = Date.now();
  readonly scheduler: Scheduler;
  readonly agents: AgentRegistry;
  readonly tasks = new TaskTable();
  readonly clientStreams = new ClientStreams();
  readonly nodes: NodeOrchestrator;
  private readonly dispatch: TaskDispatch;
  private readonly lifecycle: TaskLifecycle;
  private readonly inputs: TaskInputs;
  private readonly reader: TaskReader;
  private readonly sessions: SessionLifecycle;
  private readonly link: AgentLink;
  private isDraining = false;
  /** This hub's membership of a cluster of hubs (cluster.nats); undefined: a hub alone. */
  cluster: ClusterMember | undefined;
  private tickTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly config: HubConfig,
    readonly store: Store,
    readonly auth: TokenAuthority,
    readonly logger: Logger,
  ) {
    const draining = (): boolean => this.isDraining;
    this.scheduler = new Scheduler(config.queueLimit);
    this.agents = new AgentRegistry(store);
    this.nodes = new NodeOrchestrator(this);
    this.dispatch = new TaskDispatch(store, this.agents, this.tasks, this.scheduler);
    this.lifecycle = new TaskLifecycle(
      config,
      store,
      logger,
      this.agents,
      this.tasks,
      this.scheduler,
      this.dispatch,
      draining,
    );
    this.inputs = new TaskInputs(this.agents);
    this.reader = new TaskReader(store, this.agents, this.tasks);
    this.sessions = new SessionLifecycle(
      config,
      store,
      logger,
      this.agents,
      this.tasks,
      this.scheduler,
      this.dispatch,
      this.lifecycle,
      this.inputs,
      this.nodes,
      draining,
    );
    this.link = new AgentLink(
      config,
      auth,
      logger,
      this.agents,
      this.tasks,
      this.sessions,
      this.dispatch,
      this.lifecycle,
      this.inputs,
      this.nodes,
    );
    auth.onRevoke((tokenId) => this.onRevoke(tokenId));
  }

  /** What the hub holds now, for its lease row in a cluster. */
  load(): HubLoad {
    return {
      agents: this.agents.connectedCount(),
      clients: this.clientStreams.size,
      tasksInFlight: this.tasks.inFlight(),
      draining: this.isDraining,
    };
  }

  /**
   * The unfinished tasks of a hub of the cluster that is gone, now this hub's: queued ones wait
   * here, those that were on an agent end lost (they may have run; they never run twice).
   */
  adoptTasksOf(gone: string, records: TaskRecord[]): void {
    const { requeued, lost } = settleUnfinished(
      this.config,
      this.store,
      this.lifecycle,
      records,
      (agentId) =>
        `hub ${gone} that held the task is gone, with the task on agent ${agentId ?? "(none)"}: it may have run there, so it is not run again`,
    );
    this.logger.warn({ hub_id: gone, requeued, lost }, "took on the unfinished tasks of a hub that is gone");
    // The agents here are connected already: they take what was queued now.
    if (requeued > 0) for (const s of this.agents.all()) if (s.connected) this.dispatch.dispatch(s);
  }

  /** Whether the hub is draining (shutdown began): it takes no new work. */
  get draining(): boolean {
    return this.isDraining;
  }

  start(): void {
    this.tickTimer = setInterval(() => this.tick(), 1000);
    this.tickTimer.unref();
  }

  /** Health, offline detection and housekeeping, once a second. */
  tick(now = Date.now()): void {
    this.sessions.tick(now);
    this.nodes.tick(now);
    this.tasks.sweep(now);
  }

  // ---- tasks ---------------------------------------------------------------------------------

  /**
   * Accepts a task. In a cluster, a task for an agent another hub holds goes through that hub
   * (cluster/task-relay.ts), and this hub relays its events.
   */
  async submit(p: Principal, req: SubmitRequest): Promise<LiveTask> {
    const agentId = req.target?.agentId;
    const relay = this.cluster?.relay;
    if (relay && agentId && !this.agents.has(agentId) && !this.isDraining) {
      const t = await relay.forward(p, req, agentId, { agentId });
      if (t) return t;
    } else if (relay && !agentId && !this.isDraining && req.spec?.kind) {
      // A pool's or labels' task: here while this hub has room, else where the agents have most.
      const tg = req.target;
      const target = tg?.pool ? { pool: tg.pool } : { labels: tg?.labels ?? {} };
      const task = { id: "", kind: req.spec.kind.$case, target, allowedPools: p.pools };
      const here = this.scheduler.capacity(task);
      if (here === undefined || here === 0) {
        const t = await relay.forwardToBest(p, req, task, here, this.cluster!.otherLiveHubs);
        if (t) return t;
      }
    }
    return this.lifecycle.submit(p, req);
  }

  /** Accepts a task here, never through another hub (what a relayed submission does). */
  submitHere(p: Principal, req: SubmitRequest): Promise<LiveTask> {
    return this.lifecycle.submit(p, req);
  }

  cancel(p: Principal, taskId: string, reason: string): Promise<TaskStateName> {
    const t = this.tasks.get(taskId);
    if (t?.remoteHub !== undefined && !t.terminal && this.cluster)
      return this.cluster.relay.cancelRemote(p, t, reason);
    return this.lifecycle.cancel(p, taskId, reason);
  }

  /** The input queue of a live task (made on first use, dropped when the task ends). */
  inputFor(t: LiveTask): TaskInputQueue {
    if (t.remoteHub !== undefined) {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `task ${t.id} runs on hub ${t.remoteHub} of the cluster; input to it through another hub is not supported yet: send it through hub ${t.remoteHub}`,
      );
    }
    return this.inputs.inputFor(t);
  }

  taskInfo(t: LiveTask): TaskInfo {
    return this.reader.taskInfo(t);
  }

  recordInfo(r: TaskRecord, withSpec: boolean): TaskInfo {
    return this.reader.recordInfo(r, withSpec);
  }

  assertTaskVisible(p: Principal, taskId: string): Promise<void> {
    return this.reader.assertTaskVisible(p, taskId);
  }

  result(taskId: string): Promise<TaskResult> {
    return this.reader.result(taskId);
  }

  liveResult(t: LiveTask): Promise<TaskResult> {
    return this.reader.liveResult(t);
  }

  /**
   * Attaches a watcher to a task. In a cluster, a task that another hub runs now is followed
   * through it (its events relayed from the first), as `p`.
   */
  async watch(p: Principal, taskId: string, afterSeq: number, w: Watcher): Promise<boolean> {
    const relay = this.cluster?.relay;
    if (relay && !this.tasks.get(taskId)) {
      const rec = await this.store.getTask(taskId);
      if (rec && !isTerminal(rec.state) && rec.agentId && !this.agents.has(rec.agentId)) {
        const t = await relay.follow(p, rec);
        if (t) {
          t.attach(w, afterSeq);
          return !t.terminal;
        }
      }
    }
    return this.reader.watch(taskId, afterSeq, w);
  }

  detach(taskId: string, w: Watcher): void {
    this.reader.detach(taskId, w);
  }

  // ---- agents --------------------------------------------------------------------------------

  /**
   * Serve one agent's Connect stream from Hello to its end (authenticated: by a bridge that did it;
   * resumable false: a bridge whose agents cannot resume a session, so their tasks end with the stream).
   */
  connect(
    call: ServerDuplexStream<AgentMessage, HubMessage>,
    authenticated?: Principal,
    opts: { resumable?: boolean } = {},
  ): void {
    this.link.connect(call, authenticated, opts);
  }

  /** A session ended: its unfinished tasks are lost, clients are told. */
  closeSession(s: AgentSession, why: string): void {
    this.sessions.close(s, why);
  }

  private onRevoke(tokenId: string): void {
    this.sessions.revoke(tokenId);
    this.clientStreams.endForToken(tokenId, Code.UNAUTHENTICATED, (name) => `token ${name} was revoked`);
  }

  // ---- recovery and shutdown -----------------------------------------------------------------

  /**
   * After a restart, before the hub serves: the node registry as stored, and nothing accepted goes
   * missing.
   */
  async recover(): Promise<{ requeued: number; lost: number }> {
    await this.nodes.load();
    return recoverTasks(this.config, this.store, this.logger, this.lifecycle);
  }

  /** Tasks on agents now (an assignment whose Assign has not gone out is not on an agent yet). */
  inFlight(): number {
    return this.tasks.inFlight();
  }

  async shutdown(graceMs: number): Promise<void> {
    this.isDraining = true;
    // The other hubs see this one draining at once, not at its next renewal.
    void this.cluster?.renewNow();
    await drain(
      {
        logger: this.logger,
        agents: this.agents,
        tasks: this.tasks,
        sessions: this.sessions,
        lifecycle: this.lifecycle,
        clientStreams: this.clientStreams,
        stopTick: () => clearInterval(this.tickTimer),
      },
      graceMs,
    );
  }
}
