// The one error type of Switchboard, on every side: a gRPC status code, a sentence a user can act on,
// and the cause it came from. `SwitchboardError.from(unknown)` turns whatever was thrown (a grpc-js
// ServiceError, a Node error, a string) into one, as connect-es's ConnectError.from does.
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";

/** The gRPC status codes (grpc-js's `status`) that SwitchboardError.code holds: `Code.NOT_FOUND`, `Code.UNAVAILABLE`, ... */
export { status as Code };

/** The name of a status code, e.g. "UNAVAILABLE". */
export function codeName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number";
}

/**
 * An error with a gRPC status code and a message a user can act on. Subclassed only where a caller
 * must tell one apart (a usage error of the CLI, a bad setting); everything else is this class with a
 * code. `cause` keeps what it came from, for logs.
 */
export class SwitchboardError extends Error {
  /** The gRPC status code (compare with `Code.NOT_FOUND` and the like): what kind of failure, for a program to branch on. */
  readonly code: status;

  constructor(code: status, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "SwitchboardError";
    this.code = code;
  }

  /** The code's name, e.g. "NOT_FOUND". */
  get codeName(): string {
    return codeName(this.code);
  }

  /**
   * Whatever was thrown, as a SwitchboardError: itself when it is one; a grpc-js ServiceError with its
   * code and details; anything else with `code` (default UNKNOWN) and its message, kept as the cause.
   */
  static from(err: unknown, code: status = status.UNKNOWN): SwitchboardError {
    if (err instanceof SwitchboardError) return err;
    if (isServiceError(err))
      return new SwitchboardError(err.code, err.details || err.message, { cause: err });
    const message = err instanceof Error ? err.message : String(err);
    return new SwitchboardError(code, message, { cause: err });
  }
}

/** The object grpc-js servers pass to a callback or `call.destroy()` to end a call with a status. */
export function toServiceError(err: unknown): ServiceError {
  const e = SwitchboardError.from(err, status.INTERNAL);
  const out = new Error(e.message) as ServiceError;
  out.code = e.code;
  out.details = e.message;
  out.metadata = new Metadata();
  return out;
}

/**
 * A name from the wire as it may appear in an error: printable, at most 80 characters, quoted
 * when it holds anything unusual, so that hostile input cannot garble a message or a log line.
 */
export function shownName(name: string): string {
  const clipped = name.length > 80 ? `${name.slice(0, 77)}...` : name;
  return /^[\w.@:/-]+$/.test(clipped) ? clipped : JSON.stringify(clipped);
}
