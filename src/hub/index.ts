// The hub's public surface: load its config and start it.
export {
  ConfigError,
  /** Reads the hub's settings (file, then environment, then flags), fills defaults and validates them. */
  loadHubConfig,
  /** The hub's validated settings, as loadHubConfig makes them and startHub takes them. */
  type HubConfig,
  /** Where loadHubConfig reads from: a TOML file, an environment, the CLI's flags. */
  type LoadHubConfigInput,
} from "./config.js";
export {
  /** Opens the store, then serves the client, admin and agent APIs; resolves once it listens. */
  startHub,
  /** A running hub: its addresses, its store, and shutdown() to drain and stop it. */
  type Hub,
} from "./hub.js";
/** Every hub setting, declared once: key, environment variable, flag, type, default and help. */
export { HUB_SETTINGS } from "./settings.js";
