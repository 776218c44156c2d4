// The admin API of the SDK, as `client.admin`: agents, tokens, cluster status and the audit log over
// the hub's AdminService, each call a unary RPC with the client's token and deadline.
import { status, type Metadata } from "@grpc/grpc-js";
import { SwitchboardError } from "../common/errors.js";
import type {
  AdminServiceClient,
  AgentInfo,
  AuditEntry,
  ClusterStatusResponse,
  CreateTokenResponse,
  ForgetAgentResponse,
  ListHubsResponse,
  TokenInfo,
} from "../gen/switchboard/v1/client.js";
import type { UnaryCall } from "./unary.js";

/** A token to create with {@link AdminApi.createToken}. */
export interface CreateTokenInput {
  /** A unique name; it is the actor in the audit log. */
  name: string;
  /** viewer reads; operator also runs and cancels tasks; admin does everything; agent connects an agent. */
  role: "admin" | "operator" | "viewer" | "agent";
  /** Scope it to these pools; default: all. */
  pools?: string[];
  /** Agent tokens: only an agent with this id may use it. */
  agentId?: string;
  /** Agent tokens: a second process may take over a live session of the same agent id. */
  allowTakeover?: boolean;
}

/**
 * The cluster's administration, as `client.admin`: agents, tokens, the audit log. Reading needs a
 * viewer token; tokens and concurrency an admin token.
 *
 * @example
 * ```ts
 * const status = await client.admin.clusterStatus();
 * console.log(status.summary);
 * const { token } = await client.admin.createToken({ name: "ci", role: "operator", pools: ["build"] });
 * ```
 */
export interface AdminApi {
  /** The agents the hub knows, optionally of one pool. */
  listAgents(opts?: { pool?: string; includeOffline?: boolean }): Promise<AgentInfo[]>;
  /** One agent by id; NOT_FOUND when the hub does not know it. */
  getAgent(agentId: string): Promise<AgentInfo>;
  /** Counts of agents, tasks and nodes, per pool, with a one-line summary. */
  clusterStatus(): Promise<ClusterStatusResponse>;
  /**
   * The hubs of the cluster, from their lease rows (a hub alone lists itself, with an empty id);
   * `includeGone` adds those whose lease lapsed.
   */
  listHubs(opts?: { includeGone?: boolean }): Promise<ListHubsResponse>;
  /** A new token; its secret is in the answer and nowhere else, so keep it. */
  createToken(input: CreateTokenInput): Promise<CreateTokenResponse>;
  /** The tokens' public records (never their secrets). */
  listTokens(opts?: { includeRevoked?: boolean }): Promise<TokenInfo[]>;
  /** Revokes a token by id or name: calls with it are refused from then on. */
  revokeToken(idOrName: string): Promise<TokenInfo>;
  /** The audit log, newest first. */
  listAudit(filter?: { limit?: number; action?: string; subject?: string }): Promise<AuditEntry[]>;
  /** How many tasks a connected agent runs at once, until it restarts. */
  setAgentConcurrency(agentId: string, concurrency: number): Promise<AgentInfo>;
  /** Releases an offline agent's id from its pool and token: the next agent with that id claims it. */
  forgetAgent(agentId: string): Promise<ForgetAgentResponse>;
}

/** `client.admin`: the AdminService calls, each through `unary` with the client's token and deadline. */
export function adminApi(a: AdminServiceClient, md: () => Metadata, unary: UnaryCall): AdminApi {
  return {
    listAgents: async (o = {}) =>
      (
        await unary<{ agents: AgentInfo[] }>((c, cb) =>
          a.listAgents({ pool: o.pool ?? "", includeOffline: o.includeOffline ?? false }, md(), c, cb),
        )
      ).agents,
    getAgent: (agentId) => unary<AgentInfo>((c, cb) => a.getAgent({ agentId }, md(), c, cb)),
    clusterStatus: () => unary<ClusterStatusResponse>((c, cb) => a.clusterStatus({}, md(), c, cb)),
    listHubs: (o = {}) =>
      unary<ListHubsResponse>((c, cb) => a.listHubs({ includeGone: o.includeGone ?? false }, md(), c, cb)),
    createToken: (i) =>
      unary<CreateTokenResponse>((c, cb) =>
        a.createToken(
          {
            name: i.name,
            role: i.role,
            pools: i.pools ?? [],
            agentId: i.agentId ?? "",
            allowTakeover: i.allowTakeover ?? false,
          },
          md(),
          c,
          cb,
        ),
      ),
    listTokens: async (o = {}) =>
      (
        await unary<{ tokens: TokenInfo[] }>((c, cb) =>
          a.listTokens({ includeRevoked: o.includeRevoked ?? false }, md(), c, cb),
        )
      ).tokens,
    listAudit: async (f = {}) =>
      (
        await unary<{ entries: AuditEntry[] }>((c, cb) =>
          a.listAudit({ limit: f.limit ?? 0, action: f.action ?? "", subject: f.subject ?? "" }, md(), c, cb),
        )
      ).entries,
    setAgentConcurrency: (agentId, concurrency) =>
      unary<AgentInfo>((c, cb) => a.setAgentConcurrency({ agentId, concurrency }, md(), c, cb)),
    forgetAgent: (agentId) => unary<ForgetAgentResponse>((c, cb) => a.forgetAgent({ agentId }, md(), c, cb)),
    revokeToken: async (idOrName) => {
      const r = await unary<{ info?: TokenInfo }>((c, cb) => a.revokeToken({ idOrName }, md(), c, cb));
      if (!r.info) throw new SwitchboardError(status.INTERNAL, "the hub answered without the token");
      return r.info;
    },
  };
}
