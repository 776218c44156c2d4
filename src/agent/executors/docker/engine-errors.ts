// What a failed Docker Engine API call means to the user who sent the task: a gRPC status code and a
// sentence naming the agent, the socket, the image or the container. The engine's own words are kept
// (they say what Docker or podman objected to); the socket's errno becomes "not reachable".
import { Code } from "../../../common/errors.js";
import type { TaskError } from "../../../gen/switchboard/v1/task.js";

/** The call that failed: what it was about, and where. */
export interface EngineCall {
  agentId: string;
  socket: string;
  /** e.g. "create the container", "stop container web-1". */
  action: string;
  /** Set when the call was about an image: a 404 then means the image is missing. */
  image?: string;
  /** Set when the call was about a container: a 404 then means the container is missing. */
  container?: string;
  /** Set when the call was abandoned because the engine did not answer in this long. */
  timedOutAfterMs?: number;
}

/** What dockerode rejects with: an HTTP status and the engine's JSON body, or a socket error. */
interface EngineFailure {
  message?: unknown;
  statusCode?: unknown;
  reason?: unknown;
  json?: unknown;
  code?: unknown;
  name?: unknown;
}

const SOCKET_ERRNOS = new Set([
  "ENOENT",
  "ECONNREFUSED",
  "EACCES",
  "EPERM",
  "ENOTSOCK",
  "ECONNRESET",
  "EPIPE",
  "ENOTDIR",
]);

/** The engine's message for a failed call: its JSON body's `message`, else the HTTP reason. */
export function engineMessage(err: unknown): string {
  const e = (err ?? {}) as EngineFailure;
  const json = e.json as { message?: unknown } | undefined;
  if (json && typeof json === "object" && typeof json.message === "string" && json.message.trim() !== "")
    return json.message.trim();
  if (typeof e.reason === "string" && e.reason !== "") return e.reason;
  return typeof e.message === "string" ? e.message.trim() : String(err);
}

export function engineStatus(err: unknown): number | undefined {
  const s = (err as EngineFailure | undefined)?.statusCode;
  return typeof s === "number" ? s : undefined;
}

export function engineTaskError(err: unknown, call: EngineCall): TaskError {
  const on = `on agent ${call.agentId}`;
  if (call.timedOutAfterMs !== undefined) {
    return {
      code: Code.DEADLINE_EXCEEDED,
      message: `the docker engine at ${call.socket} ${on} did not answer within ${Math.round(call.timedOutAfterMs / 1000)} s when asked to ${call.action}`,
    };
  }
  const e = (err ?? {}) as EngineFailure;
  const errno = typeof e.code === "string" ? e.code : undefined;
  const status = engineStatus(err);
  if (status === undefined && errno !== undefined && SOCKET_ERRNOS.has(errno)) {
    const why =
      errno === "ENOENT"
        ? "no such socket: is the engine running, and does [docker] socket in the agent's config name it?"
        : errno === "EACCES" || errno === "EPERM"
          ? "permission denied: the agent's user needs access to the socket (for Docker, the docker group)"
          : errno === "ECONNREFUSED"
            ? "nothing listens on it: is the engine running?"
            : `${typeof e.message === "string" ? e.message : errno}`;
    return {
      code: Code.UNAVAILABLE,
      message: `docker engine socket ${call.socket} is not reachable ${on}: ${why} (${errno})`,
    };
  }
  const said = engineMessage(err);
  switch (status) {
    case 404:
      if (call.image !== undefined && (call.container === undefined || /image/i.test(said))) {
        return {
          code: Code.NOT_FOUND,
          message: `image ${call.image} not found ${on} (no pull: the agent does not pull images from registries; load it there first, e.g. with docker load or podman import)`,
        };
      }
      if (call.container !== undefined) {
        return {
          code: Code.NOT_FOUND,
          message: `container ${call.container} not found ${on} (docker ps --all lists the ones it has)`,
        };
      }
      return { code: Code.NOT_FOUND, message: `cannot ${call.action} ${on}: ${said}` };
    case 400:
      return { code: Code.INVALID_ARGUMENT, message: `cannot ${call.action} ${on}: ${said}` };
    case 401:
    case 403:
      return {
        code: Code.PERMISSION_DENIED,
        message: `the docker engine refused to ${call.action} ${on}: ${said}`,
      };
    case 409:
      return conflict(call, said);
    case undefined:
      if (e.name === "AbortError")
        return { code: Code.CANCELLED, message: `${call.action} was abandoned ${on}` };
      return {
        code: Code.UNAVAILABLE,
        message: `lost the docker engine at ${call.socket} ${on} while trying to ${call.action}: ${said}`,
      };
    default:
      // Docker answers 400 for a command missing from the image, and 409 for a container in the wrong
      // state; podman answers 500 for both.
      if (/executable file not found/i.test(said))
        return { code: Code.INVALID_ARGUMENT, message: `cannot ${call.action} ${on}: ${said}` };
      if (/state improper/i.test(said)) return conflict(call, said);
      return {
        code: status >= 500 ? Code.UNKNOWN : Code.FAILED_PRECONDITION,
        message: `the docker engine could not ${call.action} ${on}: ${said} (HTTP ${status})`,
      };
  }
}

/** The container (or its name) is not in a state that allows the call. */
function conflict(call: EngineCall, said: string): TaskError {
  const hint =
    /running/i.test(said) && /remov/i.test(said) ? " (stop it first, or remove it with force)" : "";
  return {
    code: Code.FAILED_PRECONDITION,
    message: `cannot ${call.action} on agent ${call.agentId}: ${said}${hint}`,
  };
}
