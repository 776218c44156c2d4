// `switchboard agent [config]`: dial the hub, take tasks, drain on SIGTERM/SIGINT and exit 0.
import { resolve } from "node:path";
import type { Command } from "commander";
import type { Settings, SettingsTable } from "../../common/settings.js";
import { createLogger } from "../../common/logger.js";
import type { AgentFlags } from "../../agent/index.js";
import { usageError } from "../cli-error.js";
import type { ConnectionFlags } from "../connection.js";
import { logLevelFlag } from "../flags.js";
import { addProgramFlags } from "../setting-flags.js";
import { serveUntilSignalled } from "../signals.js";

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
    .argument(
      "[config]",
      "TOML config file, as --config; with neither, ./agent-config.toml is read if it exists",
    )
    .option("-c, --config <file>", "TOML config file ([agent], [storage], [monitoring], [shell], ...)");
  addProgramFlags(cmd, settings, "docs/configuration/agent.md").action(
    async (configArgument: string | undefined, flags: AgentCliFlags & AgentFlags, cmd: Command) => {
      // Loaded when the command runs: a client command need not carry the hub's or the agent's code.
      const { chooseConfigFile, ConfigError, loadAgentConfig, startAgent } =
        await import("../../agent/index.js");
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
      await serveUntilSignalled(logger, startAgent(config, logger), (agent, o) => agent.shutdown(o));
    },
  );
}
