// What the SDK throws: the one SwitchboardError (a gRPC status code, its name, a sentence to act on),
// with a failed call to an unreachable hub worded so that it names the hub and what to check.
import { status } from "@grpc/grpc-js";
import { isServiceError, SwitchboardError } from "../common/errors.js";

const UNREACHABLE =
  /No connection established|ECONNREFUSED|ENOTFOUND|EHOSTUNREACH|ETIMEDOUT|Failed to connect|getaddrinfo|Name resolution failed/i;

/** Whatever a grpc-js call failed with, as a SwitchboardError; one that never reached the hub names it. */
export function callError(err: unknown, hub: string): SwitchboardError {
  if (
    isServiceError(err) &&
    err.code === status.UNAVAILABLE &&
    UNREACHABLE.test(err.details || err.message)
  ) {
    const details = (err.details || err.message).replace(
      /^No connection established\.\s*Last error:\s*/i,
      "",
    );
    return new SwitchboardError(
      err.code,
      `cannot reach hub at ${hub} (${details}); is it running? Point at it with --hub or SWITCHBOARD_HUB; if it serves TLS, add --tls-ca FILE (or --tls)`,
      { cause: err },
    );
  }
  return SwitchboardError.from(err);
}
