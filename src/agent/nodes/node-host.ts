// The agent's side of supervised nodes: builds the supervisor from the config, answers the hub's
// NodeCommands (and the local API's calls) and turns supervisor records into their wire form.
import { fileURLToPath } from "node:url";
import { Code, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import type { NodeCommand, NodeReply, NodeSpawn } from "../../gen/switchboard/v1/agent.js";
import type { NodeRecord as WireNode } from "../../gen/switchboard/v1/node.js";
import type { AgentConfig } from "../config.js";
import { FileRoots } from "../executors/file/index.js";
import type { NodeRecord, SpawnNodeRequest } from "./node-record.js";
import { NodeSupervisor, type NodeSupervisorOptions } from "./node-supervisor.js";

/** Longest log read one command answers. */
const MAX_LOG_READ = 1024 * 1024;

/** This program's entry point: the default node binary is `node <it> storage-node`. */
function cliMain(): string {
  return fileURLToPath(new URL("../../cli/main.js", import.meta.url));
}

export function supervisorOptions(config: AgentConfig): NodeSupervisorOptions {
  const st = config.storage;
  const builtin = st.binaryPath === "";
  const binary = builtin ? process.execPath : st.binaryPath;
  return {
    dataPath: st.dataPath,
    stateDir: config.agent.dataDir,
    binary,
    binaryArgs: builtin ? [cliMain(), "storage-node"] : [],
    allowedBinaries: [binary, ...st.allowedBinaries],
    maxNodes: config.agent.maxStorageNodes,
    defaultMemoryMb: st.defaultMemoryMb,
    restartFailedNodes: config.monitoring.restartFailedNodes,
    stopGraceMs: st.stopGraceMs,
    memoryCheckIntervalMs: st.memoryCheckIntervalMs,
    backoffInitialMs: st.backoffInitialMs,
    backoffMaxMs: st.backoffMaxMs,
    crashLoopRestarts: st.crashLoopRestarts,
    crashLoopWindowMs: st.crashLoopWindowMs,
    logMaxBytes: st.logMaxBytes,
    logFiles: st.logFiles,
    portRangeStart: st.defaultPortRangeStart,
    readyCheck: st.readyCheck,
    startupTimeoutMs: st.startupTimeoutMs,
    nodeArgs: (n) =>
      st.args.map((a) =>
        a
          .replaceAll("{port}", String(n.port))
          .replaceAll("{data}", n.storagePath)
          .replaceAll("{node_id}", n.nodeId),
      ),
  };
}

/** `filesReach`: whether file tasks on this agent may read and write a storage path. */
export function toWire(r: NodeRecord, filesReach: (path: string) => boolean = () => false): WireNode {
  return {
    nodeId: r.nodeId,
    status: r.state,
    pid: r.pid ?? 0,
    port: r.port,
    storagePath: r.storagePath,
    startedAtMs: r.startedAt ?? 0,
    restartCount: r.restartCount,
    memoryLimitMb: r.memoryMb,
    binary: r.binary,
    args: r.args,
    lastExit: r.lastExit?.reason ?? "",
    lastExitAtMs: r.lastExit?.at ?? 0,
    env: r.env,
    filesReach: filesReach(r.storagePath),
  };
}

function spawnRequest(v: NodeSpawn): SpawnNodeRequest {
  return {
    nodeId: v.nodeId,
    storagePath: v.storagePath,
    port: v.port,
    memoryMb: v.memoryLimitMb,
    args: v.args,
    env: v.env,
    ...(v.binary ? { binary: v.binary } : {}),
    ...(v.copyFrom ? { copyFrom: v.copyFrom } : {}),
  };
}

export class NodeHost {
  readonly supervisor: NodeSupervisor;
  private readonly fileRoots: FileRoots;

  constructor(
    private readonly config: AgentConfig,
    private readonly logger: Logger,
    /** A node changed on its own or by a command: tell the hub. */
    onChange: (node: WireNode) => void,
  ) {
    this.fileRoots = new FileRoots(config.files.roots, config.agent.agentId);
    this.supervisor = new NodeSupervisor(
      { ...supervisorOptions(config), onChange: (r) => onChange(this.toWire(r)) },
      logger.child({ component: "nodes" }),
    );
  }

  /**
   * Whether file tasks reach a storage path: a [files] root holds it (as written; the file task itself
   * checks symlinks again). A migration with --copy-data moves a node's data between machines that way.
   */
  private filesReach(path: string): boolean {
    return path !== "" && this.fileRoots.check(path) === undefined && !this.fileRoots.roots.includes(path);
  }

  private toWire(r: NodeRecord): WireNode {
    return toWire(r, (p) => this.filesReach(p));
  }

  get maxNodes(): number {
    return this.config.agent.maxStorageNodes;
  }

  start(): Promise<void> {
    return this.supervisor.start();
  }

  list(): WireNode[] {
    return this.supervisor.list().map((r) => this.toWire(r));
  }

  trouble(): string | undefined {
    return this.supervisor.trouble();
  }

  /** Answers one command; never throws (errors become the reply's code and message). */
  async handle(cmd: NodeCommand): Promise<NodeReply> {
    const reply: NodeReply = { id: cmd.id, code: 0, errorMessage: "", nodes: [], logs: undefined };
    try {
      const op = cmd.op;
      switch (op?.$case) {
        case "spawn": {
          const v = op.value;
          this.logger.info(
            { node_id: v.nodeId, port: v.port, storage_path: v.storagePath },
            "spawn request for a node",
          );
          const r = await this.supervisor.spawn(spawnRequest(v));
          this.logger.info({ node_id: r.nodeId, pid: r.pid, port: r.port }, "node spawned");
          reply.nodes = [this.toWire(r)];
          break;
        }
        case "check": {
          reply.nodes = [this.toWire(await this.supervisor.check(spawnRequest(op.value)))];
          break;
        }
        case "stop": {
          const v = op.value;
          const r = await this.supervisor.stop(v.nodeId, v.graceMs > 0 ? v.graceMs : undefined);
          if (v.forget) await this.supervisor.forget(v.nodeId);
          reply.nodes = [this.toWire(r)];
          break;
        }
        case "status": {
          const r = this.supervisor.get(op.value.nodeId);
          if (!r) throw new SwitchboardError(Code.NOT_FOUND, `no node ${op.value.nodeId} on this agent`);
          reply.nodes = [this.toWire(r)];
          break;
        }
        case "list":
          reply.nodes = this.list();
          break;
        case "logs": {
          const v = op.value;
          const max = Math.min(MAX_LOG_READ, v.maxBytes > 0 ? v.maxBytes : 64 * 1024);
          const chunk = await this.supervisor.readLog(v.nodeId, v.stderr, v.offset, max);
          reply.logs = chunk;
          break;
        }
        default:
          throw new SwitchboardError(Code.INVALID_ARGUMENT, "a node command needs an operation");
      }
    } catch (err) {
      const code = err instanceof SwitchboardError ? err.code : Code.INTERNAL;
      reply.code = code;
      reply.errorMessage = err instanceof Error ? err.message : String(err);
      if (code === Code.INTERNAL) this.logger.error({ err }, "node command failed");
    }
    return reply;
  }

  /** Agent shutdown: stop the nodes, or leave them running for the next start to adopt. */
  async close(): Promise<void> {
    if (this.config.storage.stopNodesOnExit) await this.supervisor.close();
    else await this.supervisor.detach();
  }
}
