// Brings the store's schema up to what this code knows, at open: in one transaction that holds an
// advisory lock named for the schema, so that hubs starting together migrate once (the others wait
// for the lock, then find nothing left to do). Each migration is recorded in schema_migrations;
// a schema from newer code is refused.
import type pg from "pg";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { Logger } from "../../../common/logger.js";
import { CREATE_SCHEMA_MIGRATIONS, inOrder, latestVersion, type Migration } from "../migration.js";

const LOCK = `SELECT pg_advisory_xact_lock(hashtext($1))`;

const SELECT_SCHEMA_VERSION = `SELECT COALESCE(MAX(version), 0) AS version FROM schema_migrations`;

const INSERT_SCHEMA_MIGRATION = `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`;

/**
 * Applies the migrations the schema lacks, on `client` (whose search_path is the schema), and
 * returns the resulting version. `location` names the database in errors.
 */
export async function migrate(
  client: pg.ClientBase,
  schema: string,
  migrations: readonly Migration[],
  location: string,
  logger: Logger,
): Promise<number> {
  const latest = latestVersion(migrations);
  await client.query("BEGIN");
  try {
    await client.query(LOCK, [`switchboard.migrate.${schema}`]);
    // Created only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when
    // the schema is there, which a hub's role that owns just its schema does not have.
    const found = await client.query("SELECT 1 FROM pg_namespace WHERE nspname = $1", [schema]);
    if (found.rowCount === 0) await client.query(`CREATE SCHEMA ${schema}`);
    await client.query(CREATE_SCHEMA_MIGRATIONS);
    let version = await schemaVersion(client);
    if (version > latest) throw newerSchemaError(location, schema, version, latest);
    for (const m of inOrder(migrations)) {
      if (m.version <= version) continue;
      await client.query(m.sql);
      await client.query(INSERT_SCHEMA_MIGRATION, [m.version, m.name, Date.now()]);
      logger.info({ version: m.version, name: m.name, schema }, "store migration applied");
      version = m.version;
    }
    await client.query("COMMIT");
    return version;
  } catch (err) {
    await client.query("ROLLBACK").catch(() => undefined);
    throw err;
  }
}

async function schemaVersion(client: pg.ClientBase): Promise<number> {
  const { rows } = await client.query<{ version: number }>(SELECT_SCHEMA_VERSION);
  return Number(rows[0]?.version ?? 0);
}

function newerSchemaError(location: string, schema: string, found: number, known: number): SwitchboardError {
  return new SwitchboardError(
    Code.FAILED_PRECONDITION,
    `the schema ${schema} of the database ${location} has version ${found}, but this hub knows versions up to ${known}: ` +
      `run a newer switchboard, or point the hub at another schema`,
  );
}
