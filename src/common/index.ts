// What hub, agent, CLI and SDK share. Keep this small: only what both sides truly need.
export * from "./auth.js";
export * from "./duration.js";
export * from "./errors.js";
export * from "./grpc-options.js";
export * from "./ids.js";
export * from "./limits.js";
export * from "./logger.js";
export * from "./task-state.js";
export * from "./version.js";
