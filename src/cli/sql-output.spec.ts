import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { CliError } from "./cli-error.js";
import type { ColumnInfo, JsonValue, TableMeta } from "../common/sql-result.js";
import { uniqueNames } from "../common/sql-result.js";
import { createRowSink, displayWidth, tableDescription, type Format } from "./sql-output.js";

/** A stream that keeps what it is given, one entry per write. */
function collector(): { out: Writable; chunks: string[]; text: () => string } {
  const chunks: string[] = [];
  const out = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString("utf8"));
      cb();
    },
  });
  return { out, chunks, text: () => chunks.join("") };
}

const col = (name: string, type: string): ColumnInfo => ({ name, type, nullable: true });

// A small result with what breaks naive printers: Unicode, NULL, quotes, commas, newlines, JSON values,
// integers beyond 2^53 as strings, and a column name used twice.
const COLUMNS = [
  col("id", "int8"),
  col("name", "text"),
  col("score", "numeric(12,3)"),
  col("data", "jsonb"),
  col("note", "text"),
  col("id", "int4"),
  col("flag", "bool"),
];
const ROWS: JsonValue[][] = [
  [1, "Ada", "12.500", { a: [1, 2] }, 'say "hi", ok', 7, true],
  ["9007199254740993", "Zoë 🚀 東京", null, null, "line1\nline2\r\n", null, false],
  [-3, "", "-0.001", [1, "x"], "tab\there", 0, null],
];

async function render(format: Format, batches: JsonValue[][][], color = false): Promise<string[]> {
  const { out, chunks } = collector();
  const sink = createRowSink(format, out, { color });
  await sink.begin(COLUMNS);
  let n = 0;
  for (const b of batches) {
    await sink.rows(b);
    n += b.length;
  }
  await sink.end({ rowCount: n });
  return chunks;
}

describe("csv", () => {
  const want =
    "id,name,score,data,note,id,flag\n" +
    '1,Ada,12.500,"{""a"":[1,2]}","say ""hi"", ok",7,true\n' +
    '9007199254740993,Zoë 🚀 東京,,,"line1\nline2\r\n",,false\n' +
    // An empty string is "" and NULL nothing, as in PostgreSQL's CSV.
    '-3,"",-0.001,"[1,""x""]",tab\there,0,\n';

  it("writes RFC 4180 with the header, quoting only what needs it", async () => {
    expect((await render("csv", [ROWS])).join("")).toBe(want);
  });

  it("writes one chunk per batch, whatever the batches", async () => {
    const chunks = await render("csv", [[ROWS[0]!], [ROWS[1]!, ROWS[2]!]]);
    expect(chunks.join("")).toBe(want);
    expect(chunks.length).toBe(3);
  });

  it("prints the spec's example row", async () => {
    const { out, text } = collector();
    const sink = createRowSink("csv", out, { color: false });
    await sink.begin(["id", "name", "score", "born", "data"].map((n) => col(n, "text")));
    await sink.rows([["9007199254740993", "Zoë 🚀 東京", null, null, null]]);
    await sink.end({ rowCount: 1 });
    expect(text()).toBe("id,name,score,born,data\n9007199254740993,Zoë 🚀 東京,,,\n");
  });

  it("quotes a header name with a comma, and prints nothing for a statement without columns", async () => {
    const a = collector();
    const sink = createRowSink("csv", a.out, { color: false });
    await sink.begin([col("a,b", "text")]);
    await sink.end({ rowCount: 0 });
    expect(a.text()).toBe('"a,b"\n');
    const b = collector();
    const none = createRowSink("csv", b.out, { color: false });
    await none.begin([]);
    await none.end({ rowCount: 0 });
    expect(b.text()).toBe("");
  });
});

describe("ndjson and json", () => {
  const objects = [
    '{"id":1,"name":"Ada","score":"12.500","data":{"a":[1,2]},"note":"say \\"hi\\", ok","id_2":7,"flag":true}',
    '{"id":"9007199254740993","name":"Zoë 🚀 東京","score":null,"data":null,"note":"line1\\nline2\\r\\n","id_2":null,"flag":false}',
    '{"id":-3,"name":"","score":"-0.001","data":[1,"x"],"note":"tab\\there","id_2":0,"flag":null}',
  ];

  it("ndjson: one object per line, a duplicate column suffixed so no value is lost", async () => {
    const chunks = await render("ndjson", [[ROWS[0]!, ROWS[1]!], [ROWS[2]!]]);
    expect(chunks.join("")).toBe(objects.join("\n") + "\n");
    expect(chunks.length).toBe(2);
    const parsed = chunks
      .join("")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, JsonValue>);
    expect(parsed[1]).toEqual({
      id: "9007199254740993",
      name: "Zoë 🚀 東京",
      score: null,
      data: null,
      note: "line1\nline2\r\n",
      id_2: null,
      flag: false,
    });
  });

  it("json: a streamed array that parses as a whole", async () => {
    const text = (await render("json", [[ROWS[0]!], [ROWS[1]!, ROWS[2]!]])).join("");
    expect(text).toBe("[\n" + objects.join(",\n") + "\n]\n");
    expect((JSON.parse(text) as unknown[]).length).toBe(3);
  });

  it("json: an empty result is []", async () => {
    expect((await render("json", [])).join("")).toBe("[]\n");
    expect((await render("ndjson", [])).join("")).toBe("");
  });

  it("keeps column order for names that look like numbers", async () => {
    const { out, text } = collector();
    const sink = createRowSink("ndjson", out, { color: false });
    await sink.begin([col("b", "int"), col("1", "int"), col("b_2", "int"), col("b", "int")]);
    await sink.rows([[1, 2, 3, 4]]);
    expect(text()).toBe('{"b":1,"1":2,"b_2":3,"b_3":4}\n');
  });

  it("uniqueNames suffixes repeats and avoids names already taken", () => {
    expect(uniqueNames(["a", "a", "a", "b"])).toEqual(["a", "a_2", "a_3", "b"]);
    expect(uniqueNames(["a", "a_2", "a"])).toEqual(["a", "a_2", "a_3"]);
  });
});

describe("table", () => {
  const columns = [
    col("id", "int8"),
    col("name", "text"),
    col("score", "numeric(12,3)"),
    col("note", "text"),
  ];
  const rows: JsonValue[][] = [
    [1, "Ada", "12.500", null],
    ["9007199254740993", "東京", null, "a\nb"],
  ];

  async function table(cols: ColumnInfo[], batches: JsonValue[][][], color = false): Promise<string> {
    const { out, text } = collector();
    const sink = createRowSink("table", out, { color });
    await sink.begin(cols);
    let n = 0;
    for (const b of batches) {
      await sink.rows(b);
      n += b.length;
    }
    await sink.end({ rowCount: n });
    return text();
  }

  it("aligns columns by display width, numbers to the right, NULL and escaped newlines shown", async () => {
    expect(await table(columns, [rows])).toBe(
      [
        "              id  name   score  note",
        "----------------  ----  ------  ----",
        "               1  Ada   12.500  NULL",
        "9007199254740993  東京    NULL  a\\nb",
        "(2 rows)",
        "",
      ].join("\n"),
    );
  });

  it("colors the header and dims NULL when color is on", async () => {
    const text = await table(columns, [rows], true);
    const cyan = (t: string): string => `\x1b[36m${t}\x1b[39m`;
    expect(text.split("\n")[0]).toBe(
      `              ${cyan("id")}  ${cyan("name")}   ${cyan("score")}  ${cyan("note")}`,
    );
    expect(text.split("\n")[2]).toBe("               1  Ada   12.500  \x1b[2mNULL\x1b[22m");
  });

  it("says (1 row), and prints only the header for no rows", async () => {
    expect(await table([col("x", "text")], [[["a"]]])).toBe("x\n-\na\n(1 row)\n");
    expect(await table([col("x", "text")], [])).toBe("x\n-\n(0 rows)\n");
    expect(await table([], [])).toBe("");
  });

  it("sizes columns from the first 200 rows and cuts later, longer cells with …", async () => {
    const sample = Array.from({ length: 200 }, (_, i): JsonValue[] => [i, "ab"]);
    const later: JsonValue[][] = [
      [200, "abcdefghij"],
      [201, "東京東京東京"],
      [202, "abcde"],
    ];
    const text = await table(
      [col("n", "int"), col("value", "text")],
      [sample.slice(0, 150), sample.slice(150), later],
    );
    const lines = text.split("\n");
    expect(lines[0]).toBe("  n  value");
    expect(lines[2]).toBe("  0  ab");
    expect(lines[202]).toBe("200  abcd…");
    expect(lines[203]).toBe("201  東京…");
    expect(lines[204]).toBe("202  abcde");
    expect(lines[205]).toBe("(203 rows)");
  });

  it("caps a column at 60 characters", async () => {
    const long = "x".repeat(100);
    const text = await table([col("v", "text")], [[[long], [{ k: "y".repeat(80) }]]]);
    const lines = text.split("\n");
    expect(lines[1]).toBe("-".repeat(60));
    expect(lines[2]).toBe("x".repeat(59) + "…");
    expect(lines[3]).toBe('{"k":"' + "y".repeat(53) + "…");
  });

  it("escapes control characters, so data cannot drive the terminal", async () => {
    const text = await table([col("v", "text")], [[["a\tb\x1b[31mred"]]]);
    expect(text.split("\n")[2]).toBe("a\\tb\\x1b[31mred");
  });

  it("measures wide and combining characters", () => {
    expect(displayWidth("Zoë 🚀 東京")).toBe(11);
    expect(displayWidth("e\u0301")).toBe(1);
  });
});

describe("backpressure and closed pipes", () => {
  it("waits for 'drain' before taking the next batch", async () => {
    const pending: (() => void)[] = [];
    const out = new Writable({
      highWaterMark: 64,
      write(_chunk, _enc, cb) {
        pending.push(() => cb());
      },
    });
    const sink = createRowSink("csv", out, { color: false });
    await sink.begin([col("v", "text")]);
    const batch = Array.from({ length: 50 }, (_, i): JsonValue[] => [`value ${i}`]);
    let settled = false;
    const p = sink.rows(batch).then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 20));
    expect(settled).toBe(false);
    expect(out.writableLength).toBeGreaterThan(64);
    // The reader catches up: every write done, 'drain' follows, and the batch is taken.
    while (pending.length > 0) pending.shift()!();
    await p;
    expect(settled).toBe(true);
  });

  it("streams many batches through a slow reader holding at most one batch", async () => {
    let maxBuffered = 0;
    let received = "";
    const out = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _enc, cb) {
        received += chunk.toString("utf8");
        setTimeout(cb, 1);
      },
    });
    const sink = createRowSink("ndjson", out, { color: false });
    await sink.begin([col("n", "int"), col("s", "text")]);
    const batch = Array.from({ length: 100 }, (_, i): JsonValue[] => [i, "x".repeat(20)]);
    const batchText = batch.map((row) => JSON.stringify({ n: row[0], s: row[1] }) + "\n").join("");
    for (let i = 0; i < 30; i++) {
      await sink.rows(batch);
      maxBuffered = Math.max(maxBuffered, out.writableLength);
    }
    await sink.end({ rowCount: 3000 });
    await new Promise<void>((resolve) => out.end(resolve));
    expect(received).toBe(batchText.repeat(30));
    // Each rows() returned only once its batch had left the buffer: never two batches queued.
    expect(maxBuffered).toBeLessThanOrEqual(batchText.length);
  });

  it("turns EPIPE into a one-line CliError, not an unhandled 'error'", async () => {
    const out = new Writable({
      highWaterMark: 16,
      write(_chunk, _enc, cb) {
        setTimeout(() => cb(Object.assign(new Error("write EPIPE"), { code: "EPIPE" })), 1);
      },
    });
    const sink = createRowSink("csv", out, { color: false });
    const failure = await sink
      .begin([col("a-long-column-name", "text")])
      .then(() => sink.rows([["x"]]))
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(failure).toBeInstanceOf(CliError);
    expect((failure as CliError).message).toBe("the reader closed the output before the result was complete");
    await expect(sink.rows([["y"]])).rejects.toBeInstanceOf(CliError);
  });

  it("reports a failing file as a CliError with the system's reason", async () => {
    const out = new Writable({
      write(_chunk, _enc, cb) {
        cb(Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" }));
      },
    });
    const sink = createRowSink("ndjson", out, { color: false });
    await sink.begin([col("a", "int")]);
    await expect(sink.rows([[1]])).rejects.toThrow(
      "could not write the result: ENOSPC: no space left on device",
    );
    await expect(sink.rows([[2]])).rejects.toThrow(
      "could not write the result: ENOSPC: no space left on device",
    );
  });
});

describe("--table: the table's description", () => {
  const META: TableMeta = {
    table: "cities",
    columns: [
      { name: "id", type: "integer", nullable: false, default: null },
      { name: "name", type: "text", nullable: false, default: "'?'" },
      { name: "population", type: "integer", nullable: true, default: null },
    ],
    primaryKey: ["id"],
    indexes: [
      { name: "cities_name", columns: ["name"], unique: true, primary: false },
      { name: "cities_pop", columns: ["population", "name"], unique: false, primary: false },
    ],
  };
  const DESCRIPTION =
    "table cities\n" +
    "  column      type     null  default  key\n" +
    "  id          integer  no             primary key\n" +
    "  name        text     no    '?'\n" +
    "  population  integer  yes\n" +
    "  primary key (id)\n" +
    "  unique index cities_name (name)\n" +
    "  index cities_pop (population, name)\n";

  it("describes columns, types, nullability, defaults, the primary key and the indexes", () => {
    expect(tableDescription(META)).toBe(DESCRIPTION);
    const composite = tableDescription({ ...META, primaryKey: ["id", "name"], indexes: [] });
    expect(composite).toContain("  id          integer  no             primary key (1)\n");
    expect(composite).toContain("  primary key (id, name)\n  no indexes\n");
    expect(tableDescription({ ...META, primaryKey: [] })).toContain("  no primary key\n");
  });

  it("escapes control characters in names from the catalog", () => {
    const hostile = tableDescription({ ...META, table: "t\x1b[2J", indexes: [] });
    expect(hostile).toContain("table t\\x1b[2J\n");
    expect(hostile).not.toContain("\x1b");
  });

  it("table: a block above the rows, a blank line between", async () => {
    const { out, text } = collector();
    const sink = createRowSink("table", out, { color: false });
    await sink.begin([col("id", "int8")], META);
    await sink.rows([[1]]);
    await sink.end({ rowCount: 1 });
    expect(text()).toBe(`${DESCRIPTION}\nid\n--\n 1\n(1 row)\n`);
  });

  it("json: an object with the table and the rows, whole JSON", async () => {
    for (const rows of [[[1], [2]], []] as JsonValue[][][]) {
      const { out, text } = collector();
      const sink = createRowSink("json", out, { color: false });
      await sink.begin([col("id", "int8")], META);
      if (rows.length > 0) await sink.rows(rows);
      await sink.end({ rowCount: rows.length });
      expect(JSON.parse(text())).toEqual({ table: META, rows: rows.map(([id]) => ({ id })) });
    }
  });

  it("csv and ndjson: the rows alone (the description goes to stderr)", async () => {
    for (const format of ["csv", "ndjson"] as const) {
      const { out, text } = collector();
      const sink = createRowSink(format, out, { color: false });
      await sink.begin([col("id", "int8")], META);
      await sink.rows([[1]]);
      await sink.end({ rowCount: 1 });
      expect(text()).toBe(format === "csv" ? "id\n1\n" : '{"id":1}\n');
    }
  });
});
