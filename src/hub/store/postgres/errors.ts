// The PostgreSQL store's errors: which failures are the database's (held and retried: it is
// unreachable, restarting, out of disk) and which are a write's own (they fail alone), the
// sentences callers read about either, and the URL as it may be shown: never with its password.
import pg from "pg";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { TokenRecord } from "../interfaces.js";
import { errorMessage } from "../errors.js";

/**
 * SQLSTATE classes that say the database, not the write, failed: 08 connection exception, 53
 * insufficient resources (disk full, too many connections), 57 operator intervention (shutdown,
 * restart), 58 system error (I/O), 40 transaction rollback (serialization, deadlock), and a
 * read-only transaction (a standby after a failover).
 */
const FAULT_STATE = /^(08|53|57|58|40)|^25006$/;

/** Whether a write failed for want of the database rather than for something in the write. */
export function isWriteFault(err: unknown): boolean {
  if (err instanceof pg.DatabaseError) return FAULT_STATE.test(err.code ?? "");
  if (!(err instanceof Error)) return false;
  // Node's socket errors (ECONNREFUSED, ECONNRESET, ...) and pg's own on a lost or timed-out link.
  const code = (err as NodeJS.ErrnoException).code;
  if (typeof code === "string" && /^E[A-Z]+$/.test(code)) return true;
  return /connection|terminated|timeout|not queryable|ended/i.test(err.message);
}

/** The error's code as a write failure shows it: the SQLSTATE, Node's errno code, or PG_ERROR. */
export function faultCode(err: unknown): string {
  if (err instanceof pg.DatabaseError && err.code) return `PG_${err.code}`;
  const code = err instanceof Error ? (err as NodeJS.ErrnoException).code : undefined;
  return typeof code === "string" ? code : "PG_ERROR";
}

/** A URL as it may be shown: without its password (and the user's name kept). */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    u.password = "";
    return u.toString();
  } catch {
    return "(a PostgreSQL URL that does not parse)";
  }
}

/** Removes every occurrence of the password (from the URL or the option) from a text. */
export function withoutSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (s.length > 0) out = out.split(s).join("***");
  return out;
}

/** The secrets a URL and a password option hold, to scrub from any message. */
export function secretsOf(url: string, password: string | undefined): string[] {
  const out: string[] = [];
  if (password) out.push(password);
  try {
    const p = new URL(url).password;
    if (p) out.push(p, decodeURIComponent(p));
  } catch {
    // An unparsable URL is never shown, only named as such.
  }
  return out;
}

/** A read or direct write that could not reach the database. */
export function unreachable(location: string, what: string, message: string): SwitchboardError {
  return new SwitchboardError(
    Code.UNAVAILABLE,
    `the hub's store cannot reach the database ${location}: ${message}: ${what}`,
  );
}

export function duplicateTaskError(id: string): SwitchboardError {
  return new SwitchboardError(Code.ALREADY_EXISTS, `a task with id ${id} exists already`);
}

export function taskInsertError(id: string, err: unknown): SwitchboardError {
  return new SwitchboardError(Code.INVALID_ARGUMENT, `task ${id} cannot be saved: ${errorMessage(err)}`, {
    cause: err,
  });
}

/** A unique violation on insertToken as the caller should read it; other errors unchanged. */
export function tokenInsertError(token: TokenRecord, err: unknown): unknown {
  if (!(err instanceof pg.DatabaseError) || err.code !== "23505") return err;
  const constraint = err.constraint ?? "";
  const message = constraint.includes("name")
    ? `a live token named "${token.name}" exists already: revoke it first or choose another name`
    : constraint.includes("hash")
      ? "a token with the same secret exists already"
      : `a token with id ${token.id} exists already`;
  return new SwitchboardError(Code.ALREADY_EXISTS, message, { cause: err });
}
