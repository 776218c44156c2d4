// A hub as a member of a cluster: its lease row in the shared store (claimed at start, renewed every
// third of cluster.lease_secs with what it holds, released when it stops), and its NATS connection,
// on which the hubs tell each other what must take effect everywhere at once. Today that is a
// token's revocation: the hub that revokes it publishes it, and every other hub ends the token's
// sessions and admits it no more. NATS delivers at most once, so each hub also asks the store, at
// every renewal, whether a token it admits from its cache was revoked: a lost message delays a
// revocation by one renewal at most. A message is acted on only once the store confirms it: NATS
// carries no proof of who published.
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { hostname } from "node:os";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Code, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { errorMessage } from "../store/errors.js";
import type { TokenAuthority } from "../auth.js";
import type { ClusterConfig } from "../config.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { TaskRecord } from "../store/index.js";
import type { ClusterStore, HubLease, HubRecord } from "./cluster-store.js";
import { MessageSigner } from "./signed-messages.js";
import { TaskRelay, type RelayHost } from "./task-relay.js";

/** What the hub holds, for its lease row. */
export interface HubLoad {
  agents: number;
  clients: number;
  tasksInFlight: number;
  draining: boolean;
}

/** A revocation as published: the token, and the hub that revoked it. */
interface RevokedMessage {
  tokenId: string;
  hub: string;
}

export class ClusterMember {
  readonly address: string;
  private readonly incarnation = randomUUID();
  private nc: NatsConnection | undefined;
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private leaseLost = false;
  private readonly subjects: { revoked: string; changed: string };
  private readonly prefix: string;
  private taskRelay: TaskRelay | undefined;
  private liveOthers = 0;
  private adopt: ((gone: string, tasks: TaskRecord[]) => void) | undefined;

  constructor(
    private readonly config: ClusterConfig,
    /** This hub's id (cluster.hub_id, or what the hub made of its host name and port). */
    readonly id: string,
    private readonly store: ClusterStore,
    /** Names the cluster: hubs share NATS subjects only with the hubs of their store. */
    storeLocation: string,
    private readonly auth: TokenAuthority,
    private readonly load: () => HubLoad,
    private readonly version: string,
    boundPort: number,
    private readonly logger: Logger,
  ) {
    this.address = config.advertise ?? `${hostname()}:${boundPort}`;
    const cluster = createHash("sha256").update(storeLocation).digest("hex").slice(0, 12);
    this.prefix = `switchboard.${cluster}`;
    this.subjects = { revoked: `${this.prefix}.tokens.revoked`, changed: `${this.prefix}.hubs.changed` };
  }

  /** Tasks across the hubs: set once joined. */
  get relay(): TaskRelay {
    if (!this.taskRelay) throw new Error("the hub has not joined its cluster");
    return this.taskRelay;
  }

  /** The other hubs whose lease was current at the last renewal. */
  get otherLiveHubs(): number {
    return this.liveOthers;
  }

  get leaseMs(): number {
    return this.config.leaseMs;
  }

  /**
   * Connects to NATS, claims the lease and starts relaying tasks for `host`; a start-up error names
   * what is wrong.
   */
  async join(
    host: RelayHost,
    agents: AgentRegistry,
    /** Takes on the unfinished tasks of a hub that is gone (this hub won them). */
    adopt: (gone: string, tasks: TaskRecord[]) => void,
  ): Promise<void> {
    this.adopt = adopt;
    try {
      this.nc = await connect({
        servers: this.config.nats,
        name: `switchboard-hub ${this.id}`,
        // A NATS server that goes away is waited for: the hub serves its own agents meanwhile.
        maxReconnectAttempts: -1,
        reconnectTimeWait: 500,
        timeout: 5_000,
      });
    } catch (err) {
      throw new SwitchboardError(
        Code.UNAVAILABLE,
        `cannot reach NATS at ${this.config.nats.join(", ")}: ${errorMessage(err)} (check cluster.nats, and that nats-server runs there)`,
        { cause: err },
      );
    }
    void this.watchStatus(this.nc);
    // A hub restarted after a crash finds its own lease still current: it waits for it to lapse. A
    // lease renewed meanwhile (its age went down) is another live hub with this id: refused at once.
    const nc = this.nc;
    const giveUpAt = Date.now() + this.config.leaseMs + 2_000;
    let held: { holder: string; ageMs: number } | undefined;
    let lastAge = Infinity;
    for (;;) {
      held = await this.store.claimLease(this.lease(), this.config.leaseMs).catch(async (err: unknown) => {
        await nc.close();
        throw err;
      });
      if (!held || (lastAge !== Infinity && held.ageMs < lastAge - 100) || Date.now() >= giveUpAt) break;
      if (lastAge === Infinity)
        this.logger.info(
          { hub_id: this.id, holder: held.holder },
          "waiting for this hub id's lease to lapse",
        );
      lastAge = held.ageMs;
      await new Promise((r) => setTimeout(r, 250));
    }
    if (held) {
      await nc.close();
      throw new SwitchboardError(
        Code.ALREADY_EXISTS,
        `hub id ${this.id} is held by a live hub at ${held.holder} (its lease renewed ${Math.round(held.ageMs / 1000)} s ago): give this hub another cluster.hub_id (--hub-id)`,
      );
    }
    this.subscribe(this.nc);
    const key = await this.store.clusterKey(randomBytes(32));
    const relay = new TaskRelay(this.nc, new MessageSigner(key), this.prefix, this.id, host, this.logger);
    relay.start();
    this.taskRelay = relay;
    // Agents that connected before the hub joined, then every one that comes or goes.
    agents.onPresence = (agentId, here) => (here ? relay.agentHere(agentId) : relay.agentGone(agentId));
    for (const s of agents.all()) relay.agentHere(s.agentId);
    this.auth.onRevoke((tokenId, where) => {
      if (where === "here")
        this.publish(this.subjects.revoked, { tokenId, hub: this.id } satisfies RevokedMessage);
    });
    // The other hubs now (offers wait for their answers), then at every renewal or change.
    await this.renew();
    this.nc.publish(this.subjects.changed, this.id);
    this.timer = setInterval(() => void this.renew(), Math.max(100, Math.floor(this.config.leaseMs / 3)));
    this.timer.unref();
    this.logger.info(
      { hub_id: this.id, advertise: this.address, nats: this.config.nats, lease_ms: this.config.leaseMs },
      "joined the cluster",
    );
  }

  /** The hubs with a lease row; `live`: renewed within the lease. */
  async hubs(includeGone: boolean): Promise<(HubRecord & { live: boolean })[]> {
    const rows = await this.store.listHubs();
    return rows.map((h) => ({ ...h, live: h.leaseAgeMs < h.leaseMs })).filter((h) => includeGone || h.live);
  }

  /** Renews the lease at once (after a change worth showing, such as a drain beginning). */
  renewNow(): Promise<void> {
    return this.renew();
  }

  /** Releases the lease and leaves NATS: the others see this hub gone at once. */
  async leave(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.renewing;
    this.taskRelay?.stop();
    if (!this.leaseLost) {
      await this.store.releaseLease(this.id, this.incarnation).catch((err: unknown) => {
        this.logger.warn({ err: errorMessage(err) }, "the hub's lease was not released; it lapses by itself");
      });
    }
    try {
      this.nc?.publish(this.subjects.changed, this.id);
    } catch {
      // NATS is away: the others see the lease gone at their next renewal.
    }
    await this.nc?.drain().catch(() => undefined);
    this.nc = undefined;
  }

  private lease(): HubLease {
    return {
      id: this.id,
      incarnation: this.incarnation,
      address: this.address,
      version: this.version,
      ...this.load(),
    };
  }

  private renew(): Promise<void> {
    this.renewing ??= (async () => {
      try {
        const renewed = await this.store.renewLease(this.lease());
        if (!renewed && !this.leaseLost) {
          this.leaseLost = true;
          this.logger.error(
            { hub_id: this.id },
            "this hub's lease was taken by another hub with its id: two hubs run with one cluster.hub_id",
          );
        } else if (renewed && this.leaseLost) {
          this.leaseLost = false;
        }
        const all = await this.hubs(true);
        const live = new Set(all.filter((h) => h.live).map((h) => h.id));
        this.liveOthers = [...live].filter((id) => id !== this.id).length;
        this.taskRelay?.dropRelaysOf(live);
        this.taskRelay?.dropProxiesOf(live);
        // A hub whose lease lapsed leaves its unfinished tasks: one hub takes them (the store says which).
        for (const h of all) {
          if (h.live || h.takenBy !== null || h.id === this.id || !this.adopt) continue;
          // Nothing came back: another hub took them, or there were none.
          const tasks = await this.store.takeOver(h.id, this.id);
          if (tasks.length > 0) this.adopt(h.id, tasks);
        }
        const revoked = await this.store.revokedAmong(this.auth.cachedTokenIds());
        for (const tokenId of revoked) {
          this.logger.info({ token_id: tokenId }, "token revoked by another hub (seen in the store)");
          this.auth.revokedElsewhere(tokenId);
        }
      } catch (err) {
        this.logger.warn({ err: errorMessage(err) }, "the hub's lease was not renewed");
      } finally {
        this.renewing = undefined;
      }
    })();
    return this.renewing;
  }

  private subscribe(nc: NatsConnection): void {
    nc.subscribe(this.subjects.revoked, {
      callback: (err, msg) => {
        if (err) return;
        const m = this.parse(msg.data);
        if (m && m.hub !== this.id) void this.confirmRevoked(m);
      },
    });
    // A hub that joins or leaves says so: the others read the hubs again at once.
    nc.subscribe(this.subjects.changed, {
      callback: (err, msg) => {
        if (!err && Buffer.from(msg.data).toString("utf8") !== this.id) void this.renew();
      },
    });
  }

  /**
   * Acts on a revocation the store holds: whoever may publish on NATS must not be able to shut a
   * live token out of a hub.
   */
  private async confirmRevoked(m: RevokedMessage): Promise<void> {
    try {
      if ((await this.store.revokedAmong([m.tokenId])).length === 0) {
        this.logger.warn(
          { token_id: m.tokenId, by: m.hub },
          "a revocation the store does not hold was ignored (a message forged on NATS, or a store out of step)",
        );
        return;
      }
    } catch (err) {
      // The store cannot say: the renewal's check acts on it once it can.
      this.logger.warn({ err: errorMessage(err), token_id: m.tokenId }, "a revocation could not be checked");
      return;
    }
    this.logger.info({ token_id: m.tokenId, by: m.hub }, "token revoked by another hub");
    this.auth.revokedElsewhere(m.tokenId);
  }

  private parse(data: Uint8Array): RevokedMessage | undefined {
    try {
      const v = JSON.parse(Buffer.from(data).toString("utf8")) as Partial<RevokedMessage>;
      if (typeof v.tokenId === "string" && typeof v.hub === "string")
        return { tokenId: v.tokenId, hub: v.hub };
    } catch {
      // fall through
    }
    this.logger.warn("a malformed cluster message was ignored");
    return undefined;
  }

  private publish(subject: string, message: RevokedMessage): void {
    try {
      this.nc?.publish(subject, JSON.stringify(message));
    } catch (err) {
      // The store carries it too: the other hubs see it at their next renewal.
      this.logger.warn({ err: errorMessage(err), subject }, "a cluster message was not published");
    }
  }

  private async watchStatus(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "disconnect")
        this.logger.warn({ server: s.server }, "NATS connection lost; reconnecting");
      else if (s.type === "reconnect") this.logger.info({ server: s.server }, "NATS connection back");
    }
  }
}
