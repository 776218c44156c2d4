// The upsert by id that the agents and nodes tables share: one statement that inserts a row or
// overwrites the stored one, all but the columns that keep the first insert's value.

/**
 * `INSERT INTO <table> (<columns>) VALUES (?, ...)
 *  ON CONFLICT (id) DO UPDATE SET <column> = excluded.<column>, ...`
 * for every column but `id` and those in `keep`.
 */
export function upsertByIdSql(table: string, columns: readonly string[], keep: readonly string[]): string {
  const sets = columns
    .filter((c) => c !== "id" && !keep.includes(c))
    .map((c) => `  ${c} = excluded.${c}`)
    .join(",\n");
  return `
INSERT INTO ${table} (${columns.join(", ")})
VALUES (${columns.map(() => "?").join(", ")})
ON CONFLICT (id) DO UPDATE SET
${sets}`;
}
