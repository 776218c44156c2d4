// What the docker executor refuses before it touches the engine, and the container states it moves through.
// Runs against a real engine are in test/docker.test.ts.
import { describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import { silentLogger } from "../../../common/logger.js";
import type { DockerSpec, TaskSpec } from "../../../gen/switchboard/v1/task.js";
import { DockerExecutor } from "./docker.js";
import { canMoveDockerTask } from "./docker-task.js";

function spec(d: Partial<DockerSpec>): TaskSpec {
  return {
    kind: {
      $case: "docker",
      value: {
        op: "",
        image: "",
        cmd: [],
        container: "",
        env: {},
        detach: false,
        follow: false,
        all: false,
        force: false,
        remove: false,
        stopTimeoutSecs: 0,
        tail: 0,
        ...d,
      },
    },
  };
}

const executor = new DockerExecutor({
  enabled: true,
  agentId: "a1",
  socket: "/nonexistent/docker.sock",
  maxChunkBytes: 65536,
});

describe("DockerExecutor.admit", () => {
  it("refuses every docker task while [docker] is off, saying how to turn it on", () => {
    const off = new DockerExecutor({ enabled: false, agentId: "a1", socket: "/x", maxChunkBytes: 1024 });
    expect(off.admit(spec({ op: "ps" }))).toEqual({
      code: Code.PERMISSION_DENIED,
      message: "docker tasks are disabled on agent a1: set [docker] enabled = true in its config",
    });
  });

  it("takes each op with what it needs", () => {
    for (const d of [
      { op: "ps", all: true },
      { op: "images" },
      { op: "run", image: "localhost/busybox:latest", cmd: ["sh", "-c", "exit 3"], env: { A: "1" } },
      { op: "run", image: "busybox", container: "web-1.a_b", detach: true, remove: true },
      { op: "stop", container: "web-1", stopTimeoutSecs: 2 },
      { op: "rm", container: "abc123", force: true },
      { op: "logs", container: "web-1", follow: true, tail: 10 },
      { op: "inspect", container: "web-1" },
    ]) {
      expect(executor.admit(spec(d)), d.op).toBeUndefined();
    }
  });

  it("names what is missing or malformed", () => {
    const refused = (d: Partial<DockerSpec>): string => {
      const e = executor.admit(spec(d));
      expect(e?.code, JSON.stringify(d)).toBe(Code.INVALID_ARGUMENT);
      return e!.message;
    };
    expect(refused({ op: "exec" })).toBe(
      'op: expected one of ps, images, run, stop, rm, logs, inspect; got "exec"',
    );
    expect(refused({ op: "run" })).toBe("docker run needs an image");
    expect(refused({ op: "stop" })).toBe("docker stop needs a container (its id or name)");
    expect(refused({ op: "logs", container: " " })).toBe("docker logs needs a container (its id or name)");
    expect(refused({ op: "run", image: "busybox", container: "-bad" })).toMatch(
      /^container name "-bad": use letters/,
    );
    expect(refused({ op: "run", image: "busybox", env: { "A=B": "1" } })).toBe(
      'invalid environment variable name "A=B"',
    );
    expect(refused({ op: "run", image: "busy\0box" })).toMatch(/NUL bytes/);
    expect(refused({ op: "stop", container: "c", stopTimeoutSecs: 3601 })).toBe(
      "stop_timeout_secs may be at most 3600",
    );
  });
});

describe("a docker task's container states", () => {
  it("only stops a container that runs, and ends from anywhere but never leaves done", () => {
    expect(canMoveDockerTask("requesting", "created")).toBe(true);
    expect(canMoveDockerTask("requesting", "stopping")).toBe(false);
    expect(canMoveDockerTask("created", "stopping")).toBe(false);
    expect(canMoveDockerTask("running", "stopping")).toBe(true);
    expect(canMoveDockerTask("stopping", "stopping")).toBe(false);
    expect(canMoveDockerTask("stopping", "exited")).toBe(true);
    for (const s of ["requesting", "created", "running", "stopping", "exited"] as const)
      expect(canMoveDockerTask(s, "done")).toBe(true);
    expect(canMoveDockerTask("done", "requesting")).toBe(false);
  });
});

describe("DockerExecutor with an absent engine socket", () => {
  it("fails the task with UNAVAILABLE naming the socket, and crashes nothing", async () => {
    const started: number[] = [];
    const run = executor.start(spec({ op: "ps" }), {
      taskId: "t1",
      deadlineMs: 0,
      output: { write: () => true, onceWritable: (cb) => queueMicrotask(cb) },
      started: (pid) => started.push(pid),
      grantInput: () => undefined,
      logger: silentLogger(),
    });
    const f = await run.done;
    expect(f.error?.code).toBe(Code.UNAVAILABLE);
    expect(f.error?.message).toMatch(
      /^docker engine socket \/nonexistent\/docker\.sock is not reachable on agent a1: no such socket/,
    );
  });
});
