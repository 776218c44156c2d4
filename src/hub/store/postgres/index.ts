// The PostgreSQL store: a database several hubs may share. Not wired into the hub yet.
export { openPostgresStore, PostgresStore } from "./store.js";
export type { AsyncStore } from "./async-store.js";
export { DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, type PostgresStoreOptions } from "./options.js";
