// Queries on the tasks table. Statements are prepared once; parameters are positional so that the
// same SQL runs on PostgreSQL with $n placeholders.
import type { Database, Statement } from "better-sqlite3";
import type { NewTask, TaskFilter, TaskPatch, TaskRecord } from "../interfaces.js";
import { clampLimit } from "../list-limit.js";
import {
  COUNT_TASKS,
  SELECT_UNFINISHED_TASKS,
  TASK_COLUMNS,
  toTaskRecord,
  type TaskRow,
} from "../records.js";

const INSERT_TASK = `
INSERT INTO tasks (id, kind, target, pool, spec, state, agent_id, requester, created_at, assigned_at, deadline_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

const SELECT_TASK = `SELECT ${TASK_COLUMNS} FROM tasks WHERE id = ?`;

/** TaskPatch fields and the columns they set. */
const PATCH_COLUMNS = {
  state: "state",
  agentId: "agent_id",
  assignedAt: "assigned_at",
  startedAt: "started_at",
  finishedAt: "finished_at",
  exitCode: "exit_code",
  signal: "signal",
  errorCode: "error_code",
  errorMessage: "error_message",
  reason: "reason",
  durationMs: "duration_ms",
  result: "result",
} as const satisfies Record<keyof TaskPatch, string>;

const PATCH_FIELDS = Object.keys(PATCH_COLUMNS) as (keyof TaskPatch)[];

/** `UPDATE tasks SET <the patch's columns> WHERE id = ?`, for the columns in `mask`. */
function updateTaskSql(mask: number): string {
  const sets = PATCH_FIELDS.filter((_, i) => mask & (1 << i)).map((f) => `${PATCH_COLUMNS[f]} = ?`);
  return `UPDATE tasks SET ${sets.join(", ")} WHERE id = ?`;
}

/** `SELECT ... FROM tasks WHERE <the filter's conditions> ORDER BY id DESC LIMIT ?`. */
function listTasksSql(agentId: boolean, pool: boolean, beforeId: boolean, states: number): string {
  const where: string[] = [];
  if (agentId) where.push("agent_id = ?");
  // A pool's tasks: those targeted at it, and those that ran on one of its agents.
  if (pool) where.push("(pool = ? OR agent_id IN (SELECT id FROM agents WHERE pool = ?))");
  if (beforeId) where.push("id < ?");
  if (states > 0) where.push(`state IN (${Array.from({ length: states }, () => "?").join(", ")})`);
  return `SELECT ${TASK_COLUMNS} FROM tasks ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
ORDER BY id DESC LIMIT ?`;
}

type SqlValue = string | number | Uint8Array | null;

export class TaskQueries {
  private readonly insertStmt: Statement<SqlValue[]>;
  private readonly selectStmt: Statement<[string], TaskRow>;
  private readonly countStmt: Statement<[], { n: number }>;
  private readonly unfinishedStmt: Statement<[], TaskRow>;
  private readonly updateStmts = new Map<number, Statement<SqlValue[]>>();
  private readonly listStmts = new Map<string, Statement<SqlValue[], TaskRow>>();
  /** Reused for every update's parameters: updates are applied one at a time, synchronously. */
  private readonly updateParams: SqlValue[] = [];

  constructor(private readonly db: Database) {
    this.insertStmt = db.prepare<SqlValue[]>(INSERT_TASK);
    this.selectStmt = db.prepare(SELECT_TASK);
    this.countStmt = db.prepare(COUNT_TASKS);
    this.unfinishedStmt = db.prepare(SELECT_UNFINISHED_TASKS);
  }

  insert(task: NewTask): void {
    this.insertStmt.run(
      task.id,
      task.kind,
      JSON.stringify(task.target),
      task.target.pool ?? null,
      task.spec,
      task.state ?? "queued",
      task.agentId ?? null,
      task.requester,
      task.createdAt,
      task.assignedAt ?? null,
      task.deadlineAt,
    );
  }

  /** Applies a patch; fields that are undefined are left as they are. Returns the rows changed. */
  update(id: string, patch: TaskPatch): number {
    const params = this.updateParams;
    params.length = 0;
    let mask = 0;
    for (let i = 0; i < PATCH_FIELDS.length; i++) {
      const value = patch[PATCH_FIELDS[i]!];
      if (value === undefined) continue;
      mask |= 1 << i;
      params.push(value);
    }
    if (mask === 0) return 0;
    let stmt = this.updateStmts.get(mask);
    if (!stmt) {
      stmt = this.db.prepare<SqlValue[]>(updateTaskSql(mask));
      this.updateStmts.set(mask, stmt);
    }
    params.push(id);
    return stmt.run(...params).changes;
  }

  get(id: string): TaskRecord | undefined {
    const row = this.selectStmt.get(id);
    return row && toTaskRecord(row);
  }

  list(filter: TaskFilter): TaskRecord[] {
    const limit = clampLimit(filter.limit);
    const states = filter.states ?? [];
    const key = `${filter.agentId ? 1 : 0}${filter.pool ? 1 : 0}${filter.beforeId ? 1 : 0}${states.length}`;
    let stmt = this.listStmts.get(key);
    if (!stmt) {
      stmt = this.db.prepare<SqlValue[], TaskRow>(
        listTasksSql(!!filter.agentId, !!filter.pool, !!filter.beforeId, states.length),
      );
      this.listStmts.set(key, stmt);
    }
    const params: SqlValue[] = [];
    if (filter.agentId) params.push(filter.agentId);
    if (filter.pool) params.push(filter.pool, filter.pool);
    if (filter.beforeId) params.push(filter.beforeId);
    params.push(...states, limit);
    return stmt.all(...params).map(toTaskRecord);
  }

  listUnfinished(): TaskRecord[] {
    return this.unfinishedStmt.all().map(toTaskRecord);
  }

  count(): number {
    return this.countStmt.get()?.n ?? 0;
  }
}
