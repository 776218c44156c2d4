// MySQL/MariaDB failures as SqlErrors: the status code from the server's error number (or SQLSTATE class,
// or the socket's error code), the engine's own words after the datasource's name; and which failures leave
// the connection usable (an error the server sent) and which do not (a lost link, a bad packet).
import { Code } from "../../../../common/errors.js";
import { NETWORK_ERROR_CODES, readOnlyError, statementTimeoutError } from "../datasource-errors.js";
import { SqlError } from "../datasource.js";

/** Server error numbers (mysqld_error.h) that decide a status code. */
export const ER = {
  CANT_EXECUTE_IN_READ_ONLY_TRANSACTION: 1792,
  OPTION_PREVENTS_STATEMENT: 1290,
  READ_ONLY_MODE: 1836,
  QUERY_INTERRUPTED: 1317,
  STATEMENT_TIMEOUT: 1969,
  QUERY_TIMEOUT: 3024,
  UNKNOWN_THREAD: 1094,
} as const;

const PERMISSION_ERRNOS = new Set([1044, 1045, 1142, 1143, 1227, 1370]);
/** The server or the link went away: 1040 too many connections, 1053 shutdown, 1927 connection killed, 2006/2013 gone/lost. */
const UNAVAILABLE_ERRNOS = new Set([1040, 1053, 1927, 2006, 2013]);
const UNAVAILABLE_CODES = new Set([
  ...NETWORK_ERROR_CODES,
  "PROTOCOL_CONNECTION_LOST",
  "PROTOCOL_SEQUENCE_TIMEOUT",
]);
/** Syntax, unknown names, bad data, constraint violations: the request is wrong, not the server. */
const INVALID_ERRNOS = new Set([
  1048, 1049, 1050, 1051, 1052, 1054, 1060, 1062, 1064, 1066, 1072, 1091, 1109, 1111, 1136, 1146, 1176, 1210,
  1222, 1241, 1242, 1264, 1265, 1292, 1305, 1318, 1364, 1365, 1366, 1367, 1406, 1411, 1451, 1452, 1582, 1583,
  1630, 1690, 3140, 3819, 4025, 4038,
]);
/** SQLSTATE classes of the same kind: 21 cardinality, 22 data exception, 23 integrity constraint, 42 syntax. */
const INVALID_SQLSTATE = /^(21|22|23|42)/;

/** What mysql2 puts on its errors (server errors carry errno and sqlMessage; socket errors only code). */
export interface DriverError {
  message: string;
  code?: string;
  errno?: number;
  sqlState?: string;
  sqlMessage?: string;
  fatal?: boolean;
}

export function asDriverError(e: unknown): DriverError {
  if (e instanceof Error) return e;
  return { message: String(e) };
}

/** The engine's own words for an error. */
export function engineMessage(e: DriverError): string {
  return e.sqlMessage ?? e.message;
}

export function engineCode(e: DriverError): string | undefined {
  return e.errno !== undefined && e.errno > 0 ? String(e.errno) : e.code;
}

/** An error the server sent in answer to a command: the connection is still good for the next one. */
export function isServerError(err: DriverError): boolean {
  return err.errno !== undefined && err.errno > 0 && !err.fatal;
}

/** The datasource an error is about. */
export interface ErrorContext {
  name: string;
  /** host:port/database */
  where: string;
  statementTimeoutMs: number;
}

/** A connection could not be made (or taken from the pool). */
export function connectError(e: unknown, ds: ErrorContext): SqlError {
  if (e instanceof SqlError) return e;
  const err = asDriverError(e);
  return new SqlError(
    Code.UNAVAILABLE,
    `datasource "${ds.name}": cannot connect to mysql at ${ds.where}: ${engineMessage(err)}`,
    engineCode(err),
  );
}

/** A statement's failure. */
export function mysqlError(e: unknown, ds: ErrorContext): SqlError {
  if (e instanceof SqlError) return e;
  const err = asDriverError(e);
  const msg = engineMessage(err);
  const errno = err.errno ?? 0;
  const code = engineCode(err);
  const plain = (status: number): SqlError => new SqlError(status, `datasource "${ds.name}": ${msg}`, code);
  if (
    errno === ER.CANT_EXECUTE_IN_READ_ONLY_TRANSACTION ||
    errno === ER.READ_ONLY_MODE ||
    (errno === ER.OPTION_PREVENTS_STATEMENT && /read.only/i.test(msg))
  ) {
    return readOnlyError(ds.name, msg, code);
  }
  if (errno === ER.STATEMENT_TIMEOUT || errno === ER.QUERY_TIMEOUT) {
    return statementTimeoutError(ds.name, ds.statementTimeoutMs, msg, code);
  }
  // Interrupted by someone else's KILL QUERY (ours are reported as cancelled before we get here).
  if (errno === ER.QUERY_INTERRUPTED) return plain(Code.CANCELLED);
  if (UNAVAILABLE_ERRNOS.has(errno) || UNAVAILABLE_CODES.has(err.code ?? "") || err.fatal) {
    return new SqlError(
      Code.UNAVAILABLE,
      `datasource "${ds.name}": the connection to mysql at ${ds.where} was lost: ${msg}`,
      code,
    );
  }
  if (PERMISSION_ERRNOS.has(errno)) return plain(Code.PERMISSION_DENIED);
  if (INVALID_ERRNOS.has(errno) || (errno > 0 && INVALID_SQLSTATE.test(err.sqlState ?? ""))) {
    return plain(Code.INVALID_ARGUMENT);
  }
  return plain(Code.INTERNAL);
}
