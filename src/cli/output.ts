// Listings: an aligned table on a terminal, JSON (`--output json`) for scripts. The JSON rows are
// plain objects with camelCase fields and lower-case state names, stable for tools to read.
import Table from "cli-table3";
import { formatDuration } from "../common/duration.js";
import { stateFromWire } from "../common/task-state.js";
import { AgentHealth, type AgentInfo, type TokenInfo } from "../gen/switchboard/v1/client.js";
import type { TaskInfo } from "../gen/switchboard/v1/task.js";
import { usageError } from "./cli-error.js";

export type OutputFormat = "table" | "json";

export function outputFormat(raw: string | undefined): OutputFormat {
  const v = raw ?? "table";
  if (v !== "table" && v !== "json") throw usageError(`--output must be table or json, not "${v}"`);
  return v;
}

export interface Column<R> {
  header: string;
  value(row: R): string;
}

export function printList<R extends object>(
  rows: R[],
  columns: Column<R>[],
  format: OutputFormat,
  empty: string,
): void {
  if (format === "json") {
    process.stdout.write(JSON.stringify(rows, null, 2) + "\n");
    return;
  }
  if (rows.length === 0) {
    process.stderr.write(empty + "\n");
    return;
  }
  const table = new Table({
    head: columns.map((c) => c.header),
    style: {
      head: process.stdout.isTTY ? ["cyan"] : [],
      border: [],
      compact: true,
      "padding-left": 0,
      "padding-right": 0,
    },
    chars: {
      top: "",
      "top-mid": "",
      "top-left": "",
      "top-right": "",
      bottom: "",
      "bottom-mid": "",
      "bottom-left": "",
      "bottom-right": "",
      left: "",
      "left-mid": "",
      mid: "",
      "mid-mid": "",
      right: "",
      "right-mid": "",
      middle: "  ",
    },
  });
  for (const r of rows) table.push(columns.map((c) => c.value(r)));
  process.stdout.write(
    table
      .toString()
      .split("\n")
      .map((l) => l.trimEnd().replace(/^ /, ""))
      .join("\n") + "\n",
  );
}

export function printObject(obj: object, format: OutputFormat): void {
  if (format === "json") {
    process.stdout.write(JSON.stringify(obj, null, 2) + "\n");
    return;
  }
  const entries = Object.entries(obj).filter(([, v]) => v !== undefined && v !== "" && v !== null);
  const width = Math.max(...entries.map(([k]) => k.length));
  for (const [k, v] of entries) {
    const text = typeof v === "object" ? JSON.stringify(v) : String(v);
    process.stdout.write(`${k.padEnd(width)}  ${text}\n`);
  }
}

export function ago(ms: number, now = Date.now()): string {
  if (!ms) return "-";
  const d = Math.max(0, now - ms);
  return `${formatDuration(d)} ago`;
}

export function isoTime(ms: number): string | undefined {
  return ms ? new Date(ms).toISOString() : undefined;
}

export function healthName(h: AgentHealth): string {
  switch (h) {
    case AgentHealth.AGENT_HEALTH_HEALTHY:
      return "healthy";
    case AgentHealth.AGENT_HEALTH_DEGRADED:
      return "degraded";
    case AgentHealth.AGENT_HEALTH_OFFLINE:
      return "offline";
    default:
      return "unknown";
  }
}

export interface AgentRow {
  agentId: string;
  pool: string;
  health: string;
  healthReason: string;
  connected: boolean;
  running: number;
  maxConcurrency: number;
  freeSlots: number;
  labels: Record<string, string>;
  hostname: string;
  platform: string;
  version: string;
  taskKinds: string[];
  completedTotal: number;
  inboxDepth: number;
  outboxDepth: number;
  lastSeenMs: number;
  connectedAtMs: number;
  datasources: { name: string; driver: string; readOnly: boolean; healthy: boolean; error: string }[];
  /** Its local API, "host:port" ("" when it serves none). */
  agentEndpoint: string;
  /** Supervised nodes the hub wants running on it, and how many it may run. */
  storageNodes: number;
  maxStorageNodes: number;
}

export function agentRow(a: AgentInfo): AgentRow {
  return {
    agentId: a.agentId,
    pool: a.pool,
    health: healthName(a.health),
    healthReason: a.healthReason,
    connected: a.connected,
    running: a.running,
    maxConcurrency: a.maxConcurrency,
    freeSlots: a.freeSlots,
    labels: a.labels,
    hostname: a.hostname,
    platform: a.platform,
    version: a.version,
    taskKinds: a.taskKinds,
    completedTotal: a.completedTotal,
    inboxDepth: a.inboxDepth,
    outboxDepth: a.outboxDepth,
    lastSeenMs: a.lastSeenMs,
    connectedAtMs: a.connectedAtMs,
    datasources: a.datasources.map((d) => ({
      name: d.name,
      driver: d.driver,
      readOnly: d.readOnly,
      healthy: d.healthy,
      error: d.error,
    })),
    agentEndpoint: a.agentEndpoint,
    storageNodes: a.storageNodes,
    maxStorageNodes: a.maxStorageNodes,
  };
}

export const AGENT_COLUMNS: Column<AgentRow>[] = [
  { header: "AGENT", value: (r) => r.agentId },
  { header: "POOL", value: (r) => r.pool },
  { header: "HEALTH", value: (r) => (r.healthReason ? `${r.health} (${r.healthReason})` : r.health) },
  { header: "RUNNING", value: (r) => `${r.running}/${r.maxConcurrency}` },
  { header: "NODES", value: (r) => (r.maxStorageNodes > 0 ? `${r.storageNodes}/${r.maxStorageNodes}` : "-") },
  {
    header: "LABELS",
    value: (r) =>
      Object.entries(r.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(",") || "-",
  },
  {
    header: "DATASOURCES",
    value: (r) =>
      r.datasources.map((d) => `${d.name}(${d.driver}${d.healthy ? "" : ", down"})`).join(",") || "-",
  },
  { header: "HOST", value: (r) => r.hostname || "-" },
  { header: "VERSION", value: (r) => r.version || "-" },
  { header: "LAST SEEN", value: (r) => (r.connected ? "connected" : ago(r.lastSeenMs)) },
];

export interface TaskRow {
  taskId: string;
  kind: string;
  target: { agentId?: string; pool?: string; labels?: Record<string, string> };
  state: string;
  agentId: string;
  requester: string;
  createdAtMs: number;
  assignedAtMs: number;
  startedAtMs: number;
  finishedAtMs: number;
  durationMs: number;
  exitCode: number | null;
  signal: string;
  reason: string;
  error: { code: number; message: string } | null;
  deadlineMs: number;
  stdoutBytes: number;
  stderrBytes: number;
}

export function taskRow(t: TaskInfo): TaskRow {
  const target: TaskRow["target"] = {};
  if (t.target?.agentId) target.agentId = t.target.agentId;
  if (t.target?.pool) target.pool = t.target.pool;
  if (t.target && Object.keys(t.target.labels).length > 0) target.labels = t.target.labels;
  const state = stateFromWire(t.state) ?? "unknown";
  const finished = t.finishedAtMs > 0;
  return {
    taskId: t.taskId,
    kind: t.kind,
    target,
    state,
    agentId: t.agentId,
    requester: t.requester,
    createdAtMs: t.createdAtMs,
    assignedAtMs: t.assignedAtMs,
    startedAtMs: t.startedAtMs,
    finishedAtMs: t.finishedAtMs,
    durationMs: t.durationMs,
    exitCode: finished && t.kind === "shell" ? t.exitCode : null,
    signal: t.signal,
    reason: t.reason,
    error: t.error ? { code: t.error.code, message: t.error.message } : null,
    deadlineMs: t.deadlineMs,
    stdoutBytes: t.stdoutBytes,
    stderrBytes: t.stderrBytes,
  };
}

export function targetText(t: TaskRow["target"]): string {
  if (t.agentId) return `agent=${t.agentId}`;
  if (t.pool) return `pool=${t.pool}`;
  if (t.labels)
    return `labels=${Object.entries(t.labels)
      .map(([k, v]) => `${k}=${v}`)
      .join(",")}`;
  return "-";
}

export const TASK_COLUMNS: Column<TaskRow>[] = [
  { header: "TASK", value: (r) => r.taskId },
  { header: "KIND", value: (r) => r.kind },
  { header: "TARGET", value: (r) => targetText(r.target) },
  { header: "STATE", value: (r) => r.state },
  { header: "EXIT", value: (r) => (r.signal ? r.signal : r.exitCode === null ? "-" : String(r.exitCode)) },
  { header: "AGENT", value: (r) => r.agentId || "-" },
  { header: "BY", value: (r) => r.requester || "-" },
  { header: "CREATED", value: (r) => ago(r.createdAtMs) },
  { header: "DURATION", value: (r) => (r.finishedAtMs ? formatDuration(r.durationMs) : "-") },
];

export interface TokenRow {
  id: string;
  name: string;
  role: string;
  pools: string[];
  agentId: string;
  createdAtMs: number;
  revokedAtMs: number;
  lastUsedMs: number;
  allowTakeover: boolean;
}

export function tokenRow(t: TokenInfo): TokenRow {
  return {
    id: t.id,
    name: t.name,
    role: t.role,
    pools: t.pools,
    agentId: t.agentId,
    createdAtMs: t.createdAtMs,
    revokedAtMs: t.revokedAtMs,
    lastUsedMs: t.lastUsedMs,
    allowTakeover: t.allowTakeover,
  };
}

export const TOKEN_COLUMNS: Column<TokenRow>[] = [
  { header: "ID", value: (r) => r.id },
  { header: "NAME", value: (r) => r.name },
  { header: "ROLE", value: (r) => r.role },
  { header: "POOLS", value: (r) => (r.pools.length ? r.pools.join(",") : "*") },
  { header: "AGENT", value: (r) => r.agentId || "-" },
  { header: "CREATED", value: (r) => ago(r.createdAtMs) },
  { header: "LAST USED", value: (r) => ago(r.lastUsedMs) },
  { header: "REVOKED", value: (r) => (r.revokedAtMs ? ago(r.revokedAtMs) : "-") },
];
