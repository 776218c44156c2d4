// Test databases on the local MariaDB (127.0.0.1:3306, root, empty password): each test file creates its own
// uniquely named database and drops it when done, so files running side by side never share tables; and
// least-privilege users that may only read such a database, which is what a read_only datasource connects as
// (the agent refuses root).
import { randomBytes } from "node:crypto";
import mysql from "mysql2/promise";

const HOST = "127.0.0.1";
const PORT = 3306;
const USER = "root";

export interface MariadbDatabase {
  /** mysql://root@127.0.0.1:3306/<name> */
  url: string;
  name: string;
  drop(): Promise<void>;
}

async function adminConnection(): Promise<mysql.Connection> {
  try {
    return await mysql.createConnection({
      host: HOST,
      port: PORT,
      user: USER,
      password: "",
      connectTimeout: 5_000,
    });
  } catch (e) {
    const reason = e instanceof Error ? e.message : String(e);
    throw new Error(
      `cannot connect to MariaDB at ${HOST}:${PORT} as ${USER} with an empty password (${reason}); ` +
        `the SQL tests need a running MariaDB server: start it (npm run setup does) and run the tests again`,
    );
  }
}

export async function createMariadbDatabase(): Promise<MariadbDatabase> {
  const name = `sbtest_${randomBytes(6).toString("hex")}`;
  const admin = await adminConnection();
  try {
    await admin.query(`CREATE DATABASE \`${name}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`);
  } finally {
    await admin.end();
  }
  return {
    url: `mysql://${USER}@${HOST}:${PORT}/${name}`,
    name,
    async drop(): Promise<void> {
      const c = await adminConnection();
      try {
        await c.query(`DROP DATABASE IF EXISTS \`${name}\``);
      } finally {
        await c.end();
      }
    },
  };
}

export interface MariadbTestUser {
  /** The user's name (sbro_<random>), at host '%'. */
  name: string;
  /** mysql://<name>@127.0.0.1:3306/<database>: what a read_only datasource's url says. */
  url: string;
  /** Drops the user; safe to call twice. */
  drop(): Promise<void>;
}

/**
 * A user that may only read db (GRANT SELECT ON db.*, as docs/security.md (Databases) says);
 * grants adds more (e.g. "FILE ON *.*", "INSERT ON `db`.*") for tests of the agent's refusal.
 */
export async function createReadOnlyUser(
  db: MariadbDatabase,
  opts: { grants?: string[] } = {},
): Promise<MariadbTestUser> {
  const name = `sbro_${randomBytes(6).toString("hex")}`;
  const c = await adminConnection();
  try {
    await c.query(`CREATE USER '${name}'@'%'`);
    await c.query(`GRANT SELECT ON \`${db.name}\`.* TO '${name}'@'%'`);
    for (const grant of opts.grants ?? []) await c.query(`GRANT ${grant} TO '${name}'@'%'`);
  } finally {
    await c.end();
  }
  let dropped = false;
  return {
    name,
    url: `mysql://${name}@${HOST}:${PORT}/${db.name}`,
    async drop(): Promise<void> {
      if (dropped) return;
      dropped = true;
      const admin = await adminConnection();
      try {
        await admin.query(`DROP USER IF EXISTS '${name}'@'%'`);
      } finally {
        await admin.end();
      }
    },
  };
}
