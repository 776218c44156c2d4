// A SQLite table's description from the catalog pragmas (table_info, index_list, index_info). It runs on
// the agent's own thread on a short-lived read-only connection: catalog reads take microseconds, and a
// lock held by a committing writer is waited for at most CATALOG_BUSY_MS.
import Database from "better-sqlite3";
import type { TableMeta } from "../datasource.js";

const CATALOG_BUSY_MS = 200;

/** A read-only connection for catalog reads and checks; the caller closes it. */
export function openCatalogConnection(path: string): Database.Database {
  return new Database(path, { readonly: true, fileMustExist: true, timeout: CATALOG_BUSY_MS });
}

interface ColumnRow {
  name: string;
  type: string;
  notnull: number;
  dflt_value: string | null;
  pk: number;
}

interface IndexRow {
  name: string;
  unique: number;
  origin: string;
}

interface IndexColumnRow {
  seqno: number;
  name: string | null;
}

/**
 * The table's columns, primary key and indexes, or undefined when there is no such table. `table` is a
 * table's (or view's) name, or "main.name".
 */
export function describeSqliteTable(db: Database.Database, table: string): TableMeta | undefined {
  let schema: string | null = null;
  let name = table;
  let columns = tableInfo(db, name, schema);
  const dot = table.indexOf(".");
  if (columns.length === 0 && dot > 0) {
    schema = table.slice(0, dot);
    name = table.slice(dot + 1);
    if (!schemaExists(db, schema)) return undefined;
    columns = tableInfo(db, name, schema);
  }
  if (columns.length === 0) return undefined;

  const keyColumns = columns.filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk);
  const indexes = db
    .prepare<[string, string | null], IndexRow>(
      'SELECT name, "unique", origin FROM pragma_index_list(?, ?) ORDER BY seq',
    )
    .all(name, schema)
    .map((ix) => ({
      name: ix.name,
      columns: db
        .prepare<[string, string | null], IndexColumnRow>("SELECT seqno, name FROM pragma_index_info(?, ?)")
        .all(ix.name, schema)
        .sort((a, b) => a.seqno - b.seqno)
        // An index on an expression has no column name for that part.
        .map((c) => c.name ?? "<expression>"),
      unique: ix.unique === 1,
      primary: ix.origin === "pk",
    }));
  return {
    table,
    columns: columns.map((c) => ({
      name: c.name,
      type: c.type.toLowerCase(),
      nullable: c.notnull === 0 && !isRowid(c, keyColumns.length),
      default: c.dflt_value,
    })),
    primaryKey: keyColumns.map((c) => c.name),
    indexes,
  };
}

/** An INTEGER PRIMARY KEY is the rowid: never NULL, though the catalog does not say NOT NULL. */
function isRowid(column: ColumnRow, keyColumnCount: number): boolean {
  return column.pk > 0 && keyColumnCount === 1 && column.type.toUpperCase() === "INTEGER";
}

function tableInfo(db: Database.Database, name: string, schema: string | null): ColumnRow[] {
  return db
    .prepare<[string, string | null], ColumnRow>(
      'SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?, ?) ORDER BY cid',
    )
    .all(name, schema);
}

function schemaExists(db: Database.Database, schema: string): boolean {
  return db
    .prepare<[string], { name: string }>("SELECT name FROM pragma_database_list WHERE name = ?")
    .all(schema)
    .some((d) => d.name === schema);
}
