// A hub that drains past its grace cancels what still runs; a client following such a task ends like
// any cancelled one: exit 130 with the reason on stderr ("hub shut down"), on both agent transports,
// whether the agent stops the task at once or the hub has to end it without the agent's answer.
import { afterAll, describe, expect, it } from "vitest";
import { spawnCli, startAgent, startHub, stopAll } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

afterAll(stopAll);

describe("a task cancelled by a hub's drain", () => {
  const cases = [
    { transport: "grpc", script: "echo begin; sleep 60" },
    // The task ignores SIGTERM: the agent needs its kill grace, and the hub may end it first.
    { transport: "http", script: "trap '' TERM; echo begin; sleep 60" },
  ] as const;
  for (const { transport, script } of cases) {
    it(`${transport}: the client exits 130 and says why`, async () => {
      const hub = await startHub({ args: ["--drain-grace", "1s"] });
      const id = `drain-cancel-${transport}`;
      await startAgent(hub, { agentId: id, pool: id, args: ["--transport", transport] });
      const exec = spawnCli([...hub.cli, "exec", "--pool", id, "--shell", script]);
      await waitFor(() => exec.stdout().includes("begin"), { timeout: 30_000, message: "the task to run" });
      hub.kill("SIGTERM");
      expect(await exec.exited).toBe(130);
      expect(exec.stderr()).toMatch(/^switchboard: task \S+ was cancelled: hub shut down\n$/);
      expect(await hub.exited).toBe(0);
    }, 90_000);
  }
});
