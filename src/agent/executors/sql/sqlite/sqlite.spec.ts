// The SQLite driver against real database files in a temporary directory: the conformance suite every
// engine passes, then what is SQLite's own, with its worker processes as the operating system sees them
// (their CPU time, a SIGKILL from outside).
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createRequire } from "node:module";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Code, SwitchboardError } from "../../../../common/errors.js";
import { type Datasource, type DatasourceConfig, type JsonValue } from "../datasource.js";
import { collect } from "../testing/collect.js";
import { describeConformance } from "../testing/conformance.js";
import { failure } from "../testing/failure.js";
import { openSqlite } from "./sqlite.js";
import { SqliteWorker, SqliteWorkerPool } from "./sqlite-worker.js";
import { SQLITE_WORKER_SOURCE } from "./sqlite-worker-source.js";
import { waitFor } from "../../../../common/wait-for.js";

let dir: string;
let shopPath: string;
const opened: Datasource[] = [];

/** Counts to 1e10: runs for minutes, whether its rows are read one by one or counted inside SQLite. */
const ENDLESS = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1e10)";

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "sqlite-spec-"));
  shopPath = join(dir, "shop.db");
  const db = new Database(shopPath);
  db.exec(`
    CREATE TABLE items (
      id INTEGER PRIMARY KEY,
      name VARCHAR(20) NOT NULL,
      price NUMERIC(10,2) DEFAULT 0,
      note
    );
    CREATE UNIQUE INDEX items_name ON items (name);
    CREATE INDEX items_lower_note ON items (lower(note), price);
    CREATE TABLE lines (order_id INTEGER NOT NULL, line TEXT, qty INT, PRIMARY KEY (line, order_id));
    CREATE TABLE kinds (v);
    CREATE VIEW cheap AS SELECT id, name FROM items WHERE price < 5;
    INSERT INTO items (id, name, price, note) VALUES (1, 'apple', 1.5, NULL), (2, 'pear', 7, 'ripe');
  `);
  const insert = db.prepare("INSERT INTO kinds VALUES (?)");
  insert.safeIntegers(true);
  for (const v of [
    9223372036854775807n,
    -9223372036854775808n,
    9007199254740991n,
    9007199254740992n,
    -42n,
    0.25,
    Infinity,
    "héllo 🎉 漢字",
    Buffer.from([0, 1, 2, 255]),
    null,
  ]) {
    insert.run(v);
  }
  db.close();
});

afterEach(async () => {
  await Promise.all(opened.splice(0).map((ds) => ds.close()));
});

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function open(over: Partial<DatasourceConfig> = {}): Datasource {
  const ds = openSqlite({
    name: "shop",
    driver: "sqlite",
    path: shopPath,
    readOnly: true,
    statementTimeoutMs: 0,
    poolSize: 2,
    maxRows: 0,
    connectTimeoutMs: 5000,
    ...over,
  });
  opened.push(ds);
  return ds;
}

/** A fresh writable copy of nothing: an empty database file of the test's own. */
function emptyDatabase(name: string): string {
  const path = join(dir, name);
  new Database(path).close();
  return path;
}

function procStat(pid: number): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after "(comm)": state, ppid, ... utime at 11, stime at 12.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined;
  }
}

/** The live SQLite worker processes of this test process. */
function workerPids(): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = procStat(Number(entry));
    if (!stat || Number(stat[1]) !== process.pid || stat[0] === "Z") continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes("sqlite worker")) pids.push(Number(entry));
    } catch {
      // It exited while we looked.
    }
  }
  return pids;
}

function cpuTicks(pid: number): number {
  const stat = procStat(pid);
  if (!stat) throw new Error(`process ${pid} is gone`);
  return Number(stat[11]) + Number(stat[12]);
}

describeConformance({
  engine: "sqlite",
  name: "shop",
  open,
  param: () => "?",
  series: (n) =>
    `WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ${n}) SELECT x FROM c`,
  slow: (marker) => `${ENDLESS} SELECT count(*) AS ${marker} FROM c`,
  // Each test opens its own datasource and closes it after: a live worker is one running its statement.
  running: () => Promise.resolve(workerPids().length),
  unreachable: { path: "/nonexistent/sb-conformance.db", password: "s3cret-pw" },
  cancel: { answerMs: 1_000, stopMs: 5_000 },
  timeout: { ms: 300, withinMs: 1_500, message: 'datasource "shop": statement timeout (0.3s) exceeded' },
  closed: { running: Code.CANCELLED, query: Code.UNAVAILABLE, check: "passes" },
  says: {
    readOnlyWrite: {
      message: 'datasource "shop" is read-only: attempt to write a readonly database',
      engineCode: "SQLITE_READONLY",
    },
    syntax: { message: 'datasource "shop": near "SELEC": syntax error' },
    missingTable: 'datasource "shop": no such table: nowhere',
    missingColumn: 'datasource "shop": no such column: nope',
    tooFewParams: 'datasource "shop": Too few parameter values were provided',
    duplicateKey: 'datasource "shop": UNIQUE constraint failed: sb_conformance.id',
    unreachable: /^datasource "shop": cannot open sqlite database \/nonexistent\/sb-conformance\.db: /,
  },
});

describe("values", () => {
  it("round-trips every storage class", async () => {
    const r = await collect(open(), "SELECT v FROM kinds ORDER BY rowid");
    expect(r.rows.map((row) => row[0])).toEqual([
      "9223372036854775807",
      "-9223372036854775808",
      9007199254740991,
      "9007199254740992",
      -42,
      0.25,
      "Infinity",
      "héllo 🎉 漢字",
      Buffer.from([0, 1, 2, 255]).toString("base64"),
      null,
    ]);
    expect(r.rowCount).toBe(10);
  });

  it("reports declared types, and nullability where a column comes from a table", async () => {
    const ds = open();
    const r = await collect(
      ds,
      "SELECT id, name, price, note, id + 1 AS next, 'x' AS lit FROM items ORDER BY id",
    );
    expect(r.columns).toEqual([
      { name: "id", type: "integer", nullable: false },
      { name: "name", type: "varchar(20)", nullable: false },
      { name: "price", type: "numeric(10,2)", nullable: true },
      { name: "note", type: "", nullable: true },
      { name: "next", type: "", nullable: null },
      { name: "lit", type: "", nullable: null },
    ]);
    expect(r.rows).toEqual([
      [1, "apple", 1.5, null, 2, "x"],
      [2, "pear", 7, "ripe", 3, "x"],
    ]);
    const view = await collect(ds, "SELECT * FROM cheap");
    expect(view.columns).toEqual([
      { name: "id", type: "integer", nullable: false },
      { name: "name", type: "varchar(20)", nullable: false },
    ]);
    expect(view.rows).toEqual([[1, "apple"]]);
  });

  it("binds positional parameters: integers as INTEGER, booleans as 1/0, objects as JSON text", async () => {
    const ds = open();
    const r = await collect(ds, "SELECT ?, typeof(?), ?, typeof(?), ?, ?, ?, ?", [
      7,
      7,
      2.5,
      2.5,
      "x",
      null,
      true,
      { a: [1, "b"] },
    ]);
    expect(r.rows).toEqual([[7, "integer", 2.5, "real", "x", null, 1, '{"a":[1,"b"]}']]);
  });
});

describe("streaming", () => {
  it("reads no further than the consumer asked; a consumer that stops early frees the worker", async () => {
    const ds = open({ poolSize: 1 });
    const chunks = ds.query(`${ENDLESS} SELECT x FROM c`, [], {
      signal: new AbortController().signal,
      batchRows: 500,
    });
    const it = chunks[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ kind: "columns" });
    expect((await it.next()).value).toMatchObject({ kind: "rows", rows: { length: 500 } });
    const [pid] = workerPids();
    expect(pid).toBeDefined();
    // Unbounded reading would keep the worker busy (close to 100 ticks a second); it waits for the consumer
    // instead. The new process's own start-up work (compiling, collecting) settles first, and the bound
    // leaves room for a machine under load: idle is 0-2 ticks, reading on even a starved core is far more.
    await new Promise((r) => setTimeout(r, 300));
    const before = cpuTicks(pid!);
    await new Promise((r) => setTimeout(r, 1000));
    expect(cpuTicks(pid!) - before).toBeLessThanOrEqual(15);
    const second = await it.next();
    expect(second.value).toMatchObject({ kind: "rows" });
    expect((second.value as { rows: JsonValue[][] }).rows[0]).toEqual([501]);
    await it.return?.();
    // The only worker is free again and answers at once, without a new process.
    expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
    expect(workerPids()).toEqual([pid]);
  });
});

describe("writes", () => {
  it("refuses ATTACH and VACUUM INTO, which would reach other files", async () => {
    const ds = open({ path: emptyDatabase("attach.db"), readOnly: false });
    const other = join(dir, "other.db");
    for (const sql of [
      `ATTACH '${shopPath}' AS shop`,
      `/* x */ -- y\n attach database ? as o`,
      "VACUUM INTO ?",
    ]) {
      const err = await failure(collect(ds, sql, sql.includes("?") ? [other] : []));
      expect(err.code).toBe(Code.PERMISSION_DENIED);
      expect(err.message).toMatch(/^datasource "shop": (ATTACH|VACUUM INTO) is not allowed: /);
    }
    expect(existsSync(other)).toBe(false);
    expect((await collect(ds, "VACUUM")).affectedRows).toBe(0);
  });

  it("writes when not read-only, with the count of affected rows", async () => {
    const ds = open({ path: emptyDatabase("writes.db"), readOnly: false });
    expect((await collect(ds, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)")).affectedRows).toBe(
      0,
    );
    const insert = await collect(ds, "INSERT INTO t (v) VALUES (?), (?), (?)", ["a", "b", "c"]);
    expect(insert).toMatchObject({ columns: [], rows: [], rowCount: 0, affectedRows: 3 });
    const update = await collect(ds, "UPDATE t SET v = v || '!' WHERE id >= 2 RETURNING id");
    expect(update.rows).toEqual([[2], [3]]);
    expect(update.affectedRows).toBe(2);
    expect((await collect(ds, "SELECT count(*) FROM t")).affectedRows).toBeUndefined();
    const dup = await failure(collect(ds, "INSERT INTO t (v) VALUES ('a')"));
    expect(dup.code).toBe(Code.INVALID_ARGUMENT);
    expect(dup.message).toBe('datasource "shop": UNIQUE constraint failed: t.v');
  });
});

describe("sessions", () => {
  it("hands the next statement a clean connection: pragmas, temporary tables and open transactions go", async () => {
    const path = emptyDatabase("sessions.db");
    const setup = new Database(path);
    setup.exec("CREATE TABLE t (a)");
    setup.close();
    const ds = open({ path, readOnly: false, poolSize: 1 });
    await collect(ds, "PRAGMA case_sensitive_like = 1");
    await collect(ds, "CREATE TEMP TABLE left_behind (a)");
    await collect(ds, "BEGIN");
    // Inside the transaction left open, this read would keep its lock after the statement.
    const next = await collect(
      ds,
      "SELECT 'a' LIKE 'A', (SELECT count(*) FROM temp.sqlite_master), (SELECT count(*) FROM t)",
    );
    expect(next.rows).toEqual([[1, 0, 0]]);
    const writer = new Database(path, { timeout: 0 });
    try {
      writer.prepare("INSERT INTO t VALUES (1)").run();
    } finally {
      writer.close();
    }
    // A statement that only read keeps the connection, and rows written meanwhile are there to see.
    expect((await collect(ds, "SELECT count(*) FROM t")).rows).toEqual([[1]]);
  });
});

describe("cancel and timeout", () => {
  it("fails with INTERNAL when a worker dies under a statement, and replaces it", async () => {
    const ds = open({ poolSize: 1 });
    const pending = failure(collect(ds, `${ENDLESS} SELECT count(*) FROM c`));
    await waitFor(() => workerPids().length === 1, { message: "a worker", timeout: 5000 });
    const [pid] = workerPids();
    await new Promise((r) => setTimeout(r, 100));
    process.kill(pid!, "SIGKILL");
    const err = await pending;
    expect(err.code).toBe(Code.INTERNAL);
    expect(err.message).toContain("the sqlite worker process was killed by SIGKILL");
    expect((await collect(ds, "SELECT 2")).rows).toEqual([[2]]);
    expect(workerPids()).not.toContain(pid);
  });

  it("makes a statement wait while all workers are busy, and cancels it while waiting", async () => {
    const ds = open({ poolSize: 1 });
    const first = new AbortController();
    const long = failure(collect(ds, `${ENDLESS} SELECT count(*) FROM c`, [], { signal: first.signal }));
    const waiting = new AbortController();
    const queued = failure(collect(ds, "SELECT 1", [], { signal: waiting.signal }));
    const next = collect(ds, "SELECT 3");
    await new Promise((r) => setTimeout(r, 200));
    waiting.abort();
    expect((await queued).code).toBe(Code.CANCELLED);
    first.abort();
    expect((await long).code).toBe(Code.CANCELLED);
    expect((await next).rows).toEqual([[3]]);
  });

  it("close() cancels running statements and ends every worker", async () => {
    const ds = openSqlite({
      name: "shop",
      driver: "sqlite",
      path: shopPath,
      readOnly: true,
      statementTimeoutMs: 0,
      poolSize: 2,
      maxRows: 0,
      connectTimeoutMs: 5000,
    });
    // One worker busy with a statement, one idle.
    const pending = failure(collect(ds, `${ENDLESS} SELECT count(*) FROM c`));
    await waitFor(() => workerPids().length === 1, { message: "a worker", timeout: 5000 });
    await collect(ds, "SELECT 1");
    expect(workerPids()).toHaveLength(2);
    await ds.close();
    expect((await pending).code).toBe(Code.CANCELLED);
    expect(workerPids()).toEqual([]);
    expect((await failure(collect(ds, "SELECT 1"))).code).toBe(Code.UNAVAILABLE);
  });
});

describe("errors", () => {
  it("fails a statement that goes wrong as it runs (bad JSON) with INVALID_ARGUMENT", async () => {
    const ds = open();
    const runtime = await failure(collect(ds, "SELECT json_extract('{not json', '$')"));
    expect(runtime.code).toBe(Code.INVALID_ARGUMENT);
    expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
  });

  it("reports a missing database file as UNAVAILABLE, and recovers once it exists", async () => {
    const path = join(dir, "later.db");
    const ds = open({ path });
    const check = await failure(ds.check());
    expect(check.code).toBe(Code.UNAVAILABLE);
    expect(check.message).toBe(
      `datasource "shop": cannot open sqlite database ${path}: unable to open database file`,
    );
    const query = await failure(collect(ds, "SELECT 1"));
    expect(query.code).toBe(Code.UNAVAILABLE);
    expect(query.message).toContain(`cannot open sqlite database ${path}`);
    expect((await failure(ds.describeTable("items"))).code).toBe(Code.UNAVAILABLE);
    new Database(path).close();
    await ds.check();
    expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
  });

  it("reports a file that is not a database as UNAVAILABLE", async () => {
    const path = join(dir, "junk.db");
    writeFileSync(path, "this is not a database, ".repeat(100));
    const ds = open({ path });
    const check = await failure(ds.check());
    expect(check.code).toBe(Code.UNAVAILABLE);
    expect(check.message).toContain("file is not a database");
    expect((await failure(collect(ds, "SELECT 1"))).message).toBe(
      `datasource "shop": cannot open sqlite database ${path}: file is not a database`,
    );
  });
});

describe("describeTable", () => {
  it("gives columns, the rowid primary key and indexes", async () => {
    expect(await open().describeTable("items")).toEqual({
      table: "items",
      columns: [
        { name: "id", type: "integer", nullable: false, default: null },
        { name: "name", type: "varchar(20)", nullable: false, default: null },
        { name: "price", type: "numeric(10,2)", nullable: true, default: "0" },
        { name: "note", type: "", nullable: true, default: null },
      ],
      primaryKey: ["id"],
      indexes: [
        { name: "items_lower_note", columns: ["<expression>", "price"], unique: false, primary: false },
        { name: "items_name", columns: ["name"], unique: true, primary: false },
      ],
    });
  });

  it("gives a composite primary key in key order, and accepts main.TABLE", async () => {
    const meta = await open().describeTable("main.lines");
    expect(meta.table).toBe("main.lines");
    expect(meta.primaryKey).toEqual(["line", "order_id"]);
    expect(meta.indexes).toEqual([
      { name: "sqlite_autoindex_lines_1", columns: ["line", "order_id"], unique: true, primary: true },
    ]);
    expect(meta.columns.map((c) => [c.name, c.nullable])).toEqual([
      ["order_id", false],
      ["line", true],
      ["qty", true],
    ]);
  });

  it("says NOT_FOUND for a table of a schema that does not exist", async () => {
    expect((await failure(open().describeTable("elsewhere.items"))).code).toBe(Code.NOT_FOUND);
  });
});

describe("worker processes", () => {
  it("reads a batch per request and resets an open statement on end", async () => {
    const worker = new SqliteWorker({ path: shopPath, readOnly: true });
    try {
      const first = await worker.request({
        op: "query",
        sql: `${ENDLESS} SELECT x FROM c`,
        params: [],
        batchRows: 3,
      });
      expect(first).toEqual({
        type: "batch",
        columns: [{ name: "x", type: "", nullable: null }],
        rows: [[1], [2], [3]],
        done: null,
      });
      expect(await worker.request({ op: "next" })).toEqual({
        type: "batch",
        rows: [[4], [5], [6]],
        done: null,
      });
      worker.post({ op: "end" });
      const again = await worker.request({
        op: "query",
        sql: "SELECT name FROM items",
        params: [],
        batchRows: 1,
      });
      expect(again).toMatchObject({ rows: [["apple"]], done: null });
      expect(await worker.request({ op: "next" })).toEqual({ type: "batch", rows: [["pear"]], done: null });
      expect(await worker.request({ op: "next" })).toEqual({
        type: "batch",
        rows: [],
        done: { rowCount: 2 },
      });
    } finally {
      await worker.close();
    }
  });

  it("kills itself, statement and all, when its parent dies", async () => {
    // A plain node parent (as the compiled agent would be) starts the worker and is then SIGKILLed.
    const parent = spawn(
      process.execPath,
      [
        "-e",
        `const { spawn } = require("node:child_process");
        const w = spawn(process.execPath, ["-e", process.env.WORKER_SOURCE, String(process.pid)], {
          stdio: ["ignore", "ignore", "inherit", "ipc"],
          serialization: "advanced",
        });
        const { DB_PATH: path, BETTER_SQLITE3: betterSqlite3 } = process.env;
        w.send({ op: "init", path, readOnly: true, betterSqlite3 });
        w.send({ op: "query", sql: process.env.SQL, params: [], batchRows: 10 });
        console.log(w.pid);`,
      ],
      {
        stdio: ["ignore", "pipe", "inherit"],
        env: {
          ...process.env,
          WORKER_SOURCE: SQLITE_WORKER_SOURCE,
          DB_PATH: shopPath,
          BETTER_SQLITE3: createRequire(import.meta.url).resolve("better-sqlite3"),
          SQL: `${ENDLESS} SELECT count(*) FROM c`,
        },
      },
    );
    let out = "";
    parent.stdout.on("data", (b: Buffer) => (out += b.toString()));
    await waitFor(() => out.includes("\n"), { message: "the worker's pid", timeout: 5000 });
    const pid = Number(out.trim());
    const alive = (): boolean => {
      const state = procStat(pid)?.[0];
      return state !== undefined && state !== "Z";
    };
    // It is running the statement: using CPU.
    const before = cpuTicks(pid);
    await waitFor(() => cpuTicks(pid) > before + 5, { message: "the statement to run", timeout: 5000 });
    parent.kill("SIGKILL");
    await waitFor(() => !alive(), { message: "the orphaned worker to die", timeout: 5000 });
  });

  it("a pool ends a worker that stays idle, and starts one again when needed", async () => {
    const pool = new SqliteWorkerPool("shop", 1, { path: shopPath, readOnly: true }, 200);
    const cancelled = (): Error => new Error("cancelled");
    try {
      const worker = await pool.acquire(new AbortController().signal, cancelled);
      const pid = worker.pid;
      pool.release(worker);
      expect(workerPids()).toEqual([pid]);
      await waitFor(() => pool.workers === 0 && workerPids().length === 0, {
        message: "the idle worker to end",
        timeout: 5000,
      });
      const again = await pool.acquire(new AbortController().signal, cancelled);
      expect(again.pid).not.toBe(pid);
      expect(await again.request({ op: "query", sql: "SELECT 5", params: [], batchRows: 10 })).toMatchObject({
        rows: [[5]],
      });
      pool.release(again);
    } finally {
      await pool.close(new Error("closed"));
    }
    expect(workerPids()).toEqual([]);
  });

  it("fails its request, without harm to this process, when it cannot start", async () => {
    const worker = new SqliteWorker({
      path: shopPath,
      readOnly: true,
      betterSqlite3: join(dir, "missing.js"),
    });
    const err = await worker.request({ op: "query", sql: "SELECT 1", params: [], batchRows: 1 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SwitchboardError);
    expect((err as SwitchboardError).code).toBe(Code.UNAVAILABLE);
    expect((err as Error).message).toMatch(/exited with code 1: sqlite worker failed: .*Cannot find module/s);
    expect(worker.alive).toBe(false);
    await worker.close();
  });
});
