// The hub's public surface: load its config and start it.
export {
  ConfigError,
  loadHubConfig,
  type HubConfig,
  type LoadHubConfigInput,
} from "./config.js";
export { startHub, type Hub } from "./hub.js";
export { HUB_SETTINGS } from "./settings.js";
