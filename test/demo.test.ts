// The README's demo: one command starts a hub and two agents; the commands it prints work.
import { join } from "node:path";
import { existsSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { pidAlive, runCli, spawnCli, stopAll, tempDir } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

afterAll(stopAll);

describe("switchboard demo", () => {
  it("starts a hub and two shell agents with a SQLite datasource, prints what to try, and stops cleanly", async () => {
    const dataDir = tempDir("demo");
    const demo = spawnCli(["demo", "--listen", "127.0.0.1:0", "--data", dataDir]);
    await waitFor(() => demo.stdout().includes("switchboard exec --pool demo"), {
      timeout: 30_000,
      message: "the demo to print what to try",
    });
    expect(existsSync(join(dataDir, "admin.token"))).toBe(true);
    // The CLI finds the hub and the token from the data dir, as the printed commands expect.
    const env = { SWITCHBOARD_DATA: dataDir, SWITCHBOARD_TOKEN: "", SWITCHBOARD_HUB: "" };
    const agents = await runCli(["agents", "--output", "json"], { env });
    expect(agents.code).toBe(0);
    const rows = JSON.parse(agents.stdout) as { agentId: string; pool: string; connected: boolean }[];
    expect(
      rows
        .filter((a) => a.pool === "demo" && a.connected)
        .map((a) => a.agentId)
        .sort(),
    ).toEqual(["demo-1", "demo-2"]);
    const exec = await runCli(["exec", "--pool", "demo", "--", "uname", "-s"], { env });
    expect(exec.code).toBe(0);
    expect(exec.stdout).toBe("Linux\n");
    const ping = await runCli(["ping", "--pool", "demo", "--count", "2", "--interval", "10ms"], { env });
    expect(ping.code).toBe(0);
    const query = await runCli(
      [
        "query",
        "--pool",
        "demo",
        "--db",
        "cities",
        "--format",
        "csv",
        "SELECT name FROM cities WHERE country = ?",
        "CH",
      ],
      { env },
    );
    expect(query.stderr).toBe("");
    expect(query.stdout).toBe("name\nZürich\n");
    const nodes = await runCli(["nodes", "--output", "json"], { env });
    expect(nodes.code, nodes.stderr).toBe(0);
    const [node] = JSON.parse(nodes.stdout) as {
      nodeId: string;
      agentId: string;
      status: string;
      pid: number;
      port: number;
    }[];
    expect(node).toMatchObject({ nodeId: "demo-kv", agentId: "demo-1", status: "running" });
    expect(demo.stdout()).toContain(`http://127.0.0.1:${node!.port}`);
    expect((await fetch(`http://127.0.0.1:${node!.port}/healthz`)).ok).toBe(true);
    demo.kill("SIGINT");
    expect(await demo.exited).toBe(0);
    expect(pidAlive(node!.pid)).toBe(false); // the agents stop their nodes when the demo ends
  }, 60_000);
});
