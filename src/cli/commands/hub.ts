// `switchboard hub`: serve agents and clients until SIGTERM, then drain and exit 0.
import type { Command } from "commander";
import { createLogger } from "../../common/logger.js";
import { TlsFileError } from "../../common/tls.js";
import { usageError } from "../cli-error.js";
import { logLevelFlag } from "../flags.js";
import { stopOnSignals } from "../signals.js";

interface HubFlags {
  config?: string;
  listen?: string;
  httpListen?: string;
  rescheduleAfter?: string;
  data?: string;
  queueLimit?: string;
  drainGrace?: string;
  resumeGrace?: string;
  heartbeatInterval?: string;
  offlineAfter?: string;
  maxMessageBytes?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsClientCa?: string;
  insecure?: boolean;
  seedTokenless?: boolean;
  logLevel?: string;
}

export function registerHub(program: Command): void {
  program
    .command("hub")
    .description("run the hub: agents dial in, clients send tasks (stops gracefully on SIGTERM)")
    .option("-c, --config <file>", "TOML config file ([hub], [monitoring], [store], [tls], [nodes])")
    .option(
      "--listen <host:port>",
      "gRPC address to listen on (default 0.0.0.0:7000; port 0 picks a free one)",
    )
    .option(
      "--http-listen <host:port>",
      'agent HTTP long-poll API (default: the --listen host, port 7080; "off": none)',
    )
    .option("--data <dir>", "data dir: the SQLite store, admin.token, hub.json (default ./data)")
    .option("--queue-limit <n>", "tasks queued per target before RESOURCE_EXHAUSTED (default 1000)")
    .option("--drain-grace <duration>", "on SIGTERM, how long running tasks may take to finish (default 30s)")
    .option(
      "--resume-grace <duration>",
      "how long an agent whose link broke keeps its running tasks, to resume them (default 30s; 0: none)",
    )
    .option("--heartbeat-interval <duration>", "heartbeat interval asked of agents (default 5s)")
    .option("--offline-after <duration>", "an agent silent this long is offline (default 30s)")
    .option(
      "--reschedule-after <duration>",
      "nodes spawned with --reschedule move off an agent offline this long (default 60s)",
    )
    .option("--max-message-bytes <n>", "largest gRPC message accepted (default 16777216)")
    .option("--tls-cert <file>", "serve TLS with this certificate (PEM, with its chain)")
    .option("--tls-key <file>", "the certificate's private key (PEM)")
    .option("--tls-client-ca <file>", "require client certificates signed by this CA (mutual TLS)")
    .option("--insecure", "serve plaintext on an address other machines can reach")
    .option(
      "--seed-tokenless",
      "accept seed-000 calls (/ClientService/SendCommand, /AgntService/Connect) without a token; loopback or mutual TLS only",
    )
    .option(
      "--log-level <level>",
      "trace, debug, info, warn, error (default: $SWITCHBOARD_LOG_LEVEL or info)",
    )
    .addHelpText(
      "after",
      "\nEnvironment: SWITCHBOARD_LISTEN, SWITCHBOARD_DATA, SWITCHBOARD_QUEUE_LIMIT, SWITCHBOARD_TLS_CERT,\n" +
        "SWITCHBOARD_TLS_KEY, SWITCHBOARD_TLS_CLIENT_CA, SWITCHBOARD_LOG_LEVEL.\n" +
        "Without TLS the hub listens only on loopback addresses unless --insecure is given.\n" +
        "On first start the hub writes an admin token to <data>/admin.token (mode 0600).",
    )
    .action(async (flags: HubFlags) => {
      // Loaded when the command runs: a client command need not carry the hub's or the agent's code.
      const { ConfigError, loadHubConfig, startHub } = await import("../../hub/index.js");
      let config;
      try {
        config = loadHubConfig({ env: process.env, flags: { ...flags } });
      } catch (e) {
        if (e instanceof ConfigError)
          throw usageError(e.message, "fix the setting named above (see switchboard hub --help)");
        throw e;
      }
      const logger = createLogger("hub", { level: logLevelFlag(flags.logLevel) });
      let hub;
      try {
        hub = await startHub(config, logger);
      } catch (e) {
        if (e instanceof TlsFileError) throw usageError(e.message, "check the TLS file settings");
        throw e;
      }
      await stopOnSignals(logger, (o) => hub.shutdown(o));
    });
}
