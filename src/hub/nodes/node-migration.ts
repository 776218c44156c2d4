// Moving a node to another agent, checked as far as it can be before anything is stopped: the target's
// own checks of the spawn, and with copy_data how the data moves (through file tasks between machines,
// or copied by the target on one machine). A failure after the stop starts the node again where it was.
import { basename, isAbsolute } from "node:path";
import { Code, shownName, SwitchboardError } from "../../common/errors.js";
import type { Logger } from "../../common/logger.js";
import { NodeSpawn, type NodeReply } from "../../gen/switchboard/v1/agent.js";
import type { MigrateNodeRequest, NodeInfo } from "../../gen/switchboard/v1/client.js";
import type { NodeRecord } from "../../gen/switchboard/v1/node.js";
import type { AgentRegistry } from "../agents/agent-registry.js";
import type { Principal } from "../auth.js";
import type { HubConfig } from "../config.js";
import { AgentRefusal, type NodeCommands } from "./node-commands.js";
import { transferNodeData, type TaskRunner } from "./node-data-transfer.js";
import type { NodePlacement } from "./node-placement.js";
import type { HubNode, NodeRegistry } from "./node-registry.js";

/** A migration's data transfer fails when no byte moved for this long. */
const TRANSFER_IDLE_MS = 60_000;

export class NodeMigration {
  constructor(
    private readonly agents: AgentRegistry,
    private readonly nodes: NodeRegistry,
    private readonly commands: NodeCommands,
    private readonly placement: NodePlacement,
    /** Runs the file tasks that carry a node's data between machines. */
    private readonly runner: TaskRunner,
    private readonly config: HubConfig["nodes"],
    private readonly log: Logger,
  ) {}

  /**
   * Moves a node to another agent. Everything that can be checked is checked before anything is stopped,
   * so that a migration that cannot work leaves the node running where it is: the target's own checks of
   * the spawn (node id, slot, binary, port, storage path; a `check` command that starts nothing) and,
   * with copy_data, that the data can move. Without copy_data: start on the target, wait until it runs,
   * then stop the old one. With copy_data: stop the old one (a consistent copy), move its data dir into
   * the target's storage.data_path, start there; when that fails, the old one is started again and the
   * error says what failed.
   *
   * The data moves through the hub as file tasks (a tar download on the source agent fed into a tar
   * upload on the target) when both agents' [files] roots cover the storage paths: agents on different
   * machines. Otherwise the target copies it itself, which needs the source's directory inside its own
   * storage.data_path (one machine, or a shared disk).
   */
  async migrate(p: Principal, req: MigrateNodeRequest): Promise<NodeInfo> {
    const node = this.nodes.require(req.nodeId);
    if (node.busy)
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `node ${node.row.id} is busy with another operation`,
      );
    if (node.row.desired !== "running") {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `node ${node.row.id} is stopped: spawn it instead`,
      );
    }
    if (!req.toAgentId) throw new SwitchboardError(Code.INVALID_ARGUMENT, "migrate needs a target agent");
    if (req.toAgentId === node.row.agentId) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `node ${node.row.id} already runs on ${req.toAgentId}`,
      );
    }
    if (req.storagePath.split(/[\\/]/).includes("..")) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `storage path ${shownName(req.storagePath)}: ".." is not allowed`,
      );
    }
    const from = node.row.agentId;
    await this.placement.checkAgent(p, from);
    try {
      await this.placement.agentWithSlot(p, req.toAgentId);
    } catch (err) {
      throw notMigrated(node.row.id, from, err);
    }
    const to = req.toAgentId;
    // The same path relative to the target's data path: an absolute one (an adopted node's) names a
    // directory of the source's machine, so only its last part is kept.
    const spec: NodeSpawn = {
      ...node.spec,
      port: req.port || node.record?.port || node.spec.port,
      storagePath:
        req.storagePath ||
        (isAbsolute(node.spec.storagePath) ? basename(node.spec.storagePath) : node.spec.storagePath),
      copyFrom: "",
    };
    node.busy = true;
    try {
      const plan = await this.planMigration(node, from, to, spec, req.copyData);
      let started: NodeReply;
      if (plan.copy === "none") {
        try {
          started = await this.commands.spawnOn(to, spec);
        } catch (err) {
          await this.commands.forgetOn(to, node.row.id);
          throw notMigrated(node.row.id, from, err);
        }
        await this.commands.forgetOn(from, node.row.id);
      } else {
        started = await this.moveStopped(p, node, from, to, spec, plan);
      }
      node.row.agentId = to;
      // The new agent's record (its replies were not taken while the node belonged to the old one).
      node.record = started.nodes[0] ?? node.record;
      node.row.recordAt = Date.now();
      node.spec = { ...spec, copyFrom: "" };
      node.row.spec = NodeSpawn.encode(node.spec).finish();
      await this.nodes.save(node);
      this.nodes.audit(p.name, "node.migrate", node.row.id, {
        from,
        to,
        copy_data: req.copyData,
        ...(req.copyData ? { copied: plan.copy } : {}),
      });
      this.log.info({ node_id: node.row.id, from, to, copy: plan.copy }, "node migrated");
      return this.nodes.info(node, false);
    } finally {
      node.busy = false;
    }
  }

  /**
   * What a migration will do, found out without touching the node: the target's checks of the spawn, and
   * how the data moves. Throws (FAILED_PRECONDITION and the like, naming what to change) when it cannot work.
   */
  private async planMigration(
    node: HubNode,
    from: string,
    to: string,
    spec: NodeSpawn,
    copyData: boolean,
  ): Promise<MigrationPlan> {
    const refuse = (err: unknown): never => {
      throw notMigrated(node.row.id, from, err);
    };
    const sourcePort = node.record?.port ?? 0;
    let target = await this.commands.checkOn(to, spec).catch(async (err: unknown) => {
      // On one machine the node itself holds its port until it is stopped, which copy_data does first:
      // everything else about the spawn is checked with any port, that port when the spawn is made.
      const ownPort =
        copyData &&
        spec.port === sourcePort &&
        err instanceof AgentRefusal &&
        err.code === Code.FAILED_PRECONDITION &&
        err.message === `port ${spec.port} is in use on this agent`;
      if (!ownPort) return refuse(err);
      return this.commands.checkOn(to, { ...spec, port: 0 }).catch(refuse);
    });
    if (!copyData) return { copy: "none", target };
    // Fresh from the source: where its data is, and whether its file tasks reach it.
    const source = await this.commands
      .commandOnce(from, { $case: "status", value: { nodeId: node.row.id } }, this.config.statusTimeoutMs)
      .then((r) => r.nodes[0], refuse);
    const fromPath = source?.storagePath || node.record?.storagePath || "";
    if (!source || !fromPath)
      return refuse(new SwitchboardError(Code.NOT_FOUND, `agent ${from} does not know it`));
    if (source.filesReach && target?.filesReach && this.acceptsFiles(from) && this.acceptsFiles(to)) {
      return { copy: "files", target, fromPath };
    }
    // No file tasks: the target may see the directory itself (one machine, a shared disk).
    const local = await this.commands
      .checkOn(to, {
        ...spec,
        port: target?.port === spec.port ? spec.port : 0,
        copyFrom: fromPath,
      })
      .catch((err: unknown) => err as Error);
    if (!(local instanceof Error)) {
      target = local;
      return { copy: "local", target, fromPath };
    }
    const lacking = [
      ...(source.filesReach && this.acceptsFiles(from) ? [] : [from]),
      ...(target?.filesReach && this.acceptsFiles(to) ? [] : [to]),
    ];
    return refuse(
      new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `its data cannot move from ${from} to ${to}: a copy between machines goes through file tasks, and the [files] roots of ${lacking.map((a) => `agent ${a}`).join(" and ")} do not cover storage.data_path (add it to [files] roots there); nor does ${to} see ${fromPath} inside its own storage.data_path (${local.message})`,
      ),
    );
  }

  /**
   * The copy_data migration, once planned: stops the node, moves its data, starts it on the target. On a
   * failure after the stop, the target's copy is removed and the node started again where it was.
   */
  private async moveStopped(
    p: Principal,
    node: HubNode,
    from: string,
    to: string,
    spec: NodeSpawn,
    plan: Exclude<MigrationPlan, { copy: "none" }>,
  ): Promise<NodeReply> {
    const id = node.row.id;
    try {
      await this.commands.command(
        from,
        { $case: "stop", value: { nodeId: id, graceMs: 0, forget: false } },
        this.config.stopTimeoutMs,
      );
    } catch (err) {
      throw new SwitchboardError(
        err instanceof SwitchboardError ? err.code : Code.INTERNAL,
        `node ${id} was not migrated: stopping it on ${from} failed (${(err as Error).message}); nothing was copied or started on ${to}`,
      );
    }
    let started: NodeReply;
    try {
      if (plan.copy === "files") {
        const moved = await transferNodeData(this.runner, p, {
          nodeId: id,
          from,
          fromPath: plan.fromPath,
          to,
          toPath: plan.target?.storagePath ?? "",
          idleTimeoutMs: TRANSFER_IDLE_MS,
        });
        this.log.info({ node_id: id, from, to, bytes: moved.bytes }, "node data moved through the hub");
        started = await this.commands.spawnOn(to, spec);
      } else {
        started = await this.commands.spawnOn(to, { ...spec, copyFrom: plan.fromPath });
      }
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      this.log.warn(
        { node_id: id, from, to, err: why },
        "migration failed after the stop: starting the node again",
      );
      await this.commands.forgetOn(to, id);
      const back = await this.commands.spawnOn(from, { ...node.spec, copyFrom: "" }).then(
        () => `it runs again on ${from}`,
        (e: unknown) =>
          `starting it again on ${from} failed too (${(e as Error).message}); the hub starts it when ${from} reconnects`,
      );
      throw new SwitchboardError(
        err instanceof SwitchboardError ? err.code : Code.INTERNAL,
        `node ${id} was not migrated to ${to}: ${why}; ${back}`,
      );
    }
    await this.commands.forgetOn(from, id);
    return started;
  }

  private acceptsFiles(agentId: string): boolean {
    return this.agents.get(agentId)?.hello.taskKinds.includes("file") ?? false;
  }
}

/** How a migration moves the node's data: not at all, through file tasks, or copied by the target. */
type MigrationPlan =
  | { copy: "none"; target: NodeRecord | undefined }
  | { copy: "files" | "local"; target: NodeRecord | undefined; fromPath: string };

/** A migration refused or failed before the node was stopped: it still runs where it was. */
function notMigrated(nodeId: string, from: string, err: unknown): SwitchboardError {
  const why = err instanceof Error ? err.message : String(err);
  return new SwitchboardError(
    err instanceof SwitchboardError ? err.code : Code.INTERNAL,
    `node ${nodeId} was not migrated: ${why} (it still runs on ${from}, untouched)`,
  );
}
