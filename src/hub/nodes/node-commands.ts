// Node commands to an agent, over its own stream (the agent needs no inbound port): each waits for its
// reply within a per-operation deadline, and is retried at 100, 200 and 400 ms when the stream breaks
// under it. The errors say whether the agent refused (it did nothing) or the link failed (it may have).
import { Code, shownName, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import type { NodeCommand, NodeReply, NodeSpawn } from "../../gen/switchboard/v1/agent.js";
import type { NodeRecord } from "../../gen/switchboard/v1/node.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { AgentSession } from "../agents/agent-session.js";
import type { HubConfig } from "../config.js";

/** Delays between attempts when the agent's stream breaks under a command (seed 003). */
const RETRY_DELAYS_MS = [100, 200, 400];

export type Op = NonNullable<NodeCommand["op"]>;

interface Pending {
  agentId: string;
  session: AgentSession;
  resolve: (r: NodeReply) => void;
  reject: (e: Error) => void;
}

/** The link failed under a command (retried): the agent may or may not have acted on it. */
export class Retryable extends SwitchboardError {}
/** The agent answered a command with an error: it did not act on it. */
export class AgentRefusal extends SwitchboardError {}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export class NodeCommands {
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor(
    private readonly agents: AgentRegistry,
    private readonly timeouts: HubConfig["nodes"],
    private readonly log: Logger,
  ) {}

  /**
   * The reply answers a command this session sent: the command's pending entry is taken, and its
   * settle function returned (the caller takes the reply's records first). Undefined for any other reply.
   */
  claim(s: AgentSession, reply: NodeReply): ((r: NodeReply) => void) | undefined {
    const p = this.pending.get(reply.id);
    if (!p || p.session !== s) return undefined;
    this.pending.delete(reply.id);
    return p.resolve;
  }

  /** A session ended: commands in flight on it fail (and are retried on the agent's next session). */
  sessionClosed(s: AgentSession): void {
    for (const [id, p] of this.pending) {
      if (p.session !== s) continue;
      this.pending.delete(id);
      p.reject(new Retryable(Code.UNAVAILABLE, `agent ${shownName(s.agentId)} disconnected`));
    }
  }

  /**
   * Spawns the spec on the agent; a retry that finds the node already there takes it as started. No
   * attempt is made once `signal` fires.
   */
  async spawnOn(agentId: string, spec: NodeSpawn, signal?: AbortSignal): Promise<NodeReply> {
    const timeout = this.timeouts.spawnTimeoutMs;
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

  /** The agent's checks of a spawn, nothing started: the record it would make. */
  async checkOn(agentId: string, spec: NodeSpawn): Promise<NodeRecord | undefined> {
    try {
      const r = await this.commandOnce(
        agentId,
        { $case: "check", value: spec },
        this.timeouts.statusTimeoutMs,
      );
      return r.nodes[0];
    } catch (err) {
      // An agent of an earlier version knows no check: the spawn itself checks, later.
      if (err instanceof AgentRefusal && err.message === "a node command needs an operation")
        return undefined;
      throw err;
    }
  }

  /** Stops the node on an agent and drops it from its table; a failure is logged (reconcile retries). */
  async forgetOn(agentId: string, nodeId: string): Promise<void> {
    await this.command(
      agentId,
      { $case: "stop", value: { nodeId, graceMs: 0, forget: true } },
      this.timeouts.stopTimeoutMs,
    ).catch((err: unknown) => {
      if (err instanceof AgentRefusal && err.code === Code.NOT_FOUND) return;
      this.log.warn(
        { node_id: nodeId, agent_id: agentId, err: (err as Error).message },
        "migrated node: stopping a copy failed; it is stopped when its agent reconnects",
      );
    });
  }

  /** Runs fn, retrying at 100/200/400 ms while the agent's stream breaks under it, within timeoutMs. */
  async withRetries<T>(
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
  commandOnce(agentId: string, op: Op, timeoutMs: number, shownTimeoutMs = timeoutMs): Promise<NodeReply> {
    const s = this.agents.get(agentId);
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

  command(agentId: string, op: Op, timeoutMs: number): Promise<NodeReply> {
    return this.withRetries(agentId, timeoutMs, (remaining) => this.commandOnce(agentId, op, remaining));
  }
}
