// The agent's public surface: load its configuration, start it, shut it down. Everything else in
// this folder is internal; the CLI and the demo use only what is exported here.
import type { Logger } from "../common/logger.js";
import { createAgent, type Agent } from "./agent.js";
import type { AgentConfig } from "./config.js";

/** A running agent: its id, whether it has a hub session, and shutdown() to drain it. */
export type { Agent } from "./agent.js";
export { chooseConfigFile, ConfigError, loadAgentConfig } from "./config.js";
export type {
  /** The agent's validated settings, as loadAgentConfig makes them and startAgent takes them. */
  AgentConfig,
  AgentFlags,
  /** Which configuration file the agent reads, and why that one (chooseConfigFile's answer). */
  ConfigFileChoice,
  /** Where loadAgentConfig reads from: a TOML file, an environment, the CLI's flags. */
  LoadAgentConfigInput,
} from "./config.js";

/** Starts the agent: it dials the hub in the background; use whenConnected() to wait for a session. */
export function startAgent(config: AgentConfig, logger?: Logger): Promise<Agent> {
  return createAgent(config, logger);
}
