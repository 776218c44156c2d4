// Docker tasks end to end against a real Docker Engine API (podman's compatible service, set up by this
// file): a hub, an agent whose [docker] section names the service's socket and one whose socket is absent,
// driven through the built CLI as a user would. busybox's sh as PID 1 ignores SIGTERM, so every stop here
// uses a 1 s timeout.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, docker } from "../src/client/index.js";
import { BUSYBOX_IMAGE, startPodman, type PodmanService } from "./support/podman.js";
import {
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

// Without podman this file fails (startPodman names the missing Debian packages; npm run setup installs them).

let engine: PodmanService | undefined;
let hub: HubProc;

function agentConfig(socket: string): string {
  const path = join(tempDir("docker-agent"), "agent.toml");
  writeFileSync(path, `[docker]\nenabled = true\nsocket = "${socket}"\n`);
  return path;
}

/** `switchboard docker --pool POOL ARGS...` through the built CLI. */
function dockerCli(args: string[], pool = "docker"): ReturnType<typeof runCli> {
  return runCli([...hub.cli, "docker", "--pool", pool, ...args]);
}

async function containerState(name: string): Promise<string> {
  return (await engine!.podman(["inspect", "--format", "{{.State.Status}}", name])).trim();
}

describe("docker tasks", () => {
  beforeAll(async () => {
    engine = await startPodman();
    hub = await startHub();
    await Promise.all([
      startAgent(hub, {
        agentId: "docker-1",
        pool: "docker",
        shell: false,
        args: ["--config", agentConfig(engine.socket)],
      }),
      startAgent(hub, {
        agentId: "docker-nosocket",
        pool: "nosocket",
        shell: false,
        args: ["--config", agentConfig("/nonexistent/docker.sock")],
      }),
    ]);
  }, 120_000);

  afterAll(async () => {
    await stopAll();
    await engine?.stop();
  }, 60_000);

  it("runs a container attached: stdout and stderr apart, its exit code, removed with --rm", async () => {
    const r = await dockerCli(["run", "--rm", BUSYBOX_IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3"]);
    expect(r.stdout).toBe("out\n");
    expect(r.stderr).toBe("err\n");
    expect(r.code).toBe(3);
    expect((await engine!.podman(["ps", "--all", "--quiet"])).trim()).toBe("");

    const ok = await dockerCli([
      "run",
      "--rm",
      "-e",
      "GREETING=hello there",
      BUSYBOX_IMAGE,
      "sh",
      "-c",
      'echo "$GREETING"',
    ]);
    expect(ok).toMatchObject({ code: 0, stdout: "hello there\n" });
  });

  it("streams more output than one output window, whole and in order", async () => {
    // About 6.9 MB: past the hub's 4 MiB window, so the agent pauses the container's output on the way.
    const r = await dockerCli(["run", "--rm", BUSYBOX_IMAGE, "seq", "1", "1000000"]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.split("\n");
    expect(lines.pop()).toBe("");
    expect(lines.length).toBe(1_000_000);
    expect(lines.every((l, i) => l === String(i + 1))).toBe(true);
  });

  it("runs detached, inspects it running, stops it and removes it", async () => {
    const started = await dockerCli([
      "run",
      "--detach",
      "--name",
      "sb-sleeper",
      BUSYBOX_IMAGE,
      "sleep",
      "300",
    ]);
    expect(started.code, started.stderr).toBe(0);
    const id = started.stdout.trim();
    expect(id).toMatch(/^[0-9a-f]{64}$/);

    const inspected = await dockerCli(["inspect", "sb-sleeper"]);
    expect(inspected.code, inspected.stderr).toBe(0);
    const info = JSON.parse(inspected.stdout) as { Id: string; State: { Running: boolean; Pid: number } };
    expect(info.Id).toBe(id);
    expect(info.State.Running).toBe(true);

    const ps = await dockerCli(["ps", "-o", "json"]);
    expect((JSON.parse(ps.stdout) as { Id: string }[]).map((c) => c.Id)).toContain(id);
    const table = await dockerCli(["ps"]);
    expect(table.stdout).toMatch(/^CONTAINER ID\s+IMAGE\s+COMMAND\s+CREATED\s+STATUS\s+NAMES$/m);
    expect(table.stdout).toMatch(
      new RegExp(`^${id.slice(0, 12)}\\s+${BUSYBOX_IMAGE}\\s+"sleep 300".*sb-sleeper$`, "m"),
    );

    const stopped = await dockerCli(["stop", "sb-sleeper", "--time", "1"]);
    expect(stopped).toMatchObject({ code: 0, stdout: "sb-sleeper\n" });
    expect(await containerState("sb-sleeper")).toBe("exited");
    // Stopping a stopped container is what was asked for, not an error.
    expect((await dockerCli(["stop", "sb-sleeper", "--time", "1"])).code).toBe(0);

    expect(await dockerCli(["rm", "sb-sleeper"])).toMatchObject({ code: 0, stdout: "sb-sleeper\n" });
    const gone = await dockerCli(["inspect", "sb-sleeper"]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("container sb-sleeper not found on agent docker-1");
    expect(gone.stderr).toContain("(NOT_FOUND)");
  });

  it("refuses to remove a running container without --force", async () => {
    const started = await dockerCli(["run", "-d", "--name", "sb-busy", BUSYBOX_IMAGE, "sleep", "300"]);
    expect(started.code, started.stderr).toBe(0);
    const refused = await dockerCli(["rm", "sb-busy"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/running.*\(FAILED_PRECONDITION\)/s);
    expect(await dockerCli(["rm", "--force", "sb-busy"])).toMatchObject({ code: 0 });
  });

  it("follows a container's logs until it stops, and tails them", async () => {
    const script = "for i in 1 2 3; do echo line $i; sleep 0.3; done; echo bye >&2";
    const started = await dockerCli(["run", "-d", "--name", "sb-talker", BUSYBOX_IMAGE, "sh", "-c", script]);
    expect(started.code, started.stderr).toBe(0);
    const followed = await dockerCli(["logs", "sb-talker", "--follow"]);
    expect(followed).toMatchObject({ code: 0, stdout: "line 1\nline 2\nline 3\n", stderr: "bye\n" });
    const tail = await dockerCli(["logs", "sb-talker", "--tail", "2"]);
    expect(tail).toMatchObject({ code: 0, stdout: "line 3\n", stderr: "bye\n" });
    await dockerCli(["rm", "sb-talker"]);
  });

  it("stops the container of an attached run cancelled with Ctrl-C", async () => {
    const p = spawnCli([
      ...hub.cli,
      "docker",
      "--pool",
      "docker",
      "run",
      "--name",
      "sb-cancelled",
      "--stop-timeout",
      "1",
      BUSYBOX_IMAGE,
      "sh",
      "-c",
      "echo ready; sleep 300",
    ]);
    await waitFor(() => p.stdout().includes("ready\n"), {
      timeout: 30_000,
      message: "the container's first line",
    });
    expect(await containerState("sb-cancelled")).toBe("running");
    const cancelledAt = Date.now();
    p.kill("SIGINT");
    expect(await p.exited).toBe(130);
    expect(Date.now() - cancelledAt).toBeLessThan(15_000);
    expect(p.stderr()).toMatch(/task \S+ was cancelled: cancelled from the command line/);
    expect(await containerState("sb-cancelled")).toBe("exited");
    await dockerCli(["rm", "sb-cancelled"]);
  });

  it("stops the container when the task's timeout passes (exit code 124)", async () => {
    const r = await dockerCli([
      "run",
      "--rm",
      "--timeout",
      "1500ms",
      "--stop-timeout",
      "1",
      BUSYBOX_IMAGE,
      "sh",
      "-c",
      "echo started; sleep 300",
    ]);
    expect(r.stdout).toBe("started\n");
    expect(r.code).toBe(124);
    expect((await engine!.podman(["ps", "--all", "--quiet"])).trim()).toBe("");
  });

  it("lists the agent's images, through the CLI and the SDK", async () => {
    const table = await dockerCli(["images"]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^localhost\/busybox\s+latest\s+[0-9a-f]{12}\s/m);
    const client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
    try {
      const r = await client.execute({ ...docker({ op: "images" }), target: { agentId: "docker-1" } });
      const images = JSON.parse(r.result.toString("utf8")) as { RepoTags: string[] }[];
      expect(images.flatMap((i) => i.RepoTags)).toContain(BUSYBOX_IMAGE);
    } finally {
      client.close();
    }
  });

  it("says an image that is not on the agent is NOT_FOUND, and is not pulled", async () => {
    const r = await dockerCli(["run", "--rm", "localhost/no-such-image:1", "true"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^error: image localhost\/no-such-image:1 not found on agent docker-1 \(no pull: the agent does not pull images from registries.*\(NOT_FOUND\)$/m,
    );
    expect(r.stderr).toContain("hint: switchboard docker --pool docker images lists the images there");
  });

  it("says an engine socket that is absent is UNAVAILABLE, naming the socket", async () => {
    const r = await dockerCli(["ps"], "nosocket");
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^error: docker engine socket \/nonexistent\/docker\.sock is not reachable on agent docker-nosocket: no such socket.*\(UNAVAILABLE\)$/m,
    );
    const run = await dockerCli(["run", "--rm", BUSYBOX_IMAGE, "true"], "nosocket");
    expect(run.code).toBe(1);
    expect(run.stderr).toContain("docker engine socket /nonexistent/docker.sock is not reachable");
  });
});
