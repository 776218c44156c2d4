// Keeping what runs in line with what the registry wants: on each (re)connect the agent's reported
// nodes are reconciled with the registry (adopted, stopped, or started again), and a node whose agent
// stayed offline past nodes.reschedule_after is started on another agent.
import { Code, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { AgentSession } from "../agents/agent-session.js";
import type { Principal } from "../auth.js";
import type { HubConfig } from "../config.js";
import type { NodeCommands } from "./node-commands.js";
import type { NodePlacement } from "./node-placement.js";
import type { HubNode, NodeRegistry } from "./node-registry.js";
import { NodeSpawn } from "../../gen/switchboard/v1/agent.js";

/** Who the hub acts as when it moves a node by itself. */
const SYSTEM: Principal = {
  tokenId: "",
  name: "system",
  role: "admin",
  pools: [],
  agentId: null,
  allowTakeover: false,
};

export class NodeReconciler {
  /** When each agent was last seen going offline (or the hub's start, for agents not back yet). */
  private readonly offlineSince = new Map<string, number>();
  private readonly startedAt = Date.now();
  private rescheduling = false;

  constructor(
    private readonly agents: AgentRegistry,
    private readonly nodes: NodeRegistry,
    private readonly commands: NodeCommands,
    private readonly placement: NodePlacement,
    private readonly config: HubConfig["nodes"],
    private readonly log: Logger,
  ) {}

  /** A session opened (Welcome sent): reconcile the registry with what the agent runs. */
  sessionOpened(s: AgentSession): void {
    this.offlineSince.delete(s.agentId);
    const reality = new Map(s.hello.nodes.map((n) => [n.nodeId, n]));
    for (const n of s.hello.nodes) this.nodes.observe(s.agentId, n, false);
    const actions: Promise<unknown>[] = [];
    for (const [id, n] of reality) {
      const node = this.nodes.get(id);
      if (!node) {
        if (n.status === "stopped") continue;
        // Started through the agent's local API (or a registry lost with the hub's data): adopt it.
        this.nodes.adopt(s, n);
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
          this.commands.command(
            s.agentId,
            { $case: "stop", value: { nodeId: id, graceMs: 0, forget: true } },
            this.config.stopTimeoutMs,
          ),
        );
        continue;
      }
      if (node.row.desired === "stopped" && n.status !== "stopped") {
        this.log.info({ node_id: id, agent_id: s.agentId }, "node should be stopped: stopping it");
        actions.push(
          this.commands.command(
            s.agentId,
            { $case: "stop", value: { nodeId: id, graceMs: 0, forget: false } },
            this.config.stopTimeoutMs,
          ),
        );
      } else if (node.row.desired === "running" && n.status === "stopped") {
        actions.push(this.restore(s.agentId, node, "it was stopped on the agent"));
      }
    }
    for (const node of this.nodes.all()) {
      if (node.row.agentId !== s.agentId || node.busy || reality.has(node.row.id)) continue;
      if (node.row.desired === "running") {
        actions.push(this.restore(s.agentId, node, "the agent does not know it"));
      } else if (node.record && node.record.status !== "stopped") {
        // A stop recorded while the agent was away, of a node it no longer has: done.
        node.record = { ...node.record, status: "stopped", pid: 0 };
        void this.nodes.save(node);
      }
    }
    for (const a of actions) {
      a.catch((err: unknown) =>
        this.log.warn({ agent_id: s.agentId, err: (err as Error).message }, "node reconcile step failed"),
      );
    }
  }

  /** A session ended: its agent counts as offline from now, unless another session speaks for it. */
  sessionClosed(s: AgentSession): void {
    if (this.agents.get(s.agentId) === undefined || this.agents.get(s.agentId) === s) {
      this.offlineSince.set(s.agentId, Date.now());
    }
  }

  /** Once a second: reschedule nodes whose agent stayed offline past the timeout. */
  tick(now = Date.now()): void {
    if (this.rescheduling) return;
    const after = this.config.rescheduleAfterMs;
    const due = this.nodes.all().filter((n) => {
      if (!n.row.reschedule || n.row.desired !== "running" || n.busy) return false;
      if (this.agents.get(n.row.agentId)?.connected) return false;
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

  /** Starts a node the registry wants running on an agent that does not run it. */
  private async restore(agentId: string, node: HubNode, why: string): Promise<void> {
    node.busy = true;
    try {
      this.log.info(
        { node_id: node.row.id, agent_id: agentId, why },
        "starting a node the registry wants running",
      );
      await this.commands.spawnOn(agentId, { ...node.spec, copyFrom: "" });
      this.nodes.audit("system", "node.restore", node.row.id, { agent: agentId, why });
    } finally {
      node.busy = false;
    }
  }

  private async reschedule(node: HubNode): Promise<void> {
    const from = node.row.agentId;
    let to: string;
    try {
      to = this.placement.place(SYSTEM, node.row.labels, node.row.pool);
    } catch {
      return; // nowhere to go yet: tried again next tick
    }
    node.busy = true;
    try {
      let spec = { ...node.spec, copyFrom: "" };
      try {
        await this.commands.spawnOn(to, spec);
      } catch (err) {
        // Its port may be taken on the new agent: let that agent choose one.
        if (!(err instanceof SwitchboardError) || err.code !== Code.FAILED_PRECONDITION || spec.port === 0)
          throw err;
        spec = { ...spec, port: 0 };
        await this.commands.spawnOn(to, spec);
      }
      node.row.agentId = to;
      node.spec = spec;
      node.row.spec = NodeSpawn.encode(spec).finish();
      await this.nodes.save(node);
      this.nodes.audit("system", "node.reschedule", node.row.id, { from, to });
      this.log.warn({ node_id: node.row.id, from, to }, "node rescheduled off an offline agent");
    } finally {
      node.busy = false;
    }
  }
}
