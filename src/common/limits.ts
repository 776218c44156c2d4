// Bounds both sides of the wire agree on.

/** The most tasks an agent runs at once: its config, and what the hub may ask of it at run time. */
export const MAX_AGENT_CONCURRENCY = 1024;
