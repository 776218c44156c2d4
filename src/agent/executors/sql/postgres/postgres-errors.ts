// PostgreSQL's failures as SqlErrors: the status code from the SQLSTATE (or from how the statement was
// stopped), the message PostgreSQL wrote after the datasource's name, and whether the connection itself is
// gone (then it is cut, not reused).
import { Code } from "../../../../common/errors.js";
import {
  NETWORK_ERROR_CODES,
  cancelledError,
  messageOf,
  readOnlyError,
  statementTimeoutError,
} from "../datasource-errors.js";
import { SqlError } from "../datasource.js";

/** The error's SQLSTATE, when PostgreSQL sent one. */
export function sqlstate(e: unknown): string | undefined {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

const NETWORK_CODES = new Set([...NETWORK_ERROR_CODES, "ECONNABORTED"]);
const NETWORK_MESSAGES =
  /Connection terminated|timeout expired|timeout exceeded when trying to connect|not queryable|Query read timeout/i;

/** True when the error means the connection itself is gone or unusable (not a statement's failure). */
export function isConnectionError(e: unknown): boolean {
  const state = sqlstate(e);
  if (state !== undefined) {
    return (state.startsWith("08") && state !== "08P01") || state.startsWith("57P") || state.startsWith("28");
  }
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === "string" && NETWORK_CODES.has(code)) return true;
  return e instanceof Error && NETWORK_MESSAGES.test(e.message);
}

/** SQLSTATE classes of a request that is wrong, not a server in trouble: syntax, data, constraints... */
const INVALID_ARGUMENT_CLASSES = new Set(["42", "22", "23", "21", "26", "34", "3F", "0A", "44", "2B"]);

/** The datasource an error is about. */
export interface ErrorContext {
  name: string;
  /** host:port/database */
  endpoint: string;
  statementTimeoutMs: number;
}

/** A connection could not be made (or taken from the pool). */
export function connectError(e: unknown, ds: ErrorContext): SqlError {
  if (e instanceof SqlError) return e;
  return new SqlError(
    Code.UNAVAILABLE,
    `datasource "${ds.name}": cannot connect to postgres at ${ds.endpoint}: ${messageOf(e)}`,
    sqlstate(e),
  );
}

/** A statement's failure; stopped says why the run was stopped, if it was (that decides over the error). */
export function postgresError(e: unknown, ds: ErrorContext, stopped?: "cancelled" | "closed"): SqlError {
  if (e instanceof SqlError) return e;
  const prefix = `datasource "${ds.name}"`;
  const message = messageOf(e);
  const state = sqlstate(e);
  if (stopped === "closed") {
    return new SqlError(
      Code.UNAVAILABLE,
      `${prefix} was closed while the query ran (the agent is shutting down)`,
    );
  }
  if (stopped === "cancelled") return cancelledError(ds.name);
  if (state === "57014") {
    if (/user request/i.test(message)) return new SqlError(Code.CANCELLED, `${prefix}: ${message}`, state);
    return statementTimeoutError(ds.name, ds.statementTimeoutMs, message, state);
  }
  if (state === "25006") return readOnlyError(ds.name, message, state);
  if (state === "42501") return new SqlError(Code.PERMISSION_DENIED, `${prefix}: ${message}`, state);
  // A wrong number of parameters is a protocol violation to PostgreSQL, but the caller's mistake to us.
  if (state === "08P01") return new SqlError(Code.INVALID_ARGUMENT, `${prefix}: ${message}`, state);
  if (state === "53300" || isConnectionError(e)) {
    return new SqlError(
      Code.UNAVAILABLE,
      `${prefix}: lost the connection to postgres at ${ds.endpoint}: ${message}`,
      state,
    );
  }
  if (state !== undefined && INVALID_ARGUMENT_CLASSES.has(state.slice(0, 2))) {
    return new SqlError(Code.INVALID_ARGUMENT, `${prefix}: ${message}`, state);
  }
  return new SqlError(Code.INTERNAL, `${prefix}: ${message}`, state);
}
