// Queries on the hubs table (migration 5): a hub's lease, claimed at start, renewed while it runs,
// dropped when it stops; all on the database's clock.
import type { HubLease, HubRecord } from "../../cluster/cluster-store.js";
import type { TaskRecord } from "../interfaces.js";
import { int, TASK_COLUMNS, toTaskRecord, UNFINISHED_STATES, type TaskRow } from "../records.js";
import type { Sql } from "./sql.js";

const NOW_MS = `(extract(epoch FROM clock_timestamp()) * 1000)::bigint`;

// Taken when the id is free, when its holder let the lease lapse, or when it is this run's own.
const CLAIM = `
INSERT INTO hubs AS h (id, incarnation, address, version, started_at, renewed_at, lease_ms, agents,
                       clients, tasks_in_flight, draining)
VALUES ($1, $2, $3, $4, ${NOW_MS}, ${NOW_MS}, $9, $5, $6, $7, $8)
ON CONFLICT (id) DO UPDATE SET
  incarnation = excluded.incarnation, address = excluded.address, version = excluded.version,
  started_at = excluded.started_at, renewed_at = excluded.renewed_at, lease_ms = excluded.lease_ms,
  agents = excluded.agents, clients = excluded.clients, tasks_in_flight = excluded.tasks_in_flight,
  draining = excluded.draining, taken_by = NULL
WHERE h.incarnation = excluded.incarnation OR h.renewed_at < ${NOW_MS} - h.lease_ms
RETURNING id`;

const HOLDER = `SELECT address, ${NOW_MS} - renewed_at AS age_ms FROM hubs WHERE id = $1`;

const RENEW = `
UPDATE hubs SET renewed_at = ${NOW_MS}, address = $3, agents = $4, clients = $5, tasks_in_flight = $6,
                draining = $7
WHERE id = $1 AND incarnation = $2
RETURNING id`;

const RELEASE = `DELETE FROM hubs WHERE id = $1 AND incarnation = $2`;

// Rows of hubs gone for a day are dropped as the list is read.
const PRUNE = `DELETE FROM hubs WHERE renewed_at < ${NOW_MS} - 86400000`;

const LIST = `
SELECT id, address, version, started_at, agents, clients, tasks_in_flight, draining, lease_ms, taken_by,
       ${NOW_MS} - renewed_at AS lease_age_ms
FROM hubs ORDER BY id`;

interface HubRow {
  id: string;
  address: string;
  version: string;
  started_at: string;
  agents: number;
  clients: number;
  tasks_in_flight: number;
  draining: boolean;
  lease_ms: string;
  taken_by: string | null;
  lease_age_ms: string;
}

function leaseValues(l: HubLease): unknown[] {
  return [l.agents, l.clients, l.tasksInFlight, l.draining];
}

/**
 * Claims the hub's lease; undefined when another live hub holds the id (then its address and how
 * long ago it renewed).
 */
export async function claimLease(
  sql: Sql,
  l: HubLease,
  leaseMs: number,
): Promise<{ holder: string; ageMs: number } | undefined> {
  const { rowCount } = await sql.query(CLAIM, [
    l.id,
    l.incarnation,
    l.address,
    l.version,
    ...leaseValues(l),
    leaseMs,
  ]);
  if (rowCount === 1) return undefined;
  const { rows } = await sql.query<{ address: string; age_ms: string }>(HOLDER, [l.id]);
  return { holder: rows[0]?.address ?? "?", ageMs: int(rows[0]?.age_ms ?? 0) };
}

/** Renews the lease; false when another incarnation holds it now. */
export async function renewLease(sql: Sql, l: HubLease): Promise<boolean> {
  const { rowCount } = await sql.query(
    RENEW,
    [l.id, l.incarnation, l.address, ...leaseValues(l)],
    "renew_lease",
  );
  return rowCount === 1;
}

export async function releaseLease(sql: Sql, id: string, incarnation: string): Promise<void> {
  await sql.query(RELEASE, [id, incarnation]);
}

export async function listHubs(sql: Sql): Promise<HubRecord[]> {
  await sql.query(PRUNE);
  const { rows } = await sql.query<HubRow>(LIST);
  return rows.map((r) => ({
    id: r.id,
    address: r.address,
    version: r.version,
    startedAt: int(r.started_at),
    agents: r.agents,
    clients: r.clients,
    tasksInFlight: r.tasks_in_flight,
    draining: r.draining,
    leaseAgeMs: int(r.lease_age_ms),
    leaseMs: int(r.lease_ms),
    takenBy: r.taken_by,
  }));
}

/** Which of these tokens are revoked now. */
export async function revokedAmong(sql: Sql, ids: readonly string[]): Promise<string[]> {
  if (ids.length === 0) return [];
  const { rows } = await sql.query<{ id: string }>(
    `SELECT id FROM tokens WHERE id = ANY($1::text[]) AND revoked_at IS NOT NULL`,
    [ids],
  );
  return rows.map((r) => r.id);
}

/** The cluster's signing key: the first hub's candidate, kept; every later hub reads it. */
export async function clusterKey(sql: Sql, candidate: Buffer): Promise<Buffer> {
  await sql.query(`INSERT INTO cluster_key (id, key) VALUES (1, $1) ON CONFLICT (id) DO NOTHING`, [
    candidate,
  ]);
  const { rows } = await sql.query<{ key: Buffer }>(`SELECT key FROM cluster_key WHERE id = 1`);
  return rows[0]!.key;
}

// A gone hub's lease row is marked by the one hub that takes its work, in the statement that moves
// its unfinished tasks to that hub: two hubs that see it gone at once cannot both take them.
const TAKE_OVER = `
WITH gone AS (
  UPDATE hubs SET taken_by = $2
  WHERE id = $1 AND taken_by IS NULL AND renewed_at < ${NOW_MS} - lease_ms
  RETURNING id
)
UPDATE tasks SET hub_id = $2
WHERE hub_id IN (SELECT id FROM gone) AND state IN (${UNFINISHED_STATES.map((s) => `'${s}'`).join(", ")})
RETURNING ${TASK_COLUMNS}`;

/** Takes a gone hub's unfinished tasks (none if another hub took them, or it renewed meanwhile). */
export async function takeOver(sql: Sql, gone: string, me: string): Promise<TaskRecord[]> {
  const { rows } = await sql.query<TaskRow>(TAKE_OVER, [gone, me]);
  return rows.map(toTaskRecord);
}
