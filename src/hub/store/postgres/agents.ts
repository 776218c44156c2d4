// Queries on the agents table: the last known record of every agent that ever connected. A commit
// upserts every pending agent with one statement.
import type { AgentRecord } from "../interfaces.js";
import { toAgentRecord, type AgentRow } from "../records.js";
import type { Sql } from "./sql.js";

const AGENT_COLUMNS = `id, pool, labels, hostname, platform, version, task_kinds, max_concurrency,
  first_seen_at, last_seen_at, last_session_id, connected, token_id`;

// first_seen_at keeps the value of the first insert.
const UPSERT_AGENTS = `
INSERT INTO agents (${AGENT_COLUMNS})
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::int[], $9::bigint[], $10::bigint[], $11::text[], $12::bool[], $13::text[])
ON CONFLICT (id) DO UPDATE SET
  pool = excluded.pool,
  labels = excluded.labels,
  hostname = excluded.hostname,
  platform = excluded.platform,
  version = excluded.version,
  task_kinds = excluded.task_kinds,
  max_concurrency = excluded.max_concurrency,
  last_seen_at = excluded.last_seen_at,
  last_session_id = excluded.last_session_id,
  connected = excluded.connected,
  token_id = excluded.token_id`;

const SELECT_AGENT = `SELECT ${AGENT_COLUMNS} FROM agents WHERE id = $1`;

const SELECT_AGENTS = `SELECT ${AGENT_COLUMNS} FROM agents ORDER BY id`;

const DELETE_AGENT = `DELETE FROM agents WHERE id = $1`;

const MARK_ALL_DISCONNECTED = `UPDATE agents SET connected = FALSE WHERE connected`;

export async function upsertAgents(sql: Sql, agents: readonly AgentRecord[]): Promise<void> {
  if (agents.length > 0) await sql.query(UPSERT_AGENTS, upsertParams(agents));
}

/** The 13 arrays of agent records, in AGENT_COLUMNS order. */
export function upsertParams(agents: readonly AgentRecord[]): unknown[] {
  return [
    agents.map((a) => a.id),
    agents.map((a) => a.pool),
    agents.map((a) => JSON.stringify(a.labels)),
    agents.map((a) => a.hostname),
    agents.map((a) => a.platform),
    agents.map((a) => a.version),
    agents.map((a) => JSON.stringify(a.taskKinds)),
    agents.map((a) => a.maxConcurrency),
    agents.map((a) => a.firstSeenAt),
    agents.map((a) => a.lastSeenAt),
    agents.map((a) => a.lastSessionId),
    agents.map((a) => a.connected),
    agents.map((a) => a.tokenId),
  ];
}

export async function markAllAgentsDisconnected(sql: Sql): Promise<void> {
  await sql.query(MARK_ALL_DISCONNECTED);
}

export async function getAgent(sql: Sql, id: string): Promise<AgentRecord | undefined> {
  const { rows } = await sql.query<AgentRow>(SELECT_AGENT, [id]);
  return rows[0] && toAgentRecord(rows[0]);
}

export async function listAgents(sql: Sql): Promise<AgentRecord[]> {
  const { rows } = await sql.query<AgentRow>(SELECT_AGENTS);
  return rows.map(toAgentRecord);
}

/** Returns false when no agent has that id. */
export async function deleteAgent(sql: Sql, id: string): Promise<boolean> {
  const { rowCount } = await sql.query(DELETE_AGENT, [id]);
  return (rowCount ?? 0) > 0;
}
