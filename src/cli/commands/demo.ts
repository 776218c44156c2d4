// `switchboard demo`: a hub on the embedded SQLite store and two shell-enabled agents in pool
// `demo` with a sample SQLite datasource, all in this process, then the commands to try. Ctrl-C stops
// everything gracefully.
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import type { Agent } from "../../agent/index.js";
import { SwitchboardClient, SwitchboardError, type NodeInfo } from "../../client/index.js";
import { Code } from "../../common/errors.js";
import { createLogger } from "../../common/logger.js";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { usageError } from "../cli-error.js";
import { stopOnSignals } from "../signals.js";

const AGENTS = ["demo-1", "demo-2"];
const DEMO_NODE = "demo-kv";

export function registerDemo(program: Command): void {
  program
    .command("demo")
    .description(
      "start a hub and two local shell agents (with a SQLite datasource and a storage node) in pool demo, and print what to try",
    )
    .option("--listen <host:port>", "hub address (default 127.0.0.1:7000)")
    .option("--data <dir>", "data dir (default $SWITCHBOARD_DATA or ./data)")
    .option(
      "--cluster",
      "instead: three hubs (one process each) on one PostgreSQL database and NATS, and two agents spread over them",
    )
    .option(
      "--store <url>",
      "with --cluster: the PostgreSQL database, created if missing",
      "postgres://postgres@127.0.0.1:5432/switchboard_demo",
    )
    .option("--nats <url>", "with --cluster: the NATS server", "nats://127.0.0.1:4222")
    .action(
      async (flags: { listen?: string; data?: string; cluster?: boolean; store: string; nats: string }) => {
        const dataDir = resolve(flags.data ?? (process.env.SWITCHBOARD_DATA || "./data"));
        if (flags.cluster) {
          if (flags.listen)
            throw usageError("--listen is for the single hub: the cluster demo's hubs pick free ports");
          const { runClusterDemo } = await import("./demo-cluster.js");
          return runClusterDemo({ data: dataDir, store: flags.store, nats: flags.nats });
        }
        const { loadAgentConfig, startAgent } = await import("../../agent/index.js");
        const { ConfigError, loadHubConfig, startHub } = await import("../../hub/index.js");
        let config;
        try {
          config = loadHubConfig({
            env: {},
            flags: { listen: flags.listen ?? "127.0.0.1:7000", data: dataDir, drainGrace: "10s" },
          });
        } catch (e) {
          if (e instanceof ConfigError) throw usageError(e.message);
          throw e;
        }
        const logger = createLogger("demo", {
          level: process.env.SWITCHBOARD_LOG_LEVEL ? undefined : "warn",
        });
        const hub = await startHub(config, logger.child({ part: "hub" }));
        const agents: Agent[] = [];
        let node: NodeInfo | undefined;
        const stop = async (o: { graceMs?: number }): Promise<void> => {
          await Promise.all(agents.map((a) => a.shutdown(o)));
          await hub.shutdown(o);
        };
        try {
          const admin = new SwitchboardClient({
            hub: hub.address,
            token: readFileSync(hub.adminTokenFile, "utf8").trim(),
          });
          let token: string;
          try {
            // A data dir the demo ran in before: its agents' ids belong to the earlier run's token. Revoke
            // that token first; a new token of the pool then claims them (an agent id never changes token
            // while its token is live).
            for (const t of await admin.admin.listTokens()) {
              if (t.role === "agent" && t.name.startsWith("demo-agents-"))
                await admin.admin.revokeToken(t.id);
            }
            const created = await admin.admin.createToken({
              name: `demo-agents-${Date.now()}`,
              role: "agent",
              pools: ["demo"],
            });
            token = created.token;
          } finally {
            admin.close();
          }
          const datasourceConfig = await writeDemoDatasource(dataDir);
          for (const agentId of AGENTS) {
            const cfg = loadAgentConfig({
              env: {},
              file: datasourceConfig,
              flags: {
                hub: [hub.address],
                token,
                agentId,
                pool: "demo",
                shell: true,
                poolSize: "4",
                data: agentDataDir(dataDir, agentId),
                agentPort: "0",
              },
            });
            const agent = await startAgent(cfg, logger.child({ part: "agent", agentId }));
            agents.push(agent);
          }
          await Promise.all(agents.map((a) => a.whenConnected(15_000)));
          node = await demoNode(hub.address, readFileSync(hub.adminTokenFile, "utf8").trim());
        } catch (e) {
          await stop({ graceMs: 0 });
          throw e;
        }
        process.stdout.write(tryNext(hub.address, dataDir, node));
        await stopOnSignals(logger, stop);
        process.stdout.write("demo stopped\n");
      },
    );
}

function agentDataDir(dataDir: string, agentId: string): string {
  return join(dataDir, "agents", agentId);
}

/** A small SQLite database for `switchboard query` to try, and the agents' config naming it. */
async function writeDemoDatasource(dataDir: string): Promise<string> {
  mkdirSync(dataDir, { recursive: true });
  const file = join(dataDir, "demo-cities.db");
  if (!existsSync(file)) {
    const { default: Database } = await import("better-sqlite3");
    const db = new Database(file);
    try {
      db.exec(`CREATE TABLE cities (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL,
          population INTEGER, founded DATE);
        CREATE INDEX cities_country ON cities (country);
        INSERT INTO cities VALUES
          (1, 'Tokyo', 'JP', 13960000, NULL), (2, 'Zürich', 'CH', 421878, '0015-01-01'),
          (3, 'São Paulo', 'BR', 11450000, '1554-01-25'), (4, 'Reykjavík', 'IS', 139875, '1786-08-18'),
          (5, 'Lagos', 'NG', 15388000, NULL);`);
    } finally {
      db.close();
    }
  }
  const config = join(dataDir, "demo-agent.toml");
  // [files] roots: the agents' node data dirs (storage.data_path, by default <agent data dir>/nodes), so
  // that `migrate --copy-data` moves a node's data between them as it would between machines.
  const roots = AGENTS.map((id) => join(agentDataDir(dataDir, id), "nodes"));
  writeFileSync(
    config,
    `[storage]\nstop_nodes_on_exit = true\n\n[shell]\npty = true\n\n[files]\nroots = ${JSON.stringify(roots)}\n\n[datasources.cities]\ndriver = "sqlite"\npath = ${JSON.stringify(file)}\n`,
  );
  return config;
}

/** One storage node on demo-1 (the one of an earlier run, if the hub still has it). */
async function demoNode(hub: string, token: string): Promise<NodeInfo> {
  const c = new SwitchboardClient({ hub, token });
  try {
    try {
      return await c.nodes.spawn({
        nodeId: DEMO_NODE,
        agentId: AGENTS[0]!,
        storagePath: "demo-kv",
        memoryLimitMb: 256,
      });
    } catch (e) {
      if (!(e instanceof SwitchboardError) || e.code !== Code.ALREADY_EXISTS) throw e;
      // The hub restarts the node of an earlier run by itself: wait until it runs.
      for (let i = 0; ; i++) {
        const n = await c.nodes.status(DEMO_NODE);
        if (n.record?.status === "running" || i >= 100) return n;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  } finally {
    c.close();
  }
}

function tryNext(address: string, dataDir: string, node: NodeInfo): string {
  const cli = fileURLToPath(new URL("../main.js", import.meta.url));
  return `
Switchboard demo is running
  hub     ${address} (store: ${join(dataDir, "switchboard.db")})
  agents  ${AGENTS.join(", ")} in pool demo, shell and terminals enabled, SQLite datasource "cities"
  node    ${node.nodeId}: a storage node on ${node.agentId}, http://127.0.0.1:${node.record?.port ?? 0}

Try, in another terminal:
  alias switchboard='${process.execPath} ${cli}'    # or: npm link
  export SWITCHBOARD_DATA=${dataDir}    # the CLI finds the hub and admin token there

  switchboard agents
  switchboard exec --pool demo -- uname -a
  switchboard exec --pool demo --shell 'for i in 1 2 3; do echo tick $i; sleep 1; done'
  switchboard ping --pool demo --count 5
  switchboard exec --pool demo --detach --shell 'sleep 60'   # prints a task id
  switchboard shell --agent ${AGENTS[0]}    # a terminal there; exit ends it
  switchboard tasks
  switchboard logs --follow <task id>
  switchboard cancel <task id>
  switchboard status
  switchboard query --pool demo --db cities "SELECT * FROM cities ORDER BY population DESC"
  switchboard query --pool demo --db cities --format json --table cities "SELECT name FROM cities WHERE country = ?" CH
  switchboard nodes
  switchboard node-status --node ${node.nodeId}
  curl -X PUT --data hello http://127.0.0.1:${node.record?.port ?? 0}/kv/greeting
  switchboard spawn --pool demo --memory 256       # the hub picks the agent with the most free slots
  switchboard logs --node ${node.nodeId} --follow

Ctrl-C stops the demo (running tasks get 10 s to finish; the agents stop their nodes).
`;
}
