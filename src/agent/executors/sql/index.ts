// SQL tasks: the executor that runs one statement on a datasource named in the agent's config, the registry
// of those datasources, and the types of their configuration. The engines (postgres/, mysql/, sqlite/) load
// on demand through loadOpeners and are not imported from outside this folder.

/** Runs SQL tasks: admits them, streams their result as NDJSON or CSV at the client's pace. */
export { SqlExecutor } from "./sql-executor.js";
/** The agent's datasources: opened from its config, checked periodically, found by name or driver. */
export { Datasources, loadOpeners } from "./datasources.js";
/** A datasource's configuration (`[datasources.NAME]`), and the engines it may name. */
export type { DatasourceConfig, SqlDriver } from "./datasource.js";
