// Builders for task specs, so callers write `shell({ argv })` rather than protobuf unions.
import type { SubmitRequest } from "../gen/switchboard/v1/client.js";
import type { TaskSpec, Target } from "../gen/switchboard/v1/task.js";

/** Where a task may run: one agent, any agent of a pool, or any agent carrying all the labels. */
export interface TargetInput {
  agentId?: string;
  pool?: string;
  labels?: Record<string, string>;
}

export interface TaskRequest {
  spec: TaskSpec;
  target: TargetInput;
  /** Deadline from submission (queue wait included); 0 or absent: none. */
  timeoutMs?: number;
  /** Queue even when no agent of the target is connected (until the deadline). */
  waitForAgent?: boolean;
  /** Aborting cancels the task on the hub and rejects the call. */
  signal?: AbortSignal;
}

export interface ShellOptions {
  /** argv[0] is looked up on the agent's PATH. Exclusive with `script`. */
  argv?: string[];
  /** Run as `bash -c script`. Exclusive with `argv`. */
  script?: string;
  cwd?: string;
  env?: Record<string, string>;
  stdin?: Uint8Array | string;
  timeoutMs?: number;
  killGraceMs?: number;
}

function bytes(b: Uint8Array | string | undefined): Buffer {
  if (b === undefined) return Buffer.alloc(0);
  if (typeof b === "string") return Buffer.from(b, "utf8");
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

export function echo(payload: Uint8Array | string): { spec: TaskSpec } {
  return { spec: { kind: { $case: "echo", value: { payload: bytes(payload) } } } };
}

export function shell(opts: ShellOptions): { spec: TaskSpec } {
  const hasArgv = (opts.argv?.length ?? 0) > 0;
  if (hasArgv === (opts.script !== undefined)) {
    throw new TypeError("shell(): give exactly one of argv (a non-empty list) or script");
  }
  return {
    spec: {
      kind: {
        $case: "shell",
        value: {
          argv: opts.argv ?? [],
          script: opts.script ?? "",
          cwd: opts.cwd ?? "",
          env: opts.env ?? {},
          stdin: bytes(opts.stdin),
          timeoutMs: opts.timeoutMs ?? 0,
          killGraceMs: opts.killGraceMs ?? 0,
        },
      },
    },
  };
}

export interface SqlOptions {
  /** A datasource configured on the agent, or a driver name ("postgres", "mysql", "sqlite"): its first one. */
  datasource: string;
  query: string;
  /** Positional parameters ($1.. or ?), as JSON values. */
  params?: unknown[];
  /** Describe this table (columns, types, keys, indexes) in the result's header. */
  table?: string;
  /** Fail past this many rows (the datasource's own max_rows applies too). */
  maxRows?: number;
  /** Statement timeout; default: the datasource's. */
  timeoutMs?: number;
  /** Rows read from the database at a time; default 500. */
  batchRows?: number;
  /**
   * How rows travel: "ndjson" (default) as JSON arrays that query() yields as rows; "csv" encoded by the
   * agent, which query() yields as bytes ready to write (the cheapest way to a CSV file).
   */
  format?: "ndjson" | "csv";
}

export function sql(opts: SqlOptions): { spec: TaskSpec } {
  return {
    spec: {
      kind: {
        $case: "sql",
        value: {
          datasource: opts.datasource,
          query: opts.query,
          paramsJson: opts.params && opts.params.length > 0 ? JSON.stringify(opts.params) : "",
          table: opts.table ?? "",
          maxRows: opts.maxRows ?? 0,
          timeoutMs: opts.timeoutMs ?? 0,
          batchRows: opts.batchRows ?? 0,
          format: opts.format ?? "",
        },
      },
    },
  };
}

export function toTarget(t: TargetInput): Target {
  return { agentId: t.agentId ?? "", pool: t.pool ?? "", labels: t.labels ?? {} };
}

export function toSubmitRequest(req: TaskRequest): SubmitRequest {
  return {
    target: toTarget(req.target),
    spec: req.spec,
    timeoutMs: req.timeoutMs ?? 0,
    waitForAgent: req.waitForAgent ?? false,
  };
}
