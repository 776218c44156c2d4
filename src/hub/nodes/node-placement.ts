// Where a node may go: the agent exists, the caller may reach its pool, it is online, runs nodes and
// has a free node slot (counting what a batch has placed on paper); or, with no agent named, the
// healthy agent with the most free slots among those that match pool and labels.
import { Code, shownName, SwitchboardError } from "../../common/errors.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { AgentSession } from "../agents/agent-session.js";
import { poolAllowed, type Principal } from "../auth.js";
import type { NodeRegistry } from "./node-registry.js";
import type { Store } from "../store/index.js";

export class NodePlacement {
  constructor(
    private readonly store: Store,
    private readonly agents: AgentRegistry,
    private readonly nodes: NodeRegistry,
  ) {}

  /** The agent exists, the caller may reach its pool, and it is online: else NOT_FOUND / UNAVAILABLE. */
  async checkAgent(p: Principal, agentId: string): Promise<AgentSession> {
    await this.knownAgent(p, agentId);
    return this.connectedSession(agentId);
  }

  /** The agent exists and the caller may reach its pool (online or not): else NOT_FOUND. */
  async knownAgent(p: Principal, agentId: string): Promise<void> {
    const pool = await this.agents.poolOf(agentId);
    if (pool === undefined || !poolAllowed(p, pool)) {
      throw new SwitchboardError(Code.NOT_FOUND, `no agent ${shownName(agentId)} is known to this hub`);
    }
  }

  /**
   * checkAgent, and the agent has a free node slot counting `planned` more nodes: else RESOURCE_EXHAUSTED
   * (the agent enforces max_storage_nodes itself too; this refuses before anything is sent).
   */
  async agentWithSlot(p: Principal, agentId: string, planned = 0): Promise<string> {
    const s = await this.checkAgent(p, agentId);
    const used = this.nodes.slotsUsed(agentId) + planned;
    if (used >= s.hello.maxStorageNodes) {
      throw new SwitchboardError(
        Code.RESOURCE_EXHAUSTED,
        `agent ${shownName(agentId)} has no free node slot: ${used} of its max_storage_nodes = ${s.hello.maxStorageNodes} in use`,
      );
    }
    return agentId;
  }

  connectedSession(agentId: string): AgentSession {
    const s = this.agents.get(agentId);
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
  place(
    p: Principal,
    labels: Record<string, string>,
    pool: string,
    planned?: ReadonlyMap<string, number>,
  ): string {
    let best: { id: string; free: number } | undefined;
    for (const s of this.agents.all()) {
      if (!s.connected || s.health !== "healthy" || s.hello.maxStorageNodes === 0) continue;
      if (!poolAllowed(p, s.pool) || (pool && s.pool !== pool)) continue;
      if (!Object.entries(labels).every(([k, v]) => s.labels[k] === v)) continue;
      const free = s.hello.maxStorageNodes - this.nodes.slotsUsed(s.agentId) - (planned?.get(s.agentId) ?? 0);
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
}
