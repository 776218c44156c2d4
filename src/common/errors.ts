// Errors that carry a gRPC status code and a sentence a user can act on.
import { Metadata, status, type ServiceError } from "@grpc/grpc-js";

export { status as Code };

export class SwitchboardError extends Error {
  readonly code: status;
  constructor(code: status, message: string) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
  }
}

/** The object grpc-js servers pass to a callback or `call.destroy()` to end a call with a status. */
export function toServiceError(err: unknown): ServiceError {
  const code = err instanceof SwitchboardError ? err.code : status.INTERNAL;
  const details = err instanceof Error ? err.message : String(err);
  const e = new Error(details) as ServiceError;
  e.code = code;
  e.details = details;
  e.metadata = new Metadata();
  return e;
}

export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number";
}

/** The name of a status code, e.g. "UNAVAILABLE". */
export function codeName(code: number): string {
  return (status as unknown as Record<number, string>)[code] ?? `CODE_${code}`;
}

/**
 * A name from the wire as it may appear in an error: printable, at most 80 characters, quoted
 * when it holds anything unusual, so that hostile input cannot garble a message or a log line.
 */
export function shownName(name: string): string {
  const clipped = name.length > 80 ? `${name.slice(0, 77)}...` : name;
  return /^[\w.@:/-]+$/.test(clipped) ? clipped : JSON.stringify(clipped);
}
