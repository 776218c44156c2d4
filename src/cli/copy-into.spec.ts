import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CliError, EXIT } from "./cli-error.js";
import type { ColumnInfo, JsonValue } from "../common/sql-result.js";
import { copyInto, postgresType, quotedTableName } from "./copy-into.js";

// The real server, in a database of our own; the test fails (not skips) when PostgreSQL is down.
const ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres";
const DB = `sb_copy_into_${process.pid}_${randomBytes(4).toString("hex")}`;
const URL = `postgres://postgres@127.0.0.1:5432/${DB}`;
let db: pg.Client;

beforeAll(async () => {
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE "${DB}"`);
  } finally {
    await admin.end();
  }
  db = new pg.Client({ connectionString: URL });
  await db.connect();
});

afterAll(async () => {
  await db?.end();
  const admin = new pg.Client({ connectionString: ADMIN_URL });
  await admin.connect();
  try {
    await admin.query(`DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`);
  } finally {
    await admin.end();
  }
});

const col = (name: string, type: string): ColumnInfo => ({ name, type, nullable: true });

/** The batches as a source that hands them over asynchronously, as the network does. */
async function* batches(...list: JsonValue[][][]): AsyncGenerator<JsonValue[][]> {
  for (const b of list) {
    await new Promise((r) => setImmediate(r));
    yield b;
  }
}

async function exists(table: string): Promise<boolean> {
  const r = await db.query<{ ok: boolean }>("SELECT to_regclass($1) IS NOT NULL AS ok", [table]);
  return r.rows[0]!.ok;
}

/** Polls until no connection of copyInto is left open (each call ends its own). */
async function noCopyConnections(): Promise<void> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const r = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'switchboard query --into'",
    );
    if (r.rows[0]!.n === 0) return;
    if (Date.now() > deadline) throw new Error(`${r.rows[0]!.n} copy connections still open`);
    await new Promise((res) => setTimeout(res, 50));
  }
}

describe("copyInto", () => {
  it("creates the table from PostgreSQL source types and copies every value as it was", async () => {
    const columns = [
      col("id", "int8"),
      col("name", "text"),
      col("score", "numeric(12,3)"),
      col("seen", "timestamp with time zone"),
      col("data", "jsonb"),
      col("pic", "bytea"),
      col("tags", "integer[]"),
      col("labels", "text[]"),
      col("ok", "boolean"),
      col("id", "int4"),
    ];
    const pic = Buffer.from([0, 255, 92, 9, 10]);
    const tricky = 'tab\there\nnew line\\back\\slash\r "quoted" \\N';
    const r = await copyInto({
      url: URL,
      table: "pg_copy",
      columns,
      rows: batches(
        [
          [
            "9007199254740993",
            "Zoë 🚀 東京",
            "12.500",
            "2024-01-02T03:04:05.123+00:00",
            { a: [1, 2], s: "x\ty" },
            pic.toString("base64"),
            [1, null, 3],
            ["a,b", 'q"uote', null, "back\\slash", "{brace}"],
            true,
            7,
          ],
        ],
        [
          [2, tricky, null, null, "just a string", null, [], [], false, null],
          [3, null, null, null, null, null, null, null, null, null],
        ],
      ),
      signal: new AbortController().signal,
    });
    expect(r).toEqual({ rowCount: 3, created: true });

    const types = await db.query<{ attname: string; type: string }>(
      `SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute
        WHERE attrelid = 'pg_copy'::regclass AND attnum > 0 ORDER BY attnum`,
    );
    expect(types.rows.map((t) => `${t.attname} ${t.type}`)).toEqual([
      "id bigint",
      "name text",
      "score numeric(12,3)",
      "seen timestamp with time zone",
      "data jsonb",
      "pic bytea",
      "tags bigint[]",
      "labels text[]",
      "ok boolean",
      "id_2 integer",
    ]);
    const got = await db.query(
      `SELECT id::text, name, score::text, seen, data, pic, tags::text, labels, ok, id_2 FROM pg_copy ORDER BY id`,
    );
    expect(got.rows[0]).toEqual({
      id: "2",
      name: tricky,
      score: null,
      seen: null,
      data: "just a string",
      pic: null,
      tags: "{}",
      labels: [],
      ok: false,
      id_2: null,
    });
    expect(got.rows[1]).toEqual({
      id: "3",
      name: null,
      score: null,
      seen: null,
      data: null,
      pic: null,
      tags: null,
      labels: null,
      ok: null,
      id_2: null,
    });
    expect(got.rows[2]).toEqual({
      id: "9007199254740993",
      name: "Zoë 🚀 東京",
      score: "12.500",
      seen: new Date("2024-01-02T03:04:05.123Z"),
      data: { a: [1, 2], s: "x\ty" },
      pic,
      tags: "{1,NULL,3}",
      labels: ["a,b", 'q"uote', null, "back\\slash", "{brace}"],
      ok: true,
      id_2: 7,
    });
    await noCopyConnections();
  });

  it("maps MariaDB and SQLite types, e.g. bigint unsigned and blob", async () => {
    const columns = [
      col("big", "bigint unsigned"),
      col("price", "decimal(10,2)"),
      col("label", "varchar(20)"),
      col("at", "datetime"),
      col("doc", "json"),
      col("raw", "blob"),
      col("flag", "tinyint(1)"),
      col("n", "INTEGER"),
      col("f", "REAL"),
      col("anything", ""),
    ];
    const r = await copyInto({
      url: URL,
      table: "maria_copy",
      columns,
      rows: batches([
        [
          "18446744073709551615",
          "12.30",
          "row 1",
          "2024-05-06T07:08:09",
          { k: [true, null] },
          Buffer.from("hi\n").toString("base64"),
          true,
          "9223372036854775807",
          1.5,
          "free text",
        ],
      ]),
      signal: new AbortController().signal,
    });
    expect(r).toEqual({ rowCount: 1, created: true });
    const got = await db.query(
      `SELECT big::text, price::text, label, at::text, doc, raw, flag, n::text, f, anything FROM maria_copy`,
    );
    expect(got.rows[0]).toEqual({
      big: "18446744073709551615",
      price: "12.30",
      label: "row 1",
      at: "2024-05-06 07:08:09",
      doc: { k: [true, null] },
      raw: Buffer.from("hi\n"),
      flag: 1,
      n: "9223372036854775807",
      f: 1.5,
      anything: "free text",
    });
  });

  it("fills an existing table (created=false), writing values as its columns want them", async () => {
    await db.query("CREATE SCHEMA IF NOT EXISTS stage");
    await db.query(`CREATE TABLE stage."Items" (id integer, payload bytea, doc jsonb, note text)`);
    await db.query(`INSERT INTO stage."Items" VALUES (0, NULL, NULL, 'before')`);
    const r = await copyInto({
      url: URL,
      table: 'Stage."Items"',
      columns: [col("id", "int"), col("payload", "varbinary(16)"), col("doc", "json"), col("note", "text")],
      rows: batches([[1, Buffer.from([1, 2, 3]).toString("base64"), "a json string", "after"]]),
      signal: new AbortController().signal,
    });
    expect(r).toEqual({ rowCount: 1, created: false });
    const got = await db.query(`SELECT id, payload, doc, note FROM stage."Items" ORDER BY id`);
    expect(got.rows).toEqual([
      { id: 0, payload: null, doc: null, note: "before" },
      { id: 1, payload: Buffer.from([1, 2, 3]), doc: "a json string", note: "after" },
    ]);
  });

  it("rolls everything back when the source fails mid-stream, and rethrows the source's error", async () => {
    const broken = new Error("the agent went away");
    async function* rows(): AsyncGenerator<JsonValue[][]> {
      yield [[1], [2]];
      yield [[3]];
      await new Promise((r) => setTimeout(r, 5));
      throw broken;
    }
    await expect(
      copyInto({
        url: URL,
        table: "half_done",
        columns: [col("n", "int8")],
        rows: rows(),
        signal: new AbortController().signal,
      }),
    ).rejects.toBe(broken);
    expect(await exists("half_done")).toBe(false);
    await noCopyConnections();
  });

  it("rolls back a value PostgreSQL rejects, and says what it rejected", async () => {
    await db.query("CREATE TABLE strict_ints (n bigint)");
    await db.query("INSERT INTO strict_ints VALUES (42)");
    let closed = false;
    async function* rows(): AsyncGenerator<JsonValue[][]> {
      try {
        yield [[1], [2]];
        yield [["not a number"]];
        for (;;) {
          await new Promise((r) => setTimeout(r, 5));
          yield [[4]];
        }
      } finally {
        closed = true;
      }
    }
    const err = await copyInto({
      url: URL,
      table: "strict_ints",
      columns: [col("n", "int8")],
      rows: rows(),
      signal: new AbortController().signal,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).message).toMatch(
      /^could not copy into strict_ints: invalid input syntax for type bigint: "not a number" \(COPY strict_ints, line 3/,
    );
    const got = await db.query("SELECT n FROM strict_ints");
    expect(got.rows).toEqual([{ n: "42" }]);
    // The source was told to stop: it does not keep producing for nobody.
    await expect.poll(() => closed, { timeout: 5000 }).toBe(true);
    await noCopyConnections();
  });

  it("rolls back when aborted mid-stream, and stops the source", async () => {
    const abort = new AbortController();
    let sent = 0;
    let closed = false;
    async function* rows(): AsyncGenerator<JsonValue[][]> {
      try {
        for (;;) {
          yield Array.from({ length: 100 }, (_, i): JsonValue[] => [sent + i, "x".repeat(100)]);
          sent += 100;
          if (sent === 300) abort.abort();
          await new Promise((r) => setTimeout(r, 5));
        }
      } finally {
        closed = true;
      }
    }
    const err = await copyInto({
      url: URL,
      table: "aborted",
      columns: [col("n", "int8"), col("s", "text")],
      rows: rows(),
      signal: abort.signal,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).exitCode).toBe(EXIT.interrupted);
    expect(await exists("aborted")).toBe(false);
    await expect.poll(() => closed, { timeout: 5000 }).toBe(true);
    await noCopyConnections();
  });

  it("returns at once on abort even while the source is stuck", async () => {
    await db.query("CREATE TABLE stuck (n bigint)");
    const abort = new AbortController();
    async function* rows(): AsyncGenerator<JsonValue[][]> {
      yield [[1]];
      await new Promise(() => {});
    }
    setTimeout(() => abort.abort(), 200);
    const started = Date.now();
    await expect(
      copyInto({ url: URL, table: "stuck", columns: [col("n", "int8")], rows: rows(), signal: abort.signal }),
    ).rejects.toThrow(/cancelled/);
    expect(Date.now() - started).toBeLessThan(3000);
    expect((await db.query("SELECT count(*)::int AS n FROM stuck")).rows[0]).toEqual({ n: 0 });
    await noCopyConnections();
  });

  it("never shows the URL's password", async () => {
    const err = await copyInto({
      url: "postgres://postgres:s3cr3t-pw@127.0.0.1:1/nowhere",
      table: "t",
      columns: [col("n", "int8")],
      rows: batches([[1]]),
      signal: new AbortController().signal,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(CliError);
    expect((err as CliError).message).toMatch(/^could not connect to the --into database: .*ECONNREFUSED/);
    expect(`${(err as CliError).message} ${(err as CliError).hint ?? ""}`).not.toContain("s3cr3t");
  });
});

describe("postgresType", () => {
  it.each([
    ["int8", "bigint"],
    ["numeric(12,3)", "numeric(12,3)"],
    ["timestamp with time zone", "timestamp with time zone"],
    ["timestamptz", "timestamp with time zone"],
    ["timestamp(3) without time zone", "timestamp(3)"],
    ["jsonb", "jsonb"],
    ["bytea", "bytea"],
    ["integer[]", "bigint[]"],
    ["_text", "text[]"],
    ["uuid", "uuid"],
    ["character varying(20)", "text"],
    ["bigint unsigned", "numeric(20,0)"],
    ["int unsigned", "bigint"],
    ["decimal(65,30) unsigned", "numeric(65,30)"],
    ["varchar(255)", "text"],
    ["longtext", "text"],
    ["double", "double precision"],
    ["float", "double precision"],
    ["datetime(6)", "timestamp(6)"],
    ["date", "date"],
    ["time", "time"],
    ["json", "jsonb"],
    ["varbinary(16)", "bytea"],
    ["longblob", "bytea"],
    ["tinyint(1)", "smallint"],
    ["year", "integer"],
    ["bit(8)", "bytea"],
    ["enum('a','b')", "text"],
    ["INTEGER", "bigint"],
    ["UNSIGNED BIG INT", "bigint"],
    ["NATIVE CHARACTER(70)", "text"],
    ["CLOB", "text"],
    ["DOUBLE PRECISION", "double precision"],
    ["FLOAT", "double precision"],
    ["NUMERIC", "numeric"],
    ["DECIMAL(10,5)", "numeric(10,5)"],
    ["", "text"],
    ["geometry", "text"],
    ["text); DROP TABLE x; --", "text"],
  ])("%s -> %s", (source, want) => {
    expect(postgresType(source)).toBe(want);
  });
});

describe("quotedTableName", () => {
  it.each([
    ["copied", '"copied"'],
    ["Staging.Orders", '"staging"."orders"'],
    ['"Mixed Case"."t.1"', '"Mixed Case"."t.1"'],
    ['stage."Say ""hi"""', '"stage"."Say ""hi"""'],
  ])("%s -> %s", (raw, want) => {
    expect(quotedTableName(raw)).toBe(want);
  });

  it.each(["a.b.c", "", "a.", '"open', 'a"b', '"a"b'])("refuses %j", (raw) => {
    expect(() => quotedTableName(raw)).toThrow(CliError);
  });
});
