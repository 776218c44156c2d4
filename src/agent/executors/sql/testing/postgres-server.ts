// Throwaway PostgreSQL databases for tests: each call creates a uniquely named database on the local
// server (trust auth, user postgres) and hands back its URL and a drop() that ends its sessions and
// removes it; and least-privilege login roles that may only read such a database, which is what a
// read_only datasource connects as (the agent refuses a superuser). A missing server is an error naming
// the server, so tests fail rather than skip.
import { randomBytes } from "node:crypto";
import pg from "pg";

const SERVER = "postgres://postgres@127.0.0.1:5432";
const ADMIN_URL = `${SERVER}/postgres`;
const CONNECT_TIMEOUT_MS = 10_000;

export interface PostgresTestDatabase {
  /** postgres://postgres@127.0.0.1:5432/<name> */
  url: string;
  name: string;
  /** Terminates the database's sessions and drops it; safe to call twice. */
  drop(): Promise<void>;
}

async function admin<T>(fn: (client: pg.Client) => Promise<T>, url = ADMIN_URL): Promise<T> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  // A connection lost while the client is idle is reported as an event; without a listener it would
  // crash the test process instead of failing the query that notices it.
  client.on("error", () => undefined);
  try {
    await client.connect();
  } catch (e) {
    throw new Error(
      `cannot connect to the test PostgreSQL server at ${url} (start it, with trust auth for user postgres): ${
        e instanceof Error ? e.message : String(e)
      }`,
    );
  }
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

export async function createPostgresDatabase(): Promise<PostgresTestDatabase> {
  const name = `sbtest_${randomBytes(6).toString("hex")}`;
  await admin((c) => c.query(`CREATE DATABASE ${name}`));
  let dropped = false;
  return {
    url: `${SERVER}/${name}`,
    name,
    async drop(): Promise<void> {
      if (dropped) return;
      dropped = true;
      await admin(async (c) => {
        await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", [name]);
        // WITH (FORCE) also ends sessions that connected after the terminate above (PostgreSQL 13+).
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      });
    },
  };
}

export interface PostgresTestRole {
  /** The role's name (sbro_<random>): other people's tests run beside these on the same server. */
  name: string;
  /** postgres://<name>@127.0.0.1:5432/<database>: what a read_only datasource's url says. */
  url: string;
  /** Ends the role's sessions, drops what it was granted in the database and the role; safe to call twice. */
  drop(): Promise<void>;
}

/**
 * A login role that may only read db, granted what docs/security.md (Databases) grants: CONNECT
 * on the database, USAGE on schema public, SELECT on its tables, and SELECT on the tables postgres creates
 * there later (tests create theirs after the role). memberOf adds predefined roles (pg_read_server_files...)
 * for tests of the agent's refusal.
 */
export async function createReadOnlyRole(
  db: PostgresTestDatabase,
  opts: { memberOf?: string[] } = {},
): Promise<PostgresTestRole> {
  const name = `sbro_${randomBytes(6).toString("hex")}`;
  await admin((c) => c.query(`CREATE ROLE ${name} LOGIN`));
  await admin(async (c) => {
    await c.query(`GRANT CONNECT ON DATABASE ${db.name} TO ${name}`);
    await c.query(`GRANT USAGE ON SCHEMA public TO ${name}`);
    await c.query(`GRANT SELECT ON ALL TABLES IN SCHEMA public TO ${name}`);
    await c.query(
      `ALTER DEFAULT PRIVILEGES FOR ROLE postgres IN SCHEMA public GRANT SELECT ON TABLES TO ${name}`,
    );
    for (const role of opts.memberOf ?? []) await c.query(`GRANT ${role} TO ${name}`);
  }, `${SERVER}/${db.name}`);
  const url = new URL(db.url);
  url.username = name;
  let dropped = false;
  return {
    name,
    url: url.toString(),
    async drop(): Promise<void> {
      if (dropped) return;
      dropped = true;
      // The grants and default privileges live in the database (gone with it if it was dropped first).
      await admin((c) => c.query(`DROP OWNED BY ${name}`), `${SERVER}/${db.name}`).catch((e: unknown) => {
        if (!/does not exist/.test(e instanceof Error ? e.message : String(e))) throw e;
      });
      await admin(async (c) => {
        await c.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", [name]);
        await c.query(`DROP ROLE IF EXISTS ${name}`);
      });
    },
  };
}
