// Supervised nodes on the agent: long-running processes (storage nodes by default) started on request,
// each an explicit state machine
//   starting -> running -> stopping -> stopped
//   starting | running -> crashed -> backoff -> starting        (restart_failed_nodes)
// restarted with exponential backoff when they die, killed and restarted when their process tree outgrows
// the memory limit, their output captured to rotating files, and their table persisted so that an agent
// restart re-adopts the nodes that still run and restarts the others.
import { spawn, type ChildProcess } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  readSync,
  renameSync,
  statSync,
  truncateSync,
} from "node:fs";
import { cp, mkdir, open, realpath, rename, stat, writeFile } from "node:fs/promises";
import { connect, createServer } from "node:net";
import { dirname, isAbsolute, join, relative, resolve } from "node:path";
import { Code, SwitchboardError } from "../../common/errors.js";
import { groupMembers } from "../executors/shell/index.js";
import type { Logger } from "../../common/logger.js";

export type NodeState = "starting" | "running" | "stopping" | "stopped" | "crashed" | "backoff";

const TRANSITIONS: Record<NodeState, readonly NodeState[]> = {
  starting: ["running", "stopping", "crashed"],
  running: ["stopping", "crashed"],
  stopping: ["stopped"],
  stopped: ["starting"],
  crashed: ["backoff", "stopped"],
  backoff: ["starting", "stopped"],
};

export interface SpawnNodeRequest {
  nodeId: string;
  /** Under the supervisor's data path; created when absent. */
  storagePath: string;
  /** 0: the first free port from portRangeStart. */
  port: number;
  /** 0: the default. */
  memoryMb: number;
  args?: string[];
  env?: Record<string, string>;
  /** Default: the configured binary. Must be allowlisted. */
  binary?: string;
  /** A dir inside the data path whose contents are copied into the storage path first (migration). */
  copyFrom?: string;
}

export interface NodeRecord {
  nodeId: string;
  state: NodeState;
  binary: string;
  args: string[];
  env: Record<string, string>;
  storagePath: string;
  port: number;
  memoryMb: number;
  pid: number | null;
  /** The process's start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid apart. */
  procStart: number | null;
  startedAt: number | null;
  restartCount: number;
  lastExit: { code: number | null; signal: string | null; reason: string; at: number } | null;
}

export interface NodeSupervisorOptions {
  /** Root that every storage path must be inside (storage.data_path). */
  dataPath: string;
  /** Where logs and the node table live (agent data dir). */
  stateDir: string;
  /** The default binary, and the argv before the node's own arguments. */
  binary: string;
  binaryArgs: string[];
  /** Binaries a spawn may name (absolute paths or names on PATH, compared as given). */
  allowedBinaries: string[];
  maxNodes: number;
  defaultMemoryMb: number;
  restartFailedNodes: boolean;
  stopGraceMs: number;
  memoryCheckIntervalMs: number;
  backoffInitialMs: number;
  backoffMaxMs: number;
  /** This many restarts within crashLoopWindowMs is a crash loop (the agent reports Degraded). */
  crashLoopRestarts: number;
  crashLoopWindowMs: number;
  logMaxBytes: number;
  logFiles: number;
  /** Where a spawn without a port starts looking for a free one. */
  portRangeStart: number;
  /**
   * When a node counts as running: "tcp" once its port accepts a connection (spawn waits for that, up to
   * startupTimeoutMs), "none" once it has lived STARTING_MS.
   */
  readyCheck: "tcp" | "none";
  startupTimeoutMs: number;
  /** Called after every state change of a node (spawns, crashes, restarts, stops). */
  onChange?: (record: NodeRecord) => void;
  /** argv of the default binary: its fixed args, these (port, data dir, node id), then the request's args. */
  nodeArgs(req: { nodeId: string; port: number; storagePath: string }): string[];
}

interface Live {
  record: NodeRecord;
  child: ChildProcess | undefined;
  /**
   * An adopted process (started by an earlier run of the agent, so not its child: no 'exit' event): its end
   * is seen by polling /proc/PID/stat, pid and start time together, so that a reused pid is no alibi.
   */
  adopted: boolean;
  restartTimer: NodeJS.Timeout | undefined;
  killTimer: NodeJS.Timeout | undefined;
  recentRestarts: number[];
  stopped: Promise<void> | undefined;
  onStopped: (() => void) | undefined;
  /** Why the supervisor itself killed the process (the memory limit), for its lastExit. */
  pendingReason: string | undefined;
  /** spawn() is waiting for it to be ready: an early exit fails the spawn instead of restarting it. */
  spawning: boolean;
}

/** A spawn between its admission and its node's first launch: it holds a slot, and a stop cancels it. */
interface PendingSpawn {
  req: SpawnNodeRequest;
  binary: string;
  /** A stop came for the node: the spawn gives up at its next step and leaves nothing behind. */
  cancelled: boolean;
  /** Its node is in the table (and counts there); until then the pending spawn holds the slot. */
  launched: boolean;
  /** The port it chose, kept from other spawns choosing at the same time. */
  port: number | undefined;
  /** Resolves once the spawn has ended, either way. */
  settled: Promise<void>;
}

const STARTING_MS = 1000;
/** How often adopted nodes are looked at: their exit is noticed within this (plus a restart's backoff). */
const ADOPTED_POLL_MS = 100;
const READY_POLL_MS = 5;
/** Spawns on a port the agent chose: how many ports to try when another program takes one first. */
const PORT_ATTEMPTS = 3;
const NODE_ID = /^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$/;

/** The last bytes of a file, as text, for an error message. */
async function tailOf(path: string, bytes: number): Promise<string> {
  try {
    const f = await open(path, "r");
    try {
      const size = (await f.stat()).size;
      const start = Math.max(0, size - bytes);
      const buf = Buffer.alloc(size - start);
      await f.read(buf, 0, buf.length, start);
      return buf.toString("utf8").trim();
    } finally {
      await f.close();
    }
  } catch {
    return "";
  }
}

export class NodeSupervisor {
  private readonly nodes = new Map<string, Live>();
  /** Spawns in progress, by node id. */
  private readonly pending = new Map<string, PendingSpawn>();
  private memoryTimer: NodeJS.Timeout | undefined;
  private adoptedTimer: NodeJS.Timeout | undefined;
  private saving: Promise<void> = Promise.resolve();

  constructor(
    private readonly o: NodeSupervisorOptions,
    private readonly logger?: Logger,
  ) {}

  /** Loads the node table of an earlier run: nodes still running are adopted, the others restarted. */
  async start(): Promise<void> {
    await mkdir(join(this.o.stateDir, "node-logs"), { recursive: true });
    let saved: NodeRecord[] = [];
    try {
      saved = JSON.parse(readFileSync(this.tableFile(), "utf8")) as NodeRecord[];
    } catch {
      saved = [];
    }
    for (const r of saved) {
      const live = this.live(r);
      if (r.state === "stopped") continue;
      if (r.pid !== null && r.procStart !== null && procStartOf(r.pid) === r.procStart) {
        live.adopted = true;
        r.state = "running";
        this.logger?.info({ node_id: r.nodeId, pid: r.pid }, "node adopted: it kept running");
      } else {
        r.pid = null;
        r.lastExit = {
          code: null,
          signal: null,
          reason: "not running after the agent restarted",
          at: Date.now(),
        };
        r.state = "crashed";
        this.scheduleRestart(live, true);
      }
    }
    await this.save();
    this.memoryTimer = setInterval(() => this.checkMemory(), this.o.memoryCheckIntervalMs);
    this.memoryTimer.unref();
    this.adoptedTimer = setInterval(() => this.checkAdopted(), ADOPTED_POLL_MS);
    this.adoptedTimer.unref();
  }

  list(): NodeRecord[] {
    return [...this.nodes.values()].map((l) => ({ ...l.record }));
  }

  get(nodeId: string): NodeRecord | undefined {
    // A spawn admitted but not launched yet is the node now (the hub's retry of a spawn whose answer a
    // broken link lost asks this), not an earlier stopped node of the same id.
    const p = this.pending.get(nodeId);
    if (p && !p.launched)
      return { ...this.newRecord(p.req, p.binary, p.req.storagePath, p.port ?? 0), state: "starting" };
    const l = this.nodes.get(nodeId);
    return l ? { ...l.record } : undefined;
  }

  /** Why the agent should report Degraded, if a node is in a crash loop. */
  trouble(): string | undefined {
    const now = Date.now();
    for (const l of this.nodes.values()) {
      const recent = l.recentRestarts.filter((t) => now - t < this.o.crashLoopWindowMs).length;
      if (
        recent >= this.o.crashLoopRestarts &&
        l.record.state !== "stopped" &&
        l.record.state !== "running"
      ) {
        return `node ${l.record.nodeId} is crash-looping: ${recent} restarts in ${this.o.crashLoopWindowMs / 1000}s (last: ${l.record.lastExit?.reason ?? "?"})`;
      }
    }
    return undefined;
  }

  /**
   * The checks of a spawn, with nothing started and nothing created but the data path and the storage path's
   * parent: the record the spawn would make (its storage path resolved, its port chosen). A migration asks its target this before
   * it stops the node where it runs.
   */
  async check(req: SpawnNodeRequest): Promise<NodeRecord> {
    const binary = this.admit(req);
    const port = req.port === 0 ? await this.freePort(this.takenPorts()) : req.port;
    await this.checkPort(req.port, port);
    const storagePath = await this.storageDir(req.storagePath || req.nodeId, "check");
    if (req.copyFrom) await this.storageDir(req.copyFrom, "existing");
    await this.checkBinary(binary);
    return this.newRecord(req, binary, storagePath, port);
  }

  /**
   * Starts a node and resolves once it runs (readyCheck); rejects, leaving nothing behind, when it is refused,
   * cannot start, exits before it is ready, is not ready within startupTimeoutMs, or is stopped meanwhile.
   */
  async spawn(req: SpawnNodeRequest): Promise<NodeRecord> {
    const binary = this.admit(req);
    // The slot is this spawn's from here on, before anything is awaited: concurrent spawns cannot fill the
    // agent past max_storage_nodes, and a stop that comes meanwhile (the hub's spawn timed out) finds it.
    let settle!: () => void;
    const pending: PendingSpawn = {
      req,
      binary,
      cancelled: false,
      launched: false,
      port: undefined,
      settled: new Promise<void>((r) => (settle = r)),
    };
    this.pending.set(req.nodeId, pending);
    try {
      return await this.spawnReserved(req, binary, pending);
    } finally {
      if (this.pending.get(req.nodeId) === pending) this.pending.delete(req.nodeId);
      settle();
    }
  }

  private async spawnReserved(
    req: SpawnNodeRequest,
    binary: string,
    pending: PendingSpawn,
  ): Promise<NodeRecord> {
    const previous = this.nodes.get(req.nodeId); // stopped, if any (admit refused any other state)
    const taken = this.takenPorts();
    const port = req.port === 0 ? await this.freePort(taken) : req.port;
    pending.port = port;
    this.checkCancelled(pending);
    await this.checkPort(req.port, port);
    const storagePath = await this.storageDir(req.storagePath || req.nodeId, "create");
    if (req.copyFrom) {
      const from = await this.storageDir(req.copyFrom, "existing");
      this.checkCancelled(pending);
      if (from !== storagePath) await cp(from, storagePath, { recursive: true, force: true });
    }
    await this.checkBinary(binary);
    this.checkCancelled(pending);
    const record = this.newRecord(req, binary, storagePath, port);
    const l = this.live(record);
    pending.launched = true;
    l.spawning = true;
    for (let attempt = 1; ; attempt++) {
      this.launch(l);
      try {
        await this.untilReady(l);
        break;
      } catch (err) {
        // Nothing orphaned: the process is gone (or killed now) and the node is not in the table.
        clearTimeout(l.restartTimer);
        if (l.record.pid !== null) {
          this.signal(l, "SIGKILL");
          await new Promise<void>((r) => {
            if (l.child === undefined || l.child.exitCode !== null || l.child.signalCode !== null) r();
            else l.child.once("exit", () => r());
          });
        }
        // A port this agent chose can be taken by another program (another agent on the host) between the
        // check and the node's bind: choose again rather than fail the spawn.
        if (
          !pending.cancelled &&
          req.port === 0 &&
          attempt < PORT_ATTEMPTS &&
          !(await portFree(record.port))
        ) {
          taken.add(record.port);
          record.port = await this.freePort(taken);
          pending.port = record.port;
          record.lastExit = null;
          record.state = "stopped";
          continue;
        }
        l.spawning = false;
        if (this.nodes.get(req.nodeId) === l) {
          if (previous) this.nodes.set(req.nodeId, previous);
          else this.nodes.delete(req.nodeId);
        }
        await this.save();
        if (pending.cancelled) throw cancelledSpawn(req.nodeId);
        throw err;
      }
    }
    l.spawning = false;
    await this.save();
    return { ...record };
  }

  /** The checks that need no waiting; returns the binary the node runs. */
  private admit(req: SpawnNodeRequest): string {
    if (!NODE_ID.test(req.nodeId)) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `node id ${JSON.stringify(req.nodeId.slice(0, 40))}: use 1-128 letters, digits and . _ : @ -`,
      );
    }
    const binary = req.binary || this.o.binary;
    if (!this.o.allowedBinaries.includes(binary)) {
      throw new SwitchboardError(
        Code.PERMISSION_DENIED,
        `binary ${binary} is not allowed on this agent (allowed: ${this.o.allowedBinaries.join(", ")})`,
      );
    }
    const existing = this.nodes.get(req.nodeId);
    if (existing && existing.record.state !== "stopped") {
      throw new SwitchboardError(Code.ALREADY_EXISTS, `node ${req.nodeId} exists (${existing.record.state})`);
    }
    if (this.pending.has(req.nodeId)) {
      throw new SwitchboardError(Code.ALREADY_EXISTS, `node ${req.nodeId} exists (starting)`);
    }
    const used = this.slotsUsed();
    if (used >= this.o.maxNodes) {
      throw new SwitchboardError(
        Code.RESOURCE_EXHAUSTED,
        `this agent has no free node slot: ${used} of max_storage_nodes = ${this.o.maxNodes} in use`,
      );
    }
    if (!Number.isInteger(req.port) || req.port < 0 || req.port > 65_535) {
      throw new SwitchboardError(Code.INVALID_ARGUMENT, `port ${req.port}: expected 1 to 65535 (0: any)`);
    }
    if (req.memoryMb < 0) throw new SwitchboardError(Code.INVALID_ARGUMENT, "memory_mb may not be negative");
    return binary;
  }

  /** Nodes that hold a slot: every node not stopped, and spawns not launched yet. */
  private slotsUsed(): number {
    let n = 0;
    for (const l of this.nodes.values()) if (l.record.state !== "stopped") n++;
    for (const p of this.pending.values()) if (!p.launched) n++;
    return n;
  }

  /** Ports of nodes not stopped, and those spawns in progress have chosen. */
  private takenPorts(): Set<number> {
    const taken = new Set<number>();
    for (const l of this.nodes.values()) if (l.record.state !== "stopped") taken.add(l.record.port);
    for (const p of this.pending.values()) if (p.port !== undefined) taken.add(p.port);
    return taken;
  }

  /** Refuses a port another node of this agent holds, or (asked for explicitly) that anything listens on. */
  private async checkPort(asked: number, port: number): Promise<void> {
    const holder = [...this.nodes.values()].find(
      (l) => l.record.state !== "stopped" && l.record.port === port,
    );
    if (holder) {
      throw new SwitchboardError(
        Code.ALREADY_EXISTS,
        `port ${port} belongs to node ${holder.record.nodeId} (${holder.record.state}) on this agent`,
      );
    }
    if (asked !== 0 && !(await portFree(port))) {
      throw new SwitchboardError(Code.FAILED_PRECONDITION, `port ${port} is in use on this agent`);
    }
  }

  private async checkBinary(binary: string): Promise<void> {
    if (binary !== this.o.binary && isAbsolute(binary)) {
      const ok = await stat(binary).then(
        (st) => st.isFile(),
        () => false,
      );
      if (!ok) throw new SwitchboardError(Code.FAILED_PRECONDITION, `binary ${binary} does not exist`);
    }
  }

  private checkCancelled(p: PendingSpawn): void {
    if (p.cancelled) throw cancelledSpawn(p.req.nodeId);
  }

  private newRecord(req: SpawnNodeRequest, binary: string, storagePath: string, port: number): NodeRecord {
    return {
      nodeId: req.nodeId,
      state: "stopped",
      binary,
      args: req.args ?? [],
      env: req.env ?? {},
      storagePath,
      port,
      memoryMb: req.memoryMb > 0 ? req.memoryMb : this.o.defaultMemoryMb,
      pid: null,
      procStart: null,
      startedAt: null,
      restartCount: 0,
      lastExit: null,
    };
  }

  /**
   * The storage dir, refused when it (or a symlink on its way) leads outside the data path. "create": made
   * when absent; "existing": must exist; "check": may be absent (its nearest existing parent is checked).
   */
  private async storageDir(asked: string, mode: "create" | "existing" | "check"): Promise<string> {
    const root = resolve(this.o.dataPath);
    const outside = (): SwitchboardError =>
      new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `storage path ${asked} is outside storage.data_path (${root})`,
      );
    const within = (base: string, p: string): boolean => {
      const rel = relative(base, p);
      return !rel.startsWith("..") && !isAbsolute(rel);
    };
    const storagePath = resolve(root, asked);
    if (!within(root, storagePath)) throw outside();
    await mkdir(root, { recursive: true });
    if (mode === "create") await mkdir(storagePath, { recursive: true });
    let existing = storagePath;
    if (mode === "check") {
      while (existing !== root && !(await exists(existing))) existing = dirname(existing);
    }
    const [realRoot, realPath] = await Promise.all([
      realpath(root),
      realpath(existing).catch(() => {
        throw new SwitchboardError(Code.NOT_FOUND, `${asked} does not exist under storage.data_path`);
      }),
    ]);
    if (!within(realRoot, realPath)) throw outside();
    // Checked: its parent may be made now, for whatever fills it before the spawn (a migration's data).
    if (mode === "check" && existing !== storagePath) await mkdir(dirname(storagePath), { recursive: true });
    return storagePath;
  }

  /** Resolves once the node runs; rejects with the reason when it ends or times out first. */
  private async untilReady(l: Live): Promise<void> {
    const r = l.record;
    const deadline = Date.now() + this.o.startupTimeoutMs;
    for (;;) {
      if (r.state === "running") return;
      if (r.state !== "starting") {
        const [, errPath] = this.logPaths(r.nodeId);
        const tail = await tailOf(errPath, 400);
        throw new SwitchboardError(
          Code.FAILED_PRECONDITION,
          `node ${r.nodeId} did not start: ${r.lastExit?.reason ?? r.state}${tail ? `; its stderr ends: ${tail}` : ""}`,
        );
      }
      if (Date.now() > deadline) {
        throw new SwitchboardError(
          Code.DEADLINE_EXCEEDED,
          `node ${r.nodeId} did not open port ${r.port} within ${this.o.startupTimeoutMs / 1000}s; it was killed`,
        );
      }
      if (this.o.readyCheck === "tcp" && r.pid !== null && (await nodeListens(r.port, r.pid))) {
        if (r.state === "starting") {
          this.move(l, "running");
          this.changed(l);
        }
        continue;
      }
      await new Promise((res) => setTimeout(res, READY_POLL_MS));
    }
  }

  /** The first port from portRangeStart that no node holds and nothing listens on. */
  private async freePort(taken: Set<number>): Promise<number> {
    for (let p = this.o.portRangeStart; p <= 65_535; p++) {
      if (!taken.has(p) && (await portFree(p))) return p;
    }
    throw new SwitchboardError(
      Code.RESOURCE_EXHAUSTED,
      `no free port from ${this.o.portRangeStart} upwards on this agent`,
    );
  }

  /** Reads a node's current stdout or stderr file from an offset (negative: the last -offset bytes). */
  async readLog(
    nodeId: string,
    stderr: boolean,
    offset: number,
    maxBytes: number,
  ): Promise<{ data: Buffer; offset: number; size: number; rotated: boolean }> {
    if (!this.nodes.has(nodeId))
      throw new SwitchboardError(Code.NOT_FOUND, `no node ${nodeId} on this agent`);
    const path = this.logPaths(nodeId)[stderr ? 1 : 0];
    let f;
    try {
      f = await open(path, "r");
    } catch {
      return { data: Buffer.alloc(0), offset: 0, size: 0, rotated: false };
    }
    try {
      const size = (await f.stat()).size;
      let start = offset < 0 ? Math.max(0, size + offset) : offset;
      let rotated = false;
      if (start > size) {
        start = 0;
        rotated = true;
      }
      const n = Math.max(0, Math.min(maxBytes, size - start));
      const data = Buffer.alloc(n);
      if (n > 0) await f.read(data, 0, n, start);
      return { data, offset: start, size, rotated };
    } finally {
      await f.close();
    }
  }

  /** Drops a stopped node from the table. */
  async forget(nodeId: string): Promise<void> {
    const l = this.nodes.get(nodeId);
    if (!l) return;
    if (l.record.state !== "stopped") {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `node ${nodeId} is ${l.record.state}: stop it first`,
      );
    }
    this.nodes.delete(nodeId);
    await this.save();
  }

  /** Agent exit without stopping the nodes: they keep running and the next start adopts them. */
  async detach(): Promise<void> {
    clearInterval(this.memoryTimer);
    clearInterval(this.adoptedTimer);
    for (const l of this.nodes.values()) {
      clearTimeout(l.restartTimer);
      clearTimeout(l.killTimer);
      l.child?.removeAllListeners("exit");
      l.child?.unref();
    }
    await this.save();
  }

  private changed(l: Live): void {
    try {
      this.o.onChange?.({ ...l.record });
    } catch (err) {
      this.logger?.warn({ err, node_id: l.record.nodeId }, "node change listener failed");
    }
  }

  /** SIGTERM to the node's process group, SIGKILL after the grace; resolves once it has exited. */
  async stop(nodeId: string, graceMs = this.o.stopGraceMs): Promise<NodeRecord> {
    // A spawn in progress is cancelled: before its launch it gives up at its next step (waited for here);
    // once launched, the stop below ends its process and the spawn fails, leaving nothing in the table.
    const pending = this.pending.get(nodeId);
    if (pending) {
      pending.cancelled = true;
      if (!pending.launched) await pending.settled;
    }
    const l = this.nodes.get(nodeId);
    if (!l && pending) return this.cancelledRecord(pending);
    if (!l) throw new SwitchboardError(Code.NOT_FOUND, `no node ${nodeId} on this agent`);
    clearTimeout(l.restartTimer);
    const s = l.record.state;
    if (s === "stopped") return { ...l.record };
    if (s === "crashed" || s === "backoff") {
      this.move(l, "stopped");
      await this.save();
      return { ...l.record };
    }
    if (s !== "stopping") {
      this.move(l, "stopping");
      l.stopped = new Promise((r) => (l.onStopped = r));
      this.signal(l, "SIGTERM");
      l.killTimer = setTimeout(() => this.signal(l, "SIGKILL"), graceMs);
    }
    await l.stopped;
    // The exit is writing the table (exited() saves); the answer does not wait for it: were the agent to
    // die before the write lands, the hub's registry (desired: stopped) stops the node again on reconnect.
    return { ...l.record };
  }

  /** What a stop answers for a spawn it cancelled before its node was launched. */
  private cancelledRecord(p: PendingSpawn): NodeRecord {
    return {
      ...this.newRecord(p.req, p.binary, p.req.storagePath, p.port ?? p.req.port),
      lastExit: {
        code: null,
        signal: null,
        reason: "spawn cancelled before the node started",
        at: Date.now(),
      },
    };
  }

  /** Stops every node (agent shutdown). */
  async close(): Promise<void> {
    clearInterval(this.memoryTimer);
    // Adopted nodes are seen to end by the poll: it runs on until every stop has finished.
    await Promise.all([...this.nodes.keys()].map((id) => this.stop(id).catch(() => undefined)));
    clearInterval(this.adoptedTimer);
    await this.saving;
  }

  /** The node's stdout and stderr files (the newest; older ones end in .1, .2 ...). */
  logPaths(nodeId: string): [string, string] {
    const dir = join(this.o.stateDir, "node-logs");
    return [join(dir, `${nodeId}.out.log`), join(dir, `${nodeId}.err.log`)];
  }

  // ---- internals ----

  private live(record: NodeRecord): Live {
    const l: Live = {
      record,
      child: undefined,
      adopted: false,
      restartTimer: undefined,
      killTimer: undefined,
      recentRestarts: [],
      stopped: undefined,
      onStopped: undefined,
      pendingReason: undefined,
      spawning: false,
    };
    this.nodes.set(record.nodeId, l);
    return l;
  }

  private move(l: Live, to: NodeState): void {
    const from = l.record.state;
    if (!TRANSITIONS[from].includes(to))
      throw new Error(`node ${l.record.nodeId}: ${from} -> ${to} is not a transition`);
    l.record.state = to;
    this.logger?.info({ node_id: l.record.nodeId, from, to }, "node state");
    if (to !== "running") this.changed(l);
  }

  private launch(l: Live): void {
    const r = l.record;
    this.move(l, "starting");
    // The default binary gets its fixed arguments and the port, data dir and id; any other allowlisted
    // command only the request's arguments, in which {port}, {data} and {node_id} are filled in.
    const fill = (x: string): string =>
      x
        .replaceAll("{port}", String(r.port))
        .replaceAll("{data}", r.storagePath)
        .replaceAll("{node_id}", r.nodeId);
    const argv =
      r.binary === this.o.binary
        ? [...this.o.binaryArgs, ...this.o.nodeArgs(r), ...r.args.map(fill)]
        : r.args.map(fill);
    // The node writes its output to files itself (appending), not through a pipe to the agent: a node the
    // agent re-adopts after its own restart must not die of a broken pipe. Rotation copies and truncates.
    const [outPath, errPath] = this.logPaths(r.nodeId);
    const out = openSync(outPath, "a");
    const err = openSync(errPath, "a");
    let child: ChildProcess;
    try {
      child = spawn(r.binary, argv, {
        cwd: r.storagePath,
        env: {
          ...process.env,
          SWITCHBOARD_NODE_ID: r.nodeId,
          SWITCHBOARD_NODE_PORT: String(r.port),
          SWITCHBOARD_NODE_DATA: r.storagePath,
          ...r.env,
        },
        stdio: ["ignore", out, err],
        // Its own process group: stop and the memory limit reach everything it started.
        detached: true,
      });
    } finally {
      closeSync(out);
      closeSync(err);
    }
    l.child = child;
    l.adopted = false;
    child.on("error", (e) => this.exited(l, child, null, null, `cannot start ${r.binary}: ${e.message}`));
    child.on("exit", (code, signal) => this.exited(l, child, code, signal, undefined));
    r.pid = child.pid ?? null;
    r.procStart = r.pid !== null ? procStartOf(r.pid) : null;
    r.startedAt = Date.now();
    if (this.o.readyCheck === "none") {
      setTimeout(() => {
        if (l.child === child && r.state === "starting") {
          this.move(l, "running");
          this.changed(l);
          void this.save();
        }
      }, STARTING_MS).unref();
    } else if (!l.spawning) {
      // A restart: nobody waits for it, so watch for the port here.
      void this.watchRestart(l, child);
    }
  }

  private exited(
    l: Live,
    child: ChildProcess | undefined,
    code: number | null,
    signal: string | null,
    why?: string,
  ): void {
    if (child !== undefined && l.child !== child) return;
    if (l.record.state === "stopped" || l.record.state === "crashed" || l.record.state === "backoff") return;
    l.child = undefined;
    clearTimeout(l.killTimer);
    const r = l.record;
    const reason = why ?? l.pendingReason ?? (signal ? `killed by ${signal}` : `exited with code ${code}`);
    l.pendingReason = undefined;
    r.lastExit = { code, signal, reason, at: Date.now() };
    r.pid = null;
    r.procStart = null;
    if (r.state === "stopping") {
      this.move(l, "stopped");
      l.onStopped?.();
    } else {
      this.move(l, "crashed");
      this.logger?.warn({ node_id: r.nodeId, reason }, "node crashed");
      if (this.o.restartFailedNodes && !l.spawning) this.scheduleRestart(l, false);
    }
    void this.save();
  }

  private scheduleRestart(l: Live, now: boolean): void {
    const r = l.record;
    this.move(l, "backoff");
    const delay = now
      ? 0
      : Math.min(this.o.backoffMaxMs, this.o.backoffInitialMs * 2 ** Math.min(r.restartCount, 20));
    l.restartTimer = setTimeout(() => {
      if (r.state !== "backoff") return;
      r.restartCount++;
      l.recentRestarts.push(Date.now());
      l.recentRestarts = l.recentRestarts.filter((t) => Date.now() - t < this.o.crashLoopWindowMs);
      this.launch(l);
      void this.save();
    }, delay);
    l.restartTimer.unref();
  }

  private async watchRestart(l: Live, child: ChildProcess): Promise<void> {
    const r = l.record;
    const deadline = Date.now() + this.o.startupTimeoutMs;
    while (l.child === child && r.state === "starting") {
      if (r.pid !== null && (await nodeListens(r.port, r.pid))) {
        if (l.child === child && r.state === "starting") {
          this.move(l, "running");
          this.changed(l);
          void this.save();
        }
        return;
      }
      if (Date.now() > deadline) {
        l.pendingReason = `did not open port ${r.port} within ${this.o.startupTimeoutMs / 1000}s`;
        this.signal(l, "SIGKILL");
        return;
      }
      await new Promise((res) => setTimeout(res, 20));
    }
  }

  private signal(l: Live, sig: NodeJS.Signals): void {
    const pid = l.record.pid;
    if (pid === null) return;
    try {
      process.kill(-pid, sig);
    } catch {
      try {
        process.kill(pid, sig);
      } catch {
        // gone already
      }
    }
  }

  /**
   * Adopted processes are not our children, so no 'exit' event tells of their end: each poll compares
   * /proc/PID/stat's start time with the recorded one (a dead pid, a zombie or a reused pid all differ),
   * and an ended node goes the way of a child that exited: stopped when asked to, else crashed and
   * restarted with backoff.
   */
  private checkAdopted(): void {
    for (const l of this.nodes.values()) {
      const r = l.record;
      if (!l.adopted || r.pid === null) continue;
      if (r.state !== "running" && r.state !== "stopping") continue;
      if (procStartOf(r.pid) === r.procStart) continue;
      // Its exit code or signal went to whoever reaped it, not to the agent.
      const why =
        l.pendingReason ??
        (r.state === "stopping"
          ? "ended after it was asked to stop (adopted after an agent restart: exit status unknown)"
          : "ended while adopted after an agent restart (exit status unknown: not the agent's child)");
      this.exited(l, undefined, null, null, why);
    }
  }

  private checkMemory(): void {
    for (const l of this.nodes.values()) {
      for (const p of this.logPaths(l.record.nodeId)) rotateIfLarge(p, this.o.logMaxBytes, this.o.logFiles);
    }
    const watched = [...this.nodes.values()].filter(
      (l) => (l.record.state === "running" || l.record.state === "starting") && l.record.pid !== null,
    );
    // Reading every process in /proc is the costly part: only when there is a node to measure.
    if (watched.length === 0) return;
    const tree = processTreeRss();
    for (const l of watched) {
      const r = l.record;
      const rss = tree(r.pid!);
      if (rss > r.memoryMb * 1024 * 1024) {
        this.logger?.warn(
          { node_id: r.nodeId, rss_mb: Math.round(rss / 1048576), limit_mb: r.memoryMb },
          "node over its memory limit: killed",
        );
        l.pendingReason = `memory limit (${Math.round(rss / 1048576)} MiB > ${r.memoryMb} MiB)`;
        this.signal(l, "SIGKILL");
      }
    }
  }

  private tableFile(): string {
    return join(this.o.stateDir, "nodes.json");
  }

  /** Writes the node table (temporary file, then rename); writes are serialized. */
  private save(): Promise<void> {
    const text = JSON.stringify(
      [...this.nodes.values()].map((l) => l.record),
      null,
      1,
    );
    this.saving = this.saving.then(async () => {
      const tmp = `${this.tableFile()}.tmp`;
      await writeFile(tmp, text);
      await rename(tmp, this.tableFile());
    });
    return this.saving;
  }
}

/**
 * Past maxBytes, FILE is copied to FILE.1 (FILE.1 moved to FILE.2 ..., `files` kept) and truncated: the node
 * keeps its descriptor and, appending, writes on at the start of the emptied file.
 */
function rotateIfLarge(path: string, maxBytes: number, files: number): void {
  try {
    if (statSync(path).size <= maxBytes) return;
    for (let i = files - 1; i >= 2; i--) {
      try {
        renameSync(`${path}.${i - 1}`, `${path}.${i}`);
      } catch {
        // nothing to move yet
      }
    }
    copyFileSync(path, `${path}.1`);
    truncateSync(path, 0);
  } catch {
    // no file yet
  }
}

function cancelledSpawn(nodeId: string): SwitchboardError {
  return new SwitchboardError(
    Code.CANCELLED,
    `the spawn of node ${nodeId} was cancelled: it was stopped before it ran (nothing is left running)`,
  );
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** /proc/PID/stat field 22 (start time in clock ticks), or null when there is no such live process. */
export function procStartOf(pid: number): number | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // A zombie (killed, not yet reaped by whoever inherited it) is not running.
    if (rest[0] === "Z" || rest[0] === "X") return null;
    return Number(rest[19]);
  } catch {
    return null;
  }
}

/** A snapshot of every process's parent and RSS; the function sums a process tree's RSS in bytes. */
function processTreeRss(): (root: number) => number {
  const children = new Map<number, number[]>();
  const rss = new Map<number, number>();
  const page = 4096;
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ppid = Number(rest[1]);
      rss.set(pid, Number(rest[21]) * page);
      const list = children.get(ppid) ?? [];
      list.push(pid);
      children.set(ppid, list);
    } catch {
      // gone meanwhile
    }
  }
  return (root) => {
    let total = 0;
    const stack = [root];
    while (stack.length > 0) {
      const p = stack.pop()!;
      total += rss.get(p) ?? 0;
      stack.push(...(children.get(p) ?? []));
    }
    return total;
  };
}

/** Whether something accepts a TCP connection on 127.0.0.1:port: what makes a node count as running. */
export function portAnswers(port: number): Promise<boolean> {
  return new Promise((res) => {
    const sock = connect({ port, host: "127.0.0.1" });
    sock.once("connect", () => {
      sock.destroy();
      res(true);
    });
    sock.once("error", () => res(false));
  });
}

/**
 * Whether the node answers on its port and, where /proc tells, the listening socket is its own (held by a
 * process of its process group): another program that took the port while the node was down, or an
 * ephemeral port handed to some client, must not make a node that failed to bind count as running.
 */
export async function nodeListens(port: number, pgid: number): Promise<boolean> {
  if (!(await portAnswers(port))) return false;
  let inodes = listeningInodes(port, true);
  if (inodes !== undefined && inodes.size === 0) inodes = listeningInodes(port, false);
  if (inodes === undefined) return true; // no /proc/net: answering is all we can know
  if (inodes.size === 0) return false;
  // Most often the node itself listens: look at its own descriptors before the rest of its group.
  if (holdsSocket(pgid, inodes)) return true;
  return groupMembers(pgid).some((pid) => pid !== pgid && holdsSocket(pid, inodes));
}

/** Whether one of the process's descriptors is a socket with one of these inodes. */
function holdsSocket(pid: number, inodes: ReadonlySet<string>): boolean {
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const link = readlinkSync(`/proc/${pid}/fd/${fd}`, "utf8");
      if (link.startsWith("socket:[") && inodes.has(link.slice(8, -1))) return true;
    }
  } catch {
    // gone meanwhile, or not ours to read
  }
  return false;
}

/**
 * Inodes of the TCP sockets listening on the port (IPv4 and IPv6); undefined where /proc/net is absent.
 * `listenersOnly`: read each table only while its entries are listening sockets, which the kernel lists
 * first: a few KiB instead of every connection on the host (reading all of a busy host's table costs
 * milliseconds). A caller that finds nothing that way asks again for the whole tables.
 */
function listeningInodes(port: number, listenersOnly: boolean): Set<string> | undefined {
  const suffix = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const inodes = new Set<string>();
  let readAny = false;
  // Small reads: the kernel makes only as many entries as fit, so the table's tail is never made.
  const buf = Buffer.allocUnsafe(listenersOnly ? 4096 : 64 * 1024);
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let fd: number;
    try {
      fd = openSync(table, "r");
    } catch {
      continue;
    }
    readAny = true;
    try {
      let rest = "";
      let header = true;
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        const lines = (rest + buf.toString("latin1", 0, n)).split("\n");
        rest = lines.pop() ?? "";
        let pastListeners = false;
        for (const line of lines) {
          if (header) {
            header = false;
            continue;
          }
          const f = line.trim().split(/\s+/);
          if (f.length <= 9) continue;
          // local_address is ADDR:PORT, st 0A is LISTEN, the inode is the tenth field
          if (f[3] !== "0A") pastListeners = true;
          else if (f[1]?.endsWith(suffix)) inodes.add(f[9]!);
        }
        if (listenersOnly && pastListeners) break;
      }
    } finally {
      closeSync(fd);
    }
    // Found among IPv4 listeners: the IPv6 table is not read (making it walks every IPv4 connection too).
    if (listenersOnly && inodes.size > 0) break;
  }
  return readAny ? inodes : undefined;
}

/** Whether nothing listens on the port (on any address). */
function portFree(port: number): Promise<boolean> {
  return new Promise((resolvePort) => {
    const s = createServer();
    s.once("error", () => resolvePort(false));
    s.listen(port, () => s.close(() => resolvePort(true)));
  });
}
