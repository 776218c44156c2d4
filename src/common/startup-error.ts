// Why a hub or an agent could not start, as one sentence that names the setting and its value and
// says what to change: the CLI prints the sentence alone (a stack trace only at --log-level debug).
import { Code, SwitchboardError } from "./errors.js";

/** A start-up failure whose message names the setting (e.g. `hub.listen`) and its value. */
export class StartupError extends SwitchboardError {
  constructor(
    message: string,
    /** The setting at fault, as the config file spells it ("agent.agent_port"). */
    readonly setting: string,
    options?: { cause?: unknown },
  ) {
    super(Code.FAILED_PRECONDITION, message, options);
    this.name = "StartupError";
  }
}

/** The errno a listen failure carries: Node's `code`, or the one grpc-js quotes in its message. */
function errnoOf(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  if (typeof code === "string") return code;
  const message = err instanceof Error ? err.message : String(err);
  return /\b(EADDRINUSE|EADDRNOTAVAIL|EACCES|EPERM|ENOTFOUND|EAI_AGAIN|EAFNOSUPPORT)\b/.exec(message)?.[1];
}

/**
 * A listener that would not start, said about its setting: `hub.listen 127.0.0.1:7000 is already in
 * use (set hub.listen to a free address)`. `fix` is what to change, in the setting's own words.
 */
export function listenError(
  err: unknown,
  setting: string,
  value: string,
  fix: string,
  /** Where the host is a setting of its own (agent.agent_host), the one a host problem is about. */
  host?: { setting: string; value: string; fix: string },
): StartupError {
  const errno = errnoOf(err);
  if (
    host &&
    errno !== undefined &&
    ["EADDRNOTAVAIL", "ENOTFOUND", "EAI_AGAIN", "EAFNOSUPPORT"].includes(errno)
  ) {
    ({ setting, value, fix } = host);
  }
  const detail = err instanceof Error ? err.message : String(err);
  let what: string;
  switch (errno) {
    case "EADDRINUSE":
      what = "is already in use";
      break;
    case "EADDRNOTAVAIL":
      what = "is not an address of this machine";
      break;
    case "EACCES":
    case "EPERM":
      what = "needs a privilege this process lacks (ports below 1024 need root or CAP_NET_BIND_SERVICE)";
      break;
    case "ENOTFOUND":
    case "EAI_AGAIN":
      what = "names a host that does not resolve";
      break;
    case "EAFNOSUPPORT":
      what = "is of an address family this machine does not support";
      break;
    default:
      what = `cannot be listened on: ${detail}`;
  }
  return new StartupError(`${setting} ${value} ${what} (${fix})`, setting, { cause: err });
}
