// The admin API: agents, cluster status and tokens. Reading needs a viewer token; tokens need admin.
import type { sendUnaryData, ServerUnaryCall } from "@grpc/grpc-js";
import { Code, shownName, SwitchboardError, toServiceError } from "../../common/errors.js";
import { MAX_AGENT_CONCURRENCY } from "../../common/limits.js";
import { VERSION } from "../../common/version.js";
import {
  AgentHealth,
  type AdminServiceServer,
  type AgentInfo,
  type PoolStatus,
  type TokenInfo,
  type HubInfo,
} from "../../gen/switchboard/v1/client.js";
import type { AgentSession } from "../agents/agent-session.js";
import { poolAllowed, type Principal } from "../auth.js";
import type { HubCore } from "../hub-core.js";
import type { ClusterMember, HubLoad } from "../cluster/cluster-member.js";
import type { AgentRecord, TokenRecord } from "../store/index.js";

const HEALTH = {
  healthy: AgentHealth.AGENT_HEALTH_HEALTHY,
  degraded: AgentHealth.AGENT_HEALTH_DEGRADED,
  offline: AgentHealth.AGENT_HEALTH_OFFLINE,
};

function sessionInfo(s: AgentSession, nodesOn: (agentId: string) => number): AgentInfo {
  const hb = s.lastHeartbeat;
  return {
    agentId: s.agentId,
    pool: s.pool,
    labels: s.labels,
    hostname: s.hello.hostname,
    platform: s.hello.platform,
    version: s.hello.version,
    health: HEALTH[s.health],
    healthReason: s.healthReason,
    connected: s.connected,
    sessionId: s.sessionId,
    maxConcurrency: s.hello.maxConcurrency,
    running: s.tasks.size,
    freeSlots: s.sched.free,
    lastSeenMs: s.lastSeenAt,
    connectedAtMs: s.connectedAt,
    taskKinds: [...s.hello.taskKinds],
    completedTotal: hb?.completedTotal ?? s.completedTotal,
    inboxDepth: hb?.inboxDepth ?? 0,
    outboxDepth: hb?.outboxDepth ?? 0,
    datasources: hb?.datasources ?? [],
    agentEndpoint: s.hello.agentEndpoint,
    maxStorageNodes: s.hello.maxStorageNodes,
    storageNodes: nodesOn(s.agentId),
  };
}

function recordInfo(a: AgentRecord, nodesOn: (agentId: string) => number): AgentInfo {
  return {
    agentId: a.id,
    pool: a.pool,
    labels: a.labels,
    hostname: a.hostname,
    platform: a.platform,
    version: a.version,
    health: AgentHealth.AGENT_HEALTH_OFFLINE,
    healthReason: "disconnected",
    connected: false,
    sessionId: a.lastSessionId ?? "",
    maxConcurrency: a.maxConcurrency,
    running: 0,
    freeSlots: 0,
    lastSeenMs: a.lastSeenAt,
    connectedAtMs: 0,
    taskKinds: a.taskKinds,
    completedTotal: 0,
    inboxDepth: 0,
    outboxDepth: 0,
    datasources: [],
    agentEndpoint: "",
    maxStorageNodes: 0,
    storageNodes: nodesOn(a.id),
  };
}

function tokenInfo(t: TokenRecord): TokenInfo {
  return {
    id: t.id,
    name: t.name,
    role: t.role,
    pools: t.pools,
    agentId: t.agentId ?? "",
    createdAtMs: t.createdAt,
    revokedAtMs: t.revokedAt ?? 0,
    lastUsedMs: t.lastUsedAt ?? 0,
    allowTakeover: t.allowTakeover,
  };
}

export async function allAgents(core: HubCore, includeOffline: boolean): Promise<AgentInfo[]> {
  // The records first: the sessions are then taken as they are once the read is done.
  const stored = includeOffline ? await core.store.listAgents() : [];
  const nodesOn = (id: string): number => core.nodes.slotsUsed(id);
  const out = core.agents.all().map((s) => sessionInfo(s, nodesOn));
  for (const a of stored) if (!core.agents.has(a.id)) out.push(recordInfo(a, nodesOn));
  return out.sort((a, b) =>
    a.pool === b.pool ? (a.agentId < b.agentId ? -1 : 1) : a.pool < b.pool ? -1 : 1,
  );
}

function unary<Req, Res>(
  core: HubCore,
  min: "viewer" | "operator" | "admin",
  fn: (req: Req, actor: string, principal: Principal) => Res | Promise<Res>,
): (call: ServerUnaryCall<Req, Res>, cb: sendUnaryData<Res>) => void {
  return (call, cb) => {
    core.auth
      .requireClient(call.metadata, min)
      .then((p) => fn(call.request, p.name, p))
      .then(
        (res) => cb(null, res),
        (err: unknown) => cb(toServiceError(err)),
      );
  };
}

export function adminService(core: HubCore): AdminServiceServer {
  return {
    // A token scoped to pools sees only the agents of those pools.
    listAgents: unary(core, "viewer", async (req, _actor, p) => ({
      agents: (await allAgents(core, req.includeOffline)).filter(
        (a) => (!req.pool || a.pool === req.pool) && poolAllowed(p, a.pool),
      ),
    })),

    getAgent: unary(core, "viewer", async (req, _actor, p) => {
      const rec = core.agents.has(req.agentId) ? undefined : await core.store.getAgent(req.agentId);
      const s = core.agents.get(req.agentId);
      const nodesOn = (id: string): number => core.nodes.slotsUsed(id);
      const info = s ? sessionInfo(s, nodesOn) : rec ? recordInfo(rec, nodesOn) : undefined;
      if (!info || !poolAllowed(p, info.pool))
        throw new SwitchboardError(
          Code.NOT_FOUND,
          `no agent ${shownName(req.agentId)} has ever connected: see switchboard agents --all`,
        );
      return info;
    }),

    clusterStatus: unary(core, "viewer", async () => {
      const tasksTotal = await core.store.countTasks();
      const agents = await allAgents(core, true);
      const pools = new Map<string, PoolStatus>();
      for (const a of agents) {
        const ps = pools.get(a.pool) ?? { pool: a.pool, agents: 0, healthy: 0, freeSlots: 0, queued: 0 };
        ps.agents++;
        if (a.health === AgentHealth.AGENT_HEALTH_HEALTHY) ps.healthy++;
        ps.freeSlots += a.freeSlots;
        pools.set(a.pool, ps);
      }
      for (const ps of pools.values()) ps.queued = core.scheduler.queuedFor((t) => t.pool === ps.pool);
      const running = core.tasks.counts().running;
      const healthy = agents.filter((a) => a.health === AgentHealth.AGENT_HEALTH_HEALTHY).length;
      const nodes = core.nodes.summary();
      const ok = healthy === agents.length && nodes.running === nodes.total;
      return {
        nodesTotal: nodes.total,
        nodesRunning: nodes.running,
        nodesUnhealthy: nodes.unhealthy,
        summary: `Cluster: ${agents.length} agents (${healthy} healthy), ${nodes.total} storage nodes (${nodes.running} running) - ${ok ? "healthy" : "degraded"}`,
        hubVersion: VERSION,
        hubStartedAtMs: core.startedAt,
        agentsTotal: agents.length,
        agentsHealthy: agents.filter((a) => a.health === AgentHealth.AGENT_HEALTH_HEALTHY).length,
        agentsDegraded: agents.filter((a) => a.health === AgentHealth.AGENT_HEALTH_DEGRADED).length,
        agentsOffline: agents.filter((a) => a.health === AgentHealth.AGENT_HEALTH_OFFLINE).length,
        tasksQueued: core.scheduler.queuedCount(),
        tasksRunning: running,
        tasksTotal,
        pools: [...pools.values()],
        draining: core.draining,
        hubId: core.cluster?.id ?? "",
        hubs: core.cluster ? await clusterHubs(core, core.cluster, false) : [],
      };
    }),

    listHubs: unary(core, "viewer", async (req) => ({
      hubs: core.cluster ? await clusterHubs(core, core.cluster, req.includeGone) : [aloneHub(core)],
      leaseMs: core.cluster?.leaseMs ?? 0,
    })),

    createToken: unary(core, "admin", async (req, actor) => {
      const { secret, record } = await core.auth.create({
        name: req.name,
        role: req.role,
        pools: req.pools,
        agentId: req.agentId,
        allowTakeover: req.allowTakeover,
      });
      core.store.audit({
        at: Date.now(),
        actor,
        action: "token.create",
        subject: record.id,
        detail: { name: record.name, role: record.role, pools: record.pools },
      });
      return { token: secret, info: tokenInfo(record) };
    }),

    listTokens: unary(core, "admin", async (req) => ({
      tokens: (await core.store.listTokens(req.includeRevoked)).map(tokenInfo),
    })),

    revokeToken: unary(core, "admin", async (req, actor) => {
      const rec = await core.auth.revoke(req.idOrName);
      core.store.audit({
        at: Date.now(),
        actor,
        action: "token.revoke",
        subject: rec.id,
        detail: { name: rec.name },
      });
      return { info: tokenInfo(rec) };
    }),

    // The audit log, newest first: submissions, cancels, tokens, agents, settings. Admins only.
    listAudit: unary(core, "admin", async (req) => ({
      entries: (
        await core.store.listAudit({
          limit: req.limit || 50,
          ...(req.action ? { action: req.action } : {}),
          ...(req.subject ? { subject: req.subject } : {}),
        })
      ).map((e) => ({
        id: e.id,
        atMs: e.at,
        actor: e.actor,
        action: e.action,
        subject: e.subject,
        detailJson: e.detail ? JSON.stringify(e.detail) : "",
      })),
    })),

    // Releases an agent id from the pool and token it belongs to (see agentIdClaim): its record goes,
    // and the next agent to connect with that id, any token of any pool, claims it. Refused while the
    // agent is connected (it would claim its id straight back) or the registry keeps nodes running on
    // it (they would be started on whoever claims the id next).
    forgetAgent: unary(core, "admin", async (req, actor, p) => {
      const id = req.agentId.trim();
      // Read first; the checks and the release then act on the agent's session as it is after it.
      const rec = await core.store.getAgent(id);
      const s = core.agents.get(id);
      const pool = s?.pool ?? rec?.pool;
      if (pool === undefined || !poolAllowed(p, pool)) {
        throw new SwitchboardError(
          Code.NOT_FOUND,
          `no agent ${shownName(id)} is known to this hub: see switchboard agents --all`,
        );
      }
      if (s?.connected) {
        throw new SwitchboardError(
          Code.FAILED_PRECONDITION,
          `agent ${id} is connected (session ${s.sessionId}): stop it, or revoke its token, before forgetting its id`,
        );
      }
      const nodes = core.nodes.slotsUsed(id);
      if (nodes > 0) {
        throw new SwitchboardError(
          Code.FAILED_PRECONDITION,
          `agent ${id} has ${nodes} node(s) the hub keeps running there: stop or migrate them first (switchboard nodes --agent ${id})`,
        );
      }
      // Waiting to resume: what it held ends lost now, since the id will not come back as this agent.
      if (s && !s.closed) core.closeSession(s, "an admin forgot its id");
      // Work queued for this agent was meant for it, not for whoever claims the id next.
      // Queued tasks are live: each is cancelled before cancel() returns, and the id is released in
      // the same turn, after the checks above.
      const cancelled = core.scheduler
        .queuedIds({ agentId: id })
        .map((taskId) =>
          core.cancel(
            p,
            taskId,
            `agent ${id} was forgotten by ${actor}; its queued work does not pass to the next holder of the id`,
          ),
        );
      const forgotten = core.store.forgetAgent(id);
      await Promise.all(cancelled);
      await forgotten;
      const tokenId = rec?.tokenId ?? s?.principal.tokenId ?? null;
      const owner = tokenId ? await core.store.findToken(tokenId) : undefined;
      core.store.audit({
        at: Date.now(),
        actor,
        action: "agent.forget",
        subject: id,
        detail: { pool, token: owner?.name ?? null },
      });
      core.logger.info(
        { agent_id: id, pool, token: owner?.name },
        "agent id forgotten: the next agent with it claims it",
      );
      return { agentId: id, pool, tokenName: owner?.name ?? "" };
    }),

    // Changes how many tasks a connected agent runs at once, until it restarts (its config
    // names the number it starts with). Running tasks are not touched.
    setAgentConcurrency: unary(core, "admin", (req, actor, p) => {
      const n = req.concurrency;
      if (!Number.isInteger(n) || n < 1 || n > MAX_AGENT_CONCURRENCY) {
        throw new SwitchboardError(
          Code.INVALID_ARGUMENT,
          `concurrency must be between 1 and ${MAX_AGENT_CONCURRENCY}, not ${n}`,
        );
      }
      const s = core.agents.get(req.agentId);
      if (!s || !s.connected || !poolAllowed(p, s.pool)) {
        throw new SwitchboardError(
          Code.FAILED_PRECONDITION,
          `agent ${shownName(req.agentId)} is not connected: see switchboard agents --all`,
        );
      }
      const from = s.hello.maxConcurrency;
      s.send({ body: { $case: "setConcurrency", value: { maxConcurrency: n } } });
      s.hello.maxConcurrency = n;
      core.store.audit({
        at: Date.now(),
        actor,
        action: "agent.concurrency",
        subject: req.agentId,
        detail: { from, to: n },
      });
      return sessionInfo(s, (id) => core.nodes.slotsUsed(id));
    }),
  };
}

/** The hubs of the cluster from their lease rows; the answering hub's own counts are current. */
async function clusterHubs(core: HubCore, member: ClusterMember, includeGone: boolean): Promise<HubInfo[]> {
  return (await member.hubs(includeGone)).map((h) => ({
    id: h.id,
    address: h.address,
    version: h.version,
    startedAtMs: h.startedAt,
    ...(h.id === member.id ? { ...loadInfo(core.load()), answering: true } : loadInfo(h)),
    leaseAgeMs: h.leaseAgeMs,
    live: h.live,
  }));
}

function loadInfo(
  l: HubLoad,
): Pick<HubInfo, "agents" | "clients" | "tasksInFlight" | "draining" | "answering"> {
  return {
    agents: l.agents,
    clients: l.clients,
    tasksInFlight: l.tasksInFlight,
    draining: l.draining,
    answering: false,
  };
}

/** A hub alone lists itself. */
function aloneHub(core: HubCore): HubInfo {
  return {
    id: "",
    address: "",
    version: VERSION,
    startedAtMs: core.startedAt,
    ...loadInfo(core.load()),
    answering: true,
    leaseAgeMs: 0,
    live: true,
  };
}
