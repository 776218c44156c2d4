// Pooled database connections as a hostile task would use them: one task leaves session state behind (a
// search_path, a session variable, an advisory or named lock, a temporary table, a pragma, an open
// transaction) and the next task on the same connection of the same agent must see none of it, while
// another session can take the lock at once. Each datasource has one connection (pool_size = 1), and the
// tests check that the tasks did share it (same backend pid / connection id), so a clean result is the
// reset's doing and not a new connection's. Driven through the built CLI, as a user would.
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import Database from "better-sqlite3";
import mysql from "mysql2/promise";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createMariadbDatabase, createReadOnlyUser, type MariadbTestUser } from "./support/mariadb.js";
import { createPostgresDatabase, createReadOnlyRole, type PostgresTestRole } from "./support/postgres.js";
import { runCli, startAgent, startHub, stopAll, tempDir, type HubProc } from "./support/processes.js";

let hub: HubProc;
let pgDb: Awaited<ReturnType<typeof createPostgresDatabase>>;
let myDb: Awaited<ReturnType<typeof createMariadbDatabase>>;
let pgRole: PostgresTestRole;
let myUser: MariadbTestUser;
let myTempUser: MariadbTestUser;
let sqlitePath: string;
const LOCK = `sb_lock_${process.pid}_${Date.now()}`;

type Row = Record<string, unknown>;

/** One statement through `switchboard query --format json`; the rows it printed. */
async function query(db: string, sql: string): Promise<Row[]> {
  const r = await runCli([...hub.cli, "query", "--pool", "sessions", "--db", db, "--format", "json", sql]);
  if (r.code !== 0) throw new Error(`query on ${db} failed (${r.code}): ${r.stderr}`);
  const text = r.stdout.trim();
  return text === "" ? [] : (JSON.parse(text) as Row[]);
}

/** A statement that returns no rows (SET, CREATE...): it must succeed. */
async function exec(db: string, sql: string): Promise<void> {
  const r = await runCli([...hub.cli, "query", "--pool", "sessions", "--db", db, sql]);
  if (r.code !== 0) throw new Error(`${sql} on ${db} failed (${r.code}): ${r.stderr}`);
}

beforeAll(async () => {
  pgDb = await createPostgresDatabase();
  myDb = await createMariadbDatabase();
  const admin = await mysql.createConnection({ uri: myDb.url });
  await admin.query("CREATE TABLE t (a INT)");
  await admin.end();
  pgRole = await createReadOnlyRole(pgDb);
  myUser = await createReadOnlyUser(myDb);
  // A datasource that may write (read_only = false) is not checked for privileges; temporary tables need one.
  myTempUser = await createReadOnlyUser(myDb, { grants: [`CREATE TEMPORARY TABLES ON \`${myDb.name}\`.*`] });

  const dir = tempDir("sql-sessions");
  sqlitePath = join(dir, "local.db");
  const lite = new Database(sqlitePath);
  lite.exec("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL); INSERT INTO kv VALUES ('a', 1);");
  lite.close();

  const config = join(dir, "agent.toml");
  writeFileSync(
    config,
    `
[datasources.pg]
driver = "postgres"
url = "${pgRole.url}"
pool_size = 1

[datasources.pgrw]
driver = "postgres"
url = "${pgRole.url}"
read_only = false
pool_size = 1

[datasources.maria]
driver = "mysql"
url = "${myUser.url}"
pool_size = 1

[datasources.mariarw]
driver = "mysql"
url = "${myTempUser.url}"
read_only = false
pool_size = 1

[datasources.lite]
driver = "sqlite"
path = "${sqlitePath}"
pool_size = 1
`,
  );
  hub = await startHub();
  await startAgent(hub, {
    agentId: "sessions-1",
    pool: "sessions",
    shell: false,
    args: ["--config", config],
  });
}, 120_000);

afterAll(async () => {
  await stopAll();
  await pgRole?.drop();
  await myUser?.drop();
  await myTempUser?.drop();
  await pgDb?.drop();
  await myDb?.drop();
});

describe("a task's session state does not reach the next task on the same connection", () => {
  it("PostgreSQL: search_path, a session setting and an advisory lock end with the task", async () => {
    const [left] = await query(
      "pg",
      `SELECT pg_backend_pid() AS pid, set_config('search_path', 'sb_evil', false) AS sp,
              set_config('sb.marker', 'left behind', false) AS marker, pg_advisory_lock(4242)::text AS locked`,
    );
    expect(left).toMatchObject({ sp: "sb_evil", marker: "left behind" });
    const [next] = await query(
      "pg",
      `SELECT pg_backend_pid() AS pid, current_setting('search_path') AS sp,
              coalesce(current_setting('sb.marker', true), '') AS marker,
              (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks`,
    );
    // The same connection (pool_size = 1), clean.
    expect(next?.pid).toBe(left?.pid);
    expect(next).toMatchObject({ sp: '"$user", public', marker: "", locks: 0 });
    // And the lock is free for everyone else now, not when the connection happens to be reused.
    const other = new pg.Client({ connectionString: pgDb.url });
    await other.connect();
    try {
      const r = await other.query<{ got: boolean }>("SELECT pg_try_advisory_lock(4242) AS got");
      expect(r.rows[0]?.got).toBe(true);
    } finally {
      await other.end();
    }
  });

  it("PostgreSQL: a temporary table and a role switch end with the task", async () => {
    const [before] = await query("pgrw", "SELECT pg_backend_pid() AS pid");
    await exec("pgrw", "CREATE TEMP TABLE sb_left_behind (a int)");
    await exec("pgrw", "SET application_name = 'sb-evil'");
    const [after] = await query(
      "pgrw",
      `SELECT pg_backend_pid() AS pid, to_regclass('sb_left_behind')::text AS temp,
              current_setting('application_name') AS app`,
    );
    expect(after?.pid).toBe(before?.pid);
    expect(after).toMatchObject({ temp: null, app: "switchboard-agent" });
  });

  it("MariaDB: user variables, session variables and GET_LOCK locks end with the task", async () => {
    const [left] = await query("maria", `SELECT CONNECTION_ID() AS id, GET_LOCK('${LOCK}', 0) AS locked`);
    expect(left?.locked).toBe(1);
    await exec("maria", "SET @sb_marker = 'left behind'");
    await exec("maria", "SET SESSION sql_mode = 'ANSI_QUOTES'");
    const [next] = await query(
      "maria",
      `SELECT CONNECTION_ID() AS id, @sb_marker AS marker, @@session.sql_mode AS mode,
              IS_USED_LOCK('${LOCK}') AS holder`,
    );
    expect(next?.id).toBe(left?.id);
    expect(next).toMatchObject({ marker: null, holder: null });
    expect(next?.mode).not.toBe("ANSI_QUOTES");
    const other = await mysql.createConnection({ uri: myDb.url });
    try {
      const [rows] = await other.query(`SELECT GET_LOCK('${LOCK}', 0) AS got`);
      expect((rows as Row[])[0]?.got).toBe(1);
    } finally {
      await other.end();
    }
  });

  it("MariaDB: a temporary table ends with the task", async () => {
    const [before] = await query("mariarw", "SELECT CONNECTION_ID() AS id");
    await exec("mariarw", "CREATE TEMPORARY TABLE t SELECT 42 AS a");
    // The temporary table would shadow the real, empty t.
    const [after] = await query("mariarw", "SELECT CONNECTION_ID() AS id, (SELECT COUNT(*) FROM t) AS n");
    expect(after?.id).toBe(before?.id);
    expect(after?.n).toBe(0);
  });

  it("SQLite: a pragma, a temporary table and an open transaction end with the task", async () => {
    await exec("lite", "PRAGMA case_sensitive_like = 1");
    await exec("lite", "PRAGMA query_only = 0");
    // Only a connection whose query_only the previous task turned off accepts this; either way, nothing of it
    // may be visible below.
    await runCli([
      ...hub.cli,
      "query",
      "--pool",
      "sessions",
      "--db",
      "lite",
      "CREATE TEMP TABLE sb_left (a)",
    ]);
    await exec("lite", "BEGIN");
    // Inside a transaction left open, this read would keep its shared lock after the task.
    const [next] = await query(
      "lite",
      "SELECT 'a' LIKE 'A' AS ci, (SELECT count(*) FROM temp.sqlite_master) AS temps, (SELECT count(*) FROM kv) AS n",
    );
    expect(next).toMatchObject({ ci: 1, temps: 0, n: 1 });
    // A writer elsewhere gets the file at once.
    const writer = new Database(sqlitePath, { timeout: 0 });
    try {
      writer.prepare("INSERT INTO kv VALUES ('b', 2)").run();
    } finally {
      writer.close();
    }
  });
});
