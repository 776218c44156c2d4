// What a client asks of nodes: spawn one or a batch (placed, then started on its agent; a spawn without
// an answer is cancelled there), stop, status, list and logs. A stop while the agent is offline is
// recorded and carried out when it reconnects.
import { raceSignal } from "../../common/race-signal.js";
import { randomUUID } from "node:crypto";
import { Code, shownName, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { NodeSpawn, type NodeLogChunk } from "../../gen/switchboard/v1/agent.js";
import type {
  ListNodesRequest,
  NodeBatchItem,
  NodeInfo,
  NodeLogsRequest,
  SpawnNodeRequest,
  StopNodeRequest,
} from "../../gen/switchboard/v1/client.js";
import { NodeRecord } from "../../gen/switchboard/v1/node.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { Principal } from "../auth.js";
import type { HubConfig } from "../config.js";
import { AgentRefusal, Retryable, type NodeCommands } from "./node-commands.js";
import type { NodePlacement } from "./node-placement.js";
import type { HubNode, NodeRegistry } from "./node-registry.js";

const MAX_LOG_BYTES = 1024 * 1024;
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

export class NodeOperations {
  constructor(
    private readonly agents: AgentRegistry,
    private readonly nodes: NodeRegistry,
    private readonly commands: NodeCommands,
    private readonly placement: NodePlacement,
    private readonly config: HubConfig["nodes"],
    private readonly log: Logger,
  ) {}

  async spawn(p: Principal, req: SpawnNodeRequest, signal?: AbortSignal): Promise<NodeInfo> {
    const nodeId = req.nodeId.trim() || `node-${randomUUID()}`;
    const previous = this.nodes.get(nodeId);
    const spec = this.spawnSpec(nodeId, req, previous);
    const agentId = req.agentId
      ? await this.placement.agentWithSlot(p, req.agentId)
      : this.placement.place(p, req.labels, req.pool);
    const now = Date.now();
    const node: HubNode = {
      row: {
        id: nodeId,
        agentId,
        desired: "running",
        spec: NodeSpawn.encode(spec).finish(),
        record: null,
        recordAt: null,
        reschedule: req.reschedule,
        pool: req.pool,
        labels: req.labels,
        createdAt: now,
        updatedAt: now,
      },
      spec,
      record: undefined,
      busy: true,
    };
    // Registered before anything is awaited: the next placement (of a batch, or a concurrent spawn)
    // counts this node's slot.
    this.nodes.set(node);
    this.log.info(
      { node_id: nodeId, agent_id: agentId, port: req.port },
      "forwarding a node spawn to its agent",
    );
    // Once the hub gives up on this spawn, a broken link must not make it send the spawn again.
    const giveUp = new AbortController();
    const onAbort = (): void => giveUp.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const reply = await untilAborted(this.commands.spawnOn(agentId, spec, giveUp.signal), signal);
      node.busy = false;
      await this.nodes.save(node);
      const n = reply.nodes[0];
      this.log.info(
        { node_id: nodeId, agent_id: agentId, pid: n?.pid, port: n?.port },
        "agent spawned the node",
      );
      this.nodes.audit(p.name, "node.spawn", nodeId, { agent: agentId, port: n?.port ?? req.port });
      return this.nodes.info(node, false);
    } catch (err) {
      if (this.nodes.get(nodeId) !== node) throw err;
      // The agent refused: it started nothing, and nothing is recorded (a stopped node of the same id
      // stays as it was).
      if (err instanceof AgentRefusal) {
        await this.nodes.unregister(node, previous);
        throw err;
      }
      // No answer in time, or the caller went away: the agent may be starting it still.
      giveUp.abort();
      throw await this.cancelSpawn(p, node, previous, err);
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** The NodeSpawn of a request, checked as far as the hub can. */
  private spawnSpec(nodeId: string, req: SpawnNodeRequest, previous: HubNode | undefined): NodeSpawn {
    if (!NODE_ID.test(nodeId)) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `node id ${shownName(nodeId)}: use 1-128 letters, digits and . _ : @ -`,
      );
    }
    if (previous && (previous.row.desired === "running" || previous.busy)) {
      throw new SwitchboardError(Code.ALREADY_EXISTS, `node ${nodeId} exists`);
    }
    if (req.storagePath.split(/[\\/]/).includes("..")) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `storage path ${shownName(req.storagePath)}: ".." is not allowed`,
      );
    }
    if (req.port > 65_535)
      throw new SwitchboardError(Code.INVALID_ARGUMENT, `port ${req.port}: expected 1 to 65535`);
    return {
      nodeId,
      storagePath: req.storagePath,
      port: req.port,
      memoryLimitMb: req.memoryLimitMb,
      args: req.args,
      env: req.env,
      binary: req.binary,
      copyFrom: "",
    };
  }

  /**
   * A spawn without an answer (its deadline passed, the link broke for good, or its caller went away):
   * the agent may still be starting the node, so it is stopped and forgotten there, and nothing stays
   * recorded. When the agent cannot be reached for that, the registry keeps the node once, wanted
   * stopped, and the reconcile on the agent's return stops it. The error says which of the two happened.
   */
  private async cancelSpawn(
    p: Principal,
    node: HubNode,
    previous: HubNode | undefined,
    cause: unknown,
  ): Promise<SwitchboardError> {
    const agentId = node.row.agentId;
    const code = cause instanceof SwitchboardError ? cause.code : Code.INTERNAL;
    const why = cause instanceof Error ? cause.message : String(cause);
    node.row.desired = "stopped";
    await this.nodes.save(node);
    try {
      await this.commands
        .command(
          agentId,
          { $case: "stop", value: { nodeId: node.row.id, graceMs: 0, forget: true } },
          this.config.stopTimeoutMs,
        )
        .catch((err: unknown) => {
          if (err instanceof AgentRefusal && err.code === Code.NOT_FOUND) return undefined;
          throw err;
        });
    } catch (err) {
      node.busy = false;
      // Shown as starting until the agent says otherwise (stopping, while it is offline).
      node.record ??= NodeRecord.fromPartial({
        nodeId: node.row.id,
        status: "starting",
        port: node.spec.port,
        storagePath: node.spec.storagePath,
      });
      await this.nodes.save(node);
      this.log.warn(
        { node_id: node.row.id, agent_id: agentId, err: (err as Error).message },
        "a spawn without an answer could not be cancelled: the node is stopped when its agent returns",
      );
      this.nodes.audit(p.name, "node.spawn_cancel", node.row.id, { agent: agentId, done: false, why });
      return new SwitchboardError(
        code,
        `${why}; agent ${shownName(agentId)} could not be reached to cancel the spawn: node ${node.row.id} is recorded as stopped, and stopped there when the agent reconnects`,
      );
    }
    await this.nodes.unregister(node, previous);
    this.log.warn(
      { node_id: node.row.id, agent_id: agentId, why },
      "a spawn without an answer was cancelled",
    );
    this.nodes.audit(p.name, "node.spawn_cancel", node.row.id, { agent: agentId, done: true, why });
    return new SwitchboardError(
      code,
      `${why}; the spawn was cancelled on agent ${shownName(agentId)}: nothing is left running`,
    );
  }

  /**
   * Several spawns. Each is placed in turn (its node registered before the next is placed, so limits
   * hold across the batch) and they run in parallel. Atomic: every item is placed on paper first, and
   * when one cannot be, none is started; when one fails to start, the ones started are stopped again.
   */
  async spawnMany(
    p: Principal,
    reqs: readonly SpawnNodeRequest[],
    atomic: boolean,
    signal?: AbortSignal,
  ): Promise<NodeBatchItem[]> {
    if (atomic) {
      const refused = await this.planBatch(p, reqs);
      const first = refused.findIndex((e) => e !== undefined);
      if (first >= 0) {
        const reason = refused[first]!;
        return reqs.map((req, i) => {
          const own = refused[i];
          if (own) return batchError(own, req.nodeId);
          return {
            node: undefined,
            code: Code.ABORTED,
            errorMessage: `not started: node #${first + 1} of the atomic batch cannot be placed (${reason.message})`,
            nodeId: req.nodeId,
          };
        });
      }
    }
    const started: Promise<NodeBatchItem>[] = [];
    for (const req of reqs) {
      started.push(
        this.spawn(p, req, signal).then(
          (node) => ({ node, code: 0, errorMessage: "", nodeId: node.nodeId }),
          (err: unknown) => batchError(err, req.nodeId),
        ),
      );
      await Promise.resolve();
    }
    const items = await Promise.all(started);
    if (atomic && items.some((i) => i.code !== 0)) {
      for (const i of items) {
        if (i.code !== 0 || !i.node) continue;
        await this.stop(p, { nodeId: i.nodeId, agentId: "", graceMs: 0 }).catch(() => undefined);
        i.code = Code.ABORTED;
        i.errorMessage = "stopped again: another node of the atomic batch failed";
        i.node = undefined;
      }
    }
    return items;
  }

  /** Where each item of a batch would go, counting the items before it: an error for those that fit nowhere. */
  private async planBatch(
    p: Principal,
    reqs: readonly SpawnNodeRequest[],
  ): Promise<(SwitchboardError | undefined)[]> {
    const planned = new Map<string, number>();
    const ids = new Set<string>();
    const planOne = async (req: SpawnNodeRequest): Promise<SwitchboardError | undefined> => {
      try {
        const nodeId = req.nodeId.trim();
        if (nodeId) {
          if (ids.has(nodeId))
            throw new SwitchboardError(Code.INVALID_ARGUMENT, `node id ${nodeId} is twice in the batch`);
          ids.add(nodeId);
        }
        this.spawnSpec(nodeId || "node-planned", req, nodeId ? this.nodes.get(nodeId) : undefined);
        const agentId = req.agentId
          ? await this.placement.agentWithSlot(p, req.agentId, planned.get(req.agentId) ?? 0)
          : this.placement.place(p, req.labels, req.pool, planned);
        planned.set(agentId, (planned.get(agentId) ?? 0) + 1);
        return undefined;
      } catch (err) {
        return err instanceof SwitchboardError ? err : new SwitchboardError(Code.INTERNAL, String(err));
      }
    };
    const refused: (SwitchboardError | undefined)[] = [];
    // One after the other: each counts the slots the ones before it planned.
    for (const req of reqs) refused.push(await planOne(req));
    return refused;
  }

  /**
   * Stops a node. While its agent is offline the stop is recorded (the registry wants it stopped), the
   * answer shows it `stopping`, and the agent stops it when it reconnects (sessionOpened reconciles).
   */
  async stop(p: Principal, req: StopNodeRequest): Promise<NodeInfo> {
    const node = this.nodes.require(req.nodeId);
    if (req.agentId && req.agentId !== node.row.agentId) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `node ${node.row.id} runs on agent ${node.row.agentId}, not ${shownName(req.agentId)}`,
      );
    }
    await this.placement.knownAgent(p, node.row.agentId);
    if (node.busy) {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `node ${node.row.id} is busy with another operation (a spawn or a migration): try again when it ends`,
      );
    }
    node.row.desired = "stopped";
    await this.nodes.save(node);
    if (!this.agents.get(node.row.agentId)?.connected) {
      return this.stopPending(p, node);
    }
    node.busy = true;
    try {
      await this.commands
        .withRetries(node.row.agentId, this.config.stopTimeoutMs, (remaining) =>
          this.commands.commandOnce(
            node.row.agentId,
            { $case: "stop", value: { nodeId: node.row.id, graceMs: req.graceMs, forget: false } },
            remaining,
          ),
        )
        .catch((err: unknown) => {
          // The agent no longer knows it: it is not running there, which is what was asked.
          if (err instanceof AgentRefusal && err.code === Code.NOT_FOUND) {
            if (node.record) node.record = { ...node.record, status: "stopped", pid: 0 };
            return undefined;
          }
          throw err;
        });
    } catch (err) {
      // The agent went away under the stop: it is carried out when the agent returns.
      if (err instanceof Retryable && !this.agents.get(node.row.agentId)?.connected) {
        return this.stopPending(p, node);
      }
      throw err;
    } finally {
      node.busy = false;
    }
    await this.nodes.save(node);
    this.nodes.audit(p.name, "node.stop", node.row.id, { agent: node.row.agentId });
    return this.nodes.info(node, false);
  }

  private stopPending(p: Principal, node: HubNode): Promise<NodeInfo> {
    this.log.info(
      { node_id: node.row.id, agent_id: node.row.agentId },
      "stop pending: the node is stopped when its agent reconnects",
    );
    this.nodes.audit(p.name, "node.stop", node.row.id, { agent: node.row.agentId, pending: true });
    return this.nodes.info(node, true);
  }

  async stopMany(p: Principal, reqs: readonly StopNodeRequest[]): Promise<NodeBatchItem[]> {
    return Promise.all(
      reqs.map((r) =>
        this.stop(p, r).then(
          (node) => ({ node, code: 0, errorMessage: "", nodeId: node.nodeId }),
          (err: unknown) => batchError(err, r.nodeId),
        ),
      ),
    );
  }

  /** Live from the agent; its cached record marked stale when the agent cannot be asked. */
  async status(p: Principal, nodeId: string): Promise<NodeInfo> {
    const node = this.nodes.require(nodeId);
    await this.nodes.visible(p, node);
    const s = this.agents.get(node.row.agentId);
    if (!s?.connected) return this.nodes.info(node, true);
    try {
      await this.commands.commandOnce(
        node.row.agentId,
        { $case: "status", value: { nodeId } },
        this.config.statusTimeoutMs,
      );
      return this.nodes.info(node, false);
    } catch (err) {
      if (err instanceof SwitchboardError && err.code === Code.NOT_FOUND) {
        return this.nodes.info(node, false, "stopped");
      }
      if (
        err instanceof SwitchboardError &&
        err.code !== Code.DEADLINE_EXCEEDED &&
        err.code !== Code.UNAVAILABLE
      ) {
        throw err;
      }
      return this.nodes.info(node, true);
    }
  }

  async list(p: Principal, req: ListNodesRequest): Promise<NodeInfo[]> {
    if (req.agentId && (await this.agents.poolOf(req.agentId)) === undefined) {
      throw new SwitchboardError(Code.NOT_FOUND, `no agent ${shownName(req.agentId)} is known to this hub`);
    }
    const out: NodeInfo[] = [];
    for (const node of this.nodes.all()) {
      if (req.agentId && node.row.agentId !== req.agentId) continue;
      if (!(await this.nodes.poolVisible(p, node))) continue;
      const info = await this.nodes.info(node, !this.agents.get(node.row.agentId)?.connected);
      // Stopped ones only when asked for; a stop still pending is listed (as stopping).
      if (!req.includeStopped && node.row.desired === "stopped" && info.record?.status === "stopped")
        continue;
      out.push(info);
    }
    return out;
  }

  async logs(p: Principal, req: NodeLogsRequest): Promise<NodeLogChunk> {
    const node = this.nodes.require(req.nodeId);
    await this.nodes.visible(p, node);
    this.placement.connectedSession(node.row.agentId);
    const reply = await this.commands.commandOnce(
      node.row.agentId,
      {
        $case: "logs",
        value: {
          nodeId: node.row.id,
          stderr: req.stderr,
          offset: req.offset,
          maxBytes: Math.min(MAX_LOG_BYTES, req.maxBytes || 64 * 1024),
        },
      },
      this.config.statusTimeoutMs,
    );
    return reply.logs ?? { data: Buffer.alloc(0), offset: 0, size: 0, rotated: false };
  }
}

/** The promise's outcome, or a CANCELLED error once the signal fires (the caller went away). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  return raceSignal(p, signal, () => {
    throw new SwitchboardError(Code.CANCELLED, "the caller went away before the node was started");
  });
}

function batchError(err: unknown, nodeId: string): NodeBatchItem {
  return {
    node: undefined,
    code: err instanceof SwitchboardError ? err.code : Code.INTERNAL,
    errorMessage: err instanceof Error ? err.message : String(err),
    nodeId,
  };
}
