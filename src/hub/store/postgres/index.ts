// The PostgreSQL store: a database several hubs may share ([store] url).
export { openPostgresStore, PostgresStore } from "./store.js";
export { DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, type PostgresStoreOptions } from "./options.js";
