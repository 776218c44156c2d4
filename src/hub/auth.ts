// Tokens: random secrets shown once, kept only as SHA-256 hashes, checked on every call, scoped
// by role and pools, and revocable with immediate effect on live sessions.
import { createHash, randomBytes } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Metadata } from "@grpc/grpc-js";
import { tokenFromMetadata } from "../common/auth.js";
import { Code, SwitchboardError } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import type { Role, Store, TokenRecord } from "./store/index.js";

export const ROLES: readonly Role[] = ["admin", "operator", "viewer", "agent"];

/** Who is calling, as far as the hub is concerned. */
export interface Principal {
  tokenId: string;
  name: string;
  role: Role;
  pools: string[];
  agentId: string | null;
  allowTakeover: boolean;
}

/** Whether this hub revoked a token, or heard that another hub of its cluster did. */
export type RevokedWhere = "here" | "elsewhere";

const CLIENT_RANK: Record<Exclude<Role, "agent">, number> = { viewer: 1, operator: 2, admin: 3 };

export function hashToken(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

export function newTokenSecret(): string {
  return `sbt_${randomBytes(32).toString("base64url")}`;
}

export function newTokenId(): string {
  return `tok_${randomBytes(9).toString("base64url")}`;
}

export class TokenAuthority {
  // Authentication reads a token from the store once; later calls with it read this cache, so the
  // hot path waits on the store only for a token not seen yet (or unknown, or revoked).
  private readonly cache = new Map<string, TokenRecord>();
  /** Tokens named by id in calls other hubs relay (they checked the secret), read once. */
  private readonly byId = new Map<string, TokenRecord>();
  // Tokens revoked through this authority: a store read that was in flight when one was revoked
  // may return it unrevoked, and must neither admit nor cache it.
  private readonly revoked = new Set<string>();
  private readonly revokeListeners = new Set<(tokenId: string, where: RevokedWhere) => void>();
  private lastTouch = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
  ) {}

  /** The caller of a call, or a SwitchboardError (UNAUTHENTICATED) saying what to do. */
  async authenticate(md: Metadata): Promise<Principal> {
    const secret = tokenFromMetadata(md);
    if (!secret) {
      throw new SwitchboardError(
        Code.UNAUTHENTICATED,
        "missing token: pass --token or set SWITCHBOARD_TOKEN",
      );
    }
    const hash = hashToken(secret);
    let rec = this.cache.get(hash);
    if (!rec) {
      rec = await this.store.findTokenByHash(hash);
      if (rec && rec.revokedAt === null && this.revoked.has(rec.id)) rec = { ...rec, revokedAt: Date.now() };
      if (rec && rec.revokedAt === null) this.cache.set(hash, rec);
    }
    if (!rec) {
      throw new SwitchboardError(
        Code.UNAUTHENTICATED,
        "unknown token: pass a valid --token or set SWITCHBOARD_TOKEN",
      );
    }
    if (rec.revokedAt !== null) {
      throw new SwitchboardError(
        Code.UNAUTHENTICATED,
        `token ${rec.name} was revoked: ask an admin for a new one`,
      );
    }
    const now = Date.now();
    // last_used_at is informational: write it at most once a minute per token.
    if ((this.lastTouch.get(rec.id) ?? 0) < now - 60_000) {
      this.lastTouch.set(rec.id, now);
      this.store.touchToken(rec.id, now);
    }
    return {
      tokenId: rec.id,
      name: rec.name,
      role: rec.role,
      pools: rec.pools,
      agentId: rec.agentId,
      allowTakeover: rec.allowTakeover,
    };
  }

  /**
   * The principal of a token by its id, for a call another hub of the cluster relays (it
   * authenticated the caller's secret): refused if the token is unknown or revoked.
   */
  async principalById(tokenId: string, min: Exclude<Role, "agent">): Promise<Principal> {
    let rec = this.byId.get(tokenId);
    if (!rec) {
      rec = await this.store.findToken(tokenId);
      // Cached as authenticate() caches by secret; a revocation drops it (forget()).
      if (rec && rec.id === tokenId && rec.revokedAt === null && !this.revoked.has(rec.id))
        this.byId.set(tokenId, rec);
    }
    if (!rec || rec.id !== tokenId)
      throw new SwitchboardError(Code.UNAUTHENTICATED, `unknown token ${tokenId} relayed by another hub`);
    if (rec.revokedAt !== null || this.revoked.has(rec.id))
      throw new SwitchboardError(
        Code.UNAUTHENTICATED,
        `token ${rec.name} was revoked: ask an admin for a new one`,
      );
    return this.requireRole(
      {
        tokenId: rec.id,
        name: rec.name,
        role: rec.role,
        pools: rec.pools,
        agentId: rec.agentId,
        allowTakeover: rec.allowTakeover,
      },
      min,
    );
  }

  /** A client principal with at least `min` role. */
  async requireClient(md: Metadata, min: Exclude<Role, "agent">): Promise<Principal> {
    return this.requireRole(await this.authenticate(md), min);
  }

  /**
   * An authenticated client principal, checked for at least `min` role. Streams authenticate
   * once and check the role per request: a revoked token ends its streams (onRevoke).
   */
  requireRole(p: Principal, min: Exclude<Role, "agent">): Principal {
    if (p.role === "agent") {
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `token ${p.name} is an agent token: clients need an admin, operator or viewer token`,
      );
    }
    if (CLIENT_RANK[p.role] < CLIENT_RANK[min]) {
      const what = min === "operator" ? "run or cancel tasks" : "manage tokens";
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `role ${p.role} cannot ${what}; ask an admin for an ${min} token`,
      );
    }
    return p;
  }

  async requireAgent(md: Metadata): Promise<Principal> {
    const p = await this.authenticate(md);
    if (p.role !== "agent") {
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `token ${p.name} has role ${p.role}: agents need an agent token (switchboard token create --role agent --pool P)`,
      );
    }
    return p;
  }

  /** Makes a token; resolves once it is on record. */
  async create(input: {
    name?: string;
    role: string;
    pools?: string[];
    agentId?: string;
    allowTakeover?: boolean;
  }): Promise<{
    secret: string;
    record: TokenRecord;
  }> {
    if (!ROLES.includes(input.role as Role)) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `unknown role "${input.role}": use one of ${ROLES.join(", ")}`,
      );
    }
    const role = input.role as Role;
    if (input.agentId && role !== "agent") {
      throw new SwitchboardError(Code.INVALID_ARGUMENT, "only agent tokens can be pinned to an agent id");
    }
    if (input.allowTakeover && role !== "agent") {
      throw new SwitchboardError(Code.INVALID_ARGUMENT, "only agent tokens can allow session takeover");
    }
    const pools = [...new Set((input.pools ?? []).map((p) => p.trim()).filter(Boolean))];
    const id = newTokenId();
    const name = input.name?.trim() || `${role}-${id.slice(4, 10)}`;
    if (!/^[\w.@:-]{1,128}$/.test(name)) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `token name "${name}" is not allowed: use letters, digits and . _ - @ : (at most 128)`,
      );
    }
    const secret = newTokenSecret();
    const record: TokenRecord = {
      id,
      name,
      role,
      pools,
      agentId: input.agentId || null,
      hash: hashToken(secret),
      createdAt: Date.now(),
      revokedAt: null,
      lastUsedAt: null,
      allowTakeover: input.allowTakeover === true,
    };
    await this.store.insertToken(record);
    return { secret, record };
  }

  /** Revokes a token; resolves once the revocation is on record and its sessions were told. */
  async revoke(idOrName: string): Promise<TokenRecord> {
    const rec = await this.store.findToken(idOrName);
    if (!rec)
      throw new SwitchboardError(
        Code.NOT_FOUND,
        `no token with id or name "${idOrName}": see switchboard token list`,
      );
    if (rec.revokedAt === null) {
      const at = Date.now();
      await this.store.revokeToken(rec.id, at);
      rec.revokedAt = at;
    }
    this.forget(rec.id, "here");
    return rec;
  }

  /**
   * Another hub of the cluster revoked the token (it is on record in the shared store): it admits
   * nothing more here either, and its sessions here end.
   */
  revokedElsewhere(tokenId: string): void {
    if (!this.revoked.has(tokenId)) this.forget(tokenId, "elsewhere");
  }

  private forget(tokenId: string, where: RevokedWhere): void {
    this.revoked.add(tokenId);
    for (const [hash, rec] of this.cache) if (rec.id === tokenId) this.cache.delete(hash);
    this.byId.delete(tokenId);
    for (const l of this.revokeListeners) l(tokenId, where);
  }

  /** The tokens this hub admits without reading the store: those a revocation elsewhere must reach. */
  cachedTokenIds(): string[] {
    return [...new Set([...this.cache.values(), ...this.byId.values()].map((r) => r.id))];
  }

  onRevoke(listener: (tokenId: string, where: RevokedWhere) => void): void {
    this.revokeListeners.add(listener);
  }

  /** Whether this authority revoked the token: an admission that read the store meanwhile must not open. */
  wasRevoked(tokenId: string): boolean {
    return this.revoked.has(tokenId);
  }

  /** First start: make an admin token and leave it, 0600, where the CLI on this machine looks. */
  async bootstrapAdmin(dataDir: string): Promise<string> {
    const file = join(dataDir, "admin.token");
    const hasAdmin = (await this.store.listTokens(false)).some((t) => t.role === "admin");
    if (hasAdmin && existsSync(file)) return file;
    if (hasAdmin) {
      this.logger.info({ file }, "an admin token exists but its file is gone; not writing a new one");
      return file;
    }
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    const { secret } = await this.create({ name: `admin-${Date.now().toString(36)}`, role: "admin" });
    writeFileSync(file, `${secret}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
    this.logger.info({ file }, "created the first admin token");
    return file;
  }
}

/** Whether a principal's pool scope admits a pool. */
export function poolAllowed(p: Principal, pool: string): boolean {
  return p.pools.length === 0 || p.pools.includes(pool);
}

/**
 * Why a principal may register an agent id (for the log and the audit entry): "new" (first seen),
 * "owner" (the token it belongs to), or why the id changes hands.
 */
export type AgentIdClaim = "new" | "owner" | "unowned" | "owner-revoked" | "takeover";

/**
 * Whether `p` may register `agentId` into `pool`, given the id's record (its pool and the token it
 * belongs to). An agent id belongs to the pool and token it first registered with: with a token for
 * pool A nobody becomes pool B's agent b1, online or offline, and a client's `--agent b1` never reaches
 * an impostor. Another token of the same pool is refused too: tokens are handed out per host or site,
 * and one leaked token must not let its holder pose as every agent of the pool.
 *
 * The id changes hands, within its pool only, when an admin meant it to: the record predates token
 * ownership (the first token to connect claims it); its token was revoked (rotation: create the new
 * token, revoke the old, and the agent's next connection with the new one claims its id); or the
 * token allows takeover (made for replacement hosts). `switchboard agents forget ID` releases an id
 * altogether, pool included.
 */
export async function agentIdClaim(
  p: Principal,
  agentId: string,
  pool: string,
  rec: { pool: string; tokenId: string | null } | undefined,
  tokenById: (id: string) => Promise<TokenRecord | undefined>,
): Promise<AgentIdClaim> {
  if (!rec) return "new";
  const forget = `an admin can release it with \`switchboard agents forget ${agentId}\``;
  if (rec.pool !== pool) {
    const whose = rec.tokenId === p.tokenId || rec.tokenId === null ? "" : " with another token";
    throw new SwitchboardError(
      Code.PERMISSION_DENIED,
      `agent id ${agentId} is registered to pool ${rec.pool}${whose}, not ${pool}; ${forget}`,
    );
  }
  if (rec.tokenId === p.tokenId) return "owner";
  if (rec.tokenId === null) return "unowned";
  // A token the store does not know (the tokenless seed-000 principal) is never revoked: it keeps its ids.
  if (((await tokenById(rec.tokenId))?.revokedAt ?? null) !== null) return "owner-revoked";
  if (p.allowTakeover) return "takeover";
  throw new SwitchboardError(
    Code.PERMISSION_DENIED,
    `agent id ${agentId} is registered to pool ${rec.pool} with another token; ${forget}`,
  );
}
