// The MySQL/MariaDB driver against the real MariaDB on 127.0.0.1:3306: the conformance suite every engine
// passes, then what is MariaDB's own: values and type names, pacing by socket backpressure, DDL and the
// read-write escape refused, dropped connections, clean sessions, grants, describeTable. Read-only
// datasources connect as a least-privilege user, as the README says they must; the others as root.
import mysql from "mysql2/promise";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createMariadbDatabase,
  createReadOnlyUser,
  type MariadbDatabase,
  type MariadbTestUser,
} from "../testing/mariadb-server.js";
import { Code } from "../../../../common/errors.js";
import { type Datasource, type DatasourceConfig, type JsonValue } from "../datasource.js";
import { collect, pull } from "../testing/collect.js";
import { describeConformance } from "../testing/conformance.js";
import { failure } from "../testing/failure.js";
import { openMysql } from "./mysql.js";
import { waitFor } from "../../../../common/wait-for.js";

let db: MariadbDatabase;
let reader: MariadbTestUser;
let admin: mysql.Connection;
const opened: Datasource[] = [];

function open(over: Partial<DatasourceConfig> = {}): Datasource {
  const ds = openMysql({
    name: "maria",
    driver: "mysql",
    url: over.readOnly === false ? db.url : reader.url,
    readOnly: true,
    statementTimeoutMs: 0,
    poolSize: 4,
    maxRows: 0,
    connectTimeoutMs: 5_000,
    ...over,
  });
  opened.push(ds);
  return ds;
}

/** Statements of other connections running now whose text contains marker. */
async function running(marker: string): Promise<number> {
  const [rows] = await admin.query(
    `SELECT COUNT(*) AS n FROM information_schema.PROCESSLIST
      WHERE COMMAND = 'Query' AND INFO LIKE ? AND ID <> CONNECTION_ID()`,
    [`%${marker}%`],
  );
  return Number((rows as { n: number }[])[0]!.n);
}

beforeAll(async () => {
  db = await createMariadbDatabase();
  admin = await mysql.createConnection({ uri: db.url, multipleStatements: true });
  // The driver reads TIMESTAMP in UTC; store them in UTC too so the expected text does not depend on the host.
  await admin.query("SET time_zone = '+00:00'");
  await admin.query(`
    CREATE TABLE types (
      id int NOT NULL PRIMARY KEY,
      ti tinyint, i int, bi bigint, bu bigint unsigned, d decimal(12,3), f float, db double,
      vc varchar(20), tx text, ch char(3), dt date, dtm datetime(6), ts timestamp(3) NULL, tm time, y year,
      j json, bl blob, vb varbinary(8), bt bit(8), e enum('red','green'), b tinyint(1)
    );
    INSERT INTO types VALUES
      (1, -128, 2147483647, 9007199254740993, 18446744073709551615, 123456789.125, 1.5, 3.141592653589793,
       'hello', 'Zoë 🚀 東京 — ünïcödé', 'abc', '2024-02-29', '2024-01-02 03:04:05.123456',
       '2024-01-02 03:04:05.123', '-12:34:56', 2024, '{"a": [1, 2, {"b": null}], "n": 1.25e3}',
       x'00ff10', x'cafe', b'10100101', 'green', 1),
      (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL);
    CREATE TABLE users (
      id bigint NOT NULL,
      org int NOT NULL,
      email varchar(100) NOT NULL,
      name varchar(50) DEFAULT 'anon',
      score decimal(8,2),
      PRIMARY KEY (org, id),
      UNIQUE KEY users_email (email),
      KEY users_name_score (name, score)
    );
    CREATE TABLE notes (id int PRIMARY KEY, body text);
    INSERT INTO notes VALUES (1, 'first');
  `);
  reader = await createReadOnlyUser(db);
});

afterAll(async () => {
  await Promise.all(opened.map((ds) => ds.close()));
  await admin?.end();
  await reader?.drop();
  await db?.drop();
});

describeConformance({
  engine: "mariadb",
  name: "maria",
  open,
  param: () => "?",
  series: (n) => `SELECT seq FROM seq_1_to_${n}`,
  slow: (marker) => `SELECT SLEEP(600) AS ${marker}`,
  running,
  unreachable: {
    url: undefined,
    host: "127.0.0.1",
    port: 1,
    user: "root",
    password: "s3cret-pw",
    database: "x",
  },
  cancel: { answerMs: 2_000, stopMs: 2_000 },
  // MariaDB interrupts SLEEP with error 1969 when max_statement_time is hit (not the 1 a KILL may leave).
  timeout: {
    ms: 500,
    withinMs: 4_000,
    message: /^datasource "maria": statement timeout \(0\.5s\) exceeded: .*max_statement_time/,
  },
  closed: { running: Code.CANCELLED, query: Code.CANCELLED, check: Code.UNAVAILABLE },
  says: {
    // Its user may only read, so the server refuses by privilege (1142) before the read-only session (1792)
    // would: that session is the second wall, behind the account the agent insists on.
    readOnlyWrite: { message: /^datasource "maria": INSERT command denied to user/, engineCode: "1142" },
    syntax: {
      message: /^datasource "maria": You have an error in your SQL syntax; .*near 'SELEC 1'/,
      engineCode: "1064",
    },
    missingTable: /^datasource "maria": Table '.*\.nowhere' doesn't exist/,
    missingColumn: /^datasource "maria": Unknown column 'nope'/,
    duplicateKey: /^datasource "maria": Duplicate entry '1' for key/,
    unreachable: /^datasource "maria": cannot connect to mysql at 127\.0\.0\.1:1\/x: .*ECONNREFUSED/,
  },
});

describe("mysql datasource", () => {
  it("round-trips the common MariaDB types with their meaning kept", async () => {
    const r = await collect(open(), "SELECT * FROM types ORDER BY id");
    expect(r.rows).toEqual([
      [
        1,
        -128,
        2147483647,
        "9007199254740993",
        "18446744073709551615",
        "123456789.125",
        1.5,
        3.141592653589793,
        "hello",
        "Zoë 🚀 東京 — ünïcödé",
        "abc",
        "2024-02-29",
        "2024-01-02T03:04:05.123456",
        "2024-01-02T03:04:05.123",
        "-12:34:56",
        2024,
        { a: [1, 2, { b: null }], n: 1250 },
        Buffer.from([0x00, 0xff, 0x10]).toString("base64"),
        Buffer.from([0xca, 0xfe]).toString("base64"),
        Buffer.from([0xa5]).toString("base64"),
        "green",
        1,
      ],
      [2, ...new Array<null>(21).fill(null)],
    ]);
    // Every value survives JSON as it is (no BigInt, Buffer or Date left over).
    expect(JSON.parse(JSON.stringify(r.rows))).toEqual(r.rows);
  });

  it("converts computed values: safe integers as numbers, big ones as text, zero dates untouched", async () => {
    const r = await collect(
      open(),
      `SELECT 1 + 1 AS two, CAST(18446744073709551615 AS UNSIGNED) AS big, -9007199254740991 AS low,
              12.50 * 2 AS dec_value, CAST('0000-00-00 00:00:00' AS DATETIME) AS zero, 'é' AS e, NULL AS n`,
    );
    expect(r.rows).toEqual([
      [2, "18446744073709551615", -9007199254740991, "25.00", "0000-00-00 00:00:00", "é", null],
    ]);
  });

  it("names each column's type as the engine does, with nullability", async () => {
    const r = await collect(open(), "SELECT * FROM types WHERE id = 0");
    expect(r.rows).toEqual([]);
    expect(r.columns.map((c) => [c.name, c.type, c.nullable])).toEqual([
      ["id", "int", false],
      ["ti", "tinyint", true],
      ["i", "int", true],
      ["bi", "bigint", true],
      ["bu", "bigint unsigned", true],
      ["d", "decimal(12,3)", true],
      ["f", "float", true],
      ["db", "double", true],
      ["vc", "varchar(20)", true],
      ["tx", "text", true],
      ["ch", "char(3)", true],
      ["dt", "date", true],
      ["dtm", "datetime(6)", true],
      ["ts", "timestamp(3)", true],
      ["tm", "time", true],
      ["y", "year", true],
      ["j", "json", true],
      ["bl", "blob", true],
      ["vb", "varbinary(8)", true],
      ["bt", "bit(8)", true],
      ["e", "enum", true],
      ["b", "tinyint(1)", true],
    ]);
    const computed = await collect(
      open(),
      "SELECT CONCAT(vc, 'x') AS c, 1 + 1 AS two FROM types WHERE id = 1",
    );
    expect(computed.columns).toEqual([
      { name: "c", type: "varchar(21)", nullable: null },
      // MariaDB marks this expression NOT NULL.
      { name: "two", type: "int", nullable: false },
    ]);
    const seq = await collect(open(), "SELECT seq FROM seq_1_to_10");
    expect(seq.columns).toEqual([{ name: "seq", type: "bigint unsigned", nullable: false }]);
  });

  it("binds ? parameters as values, objects and arrays as JSON text", async () => {
    const r = await collect(
      open(),
      // JSON_EXTRACT's result is JSON to MariaDB, so it arrives parsed.
      "SELECT ? AS s, ? AS n, ? AS nothing, ? AS yes, JSON_EXTRACT(?, '$.a[1]') AS a1, ? AS quote, '?' AS literal",
      ["Zoë 🚀 東京", 42.5, null, true, { a: [1, 2] }, 'it\'s \\ "quoted"'],
    );
    expect(r.rows).toEqual([["Zoë 🚀 東京", "42.5", null, 1, 2, 'it\'s \\ "quoted"', "?"]]);
    // Without parameters a question mark in the text is left alone.
    expect((await collect(open(), "SELECT '?' AS q")).rows).toEqual([["?"]]);
  });

  it("reads only as fast as the consumer pulls, and stops the statement when the consumer leaves", async () => {
    const ds = open();
    const marker = "pace_marker_7fc1";
    const chunks = pull(ds, `SELECT seq AS ${marker} FROM seq_1_to_50000000`, 1_000);
    expect((await chunks.next()).value).toMatchObject({ kind: "columns" });
    const first = await chunks.next();
    expect(first.value).toMatchObject({ kind: "rows" });
    // The consumer stalls: the server is held back by the unread socket instead of finishing the result.
    await new Promise((r) => setTimeout(r, 500));
    expect(await running(marker)).toBe(1);
    const second = await chunks.next();
    expect((second.value as { rows: JsonValue[][] }).rows[0]).toEqual([1_001]);
    await chunks.return?.(undefined);
    await waitFor(async () => (await running(marker)) === 0, {
      message: "the abandoned statement to stop",
      timeout: 3_000,
      interval: 25,
    });
    // The datasource goes on serving.
    expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
  });

  it("refuses DDL and a read-write escape on a read-only datasource", async () => {
    const ds = open();
    // Its user may only read, so the server refuses by privilege (1142) before the read-only session
    // (1792) would: that session is the second wall, behind the account the agent insists on.
    for (const ddl of ["DROP TABLE notes", "CREATE TABLE other (a int)", "TRUNCATE notes"]) {
      const e = await failure(collect(ds, ddl));
      expect(e.code).toBe(Code.PERMISSION_DENIED);
      expect(e.message).toMatch(/command denied|read-only/);
    }
    const escape = await failure(collect(ds, "SET STATEMENT tx_read_only=0 FOR DROP TABLE notes"));
    expect(escape.code).toBe(Code.PERMISSION_DENIED);
    expect(escape.message).toMatch(/^datasource "maria" is read-only/);
    const [rows] = await admin.query("SELECT COUNT(*) AS n FROM notes");
    expect(Number((rows as { n: number }[])[0]!.n)).toBe(1);
    // The session the next statement gets is still read-only.
    expect((await failure(collect(ds, "INSERT INTO notes VALUES (3, 'no')"))).code).toBe(
      Code.PERMISSION_DENIED,
    );
  });

  it("reports a refused login as UNAVAILABLE, without the password", async () => {
    const url = new URL(db.url);
    url.username = "sb_nobody";
    url.password = "s3cret-pw";
    const denied = await failure(open({ url: url.toString() }).check());
    expect(denied.code).toBe(Code.UNAVAILABLE);
    expect(denied.message).toMatch(/Access denied for user 'sb_nobody'/);
    expect(denied.message).not.toContain("s3cret-pw");
  });

  it("reports a connection the server drops mid-statement as UNAVAILABLE and recovers", async () => {
    const ds = open();
    const marker = "dropped_marker_c03f";
    const run = collect(ds, `SELECT SLEEP(30) AS ${marker}`);
    run.catch(() => undefined); // it may fail before failure() below attaches: not an unhandled rejection
    await waitFor(async () => (await running(marker)) === 1, {
      message: "SLEEP(30) to run",
      timeout: 5_000,
      interval: 25,
    });
    const [rows] = await admin.query(
      "SELECT ID AS id FROM information_schema.PROCESSLIST WHERE INFO LIKE ?",
      [`SELECT SLEEP(30) AS ${marker}%`],
    );
    await admin.query(`KILL CONNECTION ${Number((rows as { id: number }[])[0]!.id)}`);
    const e = await failure(run);
    expect(e.code).toBe(Code.UNAVAILABLE);
    expect(e.message).toMatch(
      /^datasource "maria": the connection to mysql at 127\.0\.0\.1:3306\/sbtest_\w+ was lost: /,
    );
    expect((await collect(ds, "SELECT 5")).rows).toEqual([[5]]);
  });

  it("ends a slow consumer's statement at statement_timeout while its rows wait unread", async () => {
    const ds = open({ statementTimeoutMs: 300 });
    const chunks = pull(ds, "SELECT seq FROM seq_1_to_50000000", 100);
    await chunks.next();
    await chunks.next();
    await new Promise((r) => setTimeout(r, 600));
    const e = await failure(
      (async () => {
        for (let r = await chunks.next(); !r.done; r = await chunks.next());
      })(),
    );
    expect(e.code).toBe(Code.DEADLINE_EXCEEDED);
    expect((await collect(ds, "SELECT 6")).rows).toEqual([[6]]);
  });

  it("describes a table from the catalog: columns, primary key in key order, indexes", async () => {
    const ds = open();
    const meta = await ds.describeTable("users");
    expect(meta).toEqual({
      table: "users",
      columns: [
        { name: "id", type: "bigint(20)", nullable: false, default: null },
        { name: "org", type: "int(11)", nullable: false, default: null },
        { name: "email", type: "varchar(100)", nullable: false, default: null },
        { name: "name", type: "varchar(50)", nullable: true, default: "'anon'" },
        { name: "score", type: "decimal(8,2)", nullable: true, default: null },
      ],
      primaryKey: ["org", "id"],
      indexes: [
        { name: "PRIMARY", columns: ["org", "id"], unique: true, primary: true },
        { name: "users_email", columns: ["email"], unique: true, primary: false },
        { name: "users_name_score", columns: ["name", "score"], unique: false, primary: false },
      ],
    });
    const qualified = await ds.describeTable(`${db.name}.notes`);
    expect(qualified.table).toBe(`${db.name}.notes`);
    expect(qualified.primaryKey).toEqual(["id"]);
    expect((await ds.describeTable("`notes`")).columns.map((c) => c.name)).toEqual(["id", "body"]);
  });
});

describe("mysql datasource sessions", () => {
  it("hands the next statement a clean session: variables and GET_LOCK locks go", async () => {
    const ds = open({ poolSize: 1 });
    const lock = `sb_spec_lock_${process.pid}`;
    const first = await collect(ds, `SELECT CONNECTION_ID(), GET_LOCK('${lock}', 0)`);
    expect(first.rows[0]![1]).toBe(1);
    await collect(ds, "SET @left_behind = 1");
    await collect(ds, "SET SESSION sql_mode = 'ANSI_QUOTES'");
    const next = await collect(
      ds,
      `SELECT CONNECTION_ID(), @left_behind, @@session.sql_mode, IS_USED_LOCK('${lock}')`,
    );
    // The same connection (one in the pool), as new.
    expect(next.rows[0]![0]).toBe(first.rows[0]![0]);
    expect(next.rows[0]![1]).toBeNull();
    expect(next.rows[0]![2]).not.toBe("ANSI_QUOTES");
    expect(next.rows[0]![3]).toBeNull();
  });
});

describe("mysql datasource privileges", () => {
  const FIX =
    "; a read_only datasource needs a least-privilege role (see docs/security.md#databases) or read_only = false";
  const suffix = (): string => Math.random().toString(16).slice(2, 10);

  it("refuses a read-only datasource as root: its first task, every one after, and check()", async () => {
    const ds = open({ url: db.url });
    // No check() has run: the new connection is checked before the statement.
    const q = await failure(collect(ds, "SET GLOBAL max_connect_errors = @@GLOBAL.max_connect_errors"));
    expect(q.code).toBe(Code.FAILED_PRECONDITION);
    expect(q.message).toMatch(/^datasource "maria": user root@\S+ holds ALL PRIVILEGES ON \*\.\*/);
    expect(q.message.endsWith(FIX)).toBe(true);
    expect((await failure(collect(ds, "SELECT 1"))).message).toBe(q.message);
    expect((await failure(ds.describeTable("notes"))).message).toBe(q.message);
    expect((await failure(ds.check())).message).toBe(q.message);
  });

  it("finds FILE granted through nested roles, and leaves the session's role as it was", async () => {
    const outer = `sbrole_${suffix()}`;
    const inner = `sbrole_${suffix()}`;
    await admin.query(`CREATE ROLE ${outer}; CREATE ROLE ${inner}`);
    await admin.query(`GRANT FILE ON *.* TO ${inner}; GRANT ${inner} TO ${outer}`);
    const user = await createReadOnlyUser(db, { grants: [outer] });
    try {
      const e = await failure(open({ url: user.url }).check());
      expect(e.code).toBe(Code.FAILED_PRECONDITION);
      expect(e.message).toMatch(
        new RegExp(`^datasource "maria": user ${user.name}@\\S+ holds FILE ON \\*\\.\\*;`),
      );
      // The same role granted to a reader: the check sets each role to read its grants, and then sets back the
      // one the session started with.
      await admin.query(`REVOKE FILE ON *.* FROM ${inner}; GRANT SELECT ON \`${db.name}\`.* TO ${inner}`);
      await admin.query(`SET DEFAULT ROLE ${outer} FOR '${user.name}'@'%'`);
      const ds = open({ url: user.url, poolSize: 1 });
      expect(await ds.check()).toEqual({});
      expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
    } finally {
      await user.drop();
      await admin.query(`DROP ROLE ${outer}; DROP ROLE ${inner}`);
    }
  });

  it("serves again once a check finds the write privilege revoked", async () => {
    const user = await createReadOnlyUser(db, { grants: [`INSERT ON \`${db.name}\`.notes`] });
    try {
      const ds = open({ url: user.url });
      const e = await failure(ds.check());
      expect(e.message).toContain(`holds INSERT ON \`${db.name}\`.\`notes\`;`);
      expect((await failure(collect(ds, "SELECT 1"))).code).toBe(Code.FAILED_PRECONDITION);
      await admin.query(`REVOKE INSERT ON \`${db.name}\`.notes FROM '${user.name}'@'%'`);
      expect(await ds.check()).toEqual({});
      expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
    } finally {
      await user.drop();
    }
  });

  it("serves a datasource that may write as root, and says who it connects as", async () => {
    const found = await open({ readOnly: false }).check();
    expect(found.privileged?.user).toMatch(/^root@/);
    expect(found.privileged?.privilege).toMatch(/^holds ALL PRIVILEGES ON \*\.\*/);
    expect(await open().check()).toEqual({});
  });
});
