// Brings a database up to the schema this code knows: each migration runs once, in order, in its
// own transaction, and is recorded in schema_migrations. A database from newer code is refused.
import type { Database } from "better-sqlite3";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { Logger } from "../../../common/logger.js";
import { CREATE_SCHEMA_MIGRATIONS, inOrder, latestVersion, type Migration } from "../migration.js";

const SELECT_SCHEMA_VERSION = `SELECT MAX(version) AS version FROM schema_migrations`;

const INSERT_SCHEMA_MIGRATION = `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`;

/** The schema version of the database (0 for a new one). */
export function schemaVersion(db: Database): number {
  const row = db.prepare<[], { version: number | null }>(SELECT_SCHEMA_VERSION).get();
  return row?.version ?? 0;
}

/** Applies the migrations the database lacks and returns the resulting schema version. */
export function migrate(db: Database, migrations: readonly Migration[], logger: Logger): number {
  db.exec(CREATE_SCHEMA_MIGRATIONS);
  const latest = latestVersion(migrations);
  const record = db.prepare<[number, string, number]>(INSERT_SCHEMA_MIGRATION);

  for (const migration of inOrder(migrations)) {
    // IMMEDIATE takes the write lock before reading the version, so that two processes opening
    // the same file cannot both apply a migration.
    const applied = db
      .transaction(() => {
        const current = schemaVersion(db);
        if (current > latest) throw newerSchemaError(db.name, current, latest);
        if (current >= migration.version) return false;
        db.exec(migration.sql);
        record.run(migration.version, migration.name, Date.now());
        return true;
      })
      .immediate();
    if (applied) logger.info({ version: migration.version, name: migration.name }, "store migration applied");
  }

  const version = schemaVersion(db);
  if (version > latest) throw newerSchemaError(db.name, version, latest);
  return version;
}

function newerSchemaError(path: string, found: number, known: number): SwitchboardError {
  return new SwitchboardError(
    Code.FAILED_PRECONDITION,
    `the database ${path} has schema version ${found}, but this hub knows versions up to ${known}: ` +
      `run a newer switchboard, or point the hub at another data directory`,
  );
}
