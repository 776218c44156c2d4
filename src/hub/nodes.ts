// Supervised nodes across agents. The hub's registry says what should run where (intent, persisted);
// each agent says what does (reality, in its Hello, heartbeats and change reports). The two are
// reconciled on every (re)connect. Operations travel as NodeCommands over the agent's own stream, so
// the agent needs no inbound port; each is retried at 100, 200 and 400 ms when the stream breaks
// under it, and bounded by a per-operation deadline (spawn 30 s, stop 10 s, status 5 s by default).
import { randomUUID } from "node:crypto";
import { basename, isAbsolute } from "node:path";
import { Code, shownName, SwitchboardError } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import {
  NodeSpawn,
  type NodeCommand,
  type NodeLogChunk,
  type NodeReply,
} from "../gen/switchboard/v1/agent.js";
import type {
  ListNodesRequest,
  MigrateNodeRequest,
  NodeBatchItem,
  NodeInfo,
  NodeLogsRequest,
  SpawnNodeRequest,
  StopNodeRequest,
} from "../gen/switchboard/v1/client.js";
import { NodeRecord } from "../gen/switchboard/v1/node.js";
import type { AgentRegistry } from "./agent-registry.js";
import type { AgentSession } from "./agent-session.js";
import { poolAllowed, type Principal } from "./auth.js";
import type { HubConfig } from "./config.js";
import { transferNodeData, type TaskRunner } from "./node-data-transfer.js";
import type { NodeRow, Store } from "./store/index.js";

/** Delays between attempts when the agent's stream breaks under a command (seed 003). */
const RETRY_DELAYS_MS = [100, 200, 400];
const MAX_LOG_BYTES = 1024 * 1024;
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;
/** A migration's data transfer fails when no byte moved for this long. */
const TRANSFER_IDLE_MS = 60_000;

type Op = NonNullable<NodeCommand["op"]>;

/** What the orchestrator needs of the hub: its agents, config and store, and file tasks (migrations). */
export interface NodeHubView extends TaskRunner {
  readonly agents: AgentRegistry;
  readonly config: HubConfig;
  readonly store: Store;
  readonly logger: Logger;
}

interface HubNode {
  row: NodeRow;
  spec: NodeSpawn;
  record: NodeRecord | undefined;
  /** A spawn, stop or migration in progress: reconcile and rescheduling leave it alone. */
  busy: boolean;
}

interface Pending {
  agentId: string;
  session: AgentSession;
  resolve: (r: NodeReply) => void;
  reject: (e: Error) => void;
}

/** The link failed under a command (retried): the agent may or may not have acted on it. */
class Retryable extends SwitchboardError {}
/** The agent answered a command with an error: it did not act on it. */
class AgentRefusal extends SwitchboardError {}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class NodeOrchestrator {
  private readonly nodes = new Map<string, HubNode>();
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  /** When each agent was last seen going offline (or the hub's start, for agents not back yet). */
  private readonly offlineSince = new Map<string, number>();
  private readonly startedAt = Date.now();
  private rescheduling = false;

  constructor(private readonly hub: NodeHubView) {
    for (const row of hub.store.listNodes()) {
      this.nodes.set(row.id, {
        row,
        spec: NodeSpawn.decode(row.spec),
        record: row.record ? NodeRecord.decode(row.record) : undefined,
        busy: false,
      });
    }
  }

  private get log(): Logger {
    return this.hub.logger;
  }

  // ---- hooks from the hub ------------------------------------------------------------------

  /** A session opened (Welcome sent): reconcile the registry with what the agent runs. */
  sessionOpened(s: AgentSession): void {
    this.offlineSince.delete(s.agentId);
    const reality = new Map(s.hello.nodes.map((n) => [n.nodeId, n]));
    for (const n of s.hello.nodes) this.observe(s.agentId, n, false);
    const actions: Promise<unknown>[] = [];
    for (const [id, n] of reality) {
      const node = this.nodes.get(id);
      if (!node) {
        if (n.status === "stopped") continue;
        // Started through the agent's local API (or a registry lost with the hub's data): adopt it.
        this.adopt(s, n);
        continue;
      }
      if (node.busy) continue;
      if (node.row.agentId !== s.agentId) {
        if (n.status !== "stopped") {
          this.log.warn(
            { node_id: id, agent_id: s.agentId, now_on: node.row.agentId },
            "node runs on an agent it was moved away from: stopping that copy",
          );
        }
        actions.push(
          this.command(
            s.agentId,
            { $case: "stop", value: { nodeId: id, graceMs: 0, forget: true } },
            this.hub.config.nodes.stopTimeoutMs,
          ),
        );
        continue;
      }
      if (node.row.desired === "stopped" && n.status !== "stopped") {
        this.log.info({ node_id: id, agent_id: s.agentId }, "node should be stopped: stopping it");
        actions.push(
          this.command(
            s.agentId,
            { $case: "stop", value: { nodeId: id, graceMs: 0, forget: false } },
            this.hub.config.nodes.stopTimeoutMs,
          ),
        );
      } else if (node.row.desired === "running" && n.status === "stopped") {
        actions.push(this.restore(s.agentId, node, "it was stopped on the agent"));
      }
    }
    for (const node of this.nodes.values()) {
      if (node.row.agentId !== s.agentId || node.busy || reality.has(node.row.id)) continue;
      if (node.row.desired === "running") {
        actions.push(this.restore(s.agentId, node, "the agent does not know it"));
      } else if (node.record && node.record.status !== "stopped") {
        // A stop recorded while the agent was away, of a node it no longer has: done.
        node.record = { ...node.record, status: "stopped", pid: 0 };
        this.save(node);
      }
    }
    for (const a of actions) {
      a.catch((err: unknown) =>
        this.log.warn({ agent_id: s.agentId, err: (err as Error).message }, "node reconcile step failed"),
      );
    }
  }

  /** A session ended: commands in flight on it fail (and are retried on the agent's next session). */
  sessionClosed(s: AgentSession): void {
    if (this.hub.agents.get(s.agentId) === undefined || this.hub.agents.get(s.agentId) === s) {
      this.offlineSince.set(s.agentId, Date.now());
    }
    for (const [id, p] of this.pending) {
      if (p.session !== s) continue;
      this.pending.delete(id);
      p.reject(new Retryable(Code.UNAVAILABLE, `agent ${shownName(s.agentId)} disconnected`));
    }
  }

  onHeartbeat(s: AgentSession, nodes: readonly NodeRecord[]): void {
    for (const n of nodes) this.observe(s.agentId, n, false);
  }

  onReply(s: AgentSession, reply: NodeReply): void {
    if (reply.id === 0) {
      for (const n of reply.nodes) this.observe(s.agentId, n, true);
      return;
    }
    const p = this.pending.get(reply.id);
    if (!p || p.session !== s) return;
    this.pending.delete(reply.id);
    for (const n of reply.nodes) this.observe(s.agentId, n, false);
    p.resolve(reply);
  }

  /** Once a second: reschedule nodes whose agent stayed offline past the timeout. */
  tick(now = Date.now()): void {
    if (this.rescheduling) return;
    const after = this.hub.config.nodes.rescheduleAfterMs;
    const due = [...this.nodes.values()].filter((n) => {
      if (!n.row.reschedule || n.row.desired !== "running" || n.busy) return false;
      if (this.hub.agents.get(n.row.agentId)?.connected) return false;
      const since = this.offlineSince.get(n.row.agentId) ?? this.startedAt;
      return now - since >= after;
    });
    if (due.length === 0) return;
    this.rescheduling = true;
    void (async () => {
      for (const n of due) {
        try {
          await this.reschedule(n);
        } catch (err) {
          this.log.warn({ node_id: n.row.id, err: (err as Error).message }, "rescheduling the node failed");
        }
      }
    })().finally(() => (this.rescheduling = false));
  }

  // ---- operations --------------------------------------------------------------------------

  async spawn(p: Principal, req: SpawnNodeRequest, signal?: AbortSignal): Promise<NodeInfo> {
    const nodeId = req.nodeId.trim() || `node-${randomUUID()}`;
    const previous = this.nodes.get(nodeId);
    const spec = this.spawnSpec(nodeId, req, previous);
    const agentId = req.agentId ? this.agentWithSlot(p, req.agentId) : this.place(p, req.labels, req.pool);
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
    this.nodes.set(nodeId, node);
    this.log.info(
      { node_id: nodeId, agent_id: agentId, port: req.port },
      "forwarding a node spawn to its agent",
    );
    // Once the hub gives up on this spawn, a broken link must not make it send the spawn again.
    const giveUp = new AbortController();
    const onAbort = (): void => giveUp.abort();
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      const reply = await untilAborted(this.spawnOn(agentId, spec, giveUp.signal), signal);
      node.busy = false;
      this.save(node);
      const n = reply.nodes[0];
      this.log.info(
        { node_id: nodeId, agent_id: agentId, pid: n?.pid, port: n?.port },
        "agent spawned the node",
      );
      this.audit(p.name, "node.spawn", nodeId, { agent: agentId, port: n?.port ?? req.port });
      return this.info(node, false);
    } catch (err) {
      if (this.nodes.get(nodeId) !== node) throw err;
      // The agent refused: it started nothing, and nothing is recorded (a stopped node of the same id
      // stays as it was).
      if (err instanceof AgentRefusal) {
        this.unregister(node, previous);
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

  /** Drops a node whose spawn left nothing on its agent; a stopped node of the same id comes back. */
  private unregister(node: HubNode, previous: HubNode | undefined): void {
    if (this.nodes.get(node.row.id) !== node) return;
    if (previous) {
      this.nodes.set(node.row.id, previous);
      this.save(previous);
    } else {
      this.nodes.delete(node.row.id);
      this.hub.store.deleteNode(node.row.id);
    }
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
    this.save(node);
    try {
      await this.command(
        agentId,
        { $case: "stop", value: { nodeId: node.row.id, graceMs: 0, forget: true } },
        this.hub.config.nodes.stopTimeoutMs,
      ).catch((err: unknown) => {
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
      this.save(node);
      this.log.warn(
        { node_id: node.row.id, agent_id: agentId, err: (err as Error).message },
        "a spawn without an answer could not be cancelled: the node is stopped when its agent returns",
      );
      this.audit(p.name, "node.spawn_cancel", node.row.id, { agent: agentId, done: false, why });
      return new SwitchboardError(
        code,
        `${why}; agent ${shownName(agentId)} could not be reached to cancel the spawn: node ${node.row.id} is recorded as stopped, and stopped there when the agent reconnects`,
      );
    }
    this.unregister(node, previous);
    this.log.warn(
      { node_id: node.row.id, agent_id: agentId, why },
      "a spawn without an answer was cancelled",
    );
    this.audit(p.name, "node.spawn_cancel", node.row.id, { agent: agentId, done: true, why });
    return new SwitchboardError(
      code,
      `${why}; the spawn was cancelled on agent ${shownName(agentId)}: nothing is left running`,
    );
  }

  /**
   * Spawns the spec on the agent; a retry that finds the node already there takes it as started. No
   * attempt is made once `signal` fires.
   */
  private async spawnOn(agentId: string, spec: NodeSpawn, signal?: AbortSignal): Promise<NodeReply> {
    const timeout = this.hub.config.nodes.spawnTimeoutMs;
    let attempt = 0;
    return this.withRetries(agentId, timeout, async (remaining) => {
      if (signal?.aborted) {
        throw new SwitchboardError(Code.CANCELLED, `the spawn of node ${spec.nodeId} was given up`);
      }
      attempt++;
      try {
        return await this.commandOnce(agentId, { $case: "spawn", value: spec }, remaining, timeout);
      } catch (err) {
        if (attempt > 1 && err instanceof SwitchboardError && err.code === Code.ALREADY_EXISTS) {
          return this.commandOnce(agentId, { $case: "status", value: { nodeId: spec.nodeId } }, remaining);
        }
        throw err;
      }
    });
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
      const refused = this.planBatch(p, reqs);
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
  private planBatch(p: Principal, reqs: readonly SpawnNodeRequest[]): (SwitchboardError | undefined)[] {
    const planned = new Map<string, number>();
    const ids = new Set<string>();
    return reqs.map((req) => {
      try {
        const nodeId = req.nodeId.trim();
        if (nodeId) {
          if (ids.has(nodeId))
            throw new SwitchboardError(Code.INVALID_ARGUMENT, `node id ${nodeId} is twice in the batch`);
          ids.add(nodeId);
        }
        this.spawnSpec(nodeId || "node-planned", req, nodeId ? this.nodes.get(nodeId) : undefined);
        const agentId = req.agentId
          ? this.agentWithSlot(p, req.agentId, planned.get(req.agentId) ?? 0)
          : this.place(p, req.labels, req.pool, planned);
        planned.set(agentId, (planned.get(agentId) ?? 0) + 1);
        return undefined;
      } catch (err) {
        return err instanceof SwitchboardError ? err : new SwitchboardError(Code.INTERNAL, String(err));
      }
    });
  }

  /**
   * Stops a node. While its agent is offline the stop is recorded (the registry wants it stopped), the
   * answer shows it `stopping`, and the agent stops it when it reconnects (sessionOpened reconciles).
   */
  async stop(p: Principal, req: StopNodeRequest): Promise<NodeInfo> {
    const node = this.require(req.nodeId);
    if (req.agentId && req.agentId !== node.row.agentId) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `node ${node.row.id} runs on agent ${node.row.agentId}, not ${shownName(req.agentId)}`,
      );
    }
    this.knownAgent(p, node.row.agentId);
    if (node.busy) {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `node ${node.row.id} is busy with another operation (a spawn or a migration): try again when it ends`,
      );
    }
    node.row.desired = "stopped";
    this.save(node);
    if (!this.hub.agents.get(node.row.agentId)?.connected) {
      return this.stopPending(p, node);
    }
    node.busy = true;
    try {
      await this.withRetries(node.row.agentId, this.hub.config.nodes.stopTimeoutMs, (remaining) =>
        this.commandOnce(
          node.row.agentId,
          { $case: "stop", value: { nodeId: node.row.id, graceMs: req.graceMs, forget: false } },
          remaining,
        ),
      ).catch((err: unknown) => {
        // The agent no longer knows it: it is not running there, which is what was asked.
        if (err instanceof AgentRefusal && err.code === Code.NOT_FOUND) {
          if (node.record) node.record = { ...node.record, status: "stopped", pid: 0 };
          return undefined;
        }
        throw err;
      });
    } catch (err) {
      // The agent went away under the stop: it is carried out when the agent returns.
      if (err instanceof Retryable && !this.hub.agents.get(node.row.agentId)?.connected) {
        return this.stopPending(p, node);
      }
      throw err;
    } finally {
      node.busy = false;
    }
    this.save(node);
    this.audit(p.name, "node.stop", node.row.id, { agent: node.row.agentId });
    return this.info(node, false);
  }

  private stopPending(p: Principal, node: HubNode): NodeInfo {
    this.log.info(
      { node_id: node.row.id, agent_id: node.row.agentId },
      "stop pending: the node is stopped when its agent reconnects",
    );
    this.audit(p.name, "node.stop", node.row.id, { agent: node.row.agentId, pending: true });
    return this.info(node, true);
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
    const node = this.require(nodeId);
    this.visible(p, node);
    const s = this.hub.agents.get(node.row.agentId);
    if (!s?.connected) return this.info(node, true);
    try {
      await this.commandOnce(
        node.row.agentId,
        { $case: "status", value: { nodeId } },
        this.hub.config.nodes.statusTimeoutMs,
      );
      return this.info(node, false);
    } catch (err) {
      if (err instanceof SwitchboardError && err.code === Code.NOT_FOUND) {
        return this.info(node, false, "stopped");
      }
      if (
        err instanceof SwitchboardError &&
        err.code !== Code.DEADLINE_EXCEEDED &&
        err.code !== Code.UNAVAILABLE
      ) {
        throw err;
      }
      return this.info(node, true);
    }
  }

  list(p: Principal, req: ListNodesRequest): NodeInfo[] {
    if (req.agentId && !this.hub.agents.has(req.agentId) && !this.hub.store.getAgent(req.agentId)) {
      throw new SwitchboardError(Code.NOT_FOUND, `no agent ${shownName(req.agentId)} is known to this hub`);
    }
    const out: NodeInfo[] = [];
    for (const node of this.nodes.values()) {
      if (req.agentId && node.row.agentId !== req.agentId) continue;
      if (!this.poolVisible(p, node)) continue;
      const info = this.info(node, !this.hub.agents.get(node.row.agentId)?.connected);
      // Stopped ones only when asked for; a stop still pending is listed (as stopping).
      if (!req.includeStopped && node.row.desired === "stopped" && info.record?.status === "stopped")
        continue;
      out.push(info);
    }
    return out;
  }

  async logs(p: Principal, req: NodeLogsRequest): Promise<NodeLogChunk> {
    const node = this.require(req.nodeId);
    this.visible(p, node);
    this.connectedSession(node.row.agentId);
    const reply = await this.commandOnce(
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
      this.hub.config.nodes.statusTimeoutMs,
    );
    return reply.logs ?? { data: Buffer.alloc(0), offset: 0, size: 0, rotated: false };
  }

  /**
   * Moves a node to another agent. Everything that can be checked is checked before anything is stopped,
   * so that a migration that cannot work leaves the node running where it is: the target's own checks of
   * the spawn (node id, slot, binary, port, storage path; a `check` command that starts nothing) and,
   * with copy_data, that the data can move. Without copy_data: start on the target, wait until it runs,
   * then stop the old one. With copy_data: stop the old one (a consistent copy), move its data dir into
   * the target's storage.data_path, start there; when that fails, the old one is started again and the
   * error says what failed.
   *
   * The data moves through the hub as file tasks (a tar download on the source agent fed into a tar
   * upload on the target) when both agents' [files] roots cover the storage paths: agents on different
   * machines. Otherwise the target copies it itself, which needs the source's directory inside its own
   * storage.data_path (one machine, or a shared disk).
   */
  async migrate(p: Principal, req: MigrateNodeRequest): Promise<NodeInfo> {
    const node = this.require(req.nodeId);
    if (node.busy)
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `node ${node.row.id} is busy with another operation`,
      );
    if (node.row.desired !== "running") {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `node ${node.row.id} is stopped: spawn it instead`,
      );
    }
    if (!req.toAgentId) throw new SwitchboardError(Code.INVALID_ARGUMENT, "migrate needs a target agent");
    if (req.toAgentId === node.row.agentId) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `node ${node.row.id} already runs on ${req.toAgentId}`,
      );
    }
    if (req.storagePath.split(/[\\/]/).includes("..")) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `storage path ${shownName(req.storagePath)}: ".." is not allowed`,
      );
    }
    const from = node.row.agentId;
    this.checkAgent(p, from);
    try {
      this.agentWithSlot(p, req.toAgentId);
    } catch (err) {
      throw notMigrated(node.row.id, from, err);
    }
    const to = req.toAgentId;
    // The same path relative to the target's data path: an absolute one (an adopted node's) names a
    // directory of the source's machine, so only its last part is kept.
    const spec: NodeSpawn = {
      ...node.spec,
      port: req.port || node.record?.port || node.spec.port,
      storagePath:
        req.storagePath ||
        (isAbsolute(node.spec.storagePath) ? basename(node.spec.storagePath) : node.spec.storagePath),
      copyFrom: "",
    };
    node.busy = true;
    try {
      const plan = await this.planMigration(node, from, to, spec, req.copyData);
      let started: NodeReply;
      if (plan.copy === "none") {
        try {
          started = await this.spawnOn(to, spec);
        } catch (err) {
          await this.forgetOn(to, node.row.id);
          throw notMigrated(node.row.id, from, err);
        }
        await this.forgetOn(from, node.row.id);
      } else {
        started = await this.moveStopped(p, node, from, to, spec, plan);
      }
      node.row.agentId = to;
      // The new agent's record (its replies were not taken while the node belonged to the old one).
      node.record = started.nodes[0] ?? node.record;
      node.row.recordAt = Date.now();
      node.spec = { ...spec, copyFrom: "" };
      node.row.spec = NodeSpawn.encode(node.spec).finish();
      this.save(node);
      this.audit(p.name, "node.migrate", node.row.id, {
        from,
        to,
        copy_data: req.copyData,
        ...(req.copyData ? { copied: plan.copy } : {}),
      });
      this.log.info({ node_id: node.row.id, from, to, copy: plan.copy }, "node migrated");
      return this.info(node, false);
    } finally {
      node.busy = false;
    }
  }

  /**
   * What a migration will do, found out without touching the node: the target's checks of the spawn, and
   * how the data moves. Throws (FAILED_PRECONDITION and the like, naming what to change) when it cannot work.
   */
  private async planMigration(
    node: HubNode,
    from: string,
    to: string,
    spec: NodeSpawn,
    copyData: boolean,
  ): Promise<MigrationPlan> {
    const refuse = (err: unknown): never => {
      throw notMigrated(node.row.id, from, err);
    };
    const sourcePort = node.record?.port ?? 0;
    let target = await this.checkOn(to, spec).catch(async (err: unknown) => {
      // On one machine the node itself holds its port until it is stopped, which copy_data does first:
      // everything else about the spawn is checked with any port, that port when the spawn is made.
      const ownPort =
        copyData &&
        spec.port === sourcePort &&
        err instanceof AgentRefusal &&
        err.code === Code.FAILED_PRECONDITION &&
        err.message === `port ${spec.port} is in use on this agent`;
      if (!ownPort) return refuse(err);
      return this.checkOn(to, { ...spec, port: 0 }).catch(refuse);
    });
    if (!copyData) return { copy: "none", target };
    // Fresh from the source: where its data is, and whether its file tasks reach it.
    const source = await this.commandOnce(
      from,
      { $case: "status", value: { nodeId: node.row.id } },
      this.hub.config.nodes.statusTimeoutMs,
    ).then((r) => r.nodes[0], refuse);
    const fromPath = source?.storagePath || node.record?.storagePath || "";
    if (!source || !fromPath)
      return refuse(new SwitchboardError(Code.NOT_FOUND, `agent ${from} does not know it`));
    if (source.filesReach && target?.filesReach && this.acceptsFiles(from) && this.acceptsFiles(to)) {
      return { copy: "files", target, fromPath };
    }
    // No file tasks: the target may see the directory itself (one machine, a shared disk).
    const local = await this.checkOn(to, {
      ...spec,
      port: target?.port === spec.port ? spec.port : 0,
      copyFrom: fromPath,
    }).catch((err: unknown) => err as Error);
    if (!(local instanceof Error)) {
      target = local;
      return { copy: "local", target, fromPath };
    }
    const lacking = [
      ...(source.filesReach && this.acceptsFiles(from) ? [] : [from]),
      ...(target?.filesReach && this.acceptsFiles(to) ? [] : [to]),
    ];
    return refuse(
      new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `its data cannot move from ${from} to ${to}: a copy between machines goes through file tasks, and the [files] roots of ${lacking.map((a) => `agent ${a}`).join(" and ")} do not cover storage.data_path (add it to [files] roots there); nor does ${to} see ${fromPath} inside its own storage.data_path (${local.message})`,
      ),
    );
  }

  /**
   * The copy_data migration, once planned: stops the node, moves its data, starts it on the target. On a
   * failure after the stop, the target's copy is removed and the node started again where it was.
   */
  private async moveStopped(
    p: Principal,
    node: HubNode,
    from: string,
    to: string,
    spec: NodeSpawn,
    plan: Exclude<MigrationPlan, { copy: "none" }>,
  ): Promise<NodeReply> {
    const id = node.row.id;
    try {
      await this.command(
        from,
        { $case: "stop", value: { nodeId: id, graceMs: 0, forget: false } },
        this.hub.config.nodes.stopTimeoutMs,
      );
    } catch (err) {
      throw new SwitchboardError(
        err instanceof SwitchboardError ? err.code : Code.INTERNAL,
        `node ${id} was not migrated: stopping it on ${from} failed (${(err as Error).message}); nothing was copied or started on ${to}`,
      );
    }
    let started: NodeReply;
    try {
      if (plan.copy === "files") {
        const moved = await transferNodeData(this.hub, p, {
          nodeId: id,
          from,
          fromPath: plan.fromPath,
          to,
          toPath: plan.target?.storagePath ?? "",
          idleTimeoutMs: TRANSFER_IDLE_MS,
        });
        this.log.info({ node_id: id, from, to, bytes: moved.bytes }, "node data moved through the hub");
        started = await this.spawnOn(to, spec);
      } else {
        started = await this.spawnOn(to, { ...spec, copyFrom: plan.fromPath });
      }
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      this.log.warn(
        { node_id: id, from, to, err: why },
        "migration failed after the stop: starting the node again",
      );
      await this.forgetOn(to, id);
      const back = await this.spawnOn(from, { ...node.spec, copyFrom: "" }).then(
        () => `it runs again on ${from}`,
        (e: unknown) =>
          `starting it again on ${from} failed too (${(e as Error).message}); the hub starts it when ${from} reconnects`,
      );
      throw new SwitchboardError(
        err instanceof SwitchboardError ? err.code : Code.INTERNAL,
        `node ${id} was not migrated to ${to}: ${why}; ${back}`,
      );
    }
    await this.forgetOn(from, id);
    return started;
  }

  /** The agent's checks of a spawn, nothing started: the record it would make. */
  private async checkOn(agentId: string, spec: NodeSpawn): Promise<NodeRecord | undefined> {
    try {
      const r = await this.commandOnce(
        agentId,
        { $case: "check", value: spec },
        this.hub.config.nodes.statusTimeoutMs,
      );
      return r.nodes[0];
    } catch (err) {
      // An agent of an earlier version knows no check: the spawn itself checks, later.
      if (err instanceof AgentRefusal && err.message === "a node command needs an operation")
        return undefined;
      throw err;
    }
  }

  private acceptsFiles(agentId: string): boolean {
    return this.hub.agents.get(agentId)?.hello.taskKinds.includes("file") ?? false;
  }

  /** Stops the node on an agent and drops it from its table; a failure is logged (reconcile retries). */
  private async forgetOn(agentId: string, nodeId: string): Promise<void> {
    await this.command(
      agentId,
      { $case: "stop", value: { nodeId, graceMs: 0, forget: true } },
      this.hub.config.nodes.stopTimeoutMs,
    ).catch((err: unknown) => {
      if (err instanceof AgentRefusal && err.code === Code.NOT_FOUND) return;
      this.log.warn(
        { node_id: nodeId, agent_id: agentId, err: (err as Error).message },
        "migrated node: stopping a copy failed; it is stopped when its agent reconnects",
      );
    });
  }

  /** Counts for cluster status and its one-line summary. */
  summary(): { total: number; running: number; unhealthy: number } {
    let total = 0;
    let running = 0;
    let unhealthy = 0;
    for (const n of this.nodes.values()) {
      if (n.row.desired !== "running") continue;
      total++;
      const online = this.hub.agents.get(n.row.agentId)?.connected ?? false;
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

  // ---- internals ---------------------------------------------------------------------------

  private require(nodeId: string): HubNode {
    const node = this.nodes.get(nodeId);
    if (!node)
      throw new SwitchboardError(Code.NOT_FOUND, `no node ${shownName(nodeId)} is known to this hub`);
    return node;
  }

  private poolVisible(p: Principal, node: HubNode): boolean {
    const pool =
      this.hub.agents.get(node.row.agentId)?.pool ?? this.hub.store.getAgent(node.row.agentId)?.pool;
    return pool === undefined || poolAllowed(p, pool);
  }

  private visible(p: Principal, node: HubNode): void {
    if (!this.poolVisible(p, node)) {
      throw new SwitchboardError(Code.NOT_FOUND, `no node ${shownName(node.row.id)} is known to this hub`);
    }
  }

  /** The agent exists, the caller may reach its pool, and it is online: else NOT_FOUND / UNAVAILABLE. */
  private checkAgent(p: Principal, agentId: string): AgentSession {
    this.knownAgent(p, agentId);
    return this.connectedSession(agentId);
  }

  /** The agent exists and the caller may reach its pool (online or not): else NOT_FOUND. */
  private knownAgent(p: Principal, agentId: string): void {
    const known = this.hub.agents.get(agentId) ?? this.hub.store.getAgent(agentId);
    if (!known || !poolAllowed(p, known.pool)) {
      throw new SwitchboardError(Code.NOT_FOUND, `no agent ${shownName(agentId)} is known to this hub`);
    }
  }

  /**
   * checkAgent, and the agent has a free node slot counting `planned` more nodes: else RESOURCE_EXHAUSTED
   * (the agent enforces max_storage_nodes itself too; this refuses before anything is sent).
   */
  private agentWithSlot(p: Principal, agentId: string, planned = 0): string {
    const s = this.checkAgent(p, agentId);
    const used = this.slotsUsed(agentId) + planned;
    if (used >= s.hello.maxStorageNodes) {
      throw new SwitchboardError(
        Code.RESOURCE_EXHAUSTED,
        `agent ${shownName(agentId)} has no free node slot: ${used} of its max_storage_nodes = ${s.hello.maxStorageNodes} in use`,
      );
    }
    return agentId;
  }

  private connectedSession(agentId: string): AgentSession {
    const s = this.hub.agents.get(agentId);
    if (!s?.connected) {
      throw new SwitchboardError(Code.UNAVAILABLE, `agent ${shownName(agentId)} is offline`);
    }
    if (s.hello.maxStorageNodes === 0) {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `agent ${shownName(agentId)} runs no nodes (max_storage_nodes = 0)`,
      );
    }
    return s;
  }

  /**
   * The healthy agent with the most free node slots among those matching pool and labels; `planned`: nodes
   * a batch has placed on paper, by agent, counted as used.
   */
  private place(
    p: Principal,
    labels: Record<string, string>,
    pool: string,
    planned?: ReadonlyMap<string, number>,
  ): string {
    let best: { id: string; free: number } | undefined;
    for (const s of this.hub.agents.all()) {
      if (!s.connected || s.health !== "healthy" || s.hello.maxStorageNodes === 0) continue;
      if (!poolAllowed(p, s.pool) || (pool && s.pool !== pool)) continue;
      if (!Object.entries(labels).every(([k, v]) => s.labels[k] === v)) continue;
      const free = s.hello.maxStorageNodes - this.slotsUsed(s.agentId) - (planned?.get(s.agentId) ?? 0);
      if (free <= 0) continue;
      if (!best || free > best.free || (free === best.free && s.agentId < best.id))
        best = { id: s.agentId, free };
    }
    if (!best) {
      const want = [
        ...(pool ? [`pool ${pool}`] : []),
        ...Object.entries(labels).map(([k, v]) => `${k}=${v}`),
      ];
      throw new SwitchboardError(
        Code.UNAVAILABLE,
        `no healthy agent with a free node slot${want.length ? ` matching ${want.join(", ")}` : ""}`,
      );
    }
    return best.id;
  }

  /** Runs fn, retrying at 100/200/400 ms while the agent's stream breaks under it, within timeoutMs. */
  private async withRetries<T>(
    agentId: string,
    timeoutMs: number,
    fn: (remainingMs: number) => Promise<T>,
  ): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new SwitchboardError(
          Code.DEADLINE_EXCEEDED,
          `agent ${shownName(agentId)} did not answer within ${timeoutMs / 1000}s`,
        );
      }
      try {
        return await fn(remaining);
      } catch (err) {
        const delay = RETRY_DELAYS_MS[attempt];
        if (!(err instanceof Retryable) || delay === undefined || Date.now() + delay >= deadline) throw err;
        this.log.warn(
          { agent_id: agentId, attempt: attempt + 1, of: RETRY_DELAYS_MS.length + 1, err: err.message },
          "node command failed: retrying",
        );
        await sleep(delay);
      }
    }
  }

  /** One command to the agent's current session: its reply, or an error (Retryable when the link is at fault). */
  private commandOnce(
    agentId: string,
    op: Op,
    timeoutMs: number,
    shownTimeoutMs = timeoutMs,
  ): Promise<NodeReply> {
    const s = this.hub.agents.get(agentId);
    if (!s?.connected) {
      return Promise.reject(new Retryable(Code.UNAVAILABLE, `agent ${shownName(agentId)} is offline`));
    }
    const id = this.nextId++;
    return new Promise<NodeReply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new SwitchboardError(
            Code.DEADLINE_EXCEEDED,
            `agent ${shownName(agentId)} did not answer the node ${op.$case} within ${Math.round(shownTimeoutMs) / 1000}s`,
          ),
        );
      }, timeoutMs);
      this.pending.set(id, {
        agentId,
        session: s,
        resolve: (r) => {
          clearTimeout(timer);
          if (r.code !== 0) reject(new AgentRefusal(r.code, r.errorMessage));
          else resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      s.send({ body: { $case: "nodeCommand", value: { id, op } } });
    });
  }

  private command(agentId: string, op: Op, timeoutMs: number): Promise<NodeReply> {
    return this.withRetries(agentId, timeoutMs, (remaining) => this.commandOnce(agentId, op, remaining));
  }

  /** Starts a node the registry wants running on an agent that does not run it. */
  private async restore(agentId: string, node: HubNode, why: string): Promise<void> {
    node.busy = true;
    try {
      this.log.info(
        { node_id: node.row.id, agent_id: agentId, why },
        "starting a node the registry wants running",
      );
      await this.spawnOn(agentId, { ...node.spec, copyFrom: "" });
      this.audit("system", "node.restore", node.row.id, { agent: agentId, why });
    } finally {
      node.busy = false;
    }
  }

  private async reschedule(node: HubNode): Promise<void> {
    const from = node.row.agentId;
    const system: Principal = {
      tokenId: "",
      name: "system",
      role: "admin",
      pools: [],
      agentId: null,
      allowTakeover: false,
    };
    let to: string;
    try {
      to = this.place(system, node.row.labels, node.row.pool);
    } catch {
      return; // nowhere to go yet: tried again next tick
    }
    node.busy = true;
    try {
      let spec = { ...node.spec, copyFrom: "" };
      try {
        await this.spawnOn(to, spec);
      } catch (err) {
        // Its port may be taken on the new agent: let that agent choose one.
        if (!(err instanceof SwitchboardError) || err.code !== Code.FAILED_PRECONDITION || spec.port === 0)
          throw err;
        spec = { ...spec, port: 0 };
        await this.spawnOn(to, spec);
      }
      node.row.agentId = to;
      node.spec = spec;
      node.row.spec = NodeSpawn.encode(spec).finish();
      this.save(node);
      this.audit("system", "node.reschedule", node.row.id, { from, to });
      this.log.warn({ node_id: node.row.id, from, to }, "node rescheduled off an offline agent");
    } finally {
      node.busy = false;
    }
  }

  private adopt(s: AgentSession, n: NodeRecord): void {
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
    this.save(node);
    this.audit("system", "node.adopt", n.nodeId, { agent: s.agentId });
    this.log.info({ node_id: n.nodeId, agent_id: s.agentId }, "registry adopted a node its agent runs");
  }

  /** A record from the agent: cached; persisted when its status, pid or restart count changed. */
  private observe(agentId: string, n: NodeRecord, report: boolean): void {
    const node = this.nodes.get(n.nodeId);
    if (!node) {
      // A node started through the agent's local API while connected: adopt it.
      const s = this.hub.agents.get(agentId);
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
      this.save(node);
    }
  }

  private save(node: HubNode): void {
    node.row.record = node.record ? NodeRecord.encode(node.record).finish() : null;
    node.row.updatedAt = Date.now();
    this.hub.store.upsertNode(node.row);
  }

  private audit(actor: string, action: string, subject: string, detail: Record<string, unknown>): void {
    this.hub.store.audit({ at: Date.now(), actor, action, subject, detail });
  }

  private info(node: HubNode, stale: boolean, statusOverride?: string): NodeInfo {
    const s = this.hub.agents.get(node.row.agentId);
    const hostname =
      s?.hello.hostname ?? this.hub.store.getAgent(node.row.agentId)?.hostname ?? node.row.agentId;
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

/** The promise's outcome, or a CANCELLED error once the signal fires (the caller went away). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return p;
  const cancelled = (): SwitchboardError =>
    new SwitchboardError(Code.CANCELLED, "the caller went away before the node was started");
  if (signal.aborted) {
    p.catch(() => undefined);
    return Promise.reject(cancelled());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(cancelled());
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}

/** How a migration moves the node's data: not at all, through file tasks, or copied by the target. */
type MigrationPlan =
  | { copy: "none"; target: NodeRecord | undefined }
  | { copy: "files" | "local"; target: NodeRecord | undefined; fromPath: string };

/** A migration refused or failed before the node was stopped: it still runs where it was. */
function notMigrated(nodeId: string, from: string, err: unknown): SwitchboardError {
  const why = err instanceof Error ? err.message : String(err);
  return new SwitchboardError(
    err instanceof SwitchboardError ? err.code : Code.INTERNAL,
    `node ${nodeId} was not migrated: ${why} (it still runs on ${from}, untouched)`,
  );
}

function batchError(err: unknown, nodeId: string): NodeBatchItem {
  return {
    node: undefined,
    code: err instanceof SwitchboardError ? err.code : Code.INTERNAL,
    errorMessage: err instanceof Error ? err.message : String(err),
    nodeId,
  };
}
