// MySQL/MariaDB column values and metadata: the protocol's column types and flags become the engine's own
// type name (what SHOW COLUMNS would say) and nullability, and the values mysql2 does not give in their JSON
// form (DATETIME text, binary strings, VECTOR) are converted as rows arrive.
import type { FieldPacket } from "mysql2";
import type { ColumnInfo, JsonValue } from "../datasource.js";

/** Column types of the client/server protocol (include/mysql_com.h, enum_field_types). */
const T = {
  DECIMAL: 0x00,
  TINY: 0x01,
  SHORT: 0x02,
  LONG: 0x03,
  FLOAT: 0x04,
  DOUBLE: 0x05,
  NULL: 0x06,
  TIMESTAMP: 0x07,
  LONGLONG: 0x08,
  INT24: 0x09,
  DATE: 0x0a,
  TIME: 0x0b,
  DATETIME: 0x0c,
  YEAR: 0x0d,
  NEWDATE: 0x0e,
  VARCHAR: 0x0f,
  BIT: 0x10,
  VECTOR: 0xf2,
  JSON: 0xf5,
  NEWDECIMAL: 0xf6,
  ENUM: 0xf7,
  SET: 0xf8,
  TINY_BLOB: 0xf9,
  MEDIUM_BLOB: 0xfa,
  LONG_BLOB: 0xfb,
  BLOB: 0xfc,
  VAR_STRING: 0xfd,
  STRING: 0xfe,
  GEOMETRY: 0xff,
} as const;

const FLAG_NOT_NULL = 1;
const FLAG_UNSIGNED = 32;
const FLAG_ENUM = 256;
const FLAG_SET = 2048;
/** The character set number of binary strings (BLOB, VARBINARY, BIT...). */
const CHARSET_BINARY = 63;

export type Converter = (v: unknown) => JsonValue;

/** Values mysql2 does not already give in their JSON form: DATETIME text to ISO, bytes to base64. */
export function converters(fields: FieldPacket[]): [number, Converter][] {
  const out: [number, Converter][] = [];
  fields.forEach((f, i) => {
    const type = f.columnType ?? f.type;
    if (type === T.DATETIME || type === T.TIMESTAMP) out.push([i, isoDateTime]);
    else if (type === T.VECTOR) out.push([i, vectorToArray]);
    else if (holdsBytes(f)) out.push([i, bytesToBase64]);
  });
  return out;
}

/** Binary strings (BINARY, VARBINARY, BLOB) and BIT arrive as Buffers. */
function holdsBytes(f: FieldPacket): boolean {
  const type = f.columnType ?? f.type;
  if (type === T.BIT) return true;
  const stringy =
    type === T.VARCHAR ||
    type === T.VAR_STRING ||
    type === T.STRING ||
    type === T.TINY_BLOB ||
    type === T.MEDIUM_BLOB ||
    type === T.LONG_BLOB ||
    type === T.BLOB;
  return stringy && f.characterSet === CHARSET_BINARY && f.extendedFormat !== "json";
}

/** "2024-01-02 03:04:05.123456" -> "2024-01-02T03:04:05.123456"; zero dates stay as the server wrote them. */
function isoDateTime(v: unknown): JsonValue {
  if (typeof v !== "string") return v as JsonValue;
  if (v.startsWith("0000-00-00") || v.charAt(10) !== " ") return v;
  return `${v.slice(0, 10)}T${v.slice(11)}`;
}

function bytesToBase64(v: unknown): JsonValue {
  return Buffer.isBuffer(v) ? v.toString("base64") : (v as JsonValue);
}

function vectorToArray(v: unknown): JsonValue {
  return v instanceof Float32Array ? Array.from(v) : (v as JsonValue);
}

export function columnInfo(f: FieldPacket): ColumnInfo {
  const flags = typeof f.flags === "number" ? f.flags : 0;
  const notNull = (flags & FLAG_NOT_NULL) !== 0;
  let nullable: boolean | null = !notNull;
  // A computed column has no table behind it: the engine cannot say, unless it marks it NOT NULL.
  if (!f.orgTable && !notNull) nullable = null;
  return { name: f.name, type: typeName(f, flags), nullable };
}

/** The engine's own type name, lower case, from the column's protocol type, flags, length and charset. */
function typeName(f: FieldPacket, flags: number): string {
  if (f.extendedTypeName) return f.extendedTypeName.toLowerCase();
  if (f.extendedFormat === "json") return "json";
  const type = f.columnType ?? f.type ?? -1;
  const length = f.columnLength ?? f.length ?? 0;
  const decimals = f.decimals;
  const unsigned = (flags & FLAG_UNSIGNED) !== 0 ? " unsigned" : "";
  const binary = f.characterSet === CHARSET_BINARY;
  // utf8mb4 (the connection's charset) counts 4 bytes per character in lengths.
  const chars = binary ? length : Math.floor(length / 4);
  // Fractional seconds precision; 31 and above mean "not fixed".
  const fsp = decimals > 0 && decimals <= 6 ? `(${decimals})` : "";
  if (flags & FLAG_ENUM) return "enum";
  if (flags & FLAG_SET) return "set";
  switch (type) {
    case T.TINY:
      return length === 1 ? "tinyint(1)" : `tinyint${unsigned}`;
    case T.SHORT:
      return `smallint${unsigned}`;
    case T.INT24:
      return `mediumint${unsigned}`;
    case T.LONG:
      return `int${unsigned}`;
    case T.LONGLONG:
      return `bigint${unsigned}`;
    case T.DECIMAL:
    case T.NEWDECIMAL: {
      // The display length counts a sign (unless unsigned) and a decimal point (when there are decimals).
      const precision = length - (decimals > 0 ? 1 : 0) - (unsigned ? 0 : 1);
      return `decimal(${precision},${decimals})${unsigned}`;
    }
    case T.FLOAT:
      return "float";
    case T.DOUBLE:
      return "double";
    case T.NULL:
      return "null";
    case T.TIMESTAMP:
      return `timestamp${fsp}`;
    case T.DATETIME:
      return `datetime${fsp}`;
    case T.DATE:
    case T.NEWDATE:
      return "date";
    case T.TIME:
      return `time${fsp}`;
    case T.YEAR:
      return "year";
    case T.BIT:
      return `bit(${length})`;
    case T.JSON:
      return "json";
    case T.ENUM:
      return "enum";
    case T.SET:
      return "set";
    case T.VARCHAR:
    case T.VAR_STRING:
      return binary ? `varbinary(${chars})` : `varchar(${chars})`;
    case T.STRING:
      return binary ? `binary(${chars})` : `char(${chars})`;
    case T.TINY_BLOB:
    case T.MEDIUM_BLOB:
    case T.LONG_BLOB:
    case T.BLOB: {
      const size = chars <= 255 ? "tiny" : chars <= 65_535 ? "" : chars <= 16_777_215 ? "medium" : "long";
      return `${size}${binary ? "blob" : "text"}`;
    }
    case T.GEOMETRY:
      return "geometry";
    case T.VECTOR:
      return "vector";
    default:
      return `type ${type}`;
  }
}
