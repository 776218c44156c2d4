// Supervised nodes on the agent: long-running processes (storage nodes by default) started on request,
// each an explicit state machine (./node-state.ts), restarted with backoff when they die
// (./restart-policy.ts), killed and restarted when their process tree outgrows the memory limit, their
// output captured to rotating files (./node-logs.ts), and their table persisted (./node-table.ts) so that
// an agent restart re-adopts the nodes that still run and restarts the others (./node-adoption.ts).
import type { ChildProcess } from "node:child_process";
import { cp } from "node:fs/promises";
import { Code, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { ADOPTED_POLL_MS, adoptedEnd, takeOver } from "./node-adoption.js";
import { NodeLogs, type LogChunk } from "./node-logs.js";
import { nodeArgv, signalNode, spawnNodeProcess } from "./node-process.js";
import { newNodeRecord, type NodeRecord, type SpawnNodeRequest } from "./node-record.js";
import { nextNodeState, type NodeState } from "./node-state.js";
import { NodeTable } from "./node-table.js";
import { firstFreePort, nodeListens, portFree } from "./port-probe.js";
import { processTreeRss, procStartOf } from "./proc-stat.js";
import { RestartPolicy } from "./restart-policy.js";
import {
  admitSpawn,
  cancelledSpawn,
  checkBinaryExists,
  throwIfCancelled,
  type PendingSpawn,
} from "./spawn-admission.js";
import { storageDir } from "./storage-path.js";

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

const STARTING_MS = 1000;
const READY_POLL_MS = 5;
/** Spawns on a port the agent chose: how many ports to try when another program takes one first. */
const PORT_ATTEMPTS = 3;

export class NodeSupervisor {
  private readonly nodes = new Map<string, Live>();
  /** Spawns in progress, by node id. */
  private readonly pending = new Map<string, PendingSpawn>();
  private readonly logs: NodeLogs;
  private readonly table: NodeTable;
  private readonly restarts: RestartPolicy;
  private memoryTimer: NodeJS.Timeout | undefined;
  private adoptedTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly o: NodeSupervisorOptions,
    private readonly logger?: Logger,
  ) {
    this.logs = new NodeLogs(o.stateDir, o.logMaxBytes, o.logFiles);
    this.table = new NodeTable(o.stateDir);
    this.restarts = new RestartPolicy(o);
  }

  /** Loads the node table of an earlier run: nodes still running are adopted, the others restarted. */
  async start(): Promise<void> {
    await this.logs.ensureDir();
    for (const r of this.table.load()) {
      const live = this.live(r);
      if (r.state === "stopped") continue;
      if (takeOver(r) === "adopted") {
        live.adopted = true;
        this.logger?.info({ node_id: r.nodeId, pid: r.pid }, "node adopted: it kept running");
      } else {
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
    for (const l of this.nodes.values()) {
      const r = l.record;
      if (r.state === "stopped" || r.state === "running") continue;
      const loop = this.restarts.crashLoop(r.nodeId, l.recentRestarts, r.lastExit?.reason);
      if (loop) return loop;
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
    const storagePath = await storageDir(this.o.dataPath, req.storagePath || req.nodeId, "check");
    if (req.copyFrom) await storageDir(this.o.dataPath, req.copyFrom, "existing");
    await checkBinaryExists(binary, this.o.binary);
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
    throwIfCancelled(pending);
    await this.checkPort(req.port, port);
    const storagePath = await storageDir(this.o.dataPath, req.storagePath || req.nodeId, "create");
    if (req.copyFrom) {
      const from = await storageDir(this.o.dataPath, req.copyFrom, "existing");
      throwIfCancelled(pending);
      if (from !== storagePath) await cp(from, storagePath, { recursive: true, force: true });
    }
    await checkBinaryExists(binary, this.o.binary);
    throwIfCancelled(pending);
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
    return admitSpawn(req, this.o, {
      existing: this.nodes.get(req.nodeId)?.record.state,
      pending: this.pending.has(req.nodeId),
      slotsUsed: this.slotsUsed(),
    });
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

  /** The first port from portRangeStart that no node holds and nothing listens on. */
  private freePort(taken: ReadonlySet<number>): Promise<number> {
    return firstFreePort(this.o.portRangeStart, taken);
  }

  private newRecord(req: SpawnNodeRequest, binary: string, storagePath: string, port: number): NodeRecord {
    return newNodeRecord(req, binary, storagePath, port, this.o.defaultMemoryMb);
  }

  /** Resolves once the node runs; rejects with the reason when it ends or times out first. */
  private async untilReady(l: Live): Promise<void> {
    const r = l.record;
    const deadline = Date.now() + this.o.startupTimeoutMs;
    for (;;) {
      if (r.state === "running") return;
      if (r.state !== "starting") {
        const tail = await this.logs.stderrTail(r.nodeId, 400);
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

  /** Reads a node's current stdout or stderr file from an offset (negative: the last -offset bytes). */
  async readLog(nodeId: string, stderr: boolean, offset: number, maxBytes: number): Promise<LogChunk> {
    if (!this.nodes.has(nodeId))
      throw new SwitchboardError(Code.NOT_FOUND, `no node ${nodeId} on this agent`);
    return this.logs.read(nodeId, stderr, offset, maxBytes);
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
    await this.table.flushed();
  }

  /** The node's stdout and stderr files (the newest; older ones end in .1, .2 ...). */
  logPaths(nodeId: string): [string, string] {
    return this.logs.paths(nodeId);
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
    l.record.state = nextNodeState(l.record.nodeId, from, to);
    this.logger?.info({ node_id: l.record.nodeId, from, to }, "node state");
    if (to !== "running") this.changed(l);
  }

  private launch(l: Live): void {
    const r = l.record;
    this.move(l, "starting");
    const child = spawnNodeProcess(r, nodeArgv(r, this.o), this.logs.paths(r.nodeId));
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
    const delay = now ? 0 : this.restarts.delayMs(r.restartCount);
    l.restartTimer = setTimeout(() => {
      if (r.state !== "backoff") return;
      r.restartCount++;
      l.recentRestarts = this.restarts.recordRestart(l.recentRestarts);
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
    signalNode(l.record.pid, sig);
  }

  /**
   * Adopted processes are not our children, so no 'exit' event tells of their end: an ended node goes the
   * way of a child that exited: stopped when asked to, else crashed and restarted with backoff.
   */
  private checkAdopted(): void {
    for (const l of this.nodes.values()) {
      if (!l.adopted) continue;
      const why = adoptedEnd(l.record, l.pendingReason);
      if (why !== undefined) this.exited(l, undefined, null, null, why);
    }
  }

  private checkMemory(): void {
    for (const l of this.nodes.values()) this.logs.rotate(l.record.nodeId);
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

  /** Writes the node table; writes are serialized. */
  private save(): Promise<void> {
    return this.table.save([...this.nodes.values()].map((l) => l.record));
  }
}
