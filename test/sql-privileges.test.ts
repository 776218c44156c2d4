// A read_only datasource as an attacker would try it when it connects as a privileged database user: a READ
// ONLY transaction does not stop a PostgreSQL superuser's COPY ... TO PROGRAM, COPY ... TO a file, lo_import,
// pg_read_file or pg_terminate_backend, nor MariaDB root's SELECT ... INTO OUTFILE or SET GLOBAL. The agent
// must refuse such a datasource (down, the agent Degraded with a reason naming datasource, user, privilege
// and fix; a task that reaches it fails with FAILED_PRECONDITION) and none of it may run, while
// least-privilege roles work. Privileges granted while the agent runs are found on the next new connection.
// Real hub and agents from the built CLI, the local PostgreSQL and MariaDB, roles this file creates and drops.
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import mysql from "mysql2/promise";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, sql } from "../src/client/index.js";
import { createMariadbDatabase, createReadOnlyUser, type MariadbTestUser } from "./support/mariadb.js";
import { createPostgresDatabase, createReadOnlyRole, type PostgresTestRole } from "./support/postgres.js";
import {
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type AgentProc,
  type CliResult,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

let hub: HubProc;
let client: SwitchboardClient;
// Four agents: priv-bad has privileged read_only datasources from the start; priv-good least-privilege ones
// and one that may write as a superuser; priv-late-pg and priv-late-maria a least-privilege one each, which
// the test grants more while they run (health checked only hourly, so that only a new connection can
// notice; one agent each, since the first refusal turns its agent Degraded and so closed to more work).
/** priv-good, whose log the warning test reads. */
let good: AgentProc;
let pgDb: Awaited<ReturnType<typeof createPostgresDatabase>>;
let myDb: Awaited<ReturnType<typeof createMariadbDatabase>>;
let pgReader: PostgresTestRole;
let pgFiles: PostgresTestRole;
let pgLate: PostgresTestRole;
let myReader: MariadbTestUser;
let myWriter: MariadbTestUser;
let myLate: MariadbTestUser;
let maxConnectErrors: number;
const MARKERS = ["program", "copy", "outfile", "dumpfile", "reader-program", "reader-outfile"];
/** Files the database servers would write if the agent let them; all must stay absent. */
const marker = (what: string): string => `/tmp/sb-privileges-${process.pid}-${what}`;

function query(pool: string, db: string, statement: string): Promise<CliResult> {
  return runCli([...hub.cli, "query", "--pool", pool, "--db", db, "--format", "csv", statement]);
}

interface AgentRow {
  agentId: string;
  health: string;
  healthReason: string;
}

async function agentRow(agentId: string): Promise<AgentRow | undefined> {
  const r = await runCli([...hub.cli, "agents", "--output", "json"]);
  return (JSON.parse(r.stdout) as AgentRow[]).find((a) => a.agentId === agentId);
}

/** The datasources' health as the agent's last heartbeat reported it. */
async function datasourceHealth(
  agentId: string,
): Promise<Map<string, { healthy: boolean; error: string; checkedAtMs: number }>> {
  const a = (await client.admin.listAgents({})).find((x) => x.agentId === agentId);
  return new Map((a?.datasources ?? []).map((d) => [d.name, d]));
}

/** The refusal a task on a privileged read_only datasource gets when it reaches the agent. */
function expectRefused(r: CliResult, datasource: string, why: RegExp): void {
  expect(r.code).not.toBe(0);
  expect(r.stderr).toContain(`datasource "${datasource}"`);
  expect(r.stderr).toMatch(why);
  expect(r.stderr).toContain("FAILED_PRECONDITION");
  expect(r.stderr).toMatch(/least-privilege role .*or read_only = false/);
}

async function globalMaxConnectErrors(): Promise<number> {
  const c = await mysql.createConnection({ uri: myDb.url });
  try {
    const [rows] = await c.query("SELECT @@GLOBAL.max_connect_errors AS v");
    return Number((rows as { v: number }[])[0]!.v);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  pgDb = await createPostgresDatabase();
  myDb = await createMariadbDatabase();
  const pgc = new pg.Client({ connectionString: pgDb.url });
  await pgc.connect();
  await pgc.query("CREATE TABLE orders (id int PRIMARY KEY, total numeric)");
  await pgc.query("INSERT INTO orders VALUES (1, 9.5), (2, 20)");
  await pgc.end();
  const myc = await mysql.createConnection({ uri: myDb.url });
  await myc.query("CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(10,2))");
  await myc.query("INSERT INTO orders VALUES (1, 9.5), (2, 20)");
  await myc.end();
  maxConnectErrors = await globalMaxConnectErrors();
  pgReader = await createReadOnlyRole(pgDb);
  pgFiles = await createReadOnlyRole(pgDb, { memberOf: ["pg_read_server_files"] });
  pgLate = await createReadOnlyRole(pgDb);
  myReader = await createReadOnlyUser(myDb);
  myWriter = await createReadOnlyUser(myDb, { grants: [`INSERT ON \`${myDb.name}\`.*`] });
  myLate = await createReadOnlyUser(myDb);

  const dir = tempDir("sql-privileges");
  const config = (name: string, text: string): string => {
    const file = join(dir, `${name}.toml`);
    writeFileSync(file, text);
    return file;
  };
  const badConfig = config(
    "bad",
    `
[monitoring]
health_check_interval_secs = 1

# read_only (the default), connected as the superuser postgres
[datasources.pgsuper]
driver = "postgres"
url = "${pgDb.url}"

# read_only, a role whose only extra is membership of pg_read_server_files
[datasources.pgfiles]
driver = "postgres"
url = "${pgFiles.url}"

# read_only, connected as root
[datasources.mariaroot]
driver = "mysql"
url = "${myDb.url}"

# read_only, a user who may also INSERT
[datasources.mariawriter]
driver = "mysql"
url = "${myWriter.url}"
`,
  );
  const goodConfig = config(
    "good",
    `
[monitoring]
health_check_interval_secs = 1

[datasources.pgreader]
driver = "postgres"
url = "${pgReader.url}"

[datasources.mariareader]
driver = "mysql"
url = "${myReader.url}"

# may write, and says so: allowed as the superuser, with a warning
[datasources.pgadmin]
driver = "postgres"
url = "${pgDb.url}"
read_only = false
`,
  );
  const latePgConfig = config(
    "late-pg",
    `
[monitoring]
health_check_interval_secs = 3600

[datasources.pglate]
driver = "postgres"
url = "${pgLate.url}"
pool_size = 2
`,
  );
  const lateMariaConfig = config(
    "late-maria",
    `
[monitoring]
health_check_interval_secs = 3600

[datasources.marialate]
driver = "mysql"
url = "${myLate.url}"
pool_size = 2
`,
  );
  hub = await startHub();
  client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
  const start = (agentId: string, file: string, waitConnected: boolean, shell = false): Promise<AgentProc> =>
    startAgent(hub, { agentId, pool: agentId, shell, args: ["--config", file], waitConnected });
  // One after another: four agents starting at once on a busy machine outlast startAgent's wait.
  // priv-bad is Degraded from its first heartbeat, and startAgent would wait for healthy.
  await start("priv-bad", badConfig, false, true);
  good = await start("priv-good", goodConfig, true);
  await start("priv-late-pg", latePgConfig, true);
  await start("priv-late-maria", lateMariaConfig, true);
  await waitFor(async () => (await agentRow("priv-bad")) !== undefined, {
    timeout: 30_000,
    interval: 200,
    message: "priv-bad to connect",
  });
}, 180_000);

afterAll(async () => {
  client?.close();
  await stopAll();
  for (const what of [...MARKERS, "late-program", "late-outfile"]) rmSync(marker(what), { force: true });
  // Put back what a failing run may have changed on the shared server.
  if (maxConnectErrors !== undefined && myDb) {
    const c = await mysql.createConnection({ uri: myDb.url });
    await c.query(`SET GLOBAL max_connect_errors = ${maxConnectErrors}`);
    await c.end();
  }
  // One at a time: PostgreSQL refuses concurrent changes to the same default privileges.
  for (const r of [pgReader, pgFiles, pgLate, myReader, myWriter, myLate]) await r?.drop();
  await pgDb?.drop();
  await myDb?.drop();
});

describe("a read_only datasource whose database user can do more than read", () => {
  it("is down and makes the agent Degraded, naming datasource, user, privilege and the fix", async () => {
    const row = await waitFor(
      async () => {
        const a = await agentRow("priv-bad");
        return a?.health === "degraded" && /mariawriter/.test(a.healthReason) ? a : undefined;
      },
      { timeout: 30_000, interval: 200, message: "priv-bad to report its privileged read_only datasources" },
    );
    const reason = row.healthReason;
    expect(reason).toContain('datasource "pgsuper" is down: user postgres is a superuser');
    expect(reason).toContain(
      `datasource "pgfiles" is down: user ${pgFiles.name} is a member of pg_read_server_files`,
    );
    expect(reason).toMatch(/"mariaroot" is down: user root@[^ ]+ holds ALL PRIVILEGES ON \*\.\*/);
    expect(reason).toContain(`"mariawriter" is down: user ${myWriter.name}@`);
    expect(reason).toContain(`holds INSERT ON \`${myDb.name}\`.*`);
    expect(reason).toMatch(/a read_only datasource needs a least-privilege role .*or read_only = false/);
    // The heartbeat's per-datasource health says the same.
    const health = await datasourceHealth("priv-bad");
    for (const name of ["pgsuper", "pgfiles", "mariaroot", "mariawriter"]) {
      expect(health.get(name)?.healthy).toBe(false);
    }
    expect(health.get("pgsuper")?.error).toContain("user postgres is a superuser");
    // The agent that connects as least-privilege roles is fine.
    expect((await agentRow("priv-good"))?.health).toBe("healthy");
  });

  it("runs no program, writes and reads no server file, ends no session and changes no setting", async () => {
    const victim = new pg.Client({ connectionString: pgDb.url });
    await victim.connect();
    try {
      const pid = (await victim.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0]!.pid;
      const attacks: [string, string][] = [
        ["pgsuper", `COPY (SELECT 1) TO PROGRAM 'touch ${marker("program")}'`],
        ["pgsuper", `COPY (SELECT 1) TO '${marker("copy")}'`],
        ["pgsuper", "SELECT lo_import('/etc/hostname')"],
        ["pgsuper", "SELECT pg_read_file('/etc/hostname')"],
        ["pgsuper", `SELECT pg_terminate_backend(${pid})`],
        ["pgfiles", "SELECT pg_read_file('/etc/hostname')"],
        ["mariaroot", `SELECT 1 INTO OUTFILE '${marker("outfile")}'`],
        ["mariaroot", `SELECT 1 INTO DUMPFILE '${marker("dumpfile")}'`],
        ["mariaroot", `SET GLOBAL max_connect_errors = ${maxConnectErrors + 1}`],
      ];
      // The agent is Degraded by its own report, so it still gets what names it, and refuses these at once.
      const outcomes = await Promise.allSettled(
        attacks.map(async ([datasource, query]) => {
          for await (const _ of client.query({
            ...sql({ datasource, query }),
            target: { agentId: "priv-bad" },
            timeoutMs: 8_000,
          })) {
            // rows would mean it ran
          }
        }),
      );
      outcomes.forEach((o, i) => {
        expect(o.status, attacks[i]![1]).toBe("rejected");
        const e = (o as PromiseRejectedResult).reason as Error;
        expect(e.message, attacks[i]![1]).toContain(`datasource "${attacks[i]![0]}"`);
        expect(e.message, attacks[i]![1]).toMatch(/least-privilege role .*or read_only = false/);
      });
      for (const what of ["program", "copy", "outfile", "dumpfile"])
        expect(existsSync(marker(what))).toBe(false);
      // The other session is alive, no large object was made, the server setting is as it was.
      const los = await victim.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_largeobject_metadata");
      expect(los.rows[0]!.n).toBe(0);
      expect(await globalMaxConnectErrors()).toBe(maxConnectErrors);
    } finally {
      await victim.end();
    }
  }, 60_000);
});

describe("an agent Degraded by a refused datasource", () => {
  it("still runs the rest of its work: shell tasks of its pool, and a query's refusal comes at once", async () => {
    expect((await agentRow("priv-bad"))?.health).toBe("degraded");
    const shell = await runCli([
      ...hub.cli,
      "exec",
      "--pool",
      "priv-bad",
      "--timeout",
      "20s",
      "--",
      "echo",
      "ok",
    ]);
    expect(shell.stderr).toBe("");
    expect(shell).toMatchObject({ code: 0, stdout: "ok\n" });
    const started = Date.now();
    const refused = await query("priv-bad", "pgsuper", "SELECT 1");
    expectRefused(refused, "pgsuper", /user postgres is a superuser/);
    expect(Date.now() - started).toBeLessThan(15_000); // refused by the agent, not left to wait in a queue
  });
});

describe("a read_only datasource on a least-privilege role", () => {
  it("PostgreSQL: reads, and the server itself refuses the program and file tricks", async () => {
    const ok = await query("priv-good", "pgreader", "SELECT id, total FROM orders ORDER BY id");
    expect(ok.stderr).toBe("");
    expect(ok.stdout).toBe("id,total\n1,9.5\n2,20\n");
    const program = await query(
      "priv-good",
      "pgreader",
      `COPY (SELECT 1) TO PROGRAM 'touch ${marker("reader-program")}'`,
    );
    expect(program.code).not.toBe(0);
    expect(program.stderr).toMatch(/pgreader.*(permission denied|must be superuser|privileges of the)/i);
    const file = await query("priv-good", "pgreader", "SELECT pg_read_file('/etc/hostname')");
    expect(file.code).not.toBe(0);
    expect(file.stderr).toMatch(/permission denied/i);
    expect(existsSync(marker("reader-program"))).toBe(false);
  });

  it("MariaDB: reads, and the server itself refuses INTO OUTFILE and SET GLOBAL", async () => {
    const ok = await query("priv-good", "mariareader", "SELECT id, total FROM orders ORDER BY id");
    expect(ok.stderr).toBe("");
    expect(ok.stdout).toBe("id,total\n1,9.50\n2,20.00\n");
    const outfile = await query(
      "priv-good",
      "mariareader",
      `SELECT 1 INTO OUTFILE '${marker("reader-outfile")}'`,
    );
    expect(outfile.code).not.toBe(0);
    expect(outfile.stderr).toMatch(/mariareader.*(Access denied|FILE)/);
    const global = await query(
      "priv-good",
      "mariareader",
      `SET GLOBAL max_connect_errors = ${maxConnectErrors + 1}`,
    );
    expect(global.code).not.toBe(0);
    expect(global.stderr).toMatch(/mariareader.*(Access denied|SUPER)/);
    expect(existsSync(marker("reader-outfile"))).toBe(false);
    expect(await globalMaxConnectErrors()).toBe(maxConnectErrors);
  });
});

describe("a datasource that may write (read_only = false) as a privileged user", () => {
  it("works, and the agent warns about it once", async () => {
    const r = await query("priv-good", "pgadmin", "SELECT count(*) AS n FROM orders");
    expect(r.stdout).toBe("n\n2\n");
    // Health checks run every second: once three more have passed, still one warning.
    const first = (await datasourceHealth("priv-good")).get("pgadmin")?.checkedAtMs ?? 0;
    await waitFor(
      async () => ((await datasourceHealth("priv-good")).get("pgadmin")?.checkedAtMs ?? 0) >= first + 3_000,
      { timeout: 30_000, interval: 200, message: "three more health checks of pgadmin" },
    );
    const warnings = good
      .stderr()
      .split("\n")
      .filter((l) => l.includes("privileged user") && l.includes('"datasource":"pgadmin"'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain('"user":"postgres"');
    expect(warnings[0]).toContain('"privilege":"is a superuser"');
  });
});

describe("privileges granted while the agent runs", () => {
  /**
   * Holds the datasource's one checked connection with a long statement (the attack then needs a new one),
   * grants more than reading, runs the attack: it must fail FAILED_PRECONDITION and the agent turn Degraded.
   */
  async function grantedMeanwhile(o: {
    agentId: string;
    datasource: string;
    hold: string;
    holding: () => Promise<boolean>;
    grant: () => Promise<unknown>;
    attack: string;
    refusal: RegExp;
    marker: string;
  }): Promise<void> {
    const q = (statement: string): Promise<CliResult> => query(o.agentId, o.datasource, statement);
    expect((await q("SELECT 1 AS one")).stdout).toBe("one\n1\n");
    const hold = spawnCli([...hub.cli, "query", "--pool", o.agentId, "--db", o.datasource, o.hold]);
    try {
      await waitFor(o.holding, {
        timeout: 30_000,
        interval: 100,
        message: "the checked connection to be busy",
      });
      // An administrator grants more than reading, and the agent is not told.
      await o.grant();
      expectRefused(await q(o.attack), o.datasource, o.refusal);
      expect(existsSync(o.marker)).toBe(false);
      const row = await waitFor(
        async () => {
          const a = await agentRow(o.agentId);
          return a?.health === "degraded" ? a : undefined;
        },
        { timeout: 30_000, interval: 200, message: `${o.agentId} to turn Degraded` },
      );
      expect(row.healthReason).toMatch(o.refusal);
    } finally {
      hold.kill("SIGINT");
      await hold.exited;
    }
  }

  it("PostgreSQL: a role made a member of pg_execute_server_program is refused on its next new connection", async () => {
    const admin = new pg.Client({ connectionString: pgDb.url });
    await admin.connect();
    try {
      await grantedMeanwhile({
        agentId: "priv-late-pg",
        datasource: "pglate",
        hold: "SELECT pg_sleep(60)",
        holding: async () => {
          const r = await admin.query<{ n: number }>(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE usename = $1 AND query LIKE 'SELECT pg_sleep%' AND state = 'active'",
            [pgLate.name],
          );
          return r.rows[0]!.n === 1;
        },
        grant: () => admin.query(`GRANT pg_execute_server_program TO ${pgLate.name}`),
        attack: `COPY (SELECT 1) TO PROGRAM 'touch ${marker("late-program")}'`,
        refusal: new RegExp(`${pgLate.name} is a member of pg_execute_server_program`),
        marker: marker("late-program"),
      });
    } finally {
      await admin.end();
    }
  }, 120_000);

  it("MariaDB: a user granted FILE is refused on its next new connection", async () => {
    const admin = await mysql.createConnection({ uri: myDb.url });
    try {
      await grantedMeanwhile({
        agentId: "priv-late-maria",
        datasource: "marialate",
        hold: "SELECT SLEEP(60)",
        holding: async () => {
          const [rows] = await admin.query(
            "SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST WHERE USER = ? AND INFO LIKE 'SELECT SLEEP%'",
            [myLate.name],
          );
          return Number((rows as { n: number }[])[0]!.n) === 1;
        },
        grant: () => admin.query(`GRANT FILE ON *.* TO '${myLate.name}'@'%'`),
        attack: `SELECT 1 INTO OUTFILE '${marker("late-outfile")}'`,
        refusal: new RegExp(`${myLate.name}@[^ ]+ holds FILE ON \\*\\.\\*`),
        marker: marker("late-outfile"),
      });
    } finally {
      await admin.end();
    }
  }, 120_000);
});
