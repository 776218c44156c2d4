// The PostgreSQL store's settings: their defaults, and their validation once when the store opens.
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { Logger } from "../../../common/logger.js";
import type { StoreOptions } from "../interfaces.js";

export const DEFAULT_POOL_SIZE = 10;
export const DEFAULT_SCHEMA = "switchboard";
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** While the store cannot write: the longest wait between two retries. */
export const RETRY_MAX_MS = 2_000;
/** Audit entries held at most while the store cannot write; past this they are counted. */
export const MAX_HELD_AUDITS = 20_000;

export interface PostgresStoreOptions extends StoreOptions {
  /** postgres://user@host:port/database; a password in it is never shown. */
  url: string;
  /** The password, if not in the url (it never appears in logs or errors either way). */
  password?: string;
  /** Connections at most. Default 10. */
  poolSize?: number;
  /** The schema the store's tables live in, created if missing. Default "switchboard". */
  schema?: string;
  logger?: Logger;
  /** Writes that make the batch commit at once, before flushIntervalMs. Default 512. */
  maxBatchOps?: number;
  /** How often at most a task's rolling output tail is rewritten. Default 250 ms. */
  tailPersistIntervalMs?: number;
  /** While the store cannot write: the first retry's delay (doubling up to RETRY_MAX_MS). Default 100 ms. */
  retryFirstMs?: number;
  /** How long a connection attempt may take before it counts as failed. Default 5 s. */
  connectTimeoutMs?: number;
}

/** What the store runs on, validated. */
export interface Settings {
  outputCapBytes: number;
  flushIntervalMs: number;
  maxBatchOps: number;
  tailPersistIntervalMs: number;
  retryFirstMs: number;
  poolSize: number;
  schema: string;
  connectTimeoutMs: number;
}

/** The options with their defaults filled in; throws INVALID_ARGUMENT for one out of range. */
export function postgresSettings(opts: PostgresStoreOptions): Settings {
  const schema = opts.schema ?? DEFAULT_SCHEMA;
  // The schema name is written into SQL (search_path, CREATE SCHEMA): a plain identifier only.
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new SwitchboardError(
      Code.INVALID_ARGUMENT,
      `store option schema must be a lower-case SQL identifier (letters, digits, _), not ${JSON.stringify(schema)}`,
    );
  }
  return {
    outputCapBytes: option("outputCapBytes", opts.outputCapBytes, 1024 * 1024, 2),
    flushIntervalMs: option("flushIntervalMs", opts.flushIntervalMs, 10, 0),
    maxBatchOps: option("maxBatchOps", opts.maxBatchOps, 512, 1),
    tailPersistIntervalMs: option("tailPersistIntervalMs", opts.tailPersistIntervalMs, 250, 0),
    retryFirstMs: option("retryFirstMs", opts.retryFirstMs, 100, 1),
    poolSize: option("poolSize", opts.poolSize, DEFAULT_POOL_SIZE, 1),
    connectTimeoutMs: option("connectTimeoutMs", opts.connectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS, 1),
    schema,
  };
}

function option(name: string, value: number | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < min) {
    throw new SwitchboardError(
      Code.INVALID_ARGUMENT,
      `store option ${name} must be an integer >= ${min}, not ${value}`,
    );
  }
  return value;
}
