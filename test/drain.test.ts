// Clean shutdown: SIGTERM drains the hub and the agent; running work finishes; exit code 0.
import { TaskState } from "../src/gen/switchboard/v1/task.js";
import { afterAll, describe, expect, it } from "vitest";
import { SwitchboardClient, shell } from "../src/client/index.js";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { runCli, spawnCli, startAgent, startHub, stopAll, tempDir } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

afterAll(stopAll);

describe("graceful shutdown", () => {
  it("hub SIGTERM: the running task finishes, new work is refused, exit 0", async () => {
    const hub = await startHub();
    await startAgent(hub, { agentId: "drain-1", pool: "drain" });
    const exec = spawnCli([
      ...hub.cli,
      "exec",
      "--pool",
      "drain",
      "--shell",
      "echo begin; sleep 2; echo end",
    ]);
    await waitFor(() => exec.stdout().includes("begin"), { timeout: 20_000, message: "the task to start" });
    hub.kill("SIGTERM");
    await waitFor(
      async () => {
        const r = await runCli([...hub.cli, "exec", "--pool", "drain", "--", "true"]);
        return r.code !== 0;
      },
      { message: "the hub to refuse new work" },
    );
    expect(await exec.exited).toBe(0);
    expect(exec.stdout()).toBe("begin\nend\n");
    expect(await hub.exited).toBe(0);
  }, 60_000);

  it("agent SIGTERM: the running task finishes and reports, exit 0", async () => {
    const hub = await startHub();
    const agent = await startAgent(hub, { agentId: "drain-2", pool: "drain2" });
    const client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
    try {
      const id = await client.submit({
        ...shell({ script: "sleep 1; echo done" }),
        target: { pool: "drain2" },
      });
      await waitFor(async () => (await client.getTask(id)).info?.state === TaskState.TASK_STATE_RUNNING, {
        message: "the task to run",
      });
      agent.kill("SIGTERM");
      expect(await agent.exited).toBe(0);
      const t = await client.getTask(id);
      expect(t.info?.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
      expect(Buffer.from(t.stdout).toString()).toBe("done\n");
    } finally {
      client.close();
    }
  }, 60_000);

  it("a SIGTERM while the hub starts stops it gracefully once started: exit 0, nothing left behind", async () => {
    const dir = tempDir("hub-early-term");
    const hub = spawnCli(["hub", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data", dir]);
    // The store is open, the listeners are not up yet: the hub is in the middle of starting.
    await waitFor(() => hub.stderr().includes("store opened"), { message: "the hub to open its store" });
    hub.kill("SIGTERM");
    expect(await hub.exited, hub.stderr()).toBe(0);
    expect(hub.stderr()).toContain("hub stopped");
    expect(existsSync(join(dir, "hub.json"))).toBe(false);
  }, 30_000);
});
