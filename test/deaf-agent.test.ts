// A deaf agent: its stream and heartbeats are up, but its pipeline takes no work. The hub finds
// it by probing the work path, marks it Degraded with the reason, and routes around it.
import { afterAll, describe, expect, it } from "vitest";
import { listAgents, runCli, startAgent, startHub, stopAll } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

afterAll(stopAll);

describe("deaf agents", () => {
  it("are marked Degraded by probes, get no new work, and recover", async () => {
    const hub = await startHub({ args: ["--heartbeat-interval", "1s", "--offline-after", "30s"] });
    const deaf = await startAgent(hub, {
      agentId: "deaf-1",
      pool: "deaf",
      env: { SWITCHBOARD_TEST_HOOKS: "1" },
    });
    await startAgent(hub, { agentId: "deaf-2", pool: "deaf" });
    deaf.kill("SIGUSR2");
    const row = await waitFor(
      async () => {
        const a = (await listAgents(hub)).find((x) => x.agentId === "deaf-1") as
          { health: string; healthReason: string; connected: boolean } | undefined;
        return a?.health === "degraded" ? a : undefined;
      },
      { timeout: 15_000, interval: 200, message: "the hub to mark deaf-1 degraded" },
    );
    expect(row.connected).toBe(true);
    expect(row.healthReason).toMatch(/pipeline has not answered a probe/);
    for (let i = 0; i < 4; i++) {
      const r = await runCli([
        ...hub.cli,
        "exec",
        "--pool",
        "deaf",
        "--timeout",
        "10s",
        "--",
        "echo",
        "routed",
      ]);
      expect(r.stdout).toBe("routed\n");
    }
    const tasks = await runCli([...hub.cli, "tasks", "--pool", "deaf", "--output", "json"]);
    expect((JSON.parse(tasks.stdout) as { agentId: string }[]).every((t) => t.agentId === "deaf-2")).toBe(
      true,
    );
    deaf.kill("SIGUSR2");
    await waitFor(
      async () => (await listAgents(hub)).some((x) => x.agentId === "deaf-1" && x.health === "healthy"),
      { timeout: 15_000, interval: 200, message: "deaf-1 to be healthy again" },
    );
  }, 60_000);
});
