// Supervised nodes (by default `switchboard storage-node`) that agents start, stop and watch:
// `spawn`, `stop`, `node-status`, `nodes`, `migrate`, and the node form of `logs` (followNodeLog).
// Every flag is checked before the hub is called, so a typo costs nothing.
import { raceSignal } from "../../common/race-signal.js";
import { once } from "node:events";
import { status } from "@grpc/grpc-js";
import type { Command } from "commander";
import {
  SwitchboardError,
  type NodeBatchItem,
  type NodeInfo,
  type SpawnNodeInput,
  type SwitchboardClient,
} from "../../client/index.js";
import { formatDuration } from "../../common/duration.js";
import { codeName } from "../../common/errors.js";
import { CliError, EXIT, usageError } from "../cli-error.js";
import { clientCommand, parseLabels, withClient } from "../client-command.js";
import { collect, durationFlag, intFlag } from "../flags.js";
import { ago, isoTime, outputFormat, printList, printObject, type Column } from "../output.js";
import { cancelOnInterrupt } from "../signals.js";

/** The largest grace a StopNodeRequest carries (uint32 milliseconds). */
const MAX_GRACE_MS = 0xffff_ffff;
export const DEFAULT_TAIL_BYTES = 64 * 1024;
const LOG_POLL_MS = 500;
/** How long `logs --node --follow` keeps polling through a hub it cannot reach. */
const LOG_UNREACHABLE_FOR_MS = 30_000;

export interface SpawnFlags {
  agent?: string;
  port?: string;
  storagePath?: string;
  memory?: string;
  nodeId?: string;
  labels?: string;
  pool?: string;
  reschedule?: boolean;
  binary?: string;
  arg?: string[];
  env?: string[];
  count?: string;
  atomic?: boolean;
  output?: string;
}

/**
 * The nodes `spawn` asks for. With --count N > 1 each copy gets its own port (--port, --port+1, ...;
 * 0 lets each agent choose), storage path and node id (suffixes -1, -2, ...), when those are given.
 */
export function spawnInputs(f: SpawnFlags): SpawnNodeInput[] {
  const count = f.count !== undefined ? intFlag("--count", f.count, 1) : 1;
  if (f.atomic && count === 1) throw usageError("--atomic applies only with --count 2 or more");
  const port = f.port !== undefined ? portFlag("--port", f.port) : 0;
  if (port > 0 && port + count - 1 > 65_535)
    throw usageError(`--port ${port} with --count ${count} runs past port 65535`);
  const base: SpawnNodeInput = {
    agentId: f.agent ?? "",
    memoryLimitMb: f.memory !== undefined ? intFlag("--memory", f.memory, 1) : 0,
    binary: f.binary ?? "",
    args: f.arg ?? [],
    env: parseEnv(f.env ?? []),
    labels: f.labels !== undefined ? parseLabels(f.labels) : {},
    pool: f.pool ?? "",
    reschedule: f.reschedule ?? false,
  };
  const suffix = (value: string | undefined, i: number): string =>
    value === undefined ? "" : count === 1 ? value : `${value}-${i + 1}`;
  return Array.from({ length: count }, (_, i) => ({
    ...base,
    port: port > 0 ? port + i : 0,
    storagePath: suffix(f.storagePath, i),
    nodeId: suffix(f.nodeId, i),
  }));
}

export function parseEnv(pairs: string[]): Record<string, string> {
  const env: Record<string, string> = {};
  for (const kv of pairs) {
    const eq = kv.indexOf("=");
    if (eq <= 0) throw usageError(`--env: expected KEY=VALUE, got "${kv}"`);
    env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return env;
}

function portFlag(flag: string, raw: string): number {
  const n = intFlag(flag, raw, 0);
  if (n > 65_535) throw usageError(`${flag}: expected 0 to 65535, got "${raw}"`);
  return n;
}

function graceFlag(raw: string): number {
  const ms = durationFlag("--grace", raw);
  if (ms > MAX_GRACE_MS) throw usageError(`--grace: at most ${formatDuration(MAX_GRACE_MS)}`);
  return ms;
}

/** A byte count: 4096, 64k, 1m (k and m are KiB and MiB). */
export function bytesFlag(flag: string, raw: string): number {
  const m = /^\s*(\d+)\s*(k|kib|m|mib)?\s*$/i.exec(raw);
  if (!m) throw usageError(`${flag}: expected a number of bytes such as 4096, 64k or 1m, got "${raw}"`);
  const unit = (m[2] ?? "").toLowerCase();
  const scale = unit.startsWith("m") ? 1024 * 1024 : unit.startsWith("k") ? 1024 : 1;
  return Number(m[1]) * scale;
}

/** One node as `--output json` prints it: camelCase fields, stable for tools to read. */
export interface NodeRow {
  nodeId: string;
  agentId: string;
  status: string;
  desired: string;
  pid: number;
  port: number;
  endpoint: string;
  storagePath: string;
  memoryLimitMb: number;
  binary: string;
  args: string[];
  restarts: number;
  startedAtMs: number;
  lastExit: string;
  lastExitAtMs: number;
  stale: boolean;
  ageMs: number;
  reschedule: boolean;
  labels: Record<string, string>;
  createdAtMs: number;
}

export function nodeRow(n: NodeInfo): NodeRow {
  const r = n.record;
  return {
    nodeId: n.nodeId,
    agentId: n.agentId,
    status: r?.status || "unknown",
    desired: n.desired,
    pid: r?.pid ?? 0,
    port: r?.port ?? 0,
    endpoint: n.endpoint,
    storagePath: r?.storagePath ?? "",
    memoryLimitMb: r?.memoryLimitMb ?? 0,
    binary: r?.binary ?? "",
    args: r?.args ?? [],
    restarts: r?.restartCount ?? 0,
    startedAtMs: r?.startedAtMs ?? 0,
    lastExit: r?.lastExit ?? "",
    lastExitAtMs: r?.lastExitAtMs ?? 0,
    stale: n.stale,
    ageMs: n.ageMs,
    reschedule: n.reschedule,
    labels: n.labels,
    createdAtMs: n.createdAtMs,
  };
}

function endpointText(r: NodeRow): string {
  return r.endpoint || (r.port ? `:${r.port}` : "-");
}

function uptime(r: NodeRow, now = Date.now()): string {
  return r.status === "running" && r.startedAtMs ? formatDuration(Math.max(0, now - r.startedAtMs)) : "-";
}

/** "running", or "running (cached 42s ago: agent a-1 is unreachable)" when the agent could not be asked. */
function statusText(r: NodeRow): string {
  if (!r.stale) return r.status;
  return `${r.status} (cached ${formatDuration(r.ageMs)} ago: agent ${r.agentId || "?"} is unreachable)`;
}

const NODE_COLUMNS: Column<NodeRow>[] = [
  { header: "NODE", value: (r) => r.nodeId },
  { header: "AGENT", value: (r) => r.agentId || "-" },
  {
    header: "STATUS",
    value: (r) => (r.desired && r.desired !== r.status ? `${r.status} (want ${r.desired})` : r.status),
  },
  { header: "PID", value: (r) => (r.pid ? String(r.pid) : "-") },
  { header: "ENDPOINT", value: endpointText },
  { header: "RESTARTS", value: (r) => String(r.restarts) },
  { header: "UPTIME", value: (r) => uptime(r) },
  { header: "STALE", value: (r) => (r.stale ? `cached ${formatDuration(r.ageMs)} ago` : "-") },
];

/** The hub recorded the stop but the node's agent is offline: it stops the node when it reconnects. */
function stopPending(r: NodeRow): boolean {
  return r.stale && r.desired === "stopped" && r.status === "stopping";
}

/** A batch item as a row: the node when it worked, the error when not. */
interface BatchRow {
  nodeId: string;
  ok: boolean;
  agentId: string;
  endpoint: string;
  status: string;
  error: { code: string; message: string } | null;
  node: NodeRow | null;
}

/** `i`: the item's place in the request, named when the hub was to choose the node's id. */
function batchRow(item: NodeBatchItem, i: number): BatchRow {
  const node = item.code === 0 && item.node ? nodeRow(item.node) : null;
  return {
    nodeId: item.nodeId || node?.nodeId || `(#${i + 1})`,
    ok: item.code === 0,
    agentId: node?.agentId ?? "",
    endpoint: node ? endpointText(node) : "",
    status: node
      ? stopPending(node)
        ? `stop pending: agent ${node.agentId} is offline`
        : node.status
      : "failed",
    error: item.code === 0 ? null : { code: codeName(item.code), message: item.errorMessage },
    node,
  };
}

const BATCH_COLUMNS: Column<BatchRow>[] = [
  { header: "NODE", value: (r) => r.nodeId },
  { header: "AGENT", value: (r) => r.agentId || "-" },
  { header: "ENDPOINT", value: (r) => r.endpoint || "-" },
  {
    header: "STATUS/ERROR",
    value: (r) => (r.error ? `error: ${r.error.message} (${r.error.code})` : r.status),
  },
];

/** Prints a batch's items and fails (exit 1) when any of them did. */
function printBatch(items: NodeBatchItem[], format: "table" | "json", verb: string): void {
  const rows = items.map(batchRow);
  printList(rows, BATCH_COLUMNS, format, "the hub answered with no items");
  const failed = rows.filter((r) => !r.ok).length;
  if (failed > 0) throw new CliError(`${failed} of ${rows.length} nodes could not be ${verb}`, EXIT.failed);
}

/** withClient, with a hint that fits node commands when a node (or agent) does not exist. */
export async function withNodeClient<T>(
  cmd: Command,
  fn: (client: SwitchboardClient) => Promise<T>,
): Promise<T> {
  try {
    return await withClient(cmd, fn);
  } catch (e) {
    if (e instanceof SwitchboardError && e.code === status.NOT_FOUND) {
      throw new CliError(
        `${e.message} (${e.codeName})`,
        EXIT.failed,
        "list nodes with `switchboard nodes --all`, agents with `switchboard agents --all`",
      );
    }
    throw e;
  }
}

function printNodeSummary(n: NodeInfo): void {
  const r = nodeRow(n);
  const lines: [string, string][] = [
    ["Node ID:", r.nodeId],
    ["Agent:", r.agentId || "-"],
    ["Endpoint:", endpointText(r)],
    ["PID:", r.pid ? String(r.pid) : "-"],
  ];
  for (const [k, v] of lines) process.stdout.write(`   ${k.padEnd(9)} ${v}\n`);
}

function placementText(f: SpawnFlags): string {
  if (f.agent) return `on agent ${f.agent}`;
  const where = [f.pool ? `pool ${f.pool}` : "", f.labels ? `labels ${f.labels}` : ""].filter(Boolean);
  return where.length ? `on an agent of ${where.join(" with ")}` : "(the hub picks the agent)";
}

export function registerNodes(program: Command): void {
  clientCommand(program, "spawn", "start a supervised node (by default a storage node) on an agent")
    .option("--agent <id>", "on this agent (default: the hub picks a healthy agent with free node slots)")
    .option("--pool <name>", "only on an agent of this pool")
    .option("--labels <k=v,...>", "only on an agent carrying all these labels")
    .option("--port <port>", "port the node listens on (default 0: the agent chooses a free one)")
    .option(
      "--storage-path <dir>",
      "its data dir, inside the agent's storage.data_path (default: <data_path>/<node id>)",
    )
    .option(
      "--memory <mb>",
      "memory limit in MiB; past it the agent kills and restarts the node (default: the agent's default_memory_mb)",
    )
    .option("--node-id <id>", "the node's id (default: node-<uuid>)")
    .option("--reschedule", "may be started on another agent when its own stays offline")
    .option("--binary <path>", "program to run instead of `switchboard storage-node`")
    .option("--arg <arg>", "an argument for the program (repeatable, kept in order)", collect)
    .option("--env <KEY=VALUE>", "an environment variable for the program (repeatable)", collect)
    .option("--count <n>", "start this many nodes at once (default 1)")
    .option("--atomic", "with --count: all or none (when one fails, the ones started are stopped again)")
    .option("-o, --output <format>", "table or json", "table")
    .addHelpText(
      "after",
      `
Answers once the node runs (its port accepts connections); that can take up to a minute.
With --count N, the nodes get ports --port, --port+1, ... (or each a free one), and --storage-path
and --node-id get the suffixes -1, -2, ...; the exit code is 1 when any of them failed.

Examples:
  switchboard spawn --agent agent-001 --port 50051 --storage-path kv1 --memory 512
  switchboard spawn --pool storage --count 3 --storage-path kv --reschedule`,
    )
    .action(async (f: SpawnFlags, cmd: Command) => {
      const format = outputFormat(f.output);
      const inputs = spawnInputs(f);
      const what = f.binary ? "node" : "storage node";
      const table = format === "table";
      if (inputs.length === 1) {
        if (table) process.stderr.write(`Spawning ${what} ${placementText(f)}...\n`);
        const n = await withNodeClient(cmd, (c) => c.nodes.spawn(inputs[0]));
        if (!table) return printObject(nodeRow(n), format);
        process.stdout.write(`${capitalise(what)} spawned.\n`);
        printNodeSummary(n);
        return;
      }
      if (table) process.stderr.write(`Spawning ${inputs.length} ${what}s ${placementText(f)}...\n`);
      const items = await withNodeClient(cmd, (c) =>
        c.nodes.spawnMany(inputs, { atomic: f.atomic ?? false }),
      );
      printBatch(items, format, "spawned");
    });

  clientCommand(program, "stop", "stop supervised nodes: SIGTERM, then SIGKILL after the grace")
    .requiredOption("--node <id>", "the node (repeatable)", collect)
    .option("--agent <id>", "refuse unless the node is on this agent")
    .option("--grace <duration>", "between SIGTERM and SIGKILL, e.g. 10s (default: the agent's)")
    .option("-o, --output <format>", "table or json", "table")
    .action(async (f: { node: string[]; agent?: string; grace?: string; output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const opts = {
        agentId: f.agent ?? "",
        graceMs: f.grace !== undefined ? graceFlag(f.grace) : 0,
      };
      const table = format === "table";
      const ids = [...new Set(f.node)];
      if (ids.length === 1) {
        const id = ids[0]!;
        if (table) process.stderr.write(`Stopping storage node ${id}...\n`);
        const n = await withNodeClient(cmd, (c) => c.nodes.stop(id, opts));
        if (!table) return printObject(nodeRow(n), format);
        const r = nodeRow(n);
        if (stopPending(r)) {
          process.stdout.write(
            `Stop pending: agent ${r.agentId} is offline. The node shows as stopping until the agent reconnects and stops it.\n`,
          );
          return;
        }
        process.stdout.write("Storage node stopped.\n");
        if (r.lastExit) process.stdout.write(`   Last exit: ${r.lastExit}\n`);
        return;
      }
      if (table) process.stderr.write(`Stopping ${ids.length} storage nodes...\n`);
      const items = await withNodeClient(cmd, (c) =>
        c.nodes.stopMany(ids.map((nodeId) => ({ nodeId, ...opts }))),
      );
      printBatch(items, format, "stopped");
    });

  clientCommand(program, "node-status", "show one supervised node: status, process, endpoint, restarts")
    .requiredOption("--node <id>", "the node")
    .option("-o, --output <format>", "table or json", "table")
    .addHelpText(
      "after",
      "\nThe status comes live from the node's agent; when the agent cannot be reached, the hub's\n" +
        "last copy is shown and marked as cached.",
    )
    .action(async (f: { node: string; output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const n = await withNodeClient(cmd, (c) => c.nodes.status(f.node));
      const r = nodeRow(n);
      if (format === "json") return printObject(r, format);
      printObject(
        {
          "Storage Node:": r.nodeId,
          "Status:": statusText(r),
          "Desired:": r.desired && r.desired !== r.status ? r.desired : undefined,
          "PID:": r.pid ? String(r.pid) : "-",
          "Endpoint:": endpointText(r),
          "Agent:": r.agentId || "-",
          "Restarts:": String(r.restarts),
          "Started:": r.startedAtMs ? `${isoTime(r.startedAtMs)} (${ago(r.startedAtMs)})` : "never",
          "Last exit:": r.lastExit ? `${r.lastExit} (${ago(r.lastExitAtMs)})` : "-",
          "Storage path:": r.storagePath || "-",
          "Memory limit:": r.memoryLimitMb ? `${r.memoryLimitMb} MiB` : "none",
          "Labels:": Object.entries(r.labels)
            .map(([k, v]) => `${k}=${v}`)
            .join(","),
          "Reschedule:": r.reschedule ? "yes (may move when its agent stays offline)" : undefined,
        },
        "table",
      );
    });

  clientCommand(program, "nodes", "list supervised nodes with their agent, status and uptime")
    .alias("list-nodes")
    .option("--agent <id>", "only the nodes of this agent")
    .option("-a, --all", "include stopped nodes")
    .option("-o, --output <format>", "table or json", "table")
    .action(async (f: { agent?: string; all?: boolean; output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const nodes = await withNodeClient(cmd, (c) =>
        c.nodes.list({ agentId: f.agent ?? "", includeStopped: f.all ?? false }),
      );
      printList(
        nodes.map(nodeRow),
        NODE_COLUMNS,
        format,
        f.all
          ? "no nodes"
          : "no nodes running (start one with switchboard spawn --help; --all shows stopped ones)",
      );
    });

  clientCommand(program, "migrate", "move a supervised node to another agent: start there, then stop here")
    .requiredOption("--node <id>", "the node")
    .requiredOption("--to <agent>", "the agent to move it to")
    .option(
      "--copy-data",
      "move its data directory too: stopped here, copied into the new agent's storage.data_path, started there",
    )
    .option("--port <port>", "port on the new agent (default: the same)")
    .option(
      "--storage-path <dir>",
      "data directory on the new agent, inside its storage.data_path (default: the same relative path)",
    )
    .option("-o, --output <format>", "table or json", "table")
    .addHelpText(
      "after",
      `
Everything the new agent would check of the spawn (free slot, allowed binary, port, storage path) is
checked first: a migration that cannot work leaves the node running where it is, untouched.
Without --copy-data the node is started on the new agent first; the old one is stopped only once the
new one answers. With --copy-data the old one is stopped first (a consistent copy), its data moved,
and the node started on the new agent; if that fails, it is started again where it was.
The data moves through the hub as file tasks when both agents' [files] roots cover their
storage.data_path (agents on different machines); otherwise the new agent copies it itself, which
needs the old directory inside its own storage.data_path (one machine, or a shared disk).`,
    )
    .action(
      async (
        f: {
          node: string;
          to: string;
          copyData?: boolean;
          port?: string;
          storagePath?: string;
          output?: string;
        },
        cmd: Command,
      ) => {
        const format = outputFormat(f.output);
        const port = f.port !== undefined ? portFlag("--port", f.port) : 0;
        const table = format === "table";
        if (table) process.stderr.write(`Migrating storage node ${f.node} to agent ${f.to}...\n`);
        const n = await withNodeClient(cmd, (c) =>
          c.nodes.migrate({
            nodeId: f.node,
            toAgentId: f.to,
            copyData: f.copyData ?? false,
            port,
            storagePath: f.storagePath ?? "",
          }),
        );
        if (!table) return printObject(nodeRow(n), format);
        process.stdout.write("Storage node migrated.\n");
        printNodeSummary(n);
      },
    );
}

export interface NodeLogOptions {
  nodeId: string;
  stderr: boolean;
  /** Print the last this many bytes first; 0: none, only what comes next. */
  tailBytes: number;
  follow: boolean;
}

/**
 * Prints a node's log: the last `tailBytes`, then with `follow` what is appended, polled every
 * 500 ms from where the last answer ended, until Ctrl-C (which ends the command with exit 0).
 */
export async function followNodeLog(c: SwitchboardClient, o: NodeLogOptions): Promise<void> {
  const interrupt = cancelOnInterrupt({ signals: o.follow ? ["SIGINT"] : [] });
  const read = (offset: number) =>
    untilAborted(c.nodes.logs({ nodeId: o.nodeId, stderr: o.stderr, offset }), interrupt.signal);
  try {
    // With no tail, ask for the last byte only to learn where the log ends, and print nothing.
    const first = await read(o.tailBytes > 0 ? -o.tailBytes : -1);
    if (!first) return;
    if (o.tailBytes > 0) await writeOut(first.data);
    let next = first.offset + first.data.length;
    // The hub may answer with less than asked for: read on up to where the log ended at first.
    while (o.tailBytes > 0 && next < first.size) {
      const r = await read(next);
      if (!r || r.data.length === 0) break;
      await writeOut(r.data);
      next = r.offset + r.data.length;
    }
    if (!o.follow) return;
    let unreachableSince: number | undefined;
    let more = false;
    while (!interrupt.signal.aborted) {
      if (!more) await sleep(LOG_POLL_MS, interrupt.signal);
      let r;
      try {
        r = await read(next);
        unreachableSince = undefined;
      } catch (e) {
        // A hub restart or a network blip: keep polling for a while, as `logs --follow` does for tasks.
        if (!(e instanceof SwitchboardError) || e.code !== status.UNAVAILABLE) throw e;
        unreachableSince ??= Date.now();
        if (Date.now() - unreachableSince > LOG_UNREACHABLE_FOR_MS) throw e;
        more = false;
        continue;
      }
      if (!r) return;
      if (r.rotated)
        process.stderr.write(`[switchboard: the log of ${o.nodeId} was rotated; reading the new one]\n`);
      await writeOut(r.data);
      next = r.offset + r.data.length;
      more = r.data.length > 0 && next < r.size;
    }
  } finally {
    interrupt.dispose();
  }
}

async function writeOut(data: Uint8Array): Promise<void> {
  if (data.length > 0 && !process.stdout.write(data)) await once(process.stdout, "drain");
}

/** The call's answer, or undefined once the signal fires (the call's own answer is then dropped). */
function untilAborted<T>(p: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  return raceSignal(p, signal, () => undefined);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}
