// `switchboard hub`: serve agents and clients until SIGTERM, then drain and exit 0.
import type { Command } from "commander";
import type { SettingsTable, Settings } from "../../common/settings.js";
import { createLogger } from "../../common/logger.js";
import { TlsFileError } from "../../common/tls.js";
import { usageError } from "../cli-error.js";
import { logLevelFlag } from "../flags.js";
import { addProgramFlags } from "../setting-flags.js";
import { serveUntilSignalled } from "../signals.js";

interface HubFlags {
  config?: string;
  logLevel?: string;
}

/** `settings`: the hub's table, when the command line names `hub` (its flags are added only then). */
export function registerHub(program: Command, settings?: SettingsTable<Settings>): void {
  const cmd = program
    .command("hub")
    .description("run the hub: agents dial in, clients send tasks (stops gracefully on SIGTERM)")
    .option("-c, --config <file>", "TOML config file ([hub], [monitoring], [store], [tls], [nodes])");
  addProgramFlags(
    cmd,
    settings,
    "docs/configuration/hub.md",
    "\nWithout TLS the hub listens only on loopback addresses unless --insecure is given.\n" +
      "On first start the hub writes an admin token to <data>/admin.token (mode 0600).",
  ).action(async (flags: HubFlags & Record<string, unknown>) => {
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
    const starting = startHub(config, logger).catch((e: unknown) => {
      if (e instanceof TlsFileError) throw usageError(e.message, "check the TLS file settings");
      throw e;
    });
    await serveUntilSignalled(logger, starting, (hub, o) => hub.shutdown(o));
  });
}
