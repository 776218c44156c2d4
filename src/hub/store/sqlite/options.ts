// The SQLite store's settings: those of the batched write path (batch-settings.ts), and the file's
// own, with their defaults, validated once when the store opens.
import { batchSettings, option, type BatchOptions, type BatchSettings } from "../batch-settings.js";

export const DEFAULT_BUSY_TIMEOUT_MS = 5_000;

export interface SqliteStoreOptions extends BatchOptions {
  /** How long a write waits for another process's lock on the file. Default 5 s. */
  busyTimeoutMs?: number;
  /** Checkpoint the WAL from a worker thread instead of inside commits. Default: on for files. */
  checkpointInWorker?: boolean;
}

/** What the write path runs on, validated. */
export interface Settings extends BatchSettings {
  busyTimeoutMs: number;
}

/** The options with their defaults filled in; throws INVALID_ARGUMENT for one out of range. */
export function sqliteSettings(opts: SqliteStoreOptions): Settings {
  return {
    ...batchSettings(opts),
    busyTimeoutMs: option("busyTimeoutMs", opts.busyTimeoutMs, DEFAULT_BUSY_TIMEOUT_MS, 0),
  };
}
