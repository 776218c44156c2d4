// Throwaway PostgreSQL databases for tests: each call creates a uniquely named database on the local
// server (trust auth, user postgres) and hands back its URL and a drop() that ends its sessions and
// removes it. A missing server is an error naming the server, so tests fail rather than skip.
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

async function admin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  // A connection lost while the client is idle is reported as an event; without a listener it would
  // crash the test process instead of failing the query that notices it.
  client.on("error", () => undefined);
  try {
    await client.connect();
  } catch (e) {
    throw new Error(
      `cannot connect to the test PostgreSQL server at ${ADMIN_URL} (start it, with trust auth for user postgres): ${
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
