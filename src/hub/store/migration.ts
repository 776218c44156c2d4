// What both stores' migrations are, and the table that records which ones a database has: the
// same text in both dialects. Each store applies them its own way (migrate.ts beside it).

/** One step of the schema. Append new ones; never edit one that has shipped. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export const CREATE_SCHEMA_MIGRATIONS = `
CREATE TABLE IF NOT EXISTS schema_migrations (
  version    INTEGER PRIMARY KEY,
  name       TEXT NOT NULL,
  applied_at BIGINT NOT NULL
)`;

/** The newest version the migrations know. */
export function latestVersion(migrations: readonly Migration[]): number {
  return migrations.reduce((max, m) => Math.max(max, m.version), 0);
}

/** The migrations by version, oldest first. */
export function inOrder(migrations: readonly Migration[]): Migration[] {
  return [...migrations].sort((a, b) => a.version - b.version);
}
