// Docker tasks, through the Docker Engine API (Docker's, or podman's compatible service) on the unix socket
// the agent's config names. ps, images and inspect answer with the engine's JSON; run starts a container
// and, attached, streams its output under the task's output window and ends with its exit code (a cancel
// stops the container); stop, rm and logs act on a container by id or name. Images are never pulled: an
// agent may have no registry access, so a missing image is a NOT_FOUND that says so. This file admits a
// task and holds the engine client; each task's run is a DockerTask (docker-task.ts).
import type Dockerode from "dockerode";
import { Code } from "../../../common/errors.js";
import type { TaskError, TaskSpec } from "../../../gen/switchboard/v1/task.js";
import {
  disabledRefusal,
  envNameProblem,
  type Execution,
  type ExecutionContext,
  type Executor,
} from "../executor.js";
import { DOCKER_OPS, DockerTask, type DockerExecutorOptions, type DockerOp } from "./docker-task.js";

export { DOCKER_OPS, type DockerExecutorOptions, type DockerOp };

/** The ops that act on an existing container, named by `container`. */
const CONTAINER_OPS: ReadonlySet<string> = new Set(["stop", "rm", "logs", "inspect"]);

const MAX_STOP_TIMEOUT_SECS = 3600;
/** Docker's rule for container names. */
const CONTAINER_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

export class DockerExecutor implements Executor {
  readonly kind = "docker" as const;
  private engine: Promise<Dockerode> | undefined;

  constructor(private readonly opts: DockerExecutorOptions) {}

  admit(spec: TaskSpec): TaskError | undefined {
    const invalid = (message: string): TaskError => ({ code: Code.INVALID_ARGUMENT, message });
    if (!this.opts.enabled)
      return disabledRefusal("docker", this.opts.agentId, "set [docker] enabled = true");
    if (spec.kind?.$case !== "docker") return invalid("not a docker task");
    const d = spec.kind.value;
    if (!(DOCKER_OPS as readonly string[]).includes(d.op)) {
      return invalid(
        `op: expected one of ${DOCKER_OPS.join(", ")}; got ${JSON.stringify(d.op.slice(0, 40))}`,
      );
    }
    const texts = [d.image, d.container, ...d.cmd, ...Object.keys(d.env), ...Object.values(d.env)];
    if (texts.some((t) => t.includes("\0")))
      return invalid("image, cmd, container and env may not contain NUL bytes");
    if (d.op === "run") {
      if (d.image.trim() === "") return invalid("docker run needs an image");
      if (d.container !== "" && !CONTAINER_NAME.test(d.container)) {
        return invalid(
          `container name ${JSON.stringify(d.container.slice(0, 80))}: use letters, digits and _ . - (starting with a letter or digit)`,
        );
      }
      const envProblem = envNameProblem(d.env);
      if (envProblem !== undefined) return invalid(envProblem);
    } else if (CONTAINER_OPS.has(d.op) && d.container.trim() === "") {
      return invalid(`docker ${d.op} needs a container (its id or name)`);
    }
    if (d.stopTimeoutSecs > MAX_STOP_TIMEOUT_SECS)
      return invalid(`stop_timeout_secs may be at most ${MAX_STOP_TIMEOUT_SECS}`);
    return undefined;
  }

  start(spec: TaskSpec, ctx: ExecutionContext): Execution {
    if (spec.kind?.$case !== "docker") throw new Error("DockerExecutor.start needs a docker spec");
    return new DockerTask(spec.kind.value, ctx, this.opts, this.client());
  }

  /**
   * The Engine API client, made on first use: dockerode takes a fifth of a second to load, which an agent
   * without docker tasks should not pay at start. It holds no connection (each request opens the socket).
   */
  private client(): Promise<Dockerode> {
    this.engine ??= import("dockerode").then((m) => new m.default({ socketPath: this.opts.socket }));
    return this.engine;
  }
}
