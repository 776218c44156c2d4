// `switchboard agent`: dial the hub, take tasks, drain on SIGTERM/SIGINT and exit 0.
import type { Command } from "commander";
import type { Settings, SettingsTable } from "../../common/settings.js";
import { createLogger } from "../../common/logger.js";
import type { AgentFlags } from "../../agent/index.js";
import { usageError } from "../cli-error.js";
import type { ConnectionFlags } from "../connection.js";
import { logLevelFlag } from "../flags.js";
import { addSettingFlags } from "../setting-flags.js";
import { stopOnSignals } from "../signals.js";

interface AgentCliFlags {
  config?: string;
  logLevel?: string;
  hub?: string[];
}

/** `settings`: the agent's table, when the command line names `agent` (its flags are added only then). */
export function registerAgent(program: Command, settings?: SettingsTable<Settings>): void {
  const cmd = program
    .command("agent")
    .description("run an agent: dial out to the hub and run the tasks it sends")
    .option("-c, --config <file>", "TOML config file ([agent], [storage], [monitoring], [shell], ...)")
    .option(
      "--log-level <level>",
      "trace, debug, info, warn, error (default: $SWITCHBOARD_LOG_LEVEL or info)",
    );
  if (settings) addSettingFlags(cmd, settings);
  cmd
    .addHelpText(
      "after",
      "\nFlags win over the environment, which wins over the file (docs/configuration/agent.md lists every key).",
    )
    .action(async (flags: AgentCliFlags & AgentFlags, cmd: Command) => {
      // Loaded when the command runs: a client command need not carry the hub's or the agent's code.
      const { ConfigError, loadAgentConfig, startAgent } = await import("../../agent/index.js");
      // The connection flags given before the command name (`switchboard --hub X agent`) count too.
      const globals = cmd.parent?.opts<ConnectionFlags>() ?? {};
      const hub = globals.hub ?? globals.master;
      const f: AgentFlags = {
        ...(hub !== undefined ? { hub: [hub] } : {}),
        ...(globals.token !== undefined ? { token: globals.token } : {}),
        ...(globals.tls !== undefined ? { tls: globals.tls } : {}),
        ...(globals.tlsCa !== undefined ? { tlsCa: globals.tlsCa } : {}),
        ...(globals.tlsCert !== undefined ? { tlsCert: globals.tlsCert } : {}),
        ...(globals.tlsKey !== undefined ? { tlsKey: globals.tlsKey } : {}),
        ...(globals.tlsServerName !== undefined ? { tlsServerName: globals.tlsServerName } : {}),
        ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)),
      };
      let config;
      try {
        config = loadAgentConfig({ env: process.env, flags: f });
      } catch (e) {
        if (e instanceof ConfigError)
          throw usageError(e.message, "fix the setting named above (see switchboard agent --help)");
        throw e;
      }
      const logger = createLogger("agent", { level: logLevelFlag(flags.logLevel) });
      for (const w of config.warnings) logger.warn(w);
      const agent = await startAgent(config, logger);
      await stopOnSignals(logger, (o) => agent.shutdown(o));
    });
}
