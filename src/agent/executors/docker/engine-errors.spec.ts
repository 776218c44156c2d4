// Engine failures become status codes and sentences a user can act on (shapes as dockerode rejects with).
import { describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import { engineTaskError, type EngineCall } from "./engine-errors.js";

const at: EngineCall = { agentId: "a1", socket: "/run/docker.sock", action: "list containers" };

function httpError(statusCode: number, message: string): Error {
  return Object.assign(new Error(`(HTTP code ${statusCode}) ...`), {
    statusCode,
    reason: "no such container",
    json: { message, cause: "x", response: statusCode },
  });
}

describe("engineTaskError", () => {
  it("calls an absent or refused socket UNAVAILABLE and names it", () => {
    const absent = Object.assign(new Error("connect ENOENT /run/docker.sock"), { code: "ENOENT" });
    const e = engineTaskError(absent, at);
    expect(e.code).toBe(Code.UNAVAILABLE);
    expect(e.message).toMatch(
      /^docker engine socket \/run\/docker\.sock is not reachable on agent a1: no such socket/,
    );
    const denied = Object.assign(new Error("connect EACCES"), { code: "EACCES" });
    expect(engineTaskError(denied, at).message).toMatch(/permission denied.*docker group/);
  });

  it("says a missing image is not pulled, and a missing container is missing", () => {
    const img = engineTaskError(httpError(404, "no such image: localhost/nope: image not known"), {
      ...at,
      action: "create the container",
      image: "localhost/nope",
      container: "web",
    });
    expect(img.code).toBe(Code.NOT_FOUND);
    expect(img.message).toMatch(/^image localhost\/nope not found on agent a1 \(no pull: /);
    const c = engineTaskError(httpError(404, 'no container with name or ID "web" found'), {
      ...at,
      action: "stop container web",
      container: "web",
    });
    expect(c).toEqual({
      code: Code.NOT_FOUND,
      message: "container web not found on agent a1 (docker ps --all lists the ones it has)",
    });
  });

  it("keeps the engine's words for conflicts and bad requests", () => {
    const busy = engineTaskError(
      httpError(
        409,
        "You cannot remove a running container abc. Stop the container before attempting removal",
      ),
      { ...at, action: "remove container abc", container: "abc" },
    );
    expect(busy.code).toBe(Code.FAILED_PRECONDITION);
    expect(busy.message).toMatch(
      /You cannot remove a running container abc.*\(stop it first, or remove it with force\)$/,
    );
    // podman says the same with a 500.
    const podmanBusy = engineTaskError(
      httpError(
        500,
        "cannot remove container abc as it is running - running or paused containers cannot be removed without force: container state improper",
      ),
      { ...at, action: "remove container abc", container: "abc" },
    );
    expect(podmanBusy.code).toBe(Code.FAILED_PRECONDITION);
    expect(podmanBusy.message).toMatch(
      /^cannot remove container abc on agent a1: .*\(stop it first, or remove it with force\)$/,
    );
    expect(engineTaskError(httpError(400, "bad env"), at).code).toBe(Code.INVALID_ARGUMENT);
    const missing = engineTaskError(
      httpError(500, 'runc create failed: exec: "nope": executable file not found in $PATH'),
      { ...at, action: "start container abc", container: "abc" },
    );
    expect(missing.code).toBe(Code.INVALID_ARGUMENT);
    expect(missing.message).toMatch(
      /^cannot start container abc on agent a1: .*"nope": executable file not found/,
    );
    const boom = engineTaskError(httpError(500, "runtime failed"), at);
    expect(boom.code).toBe(Code.UNKNOWN);
    expect(boom.message).toContain("runtime failed (HTTP 500)");
  });

  it("reports an engine that did not answer in time", () => {
    const e = engineTaskError(new Error("aborted"), { ...at, timedOutAfterMs: 30_000 });
    expect(e.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(e.message).toBe(
      "the docker engine at /run/docker.sock on agent a1 did not answer within 30 s when asked to list containers",
    );
  });
});
