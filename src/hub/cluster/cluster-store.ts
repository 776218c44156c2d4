// What a cluster of hubs needs from the store they share beyond the Store interface: the hubs'
// leases, and which tokens were revoked (by any hub). Only the PostgreSQL store offers it.
import type { Store, TaskRecord } from "../store/index.js";

/** A hub's lease row as it writes it. */
export interface HubLease {
  id: string;
  /** One run of the hub: a restart is a new incarnation. */
  incarnation: string;
  address: string;
  version: string;
  agents: number;
  clients: number;
  tasksInFlight: number;
  draining: boolean;
}

/** A hub as `switchboard hubs` shows it. */
export interface HubRecord {
  id: string;
  address: string;
  version: string;
  startedAt: number;
  agents: number;
  clients: number;
  tasksInFlight: number;
  draining: boolean;
  /** Since the lease was last renewed, on the database's clock. */
  leaseAgeMs: number;
  /** Its lease: gone when not renewed for this long. */
  leaseMs: number;
  /** The hub that took its unfinished tasks once it was gone (null: none yet). */
  takenBy: string | null;
}

export interface ClusterStore {
  /** The database as shown (no password) and its schema: names the cluster. */
  readonly location: string;
  /** Claims the lease; undefined, or the live hub that holds the id. */
  claimLease(lease: HubLease, leaseMs: number): Promise<{ holder: string; ageMs: number } | undefined>;
  /** Renews the lease; false when another incarnation holds it. */
  renewLease(lease: HubLease): Promise<boolean>;
  releaseLease(id: string, incarnation: string): Promise<void>;
  /** Every hub with a row, live or not (live: its lease age is below its lease). */
  listHubs(): Promise<HubRecord[]>;
  /** The key the hubs sign their NATS messages with (`candidate` becomes it if there is none yet). */
  clusterKey(candidate: Buffer): Promise<Buffer>;
  /**
   * Takes the unfinished tasks of hub `gone`, whose lease lapsed, for hub `me`: at most one hub
   * gets them (the lease row goes in the same statement); [] when another did or it came back.
   */
  takeOver(gone: string, me: string): Promise<TaskRecord[]>;
  /** Which of these token ids are revoked. */
  revokedAmong(ids: readonly string[]): Promise<string[]>;
}

export function isClusterStore(store: Store): store is Store & ClusterStore {
  const s = store as Partial<ClusterStore>;
  return typeof s.claimLease === "function" && typeof s.listHubs === "function";
}
