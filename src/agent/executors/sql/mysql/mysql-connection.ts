// Where a MySQL/MariaDB datasource connects and how: the target from its url (mysql:// or mariadb://) and
// separate fields, mysql2's connection options (UTF-8, UTC, numbers and dates kept exact), which of the two
// servers it is, and the small statements of checks and catalog look-ups, whose whole result fits in memory.
import type { ConnectionOptions, PoolConnection } from "mysql2";
import { Code } from "../../../../common/errors.js";
import { SqlError, type DatasourceConfig } from "../datasource.js";

const DEFAULT_PORT = 3306;
/** SHOW GRANTS and its companions are small; a server that takes longer than this is in trouble. */
const SMALL_QUERY_TIMEOUT_MS = 15_000;

/** MariaDB and MySQL differ in their variables' names and in how SHOW GRANTS shows roles. */
export type Flavor = "mariadb" | "mysql";

/** The flavor of a server, from its SELECT VERSION(). */
export function flavorOfVersion(version: string): Flavor {
  return /mariadb/i.test(version) ? "mariadb" : "mysql";
}

export interface Target {
  host: string;
  port: number;
  user?: string;
  password?: string;
  database?: string;
}

/** Where to connect, from the url (mysql:// or mariadb://) with the separate fields filling what it leaves out. */
export function targetOf(config: DatasourceConfig): Target {
  if (config.url === undefined || config.url === "") {
    return {
      host: config.host ?? "localhost",
      port: config.port ?? DEFAULT_PORT,
      user: config.user,
      password: config.password,
      database: config.database,
    };
  }
  let url: URL;
  try {
    url = new URL(config.url);
  } catch {
    // The url may hold a password: name only its shape.
    throw new SqlError(
      Code.INVALID_ARGUMENT,
      `datasource "${config.name}": url is not a URL; write it as mysql://USER@HOST:PORT/DATABASE`,
    );
  }
  if (url.protocol !== "mysql:" && url.protocol !== "mariadb:") {
    throw new SqlError(
      Code.INVALID_ARGUMENT,
      `datasource "${config.name}": a mysql url starts with mysql:// or mariadb://, not ${url.protocol}//`,
    );
  }
  const host = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const database = decodeURIComponent(url.pathname.replace(/^\//, ""));
  return {
    host: host === "" ? (config.host ?? "localhost") : decodeURIComponent(host),
    port: url.port !== "" ? Number(url.port) : (config.port ?? DEFAULT_PORT),
    user: url.username !== "" ? decodeURIComponent(url.username) : config.user,
    password: url.password !== "" ? decodeURIComponent(url.password) : config.password,
    database: database !== "" ? database : config.database,
  };
}

/** mysql2's options for a connection to the target. */
export function driverOptions(t: Target, connectTimeoutMs: number): ConnectionOptions {
  return {
    host: t.host,
    port: t.port,
    user: t.user,
    password: t.password,
    database: t.database,
    connectTimeout: connectTimeoutMs,
    charset: "utf8mb4",
    timezone: "Z",
    supportBigNumbers: true,
    bigNumberStrings: false,
    decimalNumbers: false,
    dateStrings: true,
    multipleStatements: false,
  };
}

/** A small statement with its whole result at once (setup, catalog lookups). */
export function simpleQuery<R>(conn: PoolConnection, sql: string, values?: unknown[]): Promise<R> {
  return new Promise((resolve, reject) => {
    conn.query({ sql, values }, (err, result) => (err ? reject(err) : resolve(result as R)));
  });
}

/** The first column of a small result (SHOW GRANTS lines, a function's value), as text; [] for none. */
export function firstColumn(conn: PoolConnection, sql: string): Promise<(string | null)[]> {
  return new Promise((resolve, reject) => {
    conn.query({ sql, rowsAsArray: true, timeout: SMALL_QUERY_TIMEOUT_MS }, (err, result) => {
      if (err) return reject(err);
      const rows = Array.isArray(result) ? (result as unknown[][]) : [];
      const text = (v: unknown): string | null =>
        typeof v === "string"
          ? v
          : Buffer.isBuffer(v)
            ? v.toString("utf8")
            : v == null
              ? null
              : JSON.stringify(v);
      resolve(rows.map((r) => text(r[0])));
    });
  });
}
