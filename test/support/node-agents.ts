// Agents that run supervised nodes, for the node tests: a config with short backoffs and check intervals,
// ports below the kernel's ephemeral range, and a data dir of their own (or the one given, to restart an
// agent on the same node table).
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startAgent, tempDir, type AgentProc, type HubProc } from "./processes.js";

export interface NodeAgentOptions {
  /** storage.data_path (default: <data dir>/nodes). */
  storageData?: string;
  maxNodes?: number;
  labels?: string;
  /** More TOML, appended (sections of its own, or keys of [storage]). */
  extraToml?: string;
  /** The agent's data dir: the same one restarts an agent on its node table. */
  dataDir?: string;
  token?: string;
  /** Binaries a spawn may name besides the storage node. */
  allowedBinaries?: string[];
  /** storage.startup_timeout_secs (default 10). */
  startupTimeoutSecs?: number;
  /**
   * storage.default_port_range_start (default 21000). Test files that run at once take ranges of
   * their own: a node of one must not find its port taken by a node of the other.
   */
  portRangeStart?: number;
}

export function nodeAgentConfig(dir: string, o: NodeAgentOptions): string {
  const file = join(dir, "agent.toml");
  writeFileSync(
    file,
    [
      "[agent]",
      `max_storage_nodes = ${o.maxNodes ?? 5}`,
      "[storage]",
      `data_path = ${JSON.stringify(o.storageData ?? join(dir, "nodes"))}`,
      // Below the kernel's ephemeral range (32768-60999), where a client's port could land on a node's.
      `default_port_range_start = ${o.portRangeStart ?? 21000}`,
      `allowed_binaries = ${JSON.stringify(o.allowedBinaries ?? ["/bin/false", "/no/such/binary"])}`,
      "restart_backoff_initial_secs = 0.1",
      "restart_backoff_max_secs = 0.4",
      "crash_loop_restarts = 3",
      "crash_loop_window_secs = 30",
      "memory_check_interval_secs = 0.2",
      "stop_grace_secs = 3",
      `startup_timeout_secs = ${o.startupTimeoutSecs ?? 10}`,
      "stop_nodes_on_exit = true",
      o.extraToml ?? "",
    ].join("\n"),
  );
  return file;
}

export async function startNodeAgent(
  hub: HubProc,
  id: string,
  o: NodeAgentOptions = {},
): Promise<AgentProc & { dataDir: string }> {
  const dir = o.dataDir ?? tempDir(`nodes-${id}`);
  mkdirSync(dir, { recursive: true });
  const a = await startAgent(hub, {
    agentId: id,
    ...(o.token ? { token: o.token } : {}),
    args: [
      "--config",
      nodeAgentConfig(dir, o),
      "--data",
      dir,
      ...(o.labels ? ["--labels", o.labels] : []),
      "--heartbeat-interval",
      "1s",
    ],
  });
  return { ...a, dataDir: dir };
}

/**
 * An executable node program that listens on $SWITCHBOARD_NODE_PORT after `delaySecs`, having first
 * written its pid to $SWITCHBOARD_NODE_DATA/pid: a node that starts slowly, or (0) at once.
 */
export function listenerScript(dir: string, delaySecs: number): string {
  const path = join(dir, `listener-${delaySecs}s.sh`);
  const listen = `require('node:net').createServer().listen(Number(process.env.SWITCHBOARD_NODE_PORT), '127.0.0.1')`;
  writeFileSync(
    path,
    [
      "#!/bin/sh",
      'echo $$ > "$SWITCHBOARD_NODE_DATA/pid"',
      ...(delaySecs > 0 ? [`sleep ${delaySecs}`] : []),
      `exec ${JSON.stringify(process.execPath)} -e ${JSON.stringify(listen)}`,
      "",
    ].join("\n"),
  );
  chmodSync(path, 0o755);
  return path;
}

/**
 * After a node test: agents stop their nodes on SIGTERM (stop_nodes_on_exit); the nodes of agents
 * killed with -9 are killed here, by the pids the test noted.
 */
export async function stopNodeAgents(agents: AgentProc[], nodePids: Set<number>): Promise<void> {
  await Promise.all(
    agents.splice(0).map(async (a) => {
      a.kill("SIGTERM");
      await a.exited;
    }),
  );
  for (const pid of nodePids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone
    }
  }
  nodePids.clear();
}
