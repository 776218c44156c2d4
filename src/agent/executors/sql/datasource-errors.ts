// What the network engines (PostgreSQL, MySQL/MariaDB) and SQLite say alike when a statement fails: every
// message starts with the datasource's name, so that a user with several datasources knows which one to
// look at; the wording of cancel, timeout, read-only and missing-table errors is the same for every engine.
import { Code } from "../../../common/errors.js";
import { SqlError } from "./datasource.js";

/** An error's message, whatever was thrown. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Socket error codes that mean the link to the server is gone or was never made (not a statement's fault). */
export const NETWORK_ERROR_CODES: ReadonlySet<string> = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** The caller's signal (or the task's stop) ended the statement. */
export function cancelledError(datasource: string): SqlError {
  return new SqlError(Code.CANCELLED, `datasource "${datasource}": query cancelled`);
}

/** The database refused a write because the datasource is read-only. */
export function readOnlyError(datasource: string, message: string, engineCode?: string): SqlError {
  return new SqlError(
    Code.PERMISSION_DENIED,
    `datasource "${datasource}" is read-only: ${message}`,
    engineCode,
  );
}

/** The statement ran past the datasource's statement_timeout; message is the engine's own, when it gave one. */
export function statementTimeoutError(
  datasource: string,
  timeoutMs: number,
  message?: string,
  engineCode?: string,
): SqlError {
  return new SqlError(
    Code.DEADLINE_EXCEEDED,
    `datasource "${datasource}": statement timeout (${timeoutMs / 1000}s) exceeded` +
      (message === undefined ? "" : `: ${message}`),
    engineCode,
  );
}

/** describeTable() of a table the catalog does not know. */
export function tableNotFoundError(datasource: string, table: string): SqlError {
  return new SqlError(Code.NOT_FOUND, `datasource "${datasource}": table "${table}" does not exist`);
}
