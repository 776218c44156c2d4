// PostgreSQL's text output -> JsonValue (see src/common/sql-result.ts for the rules): one converter per type
// OID, given to pg as its type parsers so that values convert once, as rows arrive. Arrays of types the
// build does not know are learnt from the catalog (postgres-catalog.ts) and converted with arrayConverter.
import pg from "pg";
import type { JsonValue } from "../datasource.js";

export type Converter = (text: string) => JsonValue;

export const asText: Converter = (v) => v;
const asInt: Converter = (v) => Number(v);
const asInt8: Converter = (v) => {
  const n = Number(v);
  return Number.isSafeInteger(n) ? n : v;
};
const asFloat: Converter = (v) => (v === "NaN" || v === "Infinity" || v === "-Infinity" ? v : Number(v));
const asBool: Converter = (v) => v === "t";
const asJson: Converter = (v) => JSON.parse(v) as JsonValue;
const asBytea: Converter = (v) => {
  if (v.startsWith("\\x")) return Buffer.from(v.slice(2), "hex").toString("base64");
  // Escape format, should bytea_output have been changed by the statement itself.
  return (pg.types.getTypeParser(17, "text") as (s: string) => Buffer)(v).toString("base64");
};
const TIMESTAMP = /^(\d{4,}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d(?::\d\d){0,2})?$/;
/** "2024-01-02 03:04:05.123+00" -> "2024-01-02T03:04:05.123+00:00"; infinity and BC dates keep their text. */
const asTimestamp: Converter = (v) => {
  const m = TIMESTAMP.exec(v);
  if (!m) return v;
  const offset = m[3] === undefined ? "" : m[3].length === 3 ? `${m[3]}:00` : m[3];
  return `${m[1]}T${m[2]}${offset}`;
};

/** Element converters by scalar type OID; types not listed keep their text. */
export const SCALARS = new Map<number, Converter>([
  [16, asBool],
  [17, asBytea],
  [20, asInt8],
  [21, asInt],
  [23, asInt],
  [26, asInt],
  [114, asJson],
  [700, asFloat],
  [701, asFloat],
  [1114, asTimestamp],
  [1184, asTimestamp],
  [3802, asJson],
]);

/** Array type OID -> its element type OID, for the built-in arrays (others are learnt from the catalog). */
const BUILTIN_ARRAYS = new Map<number, number>([
  [1000, 16],
  [1001, 17],
  [1016, 20],
  [1005, 21],
  [1007, 23],
  [1028, 26],
  [199, 114],
  [1021, 700],
  [1022, 701],
  [1115, 1114],
  [1185, 1184],
  [3807, 3802],
  [1231, 1700],
  [1009, 25],
  [1015, 1043],
  [1014, 1042],
  [1002, 18],
  [1003, 19],
  [1182, 1082],
  [1183, 1083],
  [1270, 1266],
  [1187, 1186],
  [2951, 2950],
  [1041, 869],
  [651, 650],
  [1040, 829],
  [791, 790],
  [143, 142],
  [1561, 1560],
  [1563, 1562],
]);

// pg-types' declaration file calls arrayParser a function; at run time it is { create(source, transform) }.
const arrayParser = pg.types.arrayParser as unknown as {
  create(source: string, transform: (entry: string) => JsonValue): { parse(): JsonValue[] };
};

export function arrayConverter(elementOid: number): Converter {
  const element = SCALARS.get(elementOid) ?? asText;
  // Arrays print as "{...}" or "[1:2]={...}"; anything else (a type that only looked like an array) stays text.
  return (v) => (v.startsWith("{") || v.startsWith("[") ? arrayParser.create(v, element).parse() : v);
}

export const ARRAYS = new Map<number, Converter>(
  [...BUILTIN_ARRAYS].map(([oid, elem]) => [oid, arrayConverter(elem)]),
);

/** typname of the built-in types, for column types when the catalog cannot be asked. */
export const BUILTIN_NAMES = new Map<number, string>(
  Object.entries(pg.types.builtins).map(([name, oid]) => [oid as number, name.toLowerCase()]),
);
