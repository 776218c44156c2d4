// What the PostgreSQL catalog tells about a result and a table: column type names, nullability and the
// element types of arrays the build does not know, looked up once per type and table and cached (bounded,
// with a TTL for nullability, which ALTER TABLE may change); and describeTable's columns, keys and indexes.
import type pg from "pg";
import type { Logger } from "../../../../common/logger.js";
import { messageOf, tableNotFoundError } from "../datasource-errors.js";
import type { ColumnInfo, TableMeta } from "../datasource.js";
import { auxQuery } from "./postgres-connection.js";
import { ARRAYS, BUILTIN_NAMES, SCALARS, arrayConverter, asText, type Converter } from "./postgres-values.js";

/** Nullability may change with ALTER TABLE; type names of an (oid, typmod) never do. */
const TABLE_CACHE_TTL_MS = 60_000;
/** Bounds on the look-up caches (a datasource may see many ad-hoc tables). */
const CACHE_MAX_ENTRIES = 10_000;

interface TypeInfo {
  name: string;
  /** For an array type not known at build time: its element's OID (from pg_type.typelem). */
  arrayElement: number | undefined;
}

interface TableNullability {
  at: number;
  /** attnum -> attnotnull */
  notNull: Map<number, boolean>;
}

/** A column whose array values arrived as text (its type was first seen in this result) and are parsed after. */
export interface LateArray {
  index: number;
  convert: Converter;
}

/** Runs fn on a connection that does not wait behind the pool (see PostgresDatasource.withSpareClient). */
export type SpareClient = <T>(fn: (c: pg.ClientBase) => Promise<T>) => Promise<T>;

/** One datasource's knowledge of the catalog (one datasource is one server). */
export class PostgresCatalog {
  /** `${oid}:${typmod}` -> the type's name (and element, for arrays) */
  private readonly types = new Map<string, TypeInfo>();
  /** Array OIDs learnt from the catalog -> their converter. */
  private readonly learntArrays = new Map<number, Converter>();
  private readonly tables = new Map<number, TableNullability>();

  constructor(
    private readonly spare: SpareClient,
    private readonly logger?: Logger,
  ) {}

  /** Type parsers for one cursor: known types convert as rows arrive; others keep text (noted in lateOids). */
  parsersFor(lateOids: Set<number>): pg.CustomTypesConfig {
    return {
      getTypeParser: (oid: number): Converter => {
        const known = SCALARS.get(oid) ?? ARRAYS.get(oid) ?? this.learntArrays.get(oid);
        if (known) return known;
        lateOids.add(oid);
        return asText;
      },
    };
  }

  /** Column names, types and nullability, asking the catalog (once per type and table) on another connection. */
  async columnsOf(
    fields: pg.FieldDef[],
    lateOids: Set<number>,
  ): Promise<{ columns: ColumnInfo[]; lateArrays: LateArray[] }> {
    const now = Date.now();
    const missingTypes = new Map<string, { oid: number; typmod: number }>();
    const missingTables = new Set<number>();
    for (const f of fields) {
      const key = `${f.dataTypeID}:${f.dataTypeModifier}`;
      if (!this.types.has(key)) missingTypes.set(key, { oid: f.dataTypeID, typmod: f.dataTypeModifier });
      const t = f.tableID > 0 ? this.tables.get(f.tableID) : undefined;
      if (f.tableID > 0 && (!t || now - t.at > TABLE_CACHE_TTL_MS)) missingTables.add(f.tableID);
    }
    let lookedUp = true;
    if (missingTypes.size > 0 || missingTables.size > 0) {
      try {
        await this.spare((c) => this.lookUp(c, [...missingTypes.values()], [...missingTables], now));
      } catch (e) {
        // Names then come from the built-in list and nullability is unknown; the rows are still good.
        lookedUp = false;
        this.logger?.warn({ error: messageOf(e) }, "postgres: cannot read column types from the catalog");
      }
    }
    const lateArrays: LateArray[] = [];
    const columns = fields.map((f, index): ColumnInfo => {
      const info = this.types.get(`${f.dataTypeID}:${f.dataTypeModifier}`);
      if (info?.arrayElement !== undefined && lateOids.has(f.dataTypeID)) {
        lateArrays.push({ index, convert: arrayConverter(info.arrayElement) });
      }
      const notNull =
        f.tableID > 0 && lookedUp ? this.tables.get(f.tableID)?.notNull.get(f.columnID) : undefined;
      return {
        name: f.name,
        type: info?.name ?? BUILTIN_NAMES.get(f.dataTypeID) ?? "unknown",
        nullable: notNull === undefined ? null : !notNull,
      };
    });
    return { columns, lateArrays };
  }

  private async lookUp(
    c: pg.ClientBase,
    types: { oid: number; typmod: number }[],
    tables: number[],
    now: number,
  ): Promise<void> {
    if (types.length > 0) {
      const r = await auxQuery<{ oid: string; typmod: number; name: string | null; element: string | null }>(
        c,
        `SELECT m.oid::int8::text AS oid, m.typmod, format_type(m.oid, m.typmod) AS name,
                CASE WHEN t.typcategory = 'A' AND t.typlen = -1 AND e.typdelim = ','
                      AND t.oid NOT IN ('int2vector'::regtype, 'oidvector'::regtype)
                     THEN t.typelem::int8::text END AS element
           FROM unnest($1::oid[], $2::int4[]) AS m(oid, typmod)
           LEFT JOIN pg_type t ON t.oid = m.oid
           LEFT JOIN pg_type e ON e.oid = t.typelem`,
        [types.map((t) => t.oid), types.map((t) => t.typmod)],
      );
      if (this.types.size > CACHE_MAX_ENTRIES) this.types.clear();
      if (this.learntArrays.size > CACHE_MAX_ENTRIES) this.learntArrays.clear();
      for (const row of r.rows) {
        const oid = Number(row.oid);
        const element = row.element === null ? undefined : Number(row.element);
        this.types.set(`${oid}:${row.typmod}`, { name: row.name ?? "unknown", arrayElement: element });
        if (element !== undefined && !ARRAYS.has(oid)) this.learntArrays.set(oid, arrayConverter(element));
      }
    }
    if (tables.length > 0) {
      const r = await auxQuery<{ rel: string; attnum: number; notnull: boolean }>(
        c,
        `SELECT attrelid::int8::text AS rel, attnum, attnotnull AS notnull FROM pg_attribute
                WHERE attrelid = ANY($1::oid[]) AND attnum > 0 AND NOT attisdropped`,
        [tables],
      );
      if (this.tables.size > CACHE_MAX_ENTRIES) this.tables.clear();
      for (const id of tables) this.tables.set(id, { at: now, notNull: new Map() });
      for (const row of r.rows) this.tables.get(Number(row.rel))?.notNull.set(row.attnum, row.notnull);
    }
  }
}

/** The table's columns, primary key and indexes; SqlError NOT_FOUND when there is no such table. */
export async function describePostgresTable(
  c: pg.ClientBase,
  table: string,
  datasource: string,
): Promise<TableMeta> {
  const oid = await resolveTable(c, table);
  if (oid === undefined) {
    throw tableNotFoundError(datasource, table);
  }
  const cols = await auxQuery<{
    name: string;
    type: string;
    nullable: boolean;
    default: string | null;
  }>(
    c,
    `SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable,
            CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END AS default
       FROM pg_attribute a
       LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
      WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
      ORDER BY a.attnum`,
    [oid],
  );
  // Plain key columns by name; expression keys as PostgreSQL prints them. INCLUDE columns are not keys.
  const idx = await auxQuery<{ name: string; columns: string[]; unique: boolean; primary: boolean }>(
    c,
    `SELECT i.relname AS name, x.indisunique AS unique, x.indisprimary AS primary,
            ARRAY(SELECT COALESCE(
                     (SELECT a.attname::text FROM pg_attribute a
                       WHERE a.attrelid = x.indrelid AND a.attnum = x.indkey[k - 1] AND x.indkey[k - 1] <> 0),
                     pg_get_indexdef(x.indexrelid, k, true))
                    FROM generate_series(1, x.indnkeyatts) AS k ORDER BY k)::text[] AS columns
       FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
      WHERE x.indrelid = $1
      ORDER BY x.indisprimary DESC, i.relname`,
    [oid],
  );
  const indexes = idx.rows.map((r) => ({
    name: r.name,
    columns: r.columns,
    unique: r.unique,
    primary: r.primary,
  }));
  return {
    table,
    columns: cols.rows.map((r) => ({
      name: r.name,
      type: r.type,
      nullable: r.nullable,
      default: r.default,
    })),
    primaryKey: indexes.find((i) => i.primary)?.columns ?? [],
    indexes,
  };
}

/** The table's OID: the name as SQL reads it (search_path, case folding), else with each part taken verbatim. */
async function resolveTable(c: pg.ClientBase, table: string): Promise<number | undefined> {
  const candidates = [table];
  if (!table.includes('"')) {
    candidates.push(
      table
        .split(".")
        .map((p) => `"${p}"`)
        .join("."),
    );
  }
  for (const name of candidates) {
    const r = await auxQuery<{ oid: string | null }>(
      c,
      `SELECT c.oid::int8::text AS oid FROM pg_class c
              WHERE c.oid = to_regclass($1) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')`,
      [name],
    );
    const oid = r.rows[0]?.oid;
    if (oid) return Number(oid);
  }
  return undefined;
}
