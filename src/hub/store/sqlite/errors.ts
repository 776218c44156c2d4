// The SQLite store's errors: which failures are the disk's (held and retried) and which are a
// write's own (they fail alone), and the sentences callers read about either.
import Database from "better-sqlite3";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { TokenRecord } from "../interfaces.js";
import { errorMessage } from "../errors.js";

/**
 * Whether a write failed for want of the disk (full, I/O error, locked by another process,
 * read-only, ...) rather than for something in the write itself (a constraint, a bad value). The
 * first kind is held and retried, the second fails alone while the rest of its batch commits.
 */
export function isWriteFault(err: unknown): boolean {
  const code = sqliteCode(err);
  return (
    code !== undefined &&
    /^SQLITE_(FULL|IOERR|BUSY|LOCKED|READONLY|CANTOPEN|NOMEM|CORRUPT|NOTADB|PROTOCOL|NOLFS|PERM)/.test(code)
  );
}

export function sqliteCode(err: unknown): string | undefined {
  return err instanceof Database.SqliteError ? err.code : undefined;
}

export function taskInsertError(id: string, err: unknown): SwitchboardError {
  const code = sqliteCode(err);
  const e =
    code === "SQLITE_CONSTRAINT_PRIMARYKEY" || code === "SQLITE_CONSTRAINT_UNIQUE"
      ? new SwitchboardError(Code.ALREADY_EXISTS, `a task with id ${id} exists already`)
      : code?.startsWith("SQLITE_CONSTRAINT")
        ? new SwitchboardError(Code.INVALID_ARGUMENT, `task ${id} cannot be saved: ${errorMessage(err)}`)
        : new SwitchboardError(Code.UNAVAILABLE, `the store could not save task ${id}: ${errorMessage(err)}`);
  e.cause = err;
  return e;
}

export function tokenInsertError(token: TokenRecord, err: unknown): unknown {
  const code = sqliteCode(err);
  if (code !== "SQLITE_CONSTRAINT_UNIQUE" && code !== "SQLITE_CONSTRAINT_PRIMARYKEY") return err;
  const message = errorMessage(err);
  const e = message.includes("tokens.name")
    ? new SwitchboardError(
        Code.ALREADY_EXISTS,
        `a live token named "${token.name}" exists already: revoke it first or choose another name`,
      )
    : message.includes("tokens.hash")
      ? new SwitchboardError(Code.ALREADY_EXISTS, "a token with the same secret exists already")
      : new SwitchboardError(Code.ALREADY_EXISTS, `a token with id ${token.id} exists already`);
  e.cause = err;
  return e;
}

export function wrapOpenError(path: string, err: unknown): unknown {
  if (err instanceof SwitchboardError) return err;
  const e = new SwitchboardError(
    Code.FAILED_PRECONDITION,
    `cannot open the store ${path}: ${errorMessage(err)}`,
  );
  e.cause = err;
  return e;
}
