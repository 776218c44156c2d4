import { writeFileSync } from "node:fs";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import { silentLogger } from "../../../common/logger.js";
import { migrate, schemaVersion } from "./migrate.js";
import { MIGRATIONS, type Migration } from "./migrations/index.js";
import { openSqliteStore } from "./store.js";
import { newTask, tempDir, thrownBy, type TempDir } from "../testing/fixtures.js";

let dir: TempDir;
beforeEach(() => {
  dir = tempDir();
});
afterEach(() => dir.remove());

interface MigrationRow {
  version: number;
  name: string;
  applied_at: number;
}

function appliedMigrations(path: string): MigrationRow[] {
  const db = new Database(path, { readonly: true });
  try {
    return db
      .prepare<[], MigrationRow>("SELECT version, name, applied_at FROM schema_migrations ORDER BY version")
      .all();
  } finally {
    db.close();
  }
}

describe("migrations", () => {
  it("are numbered from 1 without gaps", () => {
    expect(MIGRATIONS.map((m) => m.version)).toEqual(MIGRATIONS.map((_, i) => i + 1));
  });

  it("run once, and a reopened file keeps its data", async () => {
    const path = dir.file("hub.db");
    const store = openSqliteStore(path);
    expect(store.schemaVersion).toBe(MIGRATIONS.length);
    const task = newTask();
    await store.insertTask(task);
    await store.close();
    const first = appliedMigrations(path);
    expect(first.map((m) => [m.version, m.name])).toEqual(MIGRATIONS.map((m) => [m.version, m.name]));

    const again = openSqliteStore(path);
    expect((await again.getTask(task.id))?.id).toBe(task.id);
    await again.close();
    expect(appliedMigrations(path)).toEqual(first);
  });

  it("apply only the missing ones, in order, each in its own transaction", () => {
    const db = new Database(dir.file("m.db"));
    const steps: Migration[] = [
      { version: 1, name: "one", sql: "CREATE TABLE a (x INTEGER)" },
      { version: 2, name: "two", sql: "CREATE TABLE b (x INTEGER)" },
    ];
    expect(migrate(db, steps.slice(0, 1), silentLogger())).toBe(1);
    expect(migrate(db, [steps[1]!, steps[0]!], silentLogger())).toBe(2);
    expect(migrate(db, steps, silentLogger())).toBe(2);

    const broken: Migration = {
      version: 3,
      name: "broken",
      sql: "CREATE TABLE c (x INTEGER); CREATE TABLE a (y)",
    };
    expect(() => migrate(db, [...steps, broken], silentLogger())).toThrow(/already exists/);
    expect(schemaVersion(db)).toBe(2);
    const tables = db
      .prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'")
      .all();
    expect(tables.map((t) => t.name)).not.toContain("c"); // rolled back with its migration
    db.close();
  });

  it("leave agents registered before tokens were recorded without one, for the next token to claim", async () => {
    const path = dir.file("hub.db");
    const db = new Database(path);
    migrate(db, MIGRATIONS.slice(0, 4), silentLogger());
    db.prepare(
      `INSERT INTO agents (id, pool, labels, hostname, platform, version, task_kinds, max_concurrency,
         first_seen_at, last_seen_at, last_session_id, connected)
       VALUES ('b1', 'B', '{}', 'h', 'linux', '0', '[]', 1, 1, 2, NULL, 0)`,
    ).run();
    db.close();
    const store = openSqliteStore(path);
    expect(await store.getAgent("b1")).toMatchObject({ id: "b1", pool: "B", tokenId: null });
    await store.close();
  });

  it("refuse a database from newer code with a clear error", async () => {
    const path = dir.file("hub.db");
    await openSqliteStore(path).close();
    const db = new Database(path);
    db.prepare("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)").run(
      99,
      "future",
      1,
    );
    db.close();
    const err = thrownBy(() => openSqliteStore(path));
    expect(err).toMatchObject({ code: Code.FAILED_PRECONDITION });
    expect(String(err)).toMatch(
      /schema version 99, but this hub knows versions up to \d+: run a newer switchboard/,
    );
  });

  it("refuse a file that is not a database with a clear error", () => {
    const path = dir.file("junk.db");
    writeFileSync(path, "this is not a database, only some text long enough to have a header".repeat(20));
    const err = thrownBy(() => openSqliteStore(path));
    expect(err).toMatchObject({ code: Code.FAILED_PRECONDITION });
    expect(String(err)).toContain(`cannot open the store ${path}`);
  });
});
