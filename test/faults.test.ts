// Faults: an agent killed mid-task, and a hub killed under load and restarted. Nothing accepted
// may go missing: every task ends in a terminal state that says what happened.
import { TaskState } from "../src/gen/switchboard/v1/task.js";
import { afterAll, describe, expect, it } from "vitest";
import { SwitchboardClient, echo, shell } from "../src/client/index.js";
import { freePort, runCli, spawnCli, startAgent, startHub, stopAll, tempDir } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";
import { isTerminalWire } from "../src/common/task-state.js";

afterAll(stopAll);

describe("faults", () => {
  it("marks the task lost and tells the client when the agent is killed mid-task", async () => {
    // The hub cannot tell a dead agent from a broken link: it holds the task for the resume grace.
    const hub = await startHub({ args: ["--resume-grace", "2s"] });
    const agent = await startAgent(hub, { agentId: "doomed", pool: "doom" });
    const exec = spawnCli([...hub.cli, "exec", "--pool", "doom", "--shell", "echo started; sleep 60"]);
    await waitFor(() => exec.stdout().includes("started"), { timeout: 20_000, message: "the task to start" });
    agent.kill("SIGKILL");
    expect(await exec.exited).toBe(1);
    expect(exec.stderr()).toMatch(/lost/i);
    expect(exec.stderr()).toMatch(/did not resume within the 2s grace/);
    const tasks = await runCli([...hub.cli, "tasks", "--pool", "doom", "--output", "json"]);
    const [task] = JSON.parse(tasks.stdout) as { state: string; reason?: string }[];
    expect(task?.state).toBe("lost");
  }, 60_000);

  it("ends a killed agent's tasks at once when it comes back as a new process", async () => {
    const hub = await startHub(); // the default 30 s grace
    const agent = await startAgent(hub, { agentId: "phoenix", pool: "phoenix" });
    const exec = spawnCli([...hub.cli, "exec", "--pool", "phoenix", "--shell", "echo started; sleep 60"]);
    await waitFor(() => exec.stdout().includes("started"), { timeout: 20_000, message: "the task to start" });
    agent.kill("SIGKILL");
    await agent.exited;
    const killedAt = Date.now();
    await startAgent(hub, { agentId: "phoenix", pool: "phoenix" });
    expect(await exec.exited).toBe(1);
    expect(Date.now() - killedAt).toBeLessThan(20_000);
    expect(exec.stderr()).toMatch(/restarted as a new process/);
  }, 60_000);

  it("accounts for every accepted task after the hub is killed under load and restarted", async () => {
    const dataDir = tempDir("hub-crash");
    const port = await freePort();
    const listen = ["--listen", `127.0.0.1:${port}`];
    let hub = await startHub({ dataDir, args: listen });
    await startAgent(hub, { agentId: "survivor", pool: "load", args: ["--pool-size", "8"] });
    const client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
    const accepted: string[] = [];
    let stop = false;
    const load = (async () => {
      let i = 0;
      while (!stop && i < 5000) {
        const spec = i % 2 === 0 ? echo(new Uint8Array([i & 255])) : shell({ argv: ["sleep", "0.05"] });
        const batch = Array.from({ length: 16 }, () =>
          client.submit({ ...spec, target: { pool: "load" }, timeoutMs: 60_000 }).then(
            (id) => accepted.push(id),
            () => undefined,
          ),
        );
        await Promise.all(batch);
        i += 16;
      }
    })();
    await waitFor(() => accepted.length >= 300, { timeout: 30_000, message: "some tasks to be accepted" });
    hub.kill("SIGKILL");
    await hub.exited;
    stop = true;
    await load;
    client.close();
    const count = accepted.length;
    hub = await startHub({ dataDir, args: listen });
    const after = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
    try {
      await waitFor(
        async () => {
          for (const id of accepted) {
            const t = await after.getTask(id);
            if (!t.info || !isTerminalWire(t.info.state)) return false;
          }
          return true;
        },
        { timeout: 60_000, interval: 500, message: "every accepted task to reach a terminal state" },
      );
      expect(accepted.length).toBe(count);
      const states = new Map<TaskState, number>();
      for (const id of accepted) {
        const s = (await after.getTask(id)).info!.state;
        states.set(s, (states.get(s) ?? 0) + 1);
      }
      // Most work completed; what was on the agent when the hub died is lost, with a reason.
      expect(states.get(TaskState.TASK_STATE_SUCCEEDED) ?? 0).toBeGreaterThan(0);
      for (const id of accepted) {
        const t = (await after.getTask(id)).info!;
        if (t.state === TaskState.TASK_STATE_LOST) expect(t.reason).toMatch(/hub restarted/);
      }
      // The agent found the restarted hub by itself and takes new work.
      const r = await after.execute({
        ...echo(new TextEncoder().encode("back")),
        target: { pool: "load" },
        waitForAgent: true,
        timeoutMs: 30_000,
      });
      expect(Buffer.from(r.result).toString()).toBe("back");
    } finally {
      after.close();
    }
  }, 150_000);
});
