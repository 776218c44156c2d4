// Queries on the nodes table: the hub's registry of supervised nodes. A commit upserts and deletes
// every pending node write with one statement each.
import type { NodeRow } from "../interfaces.js";
import { toNodeRow, type NodeTableRow } from "../records.js";
import { bytes, type Sql } from "./sql.js";

const NODE_COLUMNS = `id, agent_id, desired, spec, record, record_at, reschedule, pool, labels, created_at, updated_at`;

// created_at keeps the value of the first insert.
const UPSERT_NODES = `
INSERT INTO nodes (${NODE_COLUMNS})
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::bigint[], $7::bool[],
                     $8::text[], $9::text[], $10::bigint[], $11::bigint[])
ON CONFLICT (id) DO UPDATE SET
  agent_id = excluded.agent_id,
  desired = excluded.desired,
  spec = excluded.spec,
  record = excluded.record,
  record_at = excluded.record_at,
  reschedule = excluded.reschedule,
  pool = excluded.pool,
  labels = excluded.labels,
  updated_at = excluded.updated_at`;

const DELETE_NODES = `DELETE FROM nodes WHERE id = ANY($1::text[])`;

const SELECT_NODES = `SELECT ${NODE_COLUMNS} FROM nodes ORDER BY created_at, id`;

/** Writes the node rows and deletions (null) of a commit. */
export async function writeNodes(sql: Sql, nodes: ReadonlyMap<string, NodeRow | null>): Promise<void> {
  const { deleted, rows } = splitWrites(nodes);
  if (deleted.length > 0) await sql.query(DELETE_NODES, [deleted]);
  if (rows.length > 0) await sql.query(UPSERT_NODES, upsertParams(rows));
}

/** The ids a commit deletes, and the rows it upserts. */
export function splitWrites(nodes: ReadonlyMap<string, NodeRow | null>): {
  deleted: string[];
  rows: NodeRow[];
} {
  return {
    deleted: [...nodes].filter(([, n]) => n === null).map(([id]) => id),
    rows: [...nodes.values()].filter((n): n is NodeRow => n !== null),
  };
}

/** The 11 arrays of node rows, in NODE_COLUMNS order. */
export function upsertParams(rows: readonly NodeRow[]): unknown[] {
  return [
    rows.map((n) => n.id),
    rows.map((n) => n.agentId),
    rows.map((n) => n.desired),
    rows.map((n) => bytes(n.spec)),
    rows.map((n) => n.record && bytes(n.record)),
    rows.map((n) => n.recordAt),
    rows.map((n) => n.reschedule),
    rows.map((n) => n.pool),
    rows.map((n) => JSON.stringify(n.labels)),
    rows.map((n) => n.createdAt),
    rows.map((n) => n.updatedAt),
  ];
}

export async function listNodes(sql: Sql): Promise<NodeRow[]> {
  const { rows } = await sql.query<NodeTableRow>(SELECT_NODES);
  return rows.map(toNodeRow);
}
