// `switchboard agent [config]`: dial the hub, take tasks, drain on SIGTERM/SIGINT and exit 0.
import { resolve } from "node:path";
import type { Command } from "commander";
import { createLogger } from "../../common/logger.js";
import type { AgentFlags } from "../../agent/index.js";
import { usageError } from "../cli-error.js";
import type { ConnectionFlags } from "../connection.js";
import { collect, logLevelFlag } from "../flags.js";
import { stopOnSignals } from "../signals.js";

interface AgentCliFlags {
  config?: string;
  hub?: string[];
  token?: string;
  tokenFile?: string;
  agentId?: string;
  pool?: string;
  labels?: string;
  poolSize?: string;
  threshold?: string;
  shell?: boolean;
  data?: string;
  heartbeatInterval?: string;
  agentPort?: string;
  transport?: string;
  hubConcurrency?: string;
  agentHost?: string;
  storageData?: string;
  logLevel?: string;
  tls?: boolean;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsServerName?: string;
}

export function registerAgent(program: Command): void {
  program
    .command("agent")
    .description("run an agent: dial out to the hub and run the tasks it sends")
    .argument(
      "[config]",
      "TOML config file, as --config; with neither, ./agent-config.toml is read if it exists",
    )
    .option("-c, --config <file>", "TOML config file ([agent], [storage], [monitoring], [shell])")
    .option(
      "--hub <host:port>",
      "hub address; repeat (or separate with commas) for fallbacks tried in turn",
      collect,
    )
    .option("--token <token>", "agent token (switchboard token create --role agent --pool P)")
    .option("--token-file <file>", "read the token from this file")
    .option("--agent-id <id>", "this agent's id (default: the hostname)")
    .option("--pool <name>", "pool to join (default: default)")
    .option("--labels <k=v,...>", "labels for targeting, e.g. region=eu,gpu=true")
    .option("--pool-size <n>", "executors, i.e. tasks run at once (default 4)")
    .option("--threshold <percent>", "outbox fill above which no new work is taken (default 80)")
    .option("--shell", "enable shell tasks (off unless set here, in [shell] or SWITCHBOARD_SHELL_ENABLED)")
    .option("--data <dir>", "the agent's data dir (default ./agent-data)")
    .option("--heartbeat-interval <duration>", "heartbeat interval until the hub names one (default 5s)")
    .option(
      "--transport <grpc|http>",
      "grpc (default): one stream to the hub's gRPC port; http: long-polling on its HTTP port (7080), for networks that let only HTTP/1.1 out",
    )
    .option("--hub-concurrency <n>", "http transport: requests in flight to the hub at once (default 2)")
    .option(
      "--agent-port <port>",
      "local API port: GridAgent gRPC, /healthz, /metrics (default 8001; 0: any free)",
    )
    .option("--agent-host <host>", "address the local API listens on (default 127.0.0.1)")
    .option(
      "--storage-data <dir>",
      "storage.data_path: where supervised nodes keep their data (default <data>/nodes)",
    )
    .option("--tls", "dial the hub with TLS, trusting the system's CAs (implied by --tls-ca or --tls-cert)")
    .option("--tls-ca <file>", "CA that signed the hub's certificate (PEM)")
    .option("--tls-cert <file>", "client certificate for a hub that requires one (mutual TLS)")
    .option("--tls-key <file>", "the client certificate's private key")
    .option(
      "--tls-server-name <name>",
      "name to check the hub's certificate against, if not the dialled host",
    )
    .option(
      "--log-level <level>",
      "trace, debug, info, warn, error (default: $SWITCHBOARD_LOG_LEVEL or info)",
    )
    .addHelpText(
      "after",
      "\nEnvironment: SWITCHBOARD_HUB, SWITCHBOARD_TOKEN, SWITCHBOARD_AGENT_ID, SWITCHBOARD_POOL, SWITCHBOARD_LABELS,\n" +
        "SWITCHBOARD_POOL_SIZE, SWITCHBOARD_THRESHOLD, SWITCHBOARD_SHELL_ENABLED, SWITCHBOARD_TLS_CA,\n" +
        "SWITCHBOARD_TLS_CERT, SWITCHBOARD_TLS_KEY, SWITCHBOARD_AGENT_PORT, SWITCHBOARD_TRANSPORT. Flags win over the environment,\n" +
        "which wins over the file.",
    )
    .action(async (configArgument: string | undefined, flags: AgentCliFlags, cmd: Command) => {
      // Loaded when the command runs: a client command need not carry the hub's or the agent's code.
      const { chooseConfigFile, ConfigError, loadAgentConfig, startAgent } =
        await import("../../agent/index.js");
      const globals = cmd.parent?.opts<ConnectionFlags>() ?? {};
      const f: AgentFlags = {
        hub: flags.hub ?? (globals.hub ? [globals.hub] : globals.master ? [globals.master] : undefined),
        token: flags.token ?? globals.token,
        tokenFile: flags.tokenFile,
        agentId: flags.agentId,
        pool: flags.pool,
        labels: flags.labels,
        poolSize: flags.poolSize,
        threshold: flags.threshold,
        shell: flags.shell,
        dataDir: flags.data,
        heartbeatInterval: flags.heartbeatInterval,
        agentPort: flags.agentPort,
        transport: flags.transport,
        hubConcurrency: flags.hubConcurrency,
        agentHost: flags.agentHost,
        storageDataPath: flags.storageData,
        tls: flags.tls ?? globals.tls,
        tlsCa: flags.tlsCa ?? globals.tlsCa,
        tlsCert: flags.tlsCert ?? globals.tlsCert,
        tlsKey: flags.tlsKey ?? globals.tlsKey,
        tlsServerName: flags.tlsServerName ?? globals.tlsServerName,
      };
      let config;
      let chosen;
      try {
        chosen = chooseConfigFile({ flag: flags.config, argument: configArgument });
        config = loadAgentConfig({ env: process.env, flags: { ...f, config: chosen?.file } });
      } catch (e) {
        if (e instanceof ConfigError)
          throw usageError(e.message, "fix the setting named above (see switchboard agent --help)");
        throw e;
      }
      const logger = createLogger("agent", { level: logLevelFlag(flags.logLevel) });
      if (chosen) logger.info({ configFile: resolve(chosen.file), from: chosen.from }, "config file read");
      for (const w of config.warnings) logger.warn(w);
      const agent = await startAgent(config, logger);
      await stopOnSignals(logger, (o) => agent.shutdown(o));
    });
}
