// The hub's registry of supervised nodes: what should run where (intent: the agent, wanted running or
// stopped, its spawn spec) and the last record its agent reported (reality), persisted in the store.
// Every other part of the orchestrator reads and changes nodes through this registry.
import { Code, shownName, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { NodeSpawn } from "../../gen/switchboard/v1/agent.js";
import type { NodeInfo } from "../../gen/switchboard/v1/client.js";
import { NodeRecord } from "../../gen/switchboard/v1/node.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { AgentSession } from "../agents/agent-session.js";
import { poolAllowed, type Principal } from "../auth.js";
import type { NodeRow, Store } from "../store/index.js";

export interface HubNode {
  row: NodeRow;
  spec: NodeSpawn;
  record: NodeRecord | undefined;
  /** A spawn, stop or migration in progress: reconcile and rescheduling leave it alone. */
  busy: boolean;
}

export class NodeRegistry {
  private readonly nodes = new Map<string, HubNode>();

  constructor(
    private readonly store: Store,
    private readonly agents: AgentRegistry,
    private readonly log: Logger,
  ) {}

  /** At hub start, before any agent connects: the registry as stored. */
  async load(): Promise<void> {
    for (const row of await this.store.listNodes()) {
      this.nodes.set(row.id, {
        row,
        spec: NodeSpawn.decode(row.spec),
        record: row.record ? NodeRecord.decode(row.record) : undefined,
        busy: false,
      });
    }
  }

  get(nodeId: string): HubNode | undefined {
    return this.nodes.get(nodeId);
  }

  /** Every node, as a copy. */
  all(): HubNode[] {
    return [...this.nodes.values()];
  }

  /** Registers a node in memory (save() writes it). */
  set(node: HubNode): void {
    this.nodes.set(node.row.id, node);
  }

  /** Drops a node whose spawn left nothing on its agent; a stopped node of the same id comes back. */
  unregister(node: HubNode, previous: HubNode | undefined): Promise<void> {
    if (this.nodes.get(node.row.id) !== node) return Promise.resolve();
    if (previous) {
      this.nodes.set(node.row.id, previous);
      return this.save(previous);
    }
    this.nodes.delete(node.row.id);
    return this.store.deleteNode(node.row.id);
  }

  /** Counts for cluster status and its one-line summary. */
  summary(): { total: number; running: number; unhealthy: number } {
    let total = 0;
    let running = 0;
    let unhealthy = 0;
    for (const n of this.nodes.values()) {
      if (n.row.desired !== "running") continue;
      total++;
      const online = this.agents.get(n.row.agentId)?.connected ?? false;
      if (online && n.record?.status === "running") running++;
      else if (!online || n.record?.status === "crashed" || n.record?.status === "backoff") unhealthy++;
    }
    return { total, running, unhealthy };
  }

  /** Nodes the registry wants running on an agent: its used slots. */
  slotsUsed(agentId: string): number {
    let n = 0;
    for (const node of this.nodes.values())
      if (node.row.agentId === agentId && node.row.desired === "running") n++;
    return n;
  }

  /** The node, or NOT_FOUND. */
  require(nodeId: string): HubNode {
    const node = this.nodes.get(nodeId);
    if (!node)
      throw new SwitchboardError(Code.NOT_FOUND, `no node ${shownName(nodeId)} is known to this hub`);
    return node;
  }

  async poolVisible(p: Principal, node: HubNode): Promise<boolean> {
    const pool = await this.agents.poolOf(node.row.agentId);
    return pool === undefined || poolAllowed(p, pool);
  }

  /** NOT_FOUND for a node of a pool the caller may not see. */
  async visible(p: Principal, node: HubNode): Promise<void> {
    if (!(await this.poolVisible(p, node))) {
      throw new SwitchboardError(Code.NOT_FOUND, `no node ${shownName(node.row.id)} is known to this hub`);
    }
  }

  adopt(s: AgentSession, n: NodeRecord): void {
    const now = Date.now();
    const spec: NodeSpawn = {
      nodeId: n.nodeId,
      storagePath: n.storagePath,
      port: n.port,
      memoryLimitMb: n.memoryLimitMb,
      args: n.args,
      env: n.env,
      binary: "",
      copyFrom: "",
    };
    const node: HubNode = {
      row: {
        id: n.nodeId,
        agentId: s.agentId,
        desired: "running",
        spec: NodeSpawn.encode(spec).finish(),
        record: NodeRecord.encode(n).finish(),
        recordAt: now,
        reschedule: false,
        pool: "",
        labels: {},
        createdAt: now,
        updatedAt: now,
      },
      spec,
      record: n,
      busy: false,
    };
    this.nodes.set(n.nodeId, node);
    // A report the agent repeats: the registry in memory has the node already, the store at once.
    void this.save(node);
    this.audit("system", "node.adopt", n.nodeId, { agent: s.agentId });
    this.log.info({ node_id: n.nodeId, agent_id: s.agentId }, "registry adopted a node its agent runs");
  }

  /** A record from the agent: cached; persisted when its status, pid or restart count changed. */
  observe(agentId: string, n: NodeRecord, report: boolean): void {
    const node = this.nodes.get(n.nodeId);
    if (!node) {
      // A node started through the agent's local API while connected: adopt it.
      const s = this.agents.get(agentId);
      if (report && s && n.status !== "stopped") this.adopt(s, n);
      return;
    }
    if (node.row.agentId !== agentId) return; // a stale copy elsewhere: reconcile stops it
    const before = node.record;
    node.record = n;
    node.row.recordAt = Date.now();
    if (
      !before ||
      before.status !== n.status ||
      before.pid !== n.pid ||
      before.restartCount !== n.restartCount
    ) {
      if (report) {
        this.log.info(
          {
            node_id: n.nodeId,
            agent_id: agentId,
            status: n.status,
            restarts: n.restartCount,
            last_exit: n.lastExit,
          },
          "node changed",
        );
      }
      void this.save(node);
    }
  }

  /**
   * Writes the node's row (at once: the registry in memory changes first, the promise says when the
   * store has it).
   */
  save(node: HubNode): Promise<void> {
    node.row.record = node.record ? NodeRecord.encode(node.record).finish() : null;
    node.row.updatedAt = Date.now();
    return this.store.upsertNode(node.row);
  }

  audit(actor: string, action: string, subject: string, detail: Record<string, unknown>): void {
    this.store.audit({ at: Date.now(), actor, action, subject, detail });
  }

  async info(node: HubNode, stale: boolean, statusOverride?: string): Promise<NodeInfo> {
    const s = this.agents.get(node.row.agentId);
    const hostname =
      s?.hello.hostname ?? (await this.store.getAgent(node.row.agentId))?.hostname ?? node.row.agentId;
    const record: NodeRecord =
      node.record ??
      NodeRecord.fromPartial({
        nodeId: node.row.id,
        status: node.row.desired === "running" ? "starting" : "stopped",
        port: node.spec.port,
        storagePath: node.spec.storagePath,
      });
    // A stop the agent has not carried out yet (it is offline): what it will be is what it is doing.
    const pendingStop = stale && node.row.desired === "stopped" && record.status !== "stopped";
    const status = statusOverride ?? (pendingStop ? "stopping" : undefined);
    const shown = status ? { ...record, status } : record;
    return {
      nodeId: node.row.id,
      agentId: node.row.agentId,
      record: shown,
      desired: node.row.desired,
      stale,
      ageMs: node.row.recordAt ? Date.now() - node.row.recordAt : 0,
      endpoint: `${hostname}:${shown.port}`,
      reschedule: node.row.reschedule,
      labels: node.row.labels,
      createdAtMs: node.row.createdAt,
    };
  }
}
