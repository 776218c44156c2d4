// `agents` (alias `list-agents`) and `status`: what is connected, how healthy, how busy, and how
// the supervised nodes fare.
import type { Command } from "commander";
import { formatDuration } from "../../common/duration.js";
import { addConnectionOptions, clientCommand, withClient } from "../client-command.js";
import { intFlag } from "../flags.js";
import {
  AGENT_COLUMNS,
  agentRow,
  outputFormat,
  printList,
  printObject,
  type AgentRow,
  type Column,
} from "../output.js";
import type { HubInfo, PoolStatus } from "../../gen/switchboard/v1/client.js";

/**
 * The listing's columns: ours, plus seed 003's list-agents fields, its platform and how long ago it was
 * last heard from ("Last Heartbeat: 2 seconds ago"), in seconds for every agent, connected or not.
 */
const LISTING_COLUMNS: Column<AgentRow>[] = AGENT_COLUMNS.flatMap((c): Column<AgentRow>[] => {
  if (c.header === "HOST") return [c, { header: "PLATFORM", value: (r) => r.platform || "-" }];
  if (c.header === "LAST SEEN") return [{ header: "LAST HEARTBEAT", value: (r) => secondsAgo(r.lastSeenMs) }];
  return [c];
});

function secondsAgo(ms: number, now = Date.now()): string {
  return ms ? `${Math.max(0, Math.round((now - ms) / 1000))} s ago` : "-";
}

export function registerAgents(program: Command): void {
  const agents = clientCommand(program, "agents", "list agents with their pool, health and load")
    .alias("list-agents")
    .option("--pool <name>", "only this pool")
    .option("-a, --all", "include offline agents")
    .option("-o, --output <format>", "table or json", "table")
    .action(async (f: { pool?: string; all?: boolean; output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const agents = await withClient(cmd, (c) =>
        c.admin.listAgents({ pool: f.pool ?? "", includeOffline: f.all ?? false }),
      );
      printList(
        agents.map(agentRow),
        LISTING_COLUMNS,
        format,
        "no agents connected (start one with switchboard agent --help)",
      );
    });

  addConnectionOptions(
    agents
      .command("forget")
      .description(
        "release an offline agent's id from its pool and token (admin): the next agent with it claims it",
      ),
  )
    .argument("<agent-id>")
    .addHelpText(
      "after",
      "\nAn agent id belongs to the pool and token it first registered with; no other token can take it.\n" +
        "Forget it to move it to another pool or token. Refused while the agent is connected.",
    )
    .action(async (agentId: string, _f: unknown, cmd: Command) => {
      const r = await withClient(cmd, (c) => c.admin.forgetAgent(agentId));
      const owner = r.tokenName ? `, token ${r.tokenName}` : "";
      process.stdout.write(
        `forgot agent ${r.agentId} (pool ${r.pool}${owner}): the next agent to connect with this id claims it\n`,
      );
    });

  clientCommand(program, "agent-config", "change a connected agent's settings at run time (admin)")
    .requiredOption("--agent <id>", "the agent")
    .requiredOption("--concurrency <n>", "tasks it runs at once, 1..1024; running tasks are not touched")
    .option("-o, --output <format>", "table or json", "table")
    .addHelpText(
      "after",
      "\nThe change lasts until the agent restarts; its config names the number it starts with.",
    )
    .action(async (f: { agent: string; concurrency: string; output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const n = intFlag("--concurrency", f.concurrency, 1);
      const a = await withClient(cmd, (c) => c.admin.setAgentConcurrency(f.agent, n));
      printList([agentRow(a)], AGENT_COLUMNS, format, "");
    });

  clientCommand(program, "status", "the cluster at a glance: hub, agents by health, nodes, tasks, pools")
    .option("-o, --output <format>", "table or json", "table")
    .action(async (f: { output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const s = await withClient(cmd, (c) => c.admin.clusterStatus());
      if (format === "json") return printObject(s, format);
      if (s.summary) process.stdout.write(`${s.summary}\n\n`);
      printObject(
        {
          hub: `${s.hubVersion}, up ${formatDuration(Date.now() - s.hubStartedAtMs)}${s.draining ? ", DRAINING" : ""}`,
          agents: `${s.agentsTotal} (${s.agentsHealthy} healthy, ${s.agentsDegraded} degraded, ${s.agentsOffline} offline)`,
          nodes: `${s.nodesTotal} (${s.nodesRunning} running, ${s.nodesUnhealthy} unhealthy)`,
          tasks: `${s.tasksQueued} queued, ${s.tasksRunning} running, ${s.tasksTotal} in all`,
          ...(s.hubId
            ? {
                cluster: `${s.hubs.length} live hub${s.hubs.length === 1 ? "" : "s"} (${s.hubs.map((h) => h.id).join(", ")}); this is ${s.hubId}`,
              }
            : {}),
        },
        "table",
      );
      process.stdout.write("\n");
      const cols: Column<PoolStatus>[] = [
        { header: "POOL", value: (p) => p.pool },
        { header: "AGENTS", value: (p) => String(p.agents) },
        { header: "HEALTHY", value: (p) => String(p.healthy) },
        { header: "FREE SLOTS", value: (p) => String(p.freeSlots) },
        { header: "QUEUED", value: (p) => String(p.queued) },
      ];
      printList(s.pools, cols, "table", "no pools yet");
    });

  clientCommand(
    program,
    "hubs",
    "the hubs of the cluster: address, agents, clients, tasks in flight, lease age",
  )
    .option("--all", "also hubs whose lease lapsed (gone, kept for a day)")
    .option("-o, --output <format>", "table or json", "table")
    .action(async (f: { all?: boolean; output?: string }, cmd: Command) => {
      const format = outputFormat(f.output);
      const r = await withClient(cmd, (c) => c.admin.listHubs({ includeGone: f.all === true }));
      if (format === "json") return printObject(r, format);
      if (r.leaseMs === 0) {
        process.stdout.write("this hub runs alone (no cluster.nats): it is the whole control plane\n");
        return;
      }
      const cols: Column<HubInfo>[] = [
        { header: "HUB", value: (h) => `${h.id}${h.answering ? " *" : ""}` },
        { header: "ADDRESS", value: (h) => h.address },
        { header: "STATE", value: (h) => (!h.live ? "gone" : h.draining ? "draining" : "live") },
        { header: "AGENTS", value: (h) => String(h.agents) },
        { header: "CLIENTS", value: (h) => String(h.clients) },
        { header: "TASKS", value: (h) => String(h.tasksInFlight) },
        { header: "LEASE AGE", value: (h) => formatDuration(h.leaseAgeMs) },
        { header: "UP", value: (h) => formatDuration(Date.now() - h.startedAtMs) },
        { header: "VERSION", value: (h) => h.version },
      ];
      printList(r.hubs, cols, "table", "no hubs with a lease");
    });
}
