// The PostgreSQL store's settings: those of the batched write path (batch-settings.ts), and the
// database's own, with their defaults, validated once when the store opens.
import { Code, SwitchboardError } from "../../../common/errors.js";
import { batchSettings, option, type BatchOptions, type BatchSettings } from "../batch-settings.js";

export const DEFAULT_POOL_SIZE = 10;
export const DEFAULT_SCHEMA = "switchboard";
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
export interface PostgresStoreOptions extends BatchOptions {
  /** postgres://user@host:port/database; a password in it is never shown. */
  url: string;
  /** The password, if not in the url (it never appears in logs or errors either way). */
  password?: string;
  /** Connections at most. Default 10. */
  poolSize?: number;
  /** The schema the store's tables live in, created if missing. Default "switchboard". */
  schema?: string;
  /** How long a connection attempt may take before it counts as failed. Default 5 s. */
  connectTimeoutMs?: number;
  /**
   * The hub of a cluster this store writes for (its hub_id): the tasks it inserts are that hub's,
   * and the unfinished tasks it lists (to recover them) are that hub's only.
   */
  owner?: string;
}

/** What the store runs on, validated. */
export interface Settings extends BatchSettings {
  poolSize: number;
  schema: string;
  connectTimeoutMs: number;
  owner: string | undefined;
}

/** The options with their defaults filled in; throws INVALID_ARGUMENT for one out of range. */
export function postgresSettings(opts: PostgresStoreOptions): Settings {
  const schema = opts.schema ?? DEFAULT_SCHEMA;
  // The schema name is written into SQL (search_path, CREATE SCHEMA): a plain identifier only.
  if (opts.owner !== undefined && !/^[\w.:@-]{1,128}$/.test(opts.owner)) {
    throw new SwitchboardError(
      Code.INVALID_ARGUMENT,
      `store option owner is not a hub id: ${JSON.stringify(opts.owner)}`,
    );
  }
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new SwitchboardError(
      Code.INVALID_ARGUMENT,
      `store option schema must be a lower-case SQL identifier (letters, digits, _), not ${JSON.stringify(schema)}`,
    );
  }
  return {
    ...batchSettings(opts),
    poolSize: option("poolSize", opts.poolSize, DEFAULT_POOL_SIZE, 1),
    connectTimeoutMs: option("connectTimeoutMs", opts.connectTimeoutMs, DEFAULT_CONNECT_TIMEOUT_MS, 1),
    schema,
    owner: opts.owner,
  };
}
