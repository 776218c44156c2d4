// The README's demo: one command starts a hub and two agents; the commands it prints work.
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import pg from "pg";
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

describe("switchboard demo --cluster", () => {
  it("starts three hubs on PostgreSQL and NATS and two agents; a task crosses hubs; a killed hub's agent moves", async () => {
    const dataDir = tempDir("demo-cluster");
    const db = `sb_demo_${randomBytes(4).toString("hex")}`;
    const store = `postgres://postgres@127.0.0.1:5432/${db}`;
    const demo = spawnCli(["demo", "--cluster", "--data", dataDir, "--store", store]);
    try {
      await waitFor(() => demo.stdout().includes("switchboard hubs"), {
        timeout: 60_000,
        message: "the cluster demo to print what to try",
      });
      const env = {
        SWITCHBOARD_DATA: join(dataDir, "demo-hub-1"),
        SWITCHBOARD_TOKEN: "",
        SWITCHBOARD_HUB: "",
      };
      const hubs = JSON.parse((await runCli(["hubs", "--output", "json"], { env })).stdout) as {
        hubs: { id: string; live: boolean }[];
      };
      expect(hubs.hubs.filter((h) => h.live).map((h) => h.id)).toEqual([
        "demo-hub-1",
        "demo-hub-2",
        "demo-hub-3",
      ]);
      // demo-1 is on demo-hub-2; the CLI talks to demo-hub-1.
      expect(await runCli(["exec", "--agent", "demo-1", "--", "echo", "across"], { env })).toMatchObject({
        code: 0,
        stdout: "across\n",
      });
      const pid = Number(/demo-hub-2 \S+ \(pid (\d+)\)/.exec(demo.stdout())![1]);
      process.kill(pid, "SIGKILL");
      // Its agent moves to another hub from its list, and runs the next task.
      await waitFor(
        async () =>
          (await runCli(["exec", "--agent", "demo-1", "--", "echo", "moved"], { env })).stdout === "moved\n",
        { timeout: 20_000, interval: 500, message: "demo-1 to come back through another hub" },
      );
      demo.kill("SIGINT");
      expect(await demo.exited).toBe(0);
    } finally {
      demo.kill("SIGKILL");
      const c = new pg.Client({ connectionString: "postgres://postgres@127.0.0.1:5432/postgres" });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await c.end();
    }
  }, 120_000);

  it("says what is missing when PostgreSQL or NATS is not reachable", async () => {
    const r = await runCli([
      "demo",
      "--cluster",
      "--data",
      tempDir("demo-no-pg"),
      "--store",
      "postgres://postgres@127.0.0.1:1/switchboard_demo",
    ]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/PostgreSQL is not reachable at 127\.0\.0\.1:1/);
    const noNats = await runCli([
      "demo",
      "--cluster",
      "--data",
      tempDir("demo-no-nats"),
      "--nats",
      "nats://127.0.0.1:1",
    ]);
    expect(noNats.code).not.toBe(0);
    expect(noNats.stderr).toMatch(
      /hub demo-hub-1 did not start: .*cannot reach NATS at nats:\/\/127\.0\.0\.1:1/,
    );
  }, 60_000);
});
