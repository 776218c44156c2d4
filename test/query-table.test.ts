// `switchboard query --table NAME`: the description the agent sends (columns, types, keys, indexes)
// reaches the user in every format: a block above the rows on a terminal, a `table` member in JSON,
// and on stderr beside CSV and NDJSON, whose data stays exactly what it was without --table.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli, startAgent, startHub, stopAll, tempDir, type HubProc } from "./support/processes.js";

let hub: HubProc;
const dir = tempDir("query-table");

beforeAll(async () => {
  const db = join(dir, "cities.db");
  const lite = new Database(db);
  lite.exec(`CREATE TABLE cities (id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT NOT NULL DEFAULT 'CH',
      population INTEGER);
    CREATE INDEX cities_country ON cities (country);
    CREATE UNIQUE INDEX cities_name ON cities (name, country);
    INSERT INTO cities VALUES (1, 'Zürich', 'CH', 421878), (2, 'Lagos', 'NG', NULL);`);
  lite.close();
  const config = join(dir, "agent.toml");
  writeFileSync(config, `[datasources.cities]\ndriver = "sqlite"\npath = ${JSON.stringify(db)}\n`);
  hub = await startHub();
  await startAgent(hub, { agentId: "qt-1", pool: "qt", args: ["--config", config] });
}, 60_000);

afterAll(stopAll);

function query(args: string[]) {
  return runCli([...hub.cli, "query", "--pool", "qt", "--db", "cities", ...args]);
}

const SQL = "SELECT id, name FROM cities ORDER BY id";

describe("query --table", () => {
  it("prints the description above the rows in table format", async () => {
    const r = await query(["--table", "cities", "--format", "table", SQL]);
    expect(r.code).toBe(0);
    const [description, rows] = r.stdout.split("\n\n");
    expect(description).toBe(
      [
        "table cities",
        "  column      type     null  default  key",
        "  id          integer  no             primary key",
        "  name        text     no",
        "  country     text     no    'CH'",
        "  population  integer  yes",
        "  primary key (id)",
        // SQLite's catalog lists indexes newest first.
        "  unique index cities_name (name, country)",
        "  index cities_country (country)",
      ].join("\n"),
    );
    expect(rows).toBe("id  name\n--  ------\n 1  Zürich\n 2  Lagos\n(2 rows)\n");
  }, 60_000);

  it("puts a `table` member beside the rows in JSON, on stdout and in a file", async () => {
    const r = await query(["--table", "cities", "--format", "json", SQL]);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout) as {
      table: {
        table: string;
        primaryKey: string[];
        columns: { name: string; type: string }[];
        indexes: { name: string }[];
      };
      rows: unknown[];
    };
    expect(out.table.table).toBe("cities");
    expect(out.table.primaryKey).toEqual(["id"]);
    expect(out.table.columns.map((c) => `${c.name} ${c.type}`)).toEqual([
      "id integer",
      "name text",
      "country text",
      "population integer",
    ]);
    expect(out.table.indexes.map((i) => i.name).sort()).toEqual(["cities_country", "cities_name"]);
    expect(out.rows).toEqual([
      { id: 1, name: "Zürich" },
      { id: 2, name: "Lagos" },
    ]);
    const file = join(dir, "out.json");
    const f = await query(["--table", "cities", "-o", file, SQL]);
    expect(f.code).toBe(0);
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual(out);
  }, 60_000);

  it("keeps CSV and NDJSON clean: the description goes to stderr", async () => {
    for (const [format, rows] of [
      ["csv", "id,name\n1,Zürich\n2,Lagos\n"],
      ["ndjson", '{"id":1,"name":"Zürich"}\n{"id":2,"name":"Lagos"}\n'],
    ] as const) {
      const r = await query(["--table", "cities", "--format", format, SQL]);
      expect({ format, code: r.code, stdout: r.stdout }).toEqual({ format, code: 0, stdout: rows });
      expect(r.stderr).toContain("table cities\n  column      type     null  default  key\n");
      expect(r.stderr).toContain("  primary key (id)\n");
      // Without --table, the same data and nothing on stderr.
      const plain = await query(["--format", format, SQL]);
      expect({ stdout: plain.stdout, stderr: plain.stderr }).toEqual({ stdout: rows, stderr: "" });
    }
  }, 60_000);
});
