// How the PostgreSQL datasource reaches its server: pg's client settings from the datasource's config (the
// password resolved from password_env or password_file goes into a URL that lacks one), the endpoint named
// in messages (never the user or the password), and the small bounded queries of checks and catalog look-ups.
import pg from "pg";
import type { DatasourceConfig } from "../datasource.js";

const DEFAULT_PORT = 5432;
/** Catalog look-ups and the cancel request are small; a server that takes longer than this is in trouble. */
const AUX_QUERY_TIMEOUT_MS = 15_000;

/** A check, catalog or cancel query, bounded in time (pg's query_timeout, absent from its type declarations). */
export function auxQuery<R extends pg.QueryResultRow = pg.QueryResultRow>(
  c: pg.ClientBase,
  text: string,
  values: unknown[] = [],
): Promise<pg.QueryResult<R>> {
  const config: pg.QueryConfig<unknown[]> & { query_timeout: number } = {
    text,
    values,
    query_timeout: AUX_QUERY_TIMEOUT_MS,
  };
  return c.query<R>(config);
}

/** Where the datasource connects, for messages: host:port/database, never the user or the password. */
export function endpointOf(config: DatasourceConfig): string {
  if (config.url) {
    try {
      const u = new URL(config.url);
      const host = u.hostname || u.searchParams.get("host") || "localhost";
      const port = u.port || u.searchParams.get("port") || String(DEFAULT_PORT);
      const db = decodeURIComponent(u.pathname.replace(/^\//, "")) || u.searchParams.get("db") || "";
      return `${host}:${port}/${db}`;
    } catch {
      return "the configured url";
    }
  }
  return `${config.host ?? "localhost"}:${config.port ?? DEFAULT_PORT}/${config.database ?? ""}`;
}

export function connectionConfig(config: DatasourceConfig): pg.ClientConfig {
  const base: pg.ClientConfig = {
    application_name: "switchboard-agent",
    connectionTimeoutMillis: config.connectTimeoutMs,
  };
  if (config.url) {
    let connectionString = config.url;
    // A URL without a password takes the one resolved from password_env / password_file.
    if (config.password !== undefined) {
      try {
        const u = new URL(config.url);
        if (u.password === "" && u.hostname !== "") {
          u.password = encodeURIComponent(config.password);
          connectionString = u.toString();
        }
      } catch {
        // pg reports the malformed URL when it connects.
      }
    }
    return { ...base, connectionString };
  }
  return {
    ...base,
    host: config.host,
    port: config.port,
    user: config.user,
    password: config.password,
    database: config.database,
  };
}
