// Docker tasks through the Docker Engine API (Docker's or podman's), as the rest of the agent sees them.

/** Runs docker tasks (ps, images, run, stop, rm, logs, inspect); see docker.ts. */
export { DockerExecutor, type DockerExecutorOptions } from "./docker.js";
