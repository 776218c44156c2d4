// Scheduling end to end: no agent, waiting for one, a full queue, deadlines, oversized input.
import { TaskState } from "../src/gen/switchboard/v1/task.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, echo, shell } from "../src/client/index.js";
import { runCli, startAgent, startHub, stopAll, type HubProc } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

let hub: HubProc;
let client: SwitchboardClient;

beforeAll(async () => {
  hub = await startHub({ args: ["--queue-limit", "2"] });
  client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
  await startAgent(hub, { agentId: "sched-1", pool: "one", args: ["--pool-size", "1"] });
});

afterAll(async () => {
  client.close();
  await stopAll();
});

describe("scheduling", () => {
  it("fails at once with UNAVAILABLE when no agent of the pool is connected", async () => {
    const r = await runCli([...hub.cli, "exec", "--pool", "nobody", "--", "true"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/no agent of pool nobody is connected/);
  });

  it("waits for an agent when asked to", async () => {
    const waiting = runCli(
      [...hub.cli, "exec", "--pool", "late", "--wait", "--timeout", "30s", "--", "echo", "finally"],
      { timeoutMs: 40_000 },
    );
    await waitFor(async () => (await client.listTasks({ pool: "late" })).length > 0, {
      message: "the task to be queued",
    });
    await startAgent(hub, { agentId: "late-1", pool: "late" });
    const r = await waiting;
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("finally\n");
  });

  it("refuses with RESOURCE_EXHAUSTED when the target's queue is full", async () => {
    // The one slot is busy; two tasks fill the queue (limit 2); the next is refused.
    const busy = await client.submit({ ...shell({ argv: ["sleep", "30"] }), target: { pool: "one" } });
    await waitFor(async () => (await client.getTask(busy)).info?.state === TaskState.TASK_STATE_RUNNING, {
      message: "the slot to be taken",
    });
    const queued = [
      await client.submit({ ...shell({ argv: ["true"] }), target: { pool: "one" } }),
      await client.submit({ ...shell({ argv: ["true"] }), target: { pool: "one" } }),
    ];
    const r = await runCli([...hub.cli, "exec", "--pool", "one", "--detach", "--", "true"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/full/);
    await client.cancel(busy);
    for (const id of queued) {
      await waitFor(async () => (await client.getTask(id)).info?.state === TaskState.TASK_STATE_SUCCEEDED, {
        timeout: 20_000,
        message: `queued task ${id} to run`,
      });
    }
  });

  it("times out a task that waits in the queue past its deadline", async () => {
    const busy = await client.submit({ ...shell({ argv: ["sleep", "30"] }), target: { pool: "one" } });
    await waitFor(async () => (await client.getTask(busy)).info?.state === TaskState.TASK_STATE_RUNNING, {
      message: "the slot to be taken",
    });
    const r = await runCli([...hub.cli, "exec", "--pool", "one", "--timeout", "500ms", "--", "true"]);
    expect(r.code).toBe(124);
    await client.cancel(busy);
  });

  it("rejects a message over the size limit with a clear error and stays up", async () => {
    const big = new Uint8Array(17 * 1024 * 1024);
    await expect(client.executeUnary({ ...echo(big), target: { pool: "one" } })).rejects.toMatchObject({
      codeName: "RESOURCE_EXHAUSTED",
    });
    const r = await client.execute({
      ...echo(new TextEncoder().encode("still here")),
      target: { pool: "one" },
    });
    expect(Buffer.from(r.result).toString()).toBe("still here");
  });

  it("answers an unknown agent with UNAVAILABLE", async () => {
    const r = await runCli([...hub.cli, "exec", "--agent", "ghost", "--", "true"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/ghost/);
  });
});
