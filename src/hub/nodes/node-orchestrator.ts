// Supervised nodes across agents. The hub's registry says what should run where (intent, persisted);
// each agent says what does (reality, in its Hello, heartbeats and change reports). This orchestrator
// is their face to the hub: it composes the registry, the command channel to agents, placement,
// reconciliation, the client's operations and migration, and hands each hook and call to its part.
import type { Logger } from "../../common/logger.js";
import type { NodeLogChunk, NodeReply } from "../../gen/switchboard/v1/agent.js";
import type {
  ListNodesRequest,
  MigrateNodeRequest,
  NodeBatchItem,
  NodeInfo,
  NodeLogsRequest,
  SpawnNodeRequest,
  StopNodeRequest,
} from "../../gen/switchboard/v1/client.js";
import type { NodeRecord } from "../../gen/switchboard/v1/node.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { AgentSession } from "../agents/agent-session.js";
import type { Principal } from "../auth.js";
import type { HubConfig } from "../config.js";
import { NodeCommands } from "./node-commands.js";
import type { TaskRunner } from "./node-data-transfer.js";
import { NodeMigration } from "./node-migration.js";
import { NodeOperations } from "./node-operations.js";
import { NodePlacement } from "./node-placement.js";
import { NodeReconciler } from "./node-reconcile.js";
import { NodeRegistry } from "./node-registry.js";
import type { Store } from "../store/index.js";

/** What the orchestrator needs of the hub: its agents, config and store, and file tasks (migrations). */
export interface NodeHubView extends TaskRunner {
  readonly agents: AgentRegistry;
  readonly config: HubConfig;
  readonly store: Store;
  readonly logger: Logger;
}

export class NodeOrchestrator {
  private readonly registry: NodeRegistry;
  private readonly commands: NodeCommands;
  private readonly reconciler: NodeReconciler;
  private readonly operations: NodeOperations;
  private readonly migration: NodeMigration;

  constructor(hub: NodeHubView) {
    const { agents, store, logger } = hub;
    const config = hub.config.nodes;
    this.registry = new NodeRegistry(store, agents, logger);
    this.commands = new NodeCommands(agents, config, logger);
    const placement = new NodePlacement(store, agents, this.registry);
    this.reconciler = new NodeReconciler(agents, this.registry, this.commands, placement, config, logger);
    this.operations = new NodeOperations(agents, this.registry, this.commands, placement, config, logger);
    this.migration = new NodeMigration(agents, this.registry, this.commands, placement, hub, config, logger);
  }

  /** At hub start, before any agent connects: the registry as stored. */
  load(): Promise<void> {
    return this.registry.load();
  }

  // ---- hooks from the hub ------------------------------------------------------------------

  /** A session opened (Welcome sent): reconcile the registry with what the agent runs. */
  sessionOpened(s: AgentSession): void {
    this.reconciler.sessionOpened(s);
  }

  /** A session ended: commands in flight on it fail (and are retried on the agent's next session). */
  sessionClosed(s: AgentSession): void {
    this.reconciler.sessionClosed(s);
    this.commands.sessionClosed(s);
  }

  onHeartbeat(s: AgentSession, nodes: readonly NodeRecord[]): void {
    for (const n of nodes) this.registry.observe(s.agentId, n, false);
  }

  onReply(s: AgentSession, reply: NodeReply): void {
    if (reply.id === 0) {
      for (const n of reply.nodes) this.registry.observe(s.agentId, n, true);
      return;
    }
    const settle = this.commands.claim(s, reply);
    if (!settle) return;
    for (const n of reply.nodes) this.registry.observe(s.agentId, n, false);
    settle(reply);
  }

  /** Once a second: reschedule nodes whose agent stayed offline past the timeout. */
  tick(now = Date.now()): void {
    this.reconciler.tick(now);
  }

  // ---- operations --------------------------------------------------------------------------

  spawn(p: Principal, req: SpawnNodeRequest, signal?: AbortSignal): Promise<NodeInfo> {
    return this.operations.spawn(p, req, signal);
  }

  spawnMany(
    p: Principal,
    reqs: readonly SpawnNodeRequest[],
    atomic: boolean,
    signal?: AbortSignal,
  ): Promise<NodeBatchItem[]> {
    return this.operations.spawnMany(p, reqs, atomic, signal);
  }

  stop(p: Principal, req: StopNodeRequest): Promise<NodeInfo> {
    return this.operations.stop(p, req);
  }

  stopMany(p: Principal, reqs: readonly StopNodeRequest[]): Promise<NodeBatchItem[]> {
    return this.operations.stopMany(p, reqs);
  }

  status(p: Principal, nodeId: string): Promise<NodeInfo> {
    return this.operations.status(p, nodeId);
  }

  list(p: Principal, req: ListNodesRequest): Promise<NodeInfo[]> {
    return this.operations.list(p, req);
  }

  logs(p: Principal, req: NodeLogsRequest): Promise<NodeLogChunk> {
    return this.operations.logs(p, req);
  }

  migrate(p: Principal, req: MigrateNodeRequest): Promise<NodeInfo> {
    return this.migration.migrate(p, req);
  }

  /** Counts for cluster status and its one-line summary. */
  summary(): { total: number; running: number; unhealthy: number } {
    return this.registry.summary();
  }

  /** Nodes the registry wants running on an agent: its used slots. */
  slotsUsed(agentId: string): number {
    return this.registry.slotsUsed(agentId);
  }
}
