// Rows as both stores read them back, and the records the hub sees. The engines differ only in
// how a value arrives: an integer column is a number in SQLite and a BIGINT string in PostgreSQL
// (it may exceed 2^53), a boolean a 0/1 in SQLite and a boolean in PostgreSQL.
import { ALL_STATES, isTerminal, type TaskStateName } from "../../common/task-state.js";
import type { AgentRecord, NodeRow, Role, TargetRecord, TaskRecord, TokenRecord } from "./interfaces.js";

/** An integer column: a number (SQLite), or a BIGINT as a string (PostgreSQL). */
export type IntColumn = number | string;
/** A boolean column: 0 or 1 (SQLite), or a boolean (PostgreSQL). */
export type BoolColumn = number | boolean;

/** The store's integers are milliseconds and byte counts: well within 2^53. */
export function int(value: IntColumn): number {
  return typeof value === "number" ? value : Number(value);
}

export function intOrNull(value: IntColumn | null): number | null {
  return value === null ? null : int(value);
}

function bool(value: BoolColumn): boolean {
  return value === true || value === 1;
}

/** The columns a TaskRow is read from. */
export const TASK_COLUMNS = `id, kind, target, spec, state, agent_id, requester, created_at, assigned_at, started_at,
  finished_at, deadline_at, exit_code, signal, error_code, error_message, reason, duration_ms,
  stdout_bytes, stderr_bytes, result`;

export const COUNT_TASKS = `SELECT COUNT(*) AS n FROM tasks`;

export const UNFINISHED_STATES = ALL_STATES.filter((s) => !isTerminal(s));

/** The same text in both dialects. The states are written out (not bound) so that SQLite's partial index tasks_unfinished applies (PostgreSQL scans: its task updates stay HOT without it). */
export const SELECT_UNFINISHED_TASKS = `
SELECT ${TASK_COLUMNS} FROM tasks
WHERE state IN (${UNFINISHED_STATES.map((s) => `'${s}'`).join(", ")})
ORDER BY id`;

export interface TaskRow {
  id: string;
  kind: string;
  target: string;
  spec: Buffer;
  state: TaskStateName;
  agent_id: string | null;
  requester: string;
  created_at: IntColumn;
  assigned_at: IntColumn | null;
  started_at: IntColumn | null;
  finished_at: IntColumn | null;
  deadline_at: IntColumn | null;
  exit_code: number | null;
  signal: string | null;
  error_code: number | null;
  error_message: string | null;
  reason: string | null;
  duration_ms: IntColumn | null;
  stdout_bytes: IntColumn;
  stderr_bytes: IntColumn;
  result: Buffer | null;
}

export function toTaskRecord(row: TaskRow): TaskRecord {
  return {
    id: row.id,
    kind: row.kind,
    target: JSON.parse(row.target) as TargetRecord,
    spec: row.spec,
    state: row.state,
    agentId: row.agent_id,
    requester: row.requester,
    createdAt: int(row.created_at),
    assignedAt: intOrNull(row.assigned_at),
    startedAt: intOrNull(row.started_at),
    finishedAt: intOrNull(row.finished_at),
    deadlineAt: intOrNull(row.deadline_at),
    exitCode: row.exit_code,
    signal: row.signal,
    errorCode: row.error_code,
    errorMessage: row.error_message,
    reason: row.reason,
    durationMs: intOrNull(row.duration_ms),
    stdoutBytes: int(row.stdout_bytes),
    stderrBytes: int(row.stderr_bytes),
    result: row.result,
  };
}

export interface AgentRow {
  id: string;
  pool: string;
  labels: string;
  hostname: string;
  platform: string;
  version: string;
  task_kinds: string;
  max_concurrency: number;
  first_seen_at: IntColumn;
  last_seen_at: IntColumn;
  last_session_id: string | null;
  connected: BoolColumn;
  token_id: string | null;
}

export function toAgentRecord(row: AgentRow): AgentRecord {
  return {
    id: row.id,
    pool: row.pool,
    labels: JSON.parse(row.labels) as Record<string, string>,
    hostname: row.hostname,
    platform: row.platform,
    version: row.version,
    taskKinds: JSON.parse(row.task_kinds) as string[],
    maxConcurrency: row.max_concurrency,
    firstSeenAt: int(row.first_seen_at),
    lastSeenAt: int(row.last_seen_at),
    lastSessionId: row.last_session_id,
    connected: bool(row.connected),
    tokenId: row.token_id,
  };
}

/** The columns a TokenRow is read from, and a token written, in this order (tokenValues). */
export const TOKEN_COLUMNS = `id, name, role, pools, agent_id, hash, created_at, revoked_at, last_used_at, allow_takeover`;

/** A token's values in the order of TOKEN_COLUMNS; `flag` writes a boolean as the engine keeps it. */
export function tokenValues<F>(
  t: TokenRecord,
  flag: (value: boolean) => F,
): [string, string, Role, string, string | null, string, number, number | null, number | null, F] {
  return [
    t.id,
    t.name,
    t.role,
    JSON.stringify(t.pools),
    t.agentId,
    t.hash,
    t.createdAt,
    t.revokedAt,
    t.lastUsedAt,
    flag(t.allowTakeover),
  ];
}

export interface TokenRow {
  id: string;
  name: string;
  role: Role;
  pools: string;
  agent_id: string | null;
  hash: string;
  created_at: IntColumn;
  revoked_at: IntColumn | null;
  last_used_at: IntColumn | null;
  allow_takeover: BoolColumn;
}

export function toTokenRecord(row: TokenRow): TokenRecord {
  return {
    id: row.id,
    name: row.name,
    role: row.role,
    pools: JSON.parse(row.pools) as string[],
    agentId: row.agent_id,
    hash: row.hash,
    createdAt: int(row.created_at),
    revokedAt: intOrNull(row.revoked_at),
    lastUsedAt: intOrNull(row.last_used_at),
    allowTakeover: bool(row.allow_takeover),
  };
}

/** A row of the nodes table. */
export interface NodeTableRow {
  id: string;
  agent_id: string;
  desired: string;
  spec: Buffer;
  record: Buffer | null;
  record_at: IntColumn | null;
  reschedule: BoolColumn;
  pool: string;
  labels: string;
  created_at: IntColumn;
  updated_at: IntColumn;
}

export function toNodeRow(r: NodeTableRow): NodeRow {
  return {
    id: r.id,
    agentId: r.agent_id,
    desired: r.desired === "stopped" ? "stopped" : "running",
    spec: r.spec,
    record: r.record,
    recordAt: intOrNull(r.record_at),
    reschedule: bool(r.reschedule),
    pool: r.pool,
    labels: JSON.parse(r.labels) as Record<string, string>,
    createdAt: int(r.created_at),
    updatedAt: int(r.updated_at),
  };
}
