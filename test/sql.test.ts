// SQL tasks end to end: a real hub and a real agent process whose config names a PostgreSQL, a MariaDB
// and a SQLite datasource (databases this file creates), driven through the CLI and the SDK. The read-only
// ones connect as least-privilege roles this file creates, as the agent requires.
import { createHash } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, sql, type JsonValue } from "../src/client/index.js";
import { createMariadbDatabase, createReadOnlyUser, type MariadbTestUser } from "./support/mariadb.js";
import { createPostgresDatabase, createReadOnlyRole, type PostgresTestRole } from "./support/postgres.js";
import {
  listAgents,
  runCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";
import { TcpProxy } from "./support/tcp-proxy.js";

let hub: HubProc;
let client: SwitchboardClient;
let pgDb: Awaited<ReturnType<typeof createPostgresDatabase>>;
let myDb: Awaited<ReturnType<typeof createMariadbDatabase>>;
let pgReader: PostgresTestRole;
let myReader: MariadbTestUser;
let proxy: TcpProxy;
let sqlitePath: string;

/** `switchboard query --pool sql ARGS...` through the built CLI. */
function queryCli(args: string[]): ReturnType<typeof runCli> {
  return runCli([...hub.cli, "query", "--pool", "sql", ...args]);
}

async function rows(datasource: string, query: string, params: unknown[] = []): Promise<JsonValue[][]> {
  const out: JsonValue[][] = [];
  for await (const ev of client.query({ ...sql({ datasource, query, params }), target: { pool: "sql" } })) {
    if (ev.kind === "rows") out.push(...ev.rows);
  }
  return out;
}

beforeAll(async () => {
  pgDb = await createPostgresDatabase();
  myDb = await createMariadbDatabase();
  const pgc = new pg.Client({ connectionString: pgDb.url });
  await pgc.connect();
  await pgc.query(`CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, score numeric(12,3), born date,
    seen timestamptz, data jsonb, pic bytea)`);
  await pgc.query(`CREATE INDEX users_name ON users (name)`);
  await pgc.query(`INSERT INTO users VALUES
    (1, 'Ada', 12.5, '1815-12-10', '2024-01-02T03:04:05.123Z', '{"a":[1,2]}', '\\x00ff'),
    (9007199254740993, 'Zoë 🚀 東京', NULL, NULL, NULL, NULL, NULL)`);
  await pgc.end();
  pgReader = await createReadOnlyRole(pgDb);
  myReader = await createReadOnlyUser(myDb);

  const dir = tempDir("sql");
  sqlitePath = join(dir, "local.db");
  const lite = new Database(sqlitePath);
  lite.exec(
    `CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER NOT NULL); INSERT INTO kv VALUES ('a', 1), ('b', 9223372036854775807);`,
  );
  lite.close();

  // The "flaky" datasource reaches PostgreSQL through a proxy the test can take down.
  const pgUrl = new URL(pgDb.url);
  proxy = await TcpProxy.start(`${pgUrl.hostname}:${pgUrl.port || 5432}`);
  const flakyUrl = new URL(pgReader.url);
  flakyUrl.host = proxy.address;

  const config = join(dir, "agent.toml");
  writeFileSync(
    config,
    `
[monitoring]
health_check_interval_secs = 1

[datasources.main]
driver = "postgres"
url = "${pgReader.url}"

[datasources.rw]
driver = "postgres"
url = "${pgDb.url}"
read_only = false

[datasources.maria]
driver = "mysql"
url = "${myReader.url}"

[datasources.local]
driver = "sqlite"
path = "${sqlitePath}"
max_rows = 1000

[datasources.flaky]
driver = "postgres"
url = "${flakyUrl.toString()}"
connect_timeout = "2s"
`,
  );
  hub = await startHub();
  await startAgent(hub, { agentId: "sql-1", pool: "sql", shell: false, args: ["--config", config] });
  client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
}, 120_000);

afterAll(async () => {
  client?.close();
  await stopAll();
  await proxy?.close();
  await pgReader?.drop();
  await myReader?.drop();
  await pgDb?.drop();
  await myDb?.drop();
});

describe("switchboard query", () => {
  it("prints PostgreSQL rows as CSV and NDJSON with their meaning kept", async () => {
    const csv = await queryCli([
      "--db",
      "main",
      "--format",
      "csv",
      "SELECT id, name, score, born, data FROM users ORDER BY id",
    ]);
    expect(csv.stderr).toBe("");
    expect(csv.code).toBe(0);
    expect(csv.stdout.split("\n")[0]).toBe("id,name,score,born,data");
    expect(csv.stdout).toContain("9007199254740993,Zoë 🚀 東京,,,");
    const nd = await queryCli([
      "--db",
      "main",
      "--format",
      "ndjson",
      "SELECT * FROM users WHERE id = $1",
      "1",
    ]);
    expect(nd.code).toBe(0);
    const row = JSON.parse(nd.stdout.trim()) as Record<string, JsonValue>;
    expect(row).toEqual({
      id: 1,
      name: "Ada",
      score: "12.500",
      born: "1815-12-10",
      seen: "2024-01-02T03:04:05.123+00:00",
      data: { a: [1, 2] },
      pic: Buffer.from([0, 255]).toString("base64"),
    });
  });

  it("describes a table from each engine's catalog", async () => {
    let header;
    for await (const ev of client.query({
      ...sql({ datasource: "main", query: "SELECT 1", table: "users" }),
      target: { pool: "sql" },
    })) {
      if (ev.kind === "header") header = ev.header;
    }
    const table = header?.table;
    expect(table?.primaryKey).toEqual(["id"]);
    expect(table?.columns.find((c) => c.name === "name")).toMatchObject({ nullable: false });
    expect(table?.indexes.map((i) => i.name)).toContain("users_name");
  });

  it("runs on MariaDB and SQLite, and finds a datasource by driver name", async () => {
    expect(await rows("maria", "SELECT 1 + 1 AS two, CAST(18446744073709551615 AS UNSIGNED) AS big")).toEqual(
      [[2, "18446744073709551615"]],
    );
    expect(await rows("local", "SELECT k, v FROM kv ORDER BY k")).toEqual([
      ["a", 1],
      ["b", "9223372036854775807"],
    ]);
    expect(await rows("sqlite", "SELECT count(*) FROM kv")).toEqual([[2]]);
    expect(await rows("mysql", "SELECT 'é'")).toEqual([["é"]]);
  });

  it("hands the SDK CSV the agent encoded, header from the column metadata", async () => {
    let text = "";
    let columns: string[] = [];
    let rowCount = -1;
    let summaryBytes = -1;
    for await (const ev of client.query({
      ...sql({ datasource: "main", query: "SELECT id, name, data FROM users ORDER BY id", format: "csv" }),
      target: { pool: "sql" },
    })) {
      if (ev.kind === "header") columns = ev.header.columns.map((c) => c.name);
      else if (ev.kind === "csv") text += ev.data.toString("utf8");
      else if (ev.kind === "rows") throw new Error("rows arrived as JSON although CSV was asked for");
      else if (ev.kind === "done") {
        rowCount = ev.summary.row_count;
        summaryBytes = ev.summary.bytes;
      }
    }
    expect(columns).toEqual(["id", "name", "data"]);
    expect(text).toBe('1,Ada,"{""a"":[1,2]}"\n9007199254740993,Zoë 🚀 東京,\n');
    expect(rowCount).toBe(2);
    expect(summaryBytes).toBe(Buffer.byteLength(text));
  });

  it("writes the same CSV whether PostgreSQL encodes it (COPY) or the agent does", async () => {
    const select = `SELECT v.* FROM (VALUES
        (1::int8, 'plain'::text, 12.500::numeric(12,3), '2024-02-29'::date, 'ab'::varchar(5)),
        (9007199254740993, '', NULL, NULL, NULL),
        (-3, 'comma, "quote" and' || E'\\n' || 'newline', -0.001, '0044-03-15 BC'::date, 'Zoë'),
        (4, E'\\\\.', 1e20::numeric, 'infinity'::date, '東京 🚀'),
        (5, NULL, 'NaN', NULL, '')
      ) AS v(id, t, n, d, s)`;
    const viaCopy = await queryCli(["--db", "main", "--format", "csv", select]);
    // A parameter sends the statement down the cursor path: the agent encodes the rows.
    const viaAgent = await queryCli(["--db", "main", "--format", "csv", `${select} WHERE $1::int = 1`, "1"]);
    expect(viaCopy.stderr).toBe("");
    expect(viaCopy.code).toBe(0);
    expect(viaAgent.code).toBe(0);
    expect(viaCopy.stdout.split("\n")[0]).toBe("id,t,n,d,s");
    expect(viaCopy.stdout).toContain('9007199254740993,"",,,\n');
    expect(viaCopy.stdout).toContain('5,,NaN,,""\n');
    expect(viaCopy.stdout).toBe(viaAgent.stdout);
  });

  it("streams five million rows in bounded memory", async () => {
    let n = 0;
    let last: JsonValue = null;
    let sum = 0;
    for await (const ev of client.query({
      ...sql({ datasource: "main", query: "SELECT g FROM generate_series(1, 5000000) g", batchRows: 5000 }),
      target: { pool: "sql" },
    })) {
      if (ev.kind === "rows") {
        for (const r of ev.rows) {
          n++;
          if (r[0] !== n) throw new Error(`row ${n} is ${JSON.stringify(r[0])}`);
          sum += r[0];
        }
        last = ev.rows[ev.rows.length - 1]![0]!;
      }
    }
    expect(n).toBe(5_000_000);
    expect(last).toBe(5_000_000);
    expect(sum).toBe((5_000_000 * 5_000_001) / 2);
  }, 180_000);

  it("refuses writes on a read-only datasource and allows them where configured", async () => {
    const r = await queryCli(["--db", "main", "INSERT INTO users (id, name) VALUES (3, 'x')"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/main.*read-only/);
    const w = await queryCli(["--db", "rw", "INSERT INTO users (id, name) VALUES (3, 'x'), (4, 'y')"]);
    expect(w.code).toBe(0);
    expect(w.stderr).toContain("2 rows affected");
    expect(await rows("main", "SELECT count(*)::int FROM users")).toEqual([[4]]);
    await rows("rw", "DELETE FROM users WHERE id IN (3, 4)");
  });

  it("cancels a running query in the database", async () => {
    const abort = new AbortController();
    const started = Date.now();
    const run = (async () => {
      for await (const _ of client.query({
        ...sql({ datasource: "main", query: "SELECT pg_sleep(30)" }),
        target: { pool: "sql" },
        signal: abort.signal,
      })) {
        // nothing arrives before the cancel
      }
    })();
    const admin = new pg.Client({ connectionString: pgDb.url });
    await admin.connect();
    try {
      await waitFor(
        async () => {
          const r = await admin.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
          );
          return (r.rows[0] as { n: number }).n === 1;
        },
        { timeout: 10_000, message: "pg_sleep to run" },
      );
      abort.abort();
      await expect(run).rejects.toThrow(/cancel/i);
      await waitFor(
        async () => {
          const r = await admin.query(
            "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'",
          );
          return (r.rows[0] as { n: number }).n === 0;
        },
        { timeout: 5_000, message: "the statement to stop in PostgreSQL" },
      );
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      await admin.end();
    }
  });

  it("ends a query past its statement timeout", async () => {
    const r = await queryCli(["--db", "maria", "--timeout", "500ms", "SELECT SLEEP(20)"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/time/i);
  });

  it("names the datasource and carries the database's message for bad input", async () => {
    const unknown = await queryCli(["--db", "nope", "SELECT 1"]);
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toMatch(/no datasource "nope".*"main"/);
    const syntax = await queryCli(["--db", "maria", "SELEC 1"]);
    expect(syntax.code).toBe(1);
    expect(syntax.stderr).toMatch(/maria.*SQL syntax/);
    const tooMany = await queryCli([
      "--db",
      "local",
      "--format",
      "csv",
      "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 5000) SELECT x FROM c",
    ]);
    expect(tooMany.code).toBe(1);
    expect(tooMany.stderr).toMatch(/max_rows = 1000/);
    // The agent is still up and serving.
    expect(await rows("local", "SELECT 7")).toEqual([[7]]);
  });

  it("writes a file only when the result is complete", async () => {
    const dir = tempDir("sql-out");
    const file = join(dir, "users.json");
    const r = await queryCli(["--db", "main", "-o", file, "SELECT id, name FROM users ORDER BY id"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual([
      { id: 1, name: "Ada" },
      { id: "9007199254740993", name: "Zoë 🚀 東京" },
    ]);
  });

  it("copies a result into a central PostgreSQL table with --into", async () => {
    const r = await queryCli([
      "--db",
      "maria",
      "--into",
      pgDb.url,
      "--into-table",
      "copied",
      "SELECT seq AS n, CONCAT('row ', seq) AS label, seq * 1.5 AS half FROM seq_1_to_20000",
    ]);
    expect(r.stderr).toMatch(/copied 20000 rows into copied \(created\)/);
    expect(r.code).toBe(0);
    const c = new pg.Client({ connectionString: pgDb.url });
    await c.connect();
    try {
      const got = await c.query("SELECT n::text, label, half::text FROM copied ORDER BY copied.n");
      expect(got.rows.length).toBe(20_000);
      const digest = createHash("sha256");
      for (const row of got.rows as { n: string; label: string; half: string }[]) {
        digest.update(`${row.n}|${row.label}|${Number(row.half)}\n`);
      }
      const want = createHash("sha256");
      for (let i = 1; i <= 20_000; i++) want.update(`${i}|row ${i}|${i * 1.5}\n`);
      expect(digest.digest("hex")).toBe(want.digest("hex"));
    } finally {
      await c.end();
    }
  });

  it("marks the agent Degraded while a datasource is down, and healthy once it is back", async () => {
    proxy.down();
    await waitFor(
      async () => {
        const r = await runCli([...hub.cli, "agents", "--output", "json"]);
        const a = (JSON.parse(r.stdout) as { agentId: string; health: string; healthReason: string }[]).find(
          (x) => x.agentId === "sql-1",
        );
        return a?.health === "degraded" && /datasource "flaky" is down/.test(a.healthReason);
      },
      { timeout: 60_000, interval: 500, message: "the agent to report the datasource down" },
    );
    proxy.up();
    await waitFor(
      async () => {
        const agents = await listAgents(hub);
        return agents.find((a) => a.agentId === "sql-1")?.health === "healthy";
      },
      { timeout: 60_000, interval: 500, message: "the agent to be healthy again" },
    );
  }, 130_000);
});
