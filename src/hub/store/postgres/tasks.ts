// Queries on the tasks table: the batched insert and update (one statement for every task in a
// commit, its rows passed as arrays), and the reads.
import type { NewTask, TaskFilter, TaskPatch, TaskRecord } from "../interfaces.js";
import { clampLimit } from "../list-limit.js";
import {
  COUNT_TASKS,
  SELECT_UNFINISHED_TASKS,
  TASK_COLUMNS,
  toTaskRecord,
  type TaskRow,
  int,
} from "../records.js";
import { bytes, type Sql } from "./sql.js";

// A duplicate id is not an error of the batch: the insert that names it fails alone.
export const INSERT_TASKS = `
INSERT INTO tasks (id, kind, target, pool, spec, state, agent_id, requester, created_at, assigned_at, deadline_at)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::text[],
                     $8::text[], $9::bigint[], $10::bigint[], $11::bigint[])
ON CONFLICT (id) DO NOTHING
RETURNING id`;

// One task alone (a submission at a time: the common case at low load) as a row of values: the
// arrays of INSERT_TASKS cost as much again to build and to unpack for one row.
export const INSERT_TASK = `
INSERT INTO tasks (id, kind, target, pool, spec, state, agent_id, requester, created_at, assigned_at, deadline_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (id) DO NOTHING
RETURNING id`;

// Each row's mask says which of the patch's fields it sets (bit i: PATCH_FIELDS[i]; bits 12 and 13:
// the output totals); the others keep their value, so that one statement applies patches of every
// shape.
const UPDATE_TASKS = `
UPDATE tasks AS t SET
  state         = CASE WHEN u.mask & 1    <> 0 THEN u.state         ELSE t.state END,
  agent_id      = CASE WHEN u.mask & 2    <> 0 THEN u.agent_id      ELSE t.agent_id END,
  assigned_at   = CASE WHEN u.mask & 4    <> 0 THEN u.assigned_at   ELSE t.assigned_at END,
  started_at    = CASE WHEN u.mask & 8    <> 0 THEN u.started_at    ELSE t.started_at END,
  finished_at   = CASE WHEN u.mask & 16   <> 0 THEN u.finished_at   ELSE t.finished_at END,
  exit_code     = CASE WHEN u.mask & 32   <> 0 THEN u.exit_code     ELSE t.exit_code END,
  signal        = CASE WHEN u.mask & 64   <> 0 THEN u.signal        ELSE t.signal END,
  error_code    = CASE WHEN u.mask & 128  <> 0 THEN u.error_code    ELSE t.error_code END,
  error_message = CASE WHEN u.mask & 256  <> 0 THEN u.error_message ELSE t.error_message END,
  reason        = CASE WHEN u.mask & 512  <> 0 THEN u.reason        ELSE t.reason END,
  duration_ms   = CASE WHEN u.mask & 1024 <> 0 THEN u.duration_ms   ELSE t.duration_ms END,
  result        = CASE WHEN u.mask & 2048 <> 0 THEN u.result        ELSE t.result END,
  stdout_bytes  = CASE WHEN u.mask & 4096 <> 0 THEN u.stdout_bytes  ELSE t.stdout_bytes END,
  stderr_bytes  = CASE WHEN u.mask & 8192 <> 0 THEN u.stderr_bytes  ELSE t.stderr_bytes END
FROM unnest($1::text[], $2::int[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[],
            $8::int[], $9::text[], $10::int[], $11::text[], $12::text[], $13::bigint[], $14::bytea[],
            $15::bigint[], $16::bigint[])
  AS u(id, mask, state, agent_id, assigned_at, started_at, finished_at, exit_code, signal, error_code,
       error_message, reason, duration_ms, result, stdout_bytes, stderr_bytes)
WHERE t.id = u.id
RETURNING t.id`;

const SELECT_TASK = `SELECT ${TASK_COLUMNS} FROM tasks WHERE id = $1`;

/** The mask bits of UPDATE_TASKS that set the output totals. */
const TOTALS_MASK = (1 << 12) | (1 << 13);

/** TaskPatch fields in the order of the mask bits of UPDATE_TASKS. */
const PATCH_FIELDS = [
  "state",
  "agentId",
  "assignedAt",
  "startedAt",
  "finishedAt",
  "exitCode",
  "signal",
  "errorCode",
  "errorMessage",
  "reason",
  "durationMs",
  "result",
] as const satisfies readonly (keyof TaskPatch)[];

/** Inserts the tasks; returns the ids that were new (the others exist already). */
export async function insertTasks(sql: Sql, tasks: readonly NewTask[]): Promise<Set<string>> {
  if (tasks.length === 0) return new Set();
  const { rows } = await sql.query<{ id: string }>(INSERT_TASKS, insertParams(tasks));
  return new Set(rows.map((r) => r.id));
}

/** The 11 values of INSERT_TASK. */
export function insertRowParams(t: NewTask): unknown[] {
  return [
    t.id,
    t.kind,
    JSON.stringify(t.target),
    t.target.pool ?? null,
    bytes(t.spec),
    t.state ?? "queued",
    t.agentId ?? null,
    t.requester,
    t.createdAt,
    t.assignedAt ?? null,
    t.deadlineAt,
  ];
}

/** The 11 arrays of a task insert: one element per task. */
export function insertParams(tasks: readonly NewTask[]): unknown[] {
  return [
    tasks.map((t) => t.id),
    tasks.map((t) => t.kind),
    tasks.map((t) => JSON.stringify(t.target)),
    tasks.map((t) => t.target.pool ?? null),
    tasks.map((t) => bytes(t.spec)),
    tasks.map((t) => t.state ?? "queued"),
    tasks.map((t) => t.agentId ?? null),
    tasks.map((t) => t.requester),
    tasks.map((t) => t.createdAt),
    tasks.map((t) => t.assignedAt ?? null),
    tasks.map((t) => t.deadlineAt),
  ];
}

/** Applies the patches; returns the ids of the tasks that exist (the others were not updated). */
export async function updateTasks(sql: Sql, patches: ReadonlyMap<string, TaskPatch>): Promise<Set<string>> {
  if (patches.size === 0) return new Set();
  const { rows } = await sql.query<{ id: string }>(UPDATE_TASKS, updateParams(patches));
  return new Set(rows.map((r) => r.id));
}

/** Output totals to set on task rows (stdout bytes, stderr bytes), by task id. */
export type Totals = ReadonlyMap<string, readonly [number, number]>;

/**
 * The 16 arrays of task row updates: id, mask (which fields it sets), each patch field, then the
 * output totals. A task with totals and no patch gets a row that sets only those.
 */
export function updateParams(patches: ReadonlyMap<string, TaskPatch>, totals: Totals = new Map()): unknown[] {
  const columns: unknown[][] = Array.from({ length: 4 + PATCH_FIELDS.length }, () => []);
  const [ids, masks] = columns as [unknown[], unknown[]];
  const [stdout, stderr] = columns.slice(2 + PATCH_FIELDS.length) as [unknown[], unknown[]];
  const row = (id: string, patch: TaskPatch | undefined): void => {
    let mask = 0;
    ids.push(id);
    PATCH_FIELDS.forEach((field, i) => {
      const value = patch?.[field];
      if (value !== undefined) mask |= 1 << i;
      columns[2 + i]!.push(value === undefined ? null : value instanceof Uint8Array ? bytes(value) : value);
    });
    const t = totals.get(id);
    if (t) mask |= TOTALS_MASK;
    stdout.push(t?.[0] ?? null);
    stderr.push(t?.[1] ?? null);
    masks.push(mask);
  };
  for (const [id, patch] of patches) row(id, patch);
  for (const id of totals.keys()) if (!patches.has(id)) row(id, undefined);
  return columns;
}

export async function getTask(sql: Sql, id: string): Promise<TaskRecord | undefined> {
  const { rows } = await sql.query<TaskRow>(SELECT_TASK, [id]);
  return rows[0] && toTaskRecord(rows[0]);
}

/** Newest first: `SELECT ... WHERE <the filter's conditions> ORDER BY id DESC LIMIT n`. */
export async function listTasks(sql: Sql, filter: TaskFilter): Promise<TaskRecord[]> {
  const where: string[] = [];
  const params: unknown[] = [];
  const param = (value: unknown): string => `$${params.push(value)}`;
  if (filter.agentId) where.push(`agent_id = ${param(filter.agentId)}`);
  // A pool's tasks: those targeted at it, and those that ran on one of its agents.
  if (filter.pool) {
    const p = param(filter.pool);
    where.push(`(pool = ${p} OR agent_id IN (SELECT id FROM agents WHERE pool = ${p}))`);
  }
  if (filter.beforeId) where.push(`id < ${param(filter.beforeId)}`);
  if (filter.states && filter.states.length > 0) where.push(`state = ANY(${param(filter.states)}::text[])`);
  const text = `SELECT ${TASK_COLUMNS} FROM tasks ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
ORDER BY id DESC LIMIT ${param(clampLimit(filter.limit))}`;
  const { rows } = await sql.query<TaskRow>(text, params);
  return rows.map(toTaskRecord);
}

// A hub's own (in a cluster, those it inserted: hub_id), and those no hub owns (written before).
const SELECT_OWN_UNFINISHED_TASKS = SELECT_UNFINISHED_TASKS.replace(
  "ORDER BY id",
  "AND (hub_id IS NULL OR hub_id = nullif(current_setting('switchboard.hub_id', true), ''))\nORDER BY id",
);

export async function listUnfinishedTasks(sql: Sql): Promise<TaskRecord[]> {
  const { rows } = await sql.query<TaskRow>(SELECT_OWN_UNFINISHED_TASKS);
  return rows.map(toTaskRecord);
}

export async function countTasks(sql: Sql): Promise<number> {
  const { rows } = await sql.query<{ n: string }>(COUNT_TASKS);
  return int(rows[0]?.n ?? 0);
}
