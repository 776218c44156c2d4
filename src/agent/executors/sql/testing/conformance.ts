// One suite of what every SQL engine's datasource promises (the Datasource contract of ../datasource.ts),
// run by each engine's spec against its real server or file: rows in batches, parameters, read-only refusal,
// writes, cancel, statement timeout, errors that name the datasource, describeTable's NOT_FOUND, close().
// Where engines word things their own way the fixture says how; what only one engine does stays in its spec.
import { beforeAll, describe, expect, it } from "vitest";
import { Code } from "../../../../common/errors.js";
import { waitFor } from "../../../../common/wait-for.js";
import { DEFAULT_BATCH_ROWS, type Datasource, type DatasourceConfig } from "../datasource.js";
import { collect, pull } from "./collect.js";
import { failure } from "./failure.js";

/** What the suite needs of an engine. */
export interface EngineFixture {
  /** In the suite's title. */
  engine: string;
  /** The name open() gives its datasources: every message starts with `datasource "NAME"`. */
  name: string;
  /**
   * A datasource on the engine's test database. Read-only ones (the default) connect as a user that may
   * only read; readOnly: false as one that may write. The engine's spec closes what it opened.
   */
  open: (over?: Partial<DatasourceConfig>) => Datasource;
  /** The placeholder of the n-th (1-based) positional parameter: $n or ?. */
  param: (n: number) => string;
  /** A statement whose rows are the integers 1..n, one column, in order. */
  series: (n: number) => string;
  /** A statement that runs for minutes unless stopped, with marker in its text. */
  slow: (marker: string) => string;
  /** How many statements with marker in their text run now (SQLite: its live worker processes). */
  running: (marker: string) => Promise<number>;
  /** Settings of a server (or file) that is not there, with password "s3cret-pw" where the engine takes one. */
  unreachable: Partial<DatasourceConfig>;
  /** After aborting: the caller hears CANCELLED within answerMs, the statement is gone within stopMs. */
  cancel: { answerMs: number; stopMs: number };
  /** A statement_timeout, and the bound on how soon past it the statement fails. */
  timeout: { ms: number; withinMs: number; message: string | RegExp };
  /**
   * Once close() is called: the code of a statement that was running, of a query after it, and what check()
   * does (SQLite's opens the file afresh, and passes). The engines differ here; the suite pins each down.
   */
  closed: { running: Code; query: Code; check: Code | "passes" };
  /** The engine's words (after `datasource "NAME"`), and its codes, where the suite checks them. */
  says: {
    readOnlyWrite: { message: string | RegExp; engineCode: string };
    syntax: { message: string | RegExp; engineCode?: string };
    missingTable: string | RegExp;
    missingColumn: string | RegExp;
    tooFewParams?: string | RegExp;
    duplicateKey: string | RegExp;
    unreachable: RegExp;
  };
}

/** The table the suite reads and writes, created by a writer before its tests. */
const TABLE = "sb_conformance";

function expectMessage(actual: string, want: string | RegExp): void {
  if (typeof want === "string") expect(actual).toBe(want);
  else expect(actual).toMatch(want);
}

export function describeConformance(f: EngineFixture): void {
  describe(`${f.engine} datasource conformance`, () => {
    const p = f.param;

    beforeAll(async () => {
      const writer = f.open({ readOnly: false });
      try {
        await collect(writer, `CREATE TABLE ${TABLE} (id int PRIMARY KEY, label varchar(20) NOT NULL)`);
        await collect(writer, `INSERT INTO ${TABLE} (id, label) VALUES (1, 'one'), (2, 'two')`);
      } finally {
        await writer.close();
      }
    });

    it("checks its connection, and finds its reader no more than a reader", async () => {
      expect(await f.open().check()).toEqual({});
    });

    it("gives a table's rows in order, with the columns' names", async () => {
      const r = await collect(f.open(), `SELECT id, label FROM ${TABLE} ORDER BY id`);
      expect(r.columns.map((c) => c.name)).toEqual(["id", "label"]);
      expect(r.rows).toEqual([
        [1, "one"],
        [2, "two"],
      ]);
    });

    it("binds positional parameters", async () => {
      const r = await collect(f.open(), `SELECT label FROM ${TABLE} WHERE id = ${p(1)}`, [2]);
      expect(r.rows).toEqual([["two"]]);
    });

    it("gives the columns of an empty result, and no rows chunk", async () => {
      const r = await collect(f.open(), `SELECT id, label FROM ${TABLE} WHERE id < 0`);
      expect(r.kinds).toEqual(["columns", "done"]);
      expect(r.columns.map((c) => c.name)).toEqual(["id", "label"]);
      expect(r.batches).toEqual([]);
      expect(r.done).toEqual({ kind: "done", rowCount: 0, affectedRows: undefined });
    });

    it("yields rows in batches of batchRows (500 when not said), every one full but the last", async () => {
      const ds = f.open();
      const cases: [rows: number, batchRows: number | undefined][] = [
        [100_000, 500],
        [100_000, 30_000],
        [1_200, undefined],
        [1_050, 500],
        [1_000, 500],
        [200_000, 7_000],
        [10, 3],
      ];
      for (const [n, batchRows] of cases) {
        const r = await collect(ds, f.series(n), [], { batchRows });
        const size = batchRows ?? DEFAULT_BATCH_ROWS;
        const sizes = new Array<number>(Math.floor(n / size)).fill(size);
        if (n % size > 0) sizes.push(n % size);
        expect(r.batches.map((b) => b.length)).toEqual(sizes);
        expect(r.rowCount).toBe(n);
        expect(r.rows.findIndex(([v], i) => v !== i + 1)).toBe(-1);
        expect(r.rows.at(-1)).toEqual([n]);
      }
    });

    it("refuses a write on a read-only datasource with PERMISSION_DENIED, and writes nothing", async () => {
      const ds = f.open();
      const e = await failure(collect(ds, `INSERT INTO ${TABLE} (id, label) VALUES (3, 'three')`));
      expect(e.code).toBe(Code.PERMISSION_DENIED);
      expectMessage(e.message, f.says.readOnlyWrite.message);
      expect(e.engineCode).toBe(f.says.readOnlyWrite.engineCode);
      expect((await collect(ds, `SELECT count(*) FROM ${TABLE}`)).rows).toEqual([[2]]);
    });

    it("writes when not read-only and reports the affected rows; a duplicate key is INVALID_ARGUMENT", async () => {
      const ds = f.open({ readOnly: false });
      const insert = await collect(
        ds,
        `INSERT INTO ${TABLE} (id, label) VALUES (10, ${p(1)}), (11, ${p(2)})`,
        ["a", "b"],
      );
      expect(insert).toMatchObject({ columns: [], rows: [], rowCount: 0, affectedRows: 2 });
      const update = await collect(ds, `UPDATE ${TABLE} SET label = 'c' WHERE id >= 10`);
      expect(update.affectedRows).toBe(2);
      const del = await collect(ds, `DELETE FROM ${TABLE} WHERE id >= 10`);
      expect(del.affectedRows).toBe(2);
      const dup = await failure(collect(ds, `INSERT INTO ${TABLE} (id, label) VALUES (1, 'again')`));
      expect(dup.code).toBe(Code.INVALID_ARGUMENT);
      expectMessage(dup.message, f.says.duplicateKey);
    });

    it("does not start a statement whose signal is already aborted", async () => {
      const e = await failure(collect(f.open(), "SELECT 1", [], { signal: AbortSignal.abort() }));
      expect(e.code).toBe(Code.CANCELLED);
    });

    it("stops a running statement when the signal aborts, and answers afterwards", async () => {
      const ds = f.open({ poolSize: 1 });
      const marker = "sb_cancel_marker";
      const abort = new AbortController();
      const run = failure(collect(ds, f.slow(marker), [], { signal: abort.signal }));
      await waitFor(async () => (await f.running(marker)) === 1, {
        message: "the statement to run",
        timeout: 10_000,
        interval: 25,
      });
      const started = Date.now();
      abort.abort();
      const e = await run;
      expect(e.code).toBe(Code.CANCELLED);
      expect(e.message).toBe(`datasource "${f.name}": query cancelled`);
      expect(Date.now() - started).toBeLessThan(f.cancel.answerMs);
      await waitFor(async () => (await f.running(marker)) === 0, {
        message: "the statement to stop",
        timeout: f.cancel.stopMs,
        interval: 25,
      });
      expect(Date.now() - started).toBeLessThan(f.cancel.stopMs);
      expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
    });

    it("stops at the next pull when aborted between batches", async () => {
      const ds = f.open();
      const abort = new AbortController();
      let rows = 0;
      const e = await failure(
        (async () => {
          for await (const chunk of ds.query(f.series(100_000), [], {
            signal: abort.signal,
            batchRows: 100,
          })) {
            if (chunk.kind === "rows") rows += chunk.rows.length;
            if (rows >= 1000) abort.abort();
          }
        })(),
      );
      expect(e.code).toBe(Code.CANCELLED);
      expect(rows).toBe(1000);
      expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
    });

    it("ends a statement past statement_timeout with DEADLINE_EXCEEDED, and answers afterwards", async () => {
      const ds = f.open({ statementTimeoutMs: f.timeout.ms, poolSize: 1 });
      const started = Date.now();
      const e = await failure(collect(ds, f.slow("sb_timeout_marker")));
      expect(e.code).toBe(Code.DEADLINE_EXCEEDED);
      expectMessage(e.message, f.timeout.message);
      expect(Date.now() - started).toBeLessThan(f.timeout.withinMs);
      expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
    });

    it("fails a bad statement with INVALID_ARGUMENT and the engine's own message, and goes on serving", async () => {
      const ds = f.open();
      const syntax = await failure(collect(ds, "SELEC 1"));
      expect(syntax.code).toBe(Code.INVALID_ARGUMENT);
      expectMessage(syntax.message, f.says.syntax.message);
      if (f.says.syntax.engineCode !== undefined) expect(syntax.engineCode).toBe(f.says.syntax.engineCode);
      const table = await failure(collect(ds, "SELECT * FROM nowhere"));
      expect(table.code).toBe(Code.INVALID_ARGUMENT);
      expectMessage(table.message, f.says.missingTable);
      const column = await failure(collect(ds, `SELECT nope FROM ${TABLE}`));
      expect(column.code).toBe(Code.INVALID_ARGUMENT);
      expectMessage(column.message, f.says.missingColumn);
      const params = await failure(collect(ds, `SELECT ${p(1)}, ${p(2)}`, [1]));
      expect(params.code).toBe(Code.INVALID_ARGUMENT);
      if (f.says.tooFewParams !== undefined) expectMessage(params.message, f.says.tooFewParams);
      const two = await failure(collect(ds, "SELECT 1; SELECT 2"));
      expect(two.code).toBe(Code.INVALID_ARGUMENT);
      expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
    });

    it("reports a datasource it cannot reach as UNAVAILABLE, never with the password", async () => {
      const ds = f.open(f.unreachable);
      const check = await failure(ds.check());
      expect(check.code).toBe(Code.UNAVAILABLE);
      expect(check.message).toMatch(f.says.unreachable);
      expect(check.message).not.toContain("s3cret-pw");
      const query = await failure(collect(ds, "SELECT 1"));
      expect(query.code).toBe(Code.UNAVAILABLE);
      expect(query.message).not.toContain("s3cret-pw");
    });

    it("says NOT_FOUND when describing a table that does not exist", async () => {
      const e = await failure(f.open().describeTable("nope"));
      expect(e.code).toBe(Code.NOT_FOUND);
      expect(e.message).toBe(`datasource "${f.name}": table "nope" does not exist`);
    });

    it("close() stops what runs, and refuses statements afterwards", async () => {
      const ds = f.open();
      const marker = "sb_close_marker";
      const run = failure(collect(ds, f.slow(marker)));
      await waitFor(async () => (await f.running(marker)) === 1, {
        message: "the statement to run",
        timeout: 10_000,
        interval: 25,
      });
      await ds.close();
      expect((await run).code).toBe(f.closed.running);
      await waitFor(async () => (await f.running(marker)) === 0, {
        message: "the statement to stop",
        timeout: 2_000,
        interval: 25,
      });
      expect((await failure(collect(ds, "SELECT 1"))).code).toBe(f.closed.query);
      if (f.closed.check === "passes") expect(await ds.check()).toEqual({});
      else expect((await failure(ds.check())).code).toBe(f.closed.check);
    });

    it("a consumer that leaves early gives the connection back", async () => {
      const ds = f.open({ poolSize: 1 });
      const chunks = pull(ds, f.series(100_000), 100);
      expect((await chunks.next()).value).toMatchObject({ kind: "columns" });
      expect((await chunks.next()).value).toMatchObject({ kind: "rows" });
      await chunks.return?.(undefined);
      expect((await collect(ds, "SELECT 1")).rows).toEqual([[1]]);
    });
  });
}
