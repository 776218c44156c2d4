// The hub's store: the interfaces every store implements, and the embedded SQLite one.
export * from "./interfaces.js";
export { writeFailureSentence, type StoreWriteFailure } from "./write-failure.js";
export { openSqliteStore, SqliteStore } from "./sqlite/store.js";
export {
  DEFAULT_FLUSH_INTERVAL_MS,
  DEFAULT_MAX_BATCH_OPS,
  DEFAULT_OUTPUT_CAP_BYTES,
  DEFAULT_TAIL_PERSIST_INTERVAL_MS,
} from "./batch-settings.js";
export { DEFAULT_BUSY_TIMEOUT_MS, type SqliteStoreOptions } from "./sqlite/options.js";
