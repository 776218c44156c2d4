// CSV (RFC 4180) for SQL rows, shared by the agent, which encodes rows as CSV when a client asks for it
// (the client then writes the bytes through untouched), and the CLI, which encodes rows it received as
// JSON. NULL is an empty field and an empty string is "" (so the two stay apart), as in PostgreSQL's own
// CSV, which the agent passes through for the types where the two agree; objects and arrays are JSON text.
import type { JsonValue } from "./sql-result.js";

// Quoting is needed only for these; testing one regex per field keeps the hot path fast.
const CSV_SPECIAL = /[",\r\n]/;
const QUOTES = /"/g;

/** One field: quoted (quotes doubled) when it holds a comma, a quote or a line break, or is empty. */
export function csvField(text: string): string {
  if (text === "") return '""';
  return CSV_SPECIAL.test(text) ? `"${text.replace(QUOTES, '""')}"` : text;
}

/** Rows as CSV lines, each ending in "\n". */
export function csvRows(batch: readonly JsonValue[][]): string {
  let text = "";
  for (const row of batch) {
    for (let i = 0; i < row.length; i++) {
      if (i > 0) text += ",";
      const v = row[i];
      if (v === null || v === undefined) continue;
      if (typeof v === "string") {
        if (CSV_SPECIAL.test(v)) text += `"${v.replace(QUOTES, '""')}"`;
        // `\.` alone on a line would read as PostgreSQL's end-of-data marker: quoted there, as COPY does.
        else text += v === "" || (v === "\\." && row.length === 1) ? `"${v}"` : v;
      } else if (typeof v === "number" || typeof v === "boolean") text += String(v);
      else text += csvField(JSON.stringify(v));
    }
    text += "\n";
  }
  return text;
}
