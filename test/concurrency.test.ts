// Changing an agent's concurrency at run time, under load, without touching running tasks.
import { afterAll, describe, expect, it } from "vitest";
import { SwitchboardClient, shell, TaskState, type TaskInfo } from "../src/client/index.js";
import { runCli, startAgent, startHub, stopAll } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

afterAll(stopAll);

/** The most tasks that were running at the same instant. */
function maxOverlap(tasks: TaskInfo[]): number {
  const edges = tasks.flatMap((t) => [
    { at: t.startedAtMs, d: 1 },
    { at: t.finishedAtMs, d: -1 },
  ]);
  edges.sort((a, b) => a.at - b.at || a.d - b.d);
  let now = 0;
  let max = 0;
  for (const e of edges) max = Math.max(max, (now += e.d));
  return max;
}

describe("agent-config --concurrency", () => {
  it("raises and lowers how many tasks an agent runs at once", async () => {
    const hub = await startHub();
    await startAgent(hub, { agentId: "conc-1", pool: "conc", args: ["--pool-size", "1"] });
    const client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
    try {
      const submit = (n: number, script: string) =>
        Promise.all(
          Array.from({ length: n }, () =>
            client.submit({ ...shell({ script }), target: { pool: "conc" }, timeoutMs: 60_000 }),
          ),
        );
      const settled = async (ids: string[]): Promise<TaskInfo[]> => {
        await waitFor(
          async () => {
            for (const id of ids) {
              if ((await client.getTask(id)).info?.state !== TaskState.TASK_STATE_SUCCEEDED) return false;
            }
            return true;
          },
          { timeout: 30_000, interval: 100, message: "the tasks to succeed" },
        );
        return Promise.all(ids.map(async (id) => (await client.getTask(id)).info!));
      };

      // Long enough that the CLI call below lands while the first task still runs, even on a loaded machine.
      const first = await submit(4, "sleep 3");
      const up = await runCli([
        ...hub.cli,
        "agent-config",
        "--agent",
        "conc-1",
        "--concurrency",
        "4",
        "--output",
        "json",
      ]);
      expect(up.code).toBe(0);
      expect((JSON.parse(up.stdout) as { maxConcurrency: number }[])[0]?.maxConcurrency).toBe(4);
      expect(maxOverlap(await settled(first))).toBeGreaterThanOrEqual(3);

      const busy = await submit(4, "sleep 2");
      await waitFor(
        async () => {
          const infos = await Promise.all(busy.map(async (id) => (await client.getTask(id)).info!));
          return infos.every((t) => t.state === TaskState.TASK_STATE_RUNNING);
        },
        { message: "all four to run" },
      );
      const down = await runCli([...hub.cli, "agent-config", "--agent", "conc-1", "--concurrency", "1"]);
      expect(down.code).toBe(0);
      const later = await submit(3, "sleep 0.3");
      // The running four were not touched; what came after ran one at a time.
      const busyInfos = await settled(busy);
      expect(busyInfos.every((t) => t.state === TaskState.TASK_STATE_SUCCEEDED)).toBe(true);
      expect(maxOverlap(await settled(later))).toBe(1);

      const bad = await runCli([...hub.cli, "agent-config", "--agent", "conc-1", "--concurrency", "0"]);
      expect(bad.code).toBe(2);
      const gone = await runCli([...hub.cli, "agent-config", "--agent", "nobody", "--concurrency", "2"]);
      expect(gone.code).toBe(1);
      expect(gone.stderr).toMatch(/not connected/);
    } finally {
      client.close();
    }
  }, 90_000);
});
