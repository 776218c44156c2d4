// describeTable for MySQL/MariaDB: a table's columns, primary key (in key order) and indexes, from
// information_schema, for a name written as TABLE or DATABASE.TABLE, with or without backquotes.
import type { PoolConnection } from "mysql2";
import { tableNotFoundError } from "../datasource-errors.js";
import type { TableMeta } from "../datasource.js";
import { simpleQuery } from "./mysql-connection.js";

interface ColumnRow {
  name: string;
  type: string;
  nullable: string;
  dflt: string | null;
}

interface IndexRow {
  name: string;
  col: string;
  nonUnique: number | string;
}

/** "table", "db.table", with or without backquotes. */
export function parseTableName(text: string): { schema?: string; table: string } | undefined {
  const part = "(?:`((?:[^`]|``)+)`|([^.`\\s]+))";
  const m = new RegExp(`^\\s*${part}(?:\\.${part})?\\s*$`).exec(text);
  if (!m) return undefined;
  const unquote = (q: string | undefined, bare: string | undefined): string | undefined =>
    q !== undefined ? q.replace(/``/g, "`") : bare;
  const first = unquote(m[1], m[2]);
  const second = unquote(m[3], m[4]);
  if (first === undefined) return undefined;
  return second === undefined ? { table: first } : { schema: first, table: second };
}

/** The table's description; SqlError NOT_FOUND when it has no columns (there is no such table). */
export async function describeMysqlTable(
  conn: PoolConnection,
  name: { schema?: string; table: string },
  table: string,
  datasource: string,
): Promise<TableMeta> {
  const schema = name.schema ?? null;
  const columns = await simpleQuery<ColumnRow[]>(
    conn,
    `SELECT COLUMN_NAME AS name, COLUMN_TYPE AS type, IS_NULLABLE AS nullable, COLUMN_DEFAULT AS dflt
       FROM information_schema.COLUMNS
      WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
      ORDER BY ORDINAL_POSITION`,
    [schema, name.table],
  );
  if (columns.length === 0) {
    throw tableNotFoundError(datasource, table);
  }
  const stats = await simpleQuery<IndexRow[]>(
    conn,
    `SELECT INDEX_NAME AS name, COLUMN_NAME AS col, NON_UNIQUE AS nonUnique
       FROM information_schema.STATISTICS
      WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?
      ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX`,
    [schema, name.table],
  );
  const indexes = new Map<string, TableMeta["indexes"][number]>();
  for (const s of stats) {
    let index = indexes.get(s.name);
    if (!index) {
      index = {
        name: s.name,
        columns: [],
        unique: Number(s.nonUnique) === 0,
        primary: s.name === "PRIMARY",
      };
      indexes.set(s.name, index);
    }
    index.columns.push(s.col);
  }
  return {
    table,
    columns: columns.map((c) => ({
      name: c.name,
      type: c.type,
      nullable: c.nullable === "YES",
      // MariaDB spells "no default" of a nullable column as the expression NULL; MySQL as SQL NULL.
      default: c.dflt === null || c.dflt === "NULL" ? null : c.dflt,
    })),
    primaryKey: indexes.get("PRIMARY")?.columns ?? [],
    indexes: [...indexes.values()],
  };
}
