// The one error type the SDK throws: a gRPC status code, its name, and a sentence to act on.
import { status, type ServiceError } from "@grpc/grpc-js";
import { codeName, isServiceError } from "../common/errors.js";

export class SwitchboardClientError extends Error {
  readonly code: status;
  readonly codeName: string;
  constructor(code: status, message: string) {
    super(message);
    this.name = "SwitchboardClientError";
    this.code = code;
    this.codeName = codeName(code);
  }
}

const UNREACHABLE =
  /No connection established|ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|Failed to connect|getaddrinfo|Name resolution failed/i;

/** Turns whatever a grpc-js call failed with into a SwitchboardClientError that names the hub. */
export function toClientError(err: unknown, hub: string): SwitchboardClientError {
  if (err instanceof SwitchboardClientError) return err;
  if (isServiceError(err)) {
    const e: ServiceError = err;
    const details = e.details || e.message;
    if (e.code === status.UNAVAILABLE && UNREACHABLE.test(details)) {
      return new SwitchboardClientError(
        e.code,
        `cannot reach hub at ${hub} (${details.replace(/^No connection established\.\s*Last error:\s*/i, "")}); is it running? Point at it with --hub or SWITCHBOARD_HUB; if it serves TLS, add --tls-ca FILE (or --tls)`,
      );
    }
    return new SwitchboardClientError(e.code, details);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new SwitchboardClientError(status.UNKNOWN, message);
}
