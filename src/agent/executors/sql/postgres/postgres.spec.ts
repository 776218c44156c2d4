// The PostgreSQL datasource against the real local server: the conformance suite every engine passes, then
// what is PostgreSQL's own: value conversion and type names, pacing measured by nextval, connection reuse,
// the pool's limits, clean sessions, role privileges, describeTable, and queryCsv's COPY. Read-only
// datasources connect as a least-privilege role, as the README says they must; the others as postgres.
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  createPostgresDatabase,
  createReadOnlyRole,
  type PostgresTestDatabase,
  type PostgresTestRole,
} from "../testing/postgres-server.js";
import { Code } from "../../../../common/errors.js";
import { type ColumnInfo, type Datasource, type DatasourceConfig, type JsonValue } from "../datasource.js";
import { collect, pull } from "../testing/collect.js";
import { describeConformance } from "../testing/conformance.js";
import { failure } from "../testing/failure.js";
import { openPostgres } from "./postgres.js";
import { waitFor } from "../../../../common/wait-for.js";

let db: PostgresTestDatabase;
let reader: PostgresTestRole;
let admin: pg.Client;
const opened: Datasource[] = [];

function open(over: Partial<DatasourceConfig> = {}): Datasource {
  const ds = openPostgres({
    name: "pgtest",
    driver: "postgres",
    url: over.readOnly === false ? db.url : reader.url,
    readOnly: true,
    statementTimeoutMs: 0,
    poolSize: 2,
    maxRows: 0,
    connectTimeoutMs: 5_000,
    ...over,
  });
  opened.push(ds);
  return ds;
}

async function activeCount(query: string): Promise<number> {
  const r = await admin.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND query = $2 AND state = 'active'",
    [db.name, query],
  );
  return r.rows[0]!.n;
}

beforeAll(async () => {
  db = await createPostgresDatabase();
  admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  await admin.query(`
    CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
    CREATE TABLE people (
      id bigint PRIMARY KEY,
      name text NOT NULL,
      nick varchar(20),
      score numeric(12,3) DEFAULT 0,
      moods mood[],
      created timestamptz NOT NULL DEFAULT now()
    );
    CREATE UNIQUE INDEX people_name ON people (name);
    CREATE INDEX people_lower_nick ON people (lower(nick), id);
    CREATE SCHEMA other;
    CREATE TABLE other.pairs (a int, b text, c int, PRIMARY KEY (b, a));
    CREATE TABLE "MixedCase" (x int);
    CREATE TABLE items (id int PRIMARY KEY, label text);
    CREATE SEQUENCE pulled;
    INSERT INTO people (id, name, nick, score, moods) VALUES
      (1, 'Ada', 'ada', 12.5, '{happy,ok}'),
      (2, 'Zoë 🚀 東京', NULL, NULL, NULL);
  `);
  reader = await createReadOnlyRole(db);
  await admin.query(`GRANT USAGE ON SCHEMA other TO ${reader.name}`);
  await admin.query(`GRANT SELECT ON ALL TABLES IN SCHEMA other TO ${reader.name}`);
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((ds) => ds.close()));
});

afterAll(async () => {
  await Promise.all(opened.splice(0).map((ds) => ds.close()));
  await admin?.end();
  await reader?.drop();
  await db?.drop();
});

describeConformance({
  engine: "postgres",
  name: "pgtest",
  open,
  param: (n) => `$${n}`,
  series: (n) => `SELECT g FROM generate_series(1, ${n}) g`,
  slow: (marker) => `SELECT pg_sleep(600) AS ${marker}`,
  running: async (marker) => {
    const r = await admin.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE datname = $1 AND state = 'active' AND query LIKE $2 AND pid <> pg_backend_pid()`,
      [db.name, `%${marker}%`],
    );
    return r.rows[0]!.n;
  },
  unreachable: {
    url: undefined,
    host: "127.0.0.1",
    port: 1,
    user: "postgres",
    password: "s3cret-pw",
    database: "x",
  },
  cancel: { answerMs: 2_000, stopMs: 2_000 },
  timeout: {
    ms: 300,
    withinMs: 3_000,
    message:
      'datasource "pgtest": statement timeout (0.3s) exceeded: canceling statement due to statement timeout',
  },
  closed: { running: Code.UNAVAILABLE, query: Code.UNAVAILABLE, check: Code.UNAVAILABLE },
  says: {
    readOnlyWrite: {
      message: 'datasource "pgtest" is read-only: cannot execute INSERT in a read-only transaction',
      engineCode: "25006",
    },
    syntax: { message: 'datasource "pgtest": syntax error at or near "SELEC"', engineCode: "42601" },
    missingTable: 'datasource "pgtest": relation "nowhere" does not exist',
    missingColumn: 'datasource "pgtest": column "nope" does not exist',
    duplicateKey: /^datasource "pgtest": duplicate key value violates unique constraint/,
    unreachable: /^datasource "pgtest": cannot connect to postgres at 127\.0\.0\.1:1\/x: .*ECONNREFUSED/,
  },
});

describe("openPostgres values", () => {
  it("converts every common type to JSON that keeps its meaning", async () => {
    const ds = open();
    const { rows } = await collect(
      ds,
      `SELECT 7::int2, '-2147483648'::int4, 9007199254740991::int8, 9007199254740993::int8, -9007199254740993::int8,
              -42::int8, 12.5::numeric(12,3), 'NaN'::float8, 'Infinity'::float8, '-Infinity'::float4, 1.5::float8,
              0.1::float4, true, false, 'Zoë 🚀 東京'::text, 'abc'::varchar(5), '2024-02-29'::date,
              '2024-01-02 03:04:05.123456'::timestamp, '2024-01-02T03:04:05.123Z'::timestamptz,
              '2024-01-02T03:04:05+05:30'::timestamptz, '13:14:15.5'::time, '1 day 02:03:04'::interval,
              'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid, '{"a":[1,2],"b":null}'::json,
              '{"b": {"c": "d"}, "a": 1}'::jsonb, '\\x00ff10'::bytea, '{1,NULL,3}'::int4[],
              '{"x y","NULL",NULL,"é"}'::text[], '{9007199254740993,1}'::int8[], '{1.50,2}'::numeric[],
              ARRAY['{"k":1}'::jsonb], '{{1,2},{3,4}}'::int2[], NULL::int4, NULL::text, NULL::jsonb,
              'infinity'::timestamptz, '192.168.0.1/24'::inet, '08:00:2b:01:02:03'::macaddr`,
    );
    expect(rows).toEqual([
      [
        7,
        -2147483648,
        9007199254740991,
        "9007199254740993",
        "-9007199254740993",
        -42,
        "12.500",
        "NaN",
        "Infinity",
        "-Infinity",
        1.5,
        0.1,
        true,
        false,
        "Zoë 🚀 東京",
        "abc",
        "2024-02-29",
        "2024-01-02T03:04:05.123456",
        "2024-01-02T03:04:05.123+00:00",
        "2024-01-01T21:34:05+00:00",
        "13:14:15.5",
        "1 day 02:03:04",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        { a: [1, 2], b: null },
        { a: 1, b: { c: "d" } },
        Buffer.from([0, 255, 16]).toString("base64"),
        [1, null, 3],
        ["x y", "NULL", null, "é"],
        ["9007199254740993", 1],
        ["1.50", "2"],
        [{ k: 1 }],
        [
          [1, 2],
          [3, 4],
        ],
        null,
        null,
        null,
        "infinity",
        "192.168.0.1/24",
        "08:00:2b:01:02:03",
      ],
    ]);
  });

  it("reads a table's values and arrays of a user-defined enum", async () => {
    const ds = open();
    const q = "SELECT id, name, nick, score, moods FROM people ORDER BY id";
    const want = [
      [1, "Ada", "ada", "12.500", ["happy", "ok"]],
      [2, "Zoë 🚀 東京", null, null, null],
    ];
    // The first time the enum array's type is learnt from the catalog; the second it converts as rows arrive.
    expect((await collect(ds, q)).rows).toEqual(want);
    expect((await collect(ds, q)).rows).toEqual(want);
  });

  it("names column types as PostgreSQL does and tells nullability for table columns", async () => {
    const ds = open();
    const { columns } = await collect(
      ds,
      "SELECT id, name, nick, score, moods, created, 1 + 1 AS two, '{1}'::int4[] AS arr, 'x'::bytea AS b FROM people",
    );
    expect(columns).toEqual([
      { name: "id", type: "bigint", nullable: false },
      { name: "name", type: "text", nullable: false },
      { name: "nick", type: "character varying(20)", nullable: true },
      { name: "score", type: "numeric(12,3)", nullable: true },
      { name: "moods", type: "mood[]", nullable: true },
      { name: "created", type: "timestamp with time zone", nullable: false },
      { name: "two", type: "integer", nullable: null },
      { name: "arr", type: "integer[]", nullable: null },
      { name: "b", type: "bytea", nullable: null },
    ]);
  });

  it("binds positional parameters, objects and arrays as JSON text", async () => {
    const ds = open();
    const { rows } = await collect(
      ds,
      "SELECT $1::text, $2::int + 1, $3::jsonb -> 'a', $4::jsonb, $5::text IS NULL",
      ["héllo", 41, { a: [1, "two"] }, [1, 2], null],
    );
    expect(rows).toEqual([["héllo", 42, [1, "two"], [1, 2], true]]);
  });
});

describe("openPostgres batches", () => {
  it("fetches from the server only as fast as the consumer pulls, and stops when it returns", async () => {
    // nextval() counts the rows the server has produced; sequences ignore the transaction, so another
    // session sees the count while the cursor is open.
    const ds = open({ readOnly: false, poolSize: 1 });
    const pulled = async (): Promise<number> => {
      const r = await admin.query<{ n: string }>("SELECT last_value AS n FROM pulled");
      return Number(r.rows[0]!.n);
    };
    const before = Number((await admin.query<{ n: string }>("SELECT nextval('pulled') AS n")).rows[0]!.n);
    const sizes: number[] = [];
    const seen: number[] = [];
    for await (const chunk of ds.query("SELECT nextval('pulled') FROM generate_series(1, 200000)", [], {
      signal: new AbortController().signal,
      batchRows: 1000,
    })) {
      if (chunk.kind !== "rows") continue;
      sizes.push(chunk.rows.length);
      await new Promise((r) => setTimeout(r, 30));
      seen.push((await pulled()) - before);
      if (sizes.length === 5) break;
    }
    expect(sizes).toEqual([1000, 1000, 1000, 1000, 1000]);
    // While the consumer held batch k, the server had produced k batches and nothing more.
    expect(seen).toEqual([1000, 2000, 3000, 4000, 5000]);
    await new Promise((r) => setTimeout(r, 100));
    expect((await pulled()) - before).toBe(5000);
    // The connection went back to the (one-connection) pool in a clean state.
    expect(
      (
        await collect(
          ds,
          "SELECT count(*)::int FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in%'",
        )
      ).rows,
    ).toEqual([[0]]);
  });
});

describe("openPostgres writes", () => {
  it("writes on a datasource that allows it and reports the affected rows", async () => {
    const ds = open({ readOnly: false });
    const w = await collect(ds, "INSERT INTO items VALUES (1, 'a'), (2, 'b')");
    expect(w.columns).toEqual([]);
    expect(w.done).toEqual({ kind: "done", rowCount: 0, affectedRows: 2 });
    const u = await collect(ds, "UPDATE items SET label = label || '!' RETURNING id", []);
    expect(u.rows.sort()).toEqual([[1], [2]]);
    expect(u.done).toEqual({ kind: "done", rowCount: 2, affectedRows: 2 });
    const d = await collect(ds, "DELETE FROM items");
    expect(d.done.affectedRows).toBe(2);
  });
});

describe("openPostgres cancel and errors", () => {
  it("stops at the next pull when aborted between batches, and reuses the connection", async () => {
    const ds = open({ poolSize: 1 });
    const abort = new AbortController();
    const pid = async (): Promise<JsonValue> => (await collect(ds, "SELECT pg_backend_pid()")).rows[0]![0]!;
    const before = await pid();
    const seen: number[] = [];
    const e = await failure(
      (async () => {
        for await (const chunk of ds.query("SELECT g FROM generate_series(1, 100000) g", [], {
          signal: abort.signal,
          batchRows: 100,
        })) {
          if (chunk.kind === "rows") {
            seen.push(chunk.rows.length);
            abort.abort();
          }
        }
      })(),
    );
    expect(e.code).toBe(Code.CANCELLED);
    expect(seen).toEqual([100]);
    // No cancel was needed (nothing ran in the server), so the connection went back to the pool.
    expect(await pid()).toBe(before);
  });

  it("reports a connection lost mid-statement as UNAVAILABLE and recovers with a new one", async () => {
    const ds = open({ poolSize: 1 });
    const run = failure(collect(ds, "SELECT pg_sleep(32)"));
    await waitFor(async () => (await activeCount("SELECT pg_sleep(32)")) === 1, {
      message: "pg_sleep to run",
      timeout: 10_000,
      interval: 50,
    });
    await admin.query(
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query = 'SELECT pg_sleep(32)'",
      [db.name],
    );
    const e = await run;
    expect(e.code).toBe(Code.UNAVAILABLE);
    expect(e.message).toMatch(
      /^datasource "pgtest": lost the connection to postgres at 127\.0\.0\.1:5432\/sbtest_/,
    );
    expect((await collect(ds, "SELECT 4")).rows).toEqual([[4]]);
  });

  it("says so when every pooled connection is busy for longer than connect_timeout", async () => {
    const ds = open({ poolSize: 1, connectTimeoutMs: 300 });
    const held = pull(ds, "SELECT g FROM generate_series(1, 10) g", 2);
    expect((await held.next()).value).toMatchObject({ kind: "columns" });
    const e = await failure(collect(ds, "SELECT 1"));
    expect(e.code).toBe(Code.UNAVAILABLE);
    expect(e.message).toMatch(/all 1 \(pool_size\) are running other queries/);
    // check() and describeTable() do not wait behind the pool: a busy datasource is not a down one.
    await ds.check();
    expect((await ds.describeTable("items")).primaryKey).toEqual(["id"]);
    // A caller waiting for a connection can give up at once.
    const abort = new AbortController();
    const waiting = failure(collect(ds, "SELECT 1", [], { signal: abort.signal }));
    setTimeout(() => abort.abort(), 20);
    expect((await waiting).code).toBe(Code.CANCELLED);
    await held.return?.(undefined);
    expect((await collect(ds, "SELECT 5")).rows).toEqual([[5]]);
  });

  it("maps data errors to INVALID_ARGUMENT with PostgreSQL's message", async () => {
    const ds = open();
    const data = await failure(collect(ds, "SELECT 1 / 0"));
    expect(data.code).toBe(Code.INVALID_ARGUMENT);
    expect(data.message).toBe('datasource "pgtest": division by zero');
    // The connection survives the failure.
    expect((await collect(ds, "SELECT 3")).rows).toEqual([[3]]);
  });

  it("reports an unknown database as UNAVAILABLE", async () => {
    const url = new URL(db.url);
    url.pathname = "/sbtest_does_not_exist";
    const e = await failure(open({ url: url.toString() }).check());
    expect(e.code).toBe(Code.UNAVAILABLE);
    expect(e.message).toContain('database "sbtest_does_not_exist" does not exist');
  });

  it("close() cancels running statements, ends paused ones and ends the pool", async () => {
    const ds = open();
    const run = failure(collect(ds, "SELECT pg_sleep(31)"));
    const paused = pull(ds, "SELECT g FROM generate_series(1, 10) g", 2);
    expect((await paused.next()).value).toMatchObject({ kind: "columns" });
    await waitFor(async () => (await activeCount("SELECT pg_sleep(31)")) === 1, {
      message: "pg_sleep to run",
      timeout: 10_000,
      interval: 50,
    });
    await ds.close();
    const e = await run;
    expect(e.code).toBe(Code.UNAVAILABLE);
    await waitFor(async () => (await activeCount("SELECT pg_sleep(31)")) === 0, {
      message: "the statement to stop",
      timeout: 2_000,
      interval: 50,
    });
    // The paused query's connection was cut; its consumer learns why at the next pull.
    expect((await failure(paused.next())).code).toBe(Code.UNAVAILABLE);
    const left = await admin.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = 'switchboard-agent'",
      [db.name],
    );
    expect(left.rows[0]!.n).toBe(0);
    expect((await failure(collect(ds, "SELECT 1"))).code).toBe(Code.UNAVAILABLE);
  });
});

describe("openPostgres sessions", () => {
  it("hands the next statement a clean session: settings, advisory locks and temporary tables go", async () => {
    const ds = open({ readOnly: false, poolSize: 1 });
    const first = await collect(
      ds,
      "SELECT pg_backend_pid(), set_config('search_path', 'nowhere', false), pg_advisory_lock(7)::text",
    );
    await collect(ds, "CREATE TEMP TABLE left_behind (a int)");
    const next = await collect(
      ds,
      `SELECT pg_backend_pid(), current_setting('search_path'), to_regclass('left_behind')::text,
              (SELECT count(*)::int FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid())`,
    );
    // The same connection (one in the pool), as new.
    expect(next.rows).toEqual([[first.rows[0]![0], '"$user", public', null, 0]]);
    const other = await admin.query<{ got: boolean }>("SELECT pg_try_advisory_lock(7) AS got");
    expect(other.rows[0]?.got).toBe(true);
    await admin.query("SELECT pg_advisory_unlock(7)");
  });
});

describe("openPostgres privileges", () => {
  const FIX =
    "; a read_only datasource needs a least-privilege role (see docs/security.md#databases) or read_only = false";
  const suffix = (): string => Math.random().toString(16).slice(2, 10);

  it("refuses a read-only datasource whose role is a superuser: its first task, every one after, and check()", async () => {
    const ds = open({ url: db.url });
    // No check() has run: the new connection is checked before the statement.
    const q = await failure(collect(ds, "COPY (SELECT 1) TO PROGRAM 'true'"));
    expect(q.code).toBe(Code.FAILED_PRECONDITION);
    expect(q.message).toBe(`datasource "pgtest": user postgres is a superuser${FIX}`);
    expect((await failure(collect(ds, "SELECT 1"))).message).toBe(q.message);
    expect((await failure(ds.describeTable("people"))).message).toBe(q.message);
    const csv = ds.queryCsv!("SELECT 1", { signal: new AbortController().signal })[Symbol.asyncIterator]();
    expect((await failure(csv.next())).message).toBe(q.message);
    expect((await failure(ds.check())).message).toBe(q.message);
  });

  it("names membership of the server-file, program and signal roles, through other roles too", async () => {
    const group = `sbgrp_${suffix()}`;
    const boss = `sbsup_${suffix()}`;
    await admin.query(`CREATE ROLE ${group} NOLOGIN`);
    await admin.query(`GRANT pg_signal_backend, pg_execute_server_program TO ${group}`);
    await admin.query(`CREATE ROLE ${boss} NOLOGIN SUPERUSER`);
    const viaGroup = await createReadOnlyRole(db, { memberOf: [group] });
    const viaBoss = await createReadOnlyRole(db, { memberOf: [boss] });
    try {
      const g = await failure(open({ url: viaGroup.url }).check());
      expect(g.code).toBe(Code.FAILED_PRECONDITION);
      expect(g.message).toBe(
        `datasource "pgtest": user ${viaGroup.name} is a member of pg_execute_server_program, pg_signal_backend${FIX}`,
      );
      const b = await failure(open({ url: viaBoss.url }).check());
      expect(b.message).toBe(
        `datasource "pgtest": user ${viaBoss.name} is a member of superuser role ${boss}${FIX}`,
      );
    } finally {
      await Promise.all(opened.splice(0).map((ds) => ds.close()));
      await viaGroup.drop();
      await viaBoss.drop();
      await admin.query(`DROP ROLE ${group}`);
      await admin.query(`DROP ROLE ${boss}`);
    }
  });

  it("serves again once a check finds the role fixed", async () => {
    const role = await createReadOnlyRole(db, { memberOf: ["pg_read_server_files"] });
    try {
      const ds = open({ url: role.url });
      expect((await failure(ds.check())).message).toContain("is a member of pg_read_server_files");
      expect((await failure(collect(ds, "SELECT 1"))).code).toBe(Code.FAILED_PRECONDITION);
      await admin.query(`REVOKE pg_read_server_files FROM ${role.name}`);
      expect(await ds.check()).toEqual({});
      expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
    } finally {
      await Promise.all(opened.splice(0).map((ds) => ds.close()));
      await role.drop();
    }
  });

  it("serves a datasource that may write as a superuser, and says who it connects as", async () => {
    expect(await open({ readOnly: false }).check()).toEqual({
      privileged: { user: "postgres", privilege: "is a superuser" },
    });
    expect(await open().check()).toEqual({});
  });
});

describe("openPostgres describeTable", () => {
  it("gives columns, primary key and indexes from the catalog", async () => {
    const ds = open();
    const t = await ds.describeTable("people");
    expect(t.table).toBe("people");
    expect(t.columns).toEqual([
      { name: "id", type: "bigint", nullable: false, default: null },
      { name: "name", type: "text", nullable: false, default: null },
      { name: "nick", type: "character varying(20)", nullable: true, default: null },
      { name: "score", type: "numeric(12,3)", nullable: true, default: "0" },
      { name: "moods", type: "mood[]", nullable: true, default: null },
      { name: "created", type: "timestamp with time zone", nullable: false, default: "now()" },
    ]);
    expect(t.primaryKey).toEqual(["id"]);
    expect(t.indexes).toEqual([
      { name: "people_pkey", columns: ["id"], unique: true, primary: true },
      { name: "people_lower_nick", columns: ["lower(nick::text)", "id"], unique: false, primary: false },
      { name: "people_name", columns: ["name"], unique: true, primary: false },
    ]);
  });

  it("accepts schema-qualified and case-sensitive names", async () => {
    const ds = open();
    const pairs = await ds.describeTable("other.pairs");
    expect(pairs.primaryKey).toEqual(["b", "a"]);
    expect(pairs.columns.map((c) => [c.name, c.nullable])).toEqual([
      ["a", false],
      ["b", false],
      ["c", true],
    ]);
    expect((await ds.describeTable("MixedCase")).columns.map((c) => c.name)).toEqual(["x"]);
  });

  it("says NOT_FOUND for a schema-qualified table that does not exist", async () => {
    expect((await failure(open().describeTable("other.nope"))).code).toBe(Code.NOT_FOUND);
  });
});

describe("openPostgres queryCsv (COPY ... TO STDOUT)", () => {
  async function csvOf(
    ds: Datasource,
    sql: string,
    signal = new AbortController().signal,
  ): Promise<{
    kinds: string[];
    columns: ColumnInfo[];
    text: string;
    rowCount: number;
  }> {
    const out = { kinds: [] as string[], columns: [] as ColumnInfo[], text: "", rowCount: -1 };
    for await (const c of ds.queryCsv!(sql, { signal })) {
      out.kinds.push(c.kind);
      if (c.kind === "columns") out.columns = c.columns;
      else if (c.kind === "data") out.text += c.data.toString("utf8");
      else if (c.kind === "done") out.rowCount = c.rowCount;
    }
    return out;
  }

  it("streams PostgreSQL's CSV, byte for byte what the agent would encode from the rows", async () => {
    const ds = open();
    const sql = `SELECT g AS id, md5(g::text) AS h, CASE WHEN g % 3 = 0 THEN NULL WHEN g % 3 = 1 THEN '' ELSE 'a,"b"' END AS t,
                 (g * 1.5)::numeric(10,2) AS n FROM generate_series(1, 20000) g`;
    const got = await csvOf(ds, sql);
    expect(got.kinds[0]).toBe("columns");
    expect(got.kinds.at(-1)).toBe("done");
    expect(got.columns.map((c) => c.name)).toEqual(["id", "h", "t", "n"]);
    expect(got.rowCount).toBe(20_000);
    const { csvRows } = await import("../../../../common/sql-csv.js");
    expect(got.text).toBe(csvRows((await collect(ds, sql)).rows));
  });

  it("declines what it cannot print the same way: booleans, timestamps, JSON, writes, bad SQL", async () => {
    const ds = open({ readOnly: false });
    for (const sql of [
      "SELECT true AS b",
      "SELECT now() AS t",
      `SELECT '{"a":1}'::jsonb AS j`,
      "INSERT INTO nowhere VALUES (1)",
      "SELEC 1",
      "SELECT 1; SELECT 2",
    ]) {
      expect((await csvOf(ds, sql)).kinds).toEqual(["unsuitable"]);
    }
    // The connection it probed with is clean: the ordinary path runs next.
    expect((await collect(ds, "SELECT 7")).rows).toEqual([[7]]);
  });

  it("is read-only like query(): the probe and the COPY run in a read-only transaction", async () => {
    await admin.query("CREATE SEQUENCE IF NOT EXISTS csv_seq");
    // So that it is the read-only transaction, not a missing privilege, that stops nextval().
    await admin.query(`GRANT USAGE ON SEQUENCE csv_seq TO ${reader.name}`);
    const ds = open();
    // nextval() writes: planning it (the probe) passes, running it (the COPY) is refused by PostgreSQL.
    const e = await failure(csvOf(ds, "SELECT nextval('csv_seq') AS v"));
    expect(e.code).toBe(Code.PERMISSION_DENIED);
    expect(e.message).toMatch(/read-only/);
    expect((await collect(ds, "SELECT 9")).rows).toEqual([[9]]);
  });

  it("cancels a COPY in the server, and a consumer that leaves early gets its connection closed, not reused", async () => {
    const ds = open({ poolSize: 1 });
    const abort = new AbortController();
    const sql = "SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 50000000) g";
    const it = ds.queryCsv!(sql, { signal: abort.signal })[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ kind: "columns" });
    expect((await it.next()).value).toMatchObject({ kind: "data" });
    abort.abort();
    expect((await failure(it.next())).code).toBe(Code.CANCELLED);
    await waitFor(
      async () => {
        const r = await admin.query(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE query LIKE 'COPY (SELECT g, repeat%' AND state = 'active'",
        );
        return (r.rows[0] as { n: number }).n === 0;
      },
      { message: "the cancelled COPY to stop", timeout: 5_000, interval: 50 },
    );
    const early = ds.queryCsv!(sql, { signal: new AbortController().signal })[Symbol.asyncIterator]();
    await early.next();
    await early.next();
    await early.return?.(undefined);
    expect((await collect(ds, "SELECT 8")).rows).toEqual([[8]]);
  });
});
