// Supervised nodes on a bad day, end to end on real processes: an agent killed with -9 and restarted
// whose adopted node then dies, batches larger than the agents' room, a spawn whose deadline passes while
// its node is still starting, a stop while the node's agent is offline, and migrations with --copy-data
// between agents whose data paths differ (and ones that cannot work).
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, type NodeInfo } from "../src/client/index.js";
import {
  listenerScript,
  startNodeAgent,
  stopNodeAgents,
  type NodeAgentOptions,
} from "./support/node-agents.js";
import {
  agentToken,
  healthz,
  listAgents,
  pidAlive,
  runCli,
  spawnCli,
  startHub,
  stopAll,
  tempDir,
  type AgentProc,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

let hub: HubProc;
let client: SwitchboardClient;
const agents: AgentProc[] = [];
/** Node pids seen here: whatever still runs at the end is killed (agents killed with -9 leave theirs). */
const nodePids = new Set<number>();

async function agent(
  id: string,
  o: NodeAgentOptions = {},
  on = hub,
): Promise<AgentProc & { dataDir: string }> {
  // Ports of their own: nodes.test.ts runs at the same time, from 21000.
  const a = await startNodeAgent(on, id, { portRangeStart: 23000, ...o });
  agents.push(a);
  return a;
}

function remember(n: NodeInfo | undefined): NodeInfo {
  if (!n) throw new Error("no node in the answer");
  if (n.record?.pid) nodePids.add(n.record.pid);
  return n;
}

interface NodeRowJson {
  nodeId: string;
  agentId: string;
  status: string;
  desired: string;
  pid: number;
  restarts: number;
  stale: boolean;
}

async function nodesJson(h: HubProc, ...args: string[]): Promise<NodeRowJson[]> {
  const r = await runCli([...h.cli, "nodes", "--output", "json", ...args]);
  if (r.code !== 0) throw new Error(`nodes failed (${r.code}): ${r.stderr}`);
  return JSON.parse(r.stdout) as NodeRowJson[];
}

/** The node ids in an agent's own table (nodes.json in its data dir). */
function agentTable(dataDir: string): string[] {
  const file = join(dataDir, "nodes.json");
  if (!existsSync(file)) return [];
  return (JSON.parse(readFileSync(file, "utf8")) as { nodeId: string }[]).map((n) => n.nodeId);
}

async function offline(h: HubProc, agentId: string): Promise<void> {
  await waitFor(async () => (await listAgents(h)).some((a) => a.agentId === agentId && !a.connected), {
    message: `the hub to see ${agentId} offline`,
  });
}

beforeAll(async () => {
  hub = await startHub({ args: ["--heartbeat-interval", "1s", "--offline-after", "3s"] });
  client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
}, 60_000);

afterEach(() => stopNodeAgents(agents, nodePids));

afterAll(async () => {
  client.close();
  await stopAll();
});

describe("supervised nodes on a bad day", () => {
  it("an adopted node killed with -9 is noticed and restarted: restart counted, `nodes` shows the new pid", async () => {
    const dir = tempDir("faults-adopt");
    const token = await agentToken(hub, "default");
    const a1 = await agent("f-adopt", { dataDir: dir, token });
    const n = remember(await client.nodes.spawn({ agentId: "f-adopt", nodeId: "f-adopted" }));
    const pid = n.record!.pid;
    a1.kill("SIGKILL");
    await a1.exited;
    expect(pidAlive(pid)).toBe(true);
    await offline(hub, "f-adopt");
    await agent("f-adopt", { dataDir: dir, token });
    await waitFor(
      async () => {
        const s = await client.nodes.status(n.nodeId);
        return !s.stale && s.record?.status === "running" && s.record.pid === pid;
      },
      { message: "the node to be adopted, live" },
    );

    // The adopted process is not the new agent's child: its death must be seen all the same.
    process.kill(pid, "SIGKILL");
    const back = await waitFor(
      async () => {
        const s = remember(await client.nodes.status(n.nodeId));
        return s.record?.status === "running" && s.record.pid !== pid ? s : undefined;
      },
      { timeout: 30_000, message: "the adopted node to be restarted" },
    );
    expect(back.record?.restartCount).toBe(1);
    expect(back.record?.lastExit).toContain("adopted");
    expect(await healthz(back.record!.port)).toBe(true);
    const [row] = (await nodesJson(hub)).filter((r) => r.nodeId === n.nodeId);
    expect(row).toMatchObject({ status: "running", pid: back.record!.pid, restarts: 1 });
  }, 90_000);

  it("a batch never fills an agent past max_storage_nodes: atomic fails whole, non-atomic places what fits", async () => {
    const a = await agent("f-batch", { maxNodes: 3 });
    const spawn = (...more: string[]) =>
      runCli([...hub.cli, "spawn", "--agent", "f-batch", "--count", "5", "--output", "json", ...more], {
        timeoutMs: 60_000,
      });

    const atomic = await spawn("--node-id", "f-atomic", "--atomic");
    expect(atomic.code).toBe(1);
    const atomicRows = JSON.parse(atomic.stdout) as { ok: boolean; error: { message: string } | null }[];
    expect(atomicRows).toHaveLength(5);
    expect(atomicRows.every((r) => !r.ok)).toBe(true);
    expect(atomicRows.map((r) => r.error?.message).join("\n")).toContain("no free node slot");
    expect(agentTable(a.dataDir)).toEqual([]); // nothing was started, not even for a moment
    expect(await client.nodes.list({ agentId: "f-batch", includeStopped: true })).toEqual([]);

    const some = await spawn("--node-id", "f-some");
    expect(some.code).toBe(1);
    expect(some.stderr).toContain("2 of 5 nodes could not be spawned");
    const rows = JSON.parse(some.stdout) as {
      nodeId: string;
      ok: boolean;
      error: { code: string; message: string } | null;
      node: { pid: number } | null;
    }[];
    for (const r of rows) if (r.node?.pid) nodePids.add(r.node.pid);
    expect(rows.filter((r) => r.ok)).toHaveLength(3);
    const refused = rows.filter((r) => !r.ok);
    expect(refused.map((r) => r.error?.code)).toEqual(["RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]);
    expect(refused[0]!.error?.message).toContain(
      "agent f-batch has no free node slot: 3 of its max_storage_nodes = 3",
    );
    expect(agentTable(a.dataDir).sort()).toEqual(
      rows
        .filter((r) => r.ok)
        .map((r) => r.nodeId)
        .sort(),
    );
    const agentsTable = await runCli([...hub.cli, "list-agents"]);
    expect(agentsTable.stdout).toMatch(/f-batch .* 3\/3 /);
  }, 120_000);

  it("a spawn whose deadline passes while its node starts is cancelled on the agent: nothing left running", async () => {
    const dir = tempDir("faults-deadline");
    const config = join(dir, "hub.toml");
    writeFileSync(config, "[nodes]\nspawn_timeout_secs = 5\n");
    const slowHub = await startHub({ args: ["--config", config, "--heartbeat-interval", "1s"] });
    const slow = new SwitchboardClient({ hub: slowHub.address, token: slowHub.adminToken });
    try {
      // It listens after 12 s: past the hub's 5 s, within the agent's own startup_timeout_secs (30 s).
      const script = listenerScript(dir, 12);
      const quickScript = listenerScript(dir, 0);
      const a = await agent(
        "f-slow",
        { allowedBinaries: [script, quickScript], maxNodes: 1, startupTimeoutSecs: 30 },
        slowHub,
      );
      const r = await runCli(
        [...slowHub.cli, "spawn", "--agent", "f-slow", "--node-id", "f-late", "--binary", script],
        { timeoutMs: 60_000 },
      );
      expect(r.code).not.toBe(0);
      // The node had started its process (unless the cancel came before the launch): it is gone, so it can
      // never come up later and be adopted.
      const pidFile = join(a.dataDir, "nodes", "f-late", "pid");
      if (existsSync(pidFile)) {
        const pid = Number(readFileSync(pidFile, "utf8"));
        nodePids.add(pid);
        await waitFor(() => !pidAlive(pid), {
          timeout: 10_000,
          message: "the starting node's process to end",
        });
      }
      expect(r.stderr).toContain("agent f-slow did not answer the node spawn within 5s");
      expect(r.stderr).toContain("the spawn was cancelled on agent f-slow: nothing is left running");
      expect(agentTable(a.dataDir)).toEqual([]);
      expect(await slow.nodes.list({ includeStopped: true })).toEqual([]);
      // Its slot (the agent's only one) is free again: a spawn that fits the deadline works.
      const quick = remember(
        await slow.nodes.spawn({ agentId: "f-slow", nodeId: "f-quick", binary: quickScript }),
      );
      expect(quick.record?.status).toBe("running");
      expect((await slow.nodes.list()).map((n) => n.nodeId)).toEqual(["f-quick"]);
    } finally {
      slow.close();
      slowHub.kill("SIGTERM");
      await slowHub.exited;
    }
  }, 90_000);

  it("a stop while the agent is offline is recorded, shown as stopping, and carried out when the agent returns", async () => {
    const dir = tempDir("faults-stop");
    const token = await agentToken(hub, "default");
    const a1 = await agent("f-away", { dataDir: dir, token });
    const n = remember(await client.nodes.spawn({ agentId: "f-away", nodeId: "f-pending" }));
    const pid = n.record!.pid;
    a1.kill("SIGKILL");
    await a1.exited;
    await offline(hub, "f-away");

    const stop = await runCli([...hub.cli, "stop", "--node", "f-pending"]);
    expect(stop.code, stop.stderr).toBe(0);
    expect(stop.stdout).toContain("Stop pending: agent f-away is offline");
    const [row] = await nodesJson(hub, "--agent", "f-away");
    expect(row).toMatchObject({ nodeId: "f-pending", status: "stopping", desired: "stopped", stale: true });
    expect(pidAlive(pid)).toBe(true); // nobody could stop it yet
    const audit = await client.admin.listAudit({ action: "node.stop" });
    expect(audit.some((e) => e.subject === "f-pending")).toBe(true);

    await agent("f-away", { dataDir: dir, token });
    await waitFor(() => !pidAlive(pid), { timeout: 15_000, message: "the agent to stop the node once back" });
    const after = await waitFor(
      async () => {
        const s = await client.nodes.status("f-pending");
        return s.record?.status === "stopped" && !s.stale ? s : undefined;
      },
      { message: "the node to show stopped" },
    );
    expect(after.desired).toBe("stopped");
    expect((await nodesJson(hub)).map((r) => r.nodeId)).not.toContain("f-pending");
  }, 90_000);

  it("migrate --copy-data between agents whose data paths differ moves the data into the target's data path", async () => {
    const dataA = join(tempDir("faults-data-a"), "nodes");
    const dataB = join(tempDir("faults-data-b"), "nodes");
    await agent("f-src", { storageData: dataA, extraToml: `[files]\nroots = [${JSON.stringify(dataA)}]` });
    await agent("f-dst", { storageData: dataB, extraToml: `[files]\nroots = [${JSON.stringify(dataB)}]` });
    const n = remember(await client.nodes.spawn({ agentId: "f-src", nodeId: "f-moved", storagePath: "kv" }));
    const put = await fetch(`http://127.0.0.1:${n.record!.port}/kv/greeting`, {
      method: "PUT",
      body: "kept",
    });
    expect(put.ok).toBe(true);

    const r = await runCli([...hub.cli, "migrate", "--node", "f-moved", "--to", "f-dst", "--copy-data"], {
      timeoutMs: 60_000,
    });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain("Storage node migrated.");
    const moved = remember(await client.nodes.status("f-moved"));
    expect(moved.agentId).toBe("f-dst");
    expect(moved.record?.status).toBe("running");
    expect(moved.record?.storagePath).toBe(join(dataB, "kv"));
    expect(readFileSync(join(dataB, "kv", "greeting.val"), "utf8")).toBe("kept");
    expect(pidAlive(n.record!.pid)).toBe(false);
    const got = await fetch(`http://127.0.0.1:${moved.record!.port}/kv/greeting`);
    expect(await got.text()).toBe("kept");
    // The old agent forgot it; its data stays where it was (nothing is deleted by a migration).
    expect(existsSync(join(dataA, "kv", "greeting.val"))).toBe(true);
  }, 90_000);

  it("a migration that cannot work fails before anything is stopped: the node keeps its pid, the reason is named", async () => {
    const dir = tempDir("faults-refuse");
    const script = listenerScript(dir, 0);
    await agent("f-home", { allowedBinaries: [script] });
    await agent("f-full", { maxNodes: 1 });
    remember(await client.nodes.spawn({ agentId: "f-full", nodeId: "f-occupant" }));
    const n = remember(await client.nodes.spawn({ agentId: "f-home", nodeId: "f-stays" }));
    const custom = remember(
      await client.nodes.spawn({ agentId: "f-home", nodeId: "f-custom", binary: script }),
    );
    await agent("f-plain");

    /** The nodes run where they did, with the same process: nothing was stopped. */
    const untouched = async (): Promise<void> => {
      for (const [id, before] of [
        ["f-stays", n],
        ["f-custom", custom],
      ] as const) {
        const s = await client.nodes.status(id);
        expect(s.agentId).toBe("f-home");
        expect(s.record?.status).toBe("running");
        expect(s.record?.pid).toBe(before.record!.pid);
        expect(s.record?.restartCount).toBe(0);
      }
    };

    const noRoom = await runCli([
      ...hub.cli,
      "migrate",
      "--node",
      "f-stays",
      "--to",
      "f-full",
      "--copy-data",
    ]);
    expect(noRoom.code).not.toBe(0);
    await untouched();
    expect(noRoom.stderr).toContain("no free node slot");
    expect(noRoom.stderr).toContain("it still runs on f-home, untouched");

    const notAllowed = await runCli([
      ...hub.cli,
      "migrate",
      "--node",
      "f-custom",
      "--to",
      "f-plain",
      "--copy-data",
    ]);
    expect(notAllowed.code).not.toBe(0);
    await untouched();
    expect(notAllowed.stderr).toContain(`binary ${script} is not allowed on this agent`);
    expect(notAllowed.stderr).toContain("PERMISSION_DENIED");

    // No [files] roots, and data paths that do not see each other: refused too, before the stop.
    const noWay = await runCli([
      ...hub.cli,
      "migrate",
      "--node",
      "f-stays",
      "--to",
      "f-plain",
      "--copy-data",
    ]);
    expect(noWay.code).not.toBe(0);
    await untouched();
    expect(noWay.stderr).toContain("[files] roots");
    expect(await healthz(n.record!.port)).toBe(true);
  }, 90_000);

  it("the README's `switchboard migrate --node demo-kv --to demo-2 --copy-data` works on the demo", async () => {
    const dataDir = tempDir("faults-demo");
    const demo = spawnCli(["demo", "--listen", "127.0.0.1:0", "--data", dataDir]);
    try {
      await waitFor(() => demo.stdout().includes("switchboard nodes"), {
        timeout: 60_000,
        message: "the demo to start",
      });
      const env = { SWITCHBOARD_DATA: dataDir, SWITCHBOARD_TOKEN: "", SWITCHBOARD_HUB: "" };
      const [before] = (
        JSON.parse((await runCli(["nodes", "--output", "json"], { env })).stdout) as {
          nodeId: string;
          pid: number;
          port: number;
        }[]
      ).filter((r) => r.nodeId === "demo-kv");
      expect(before).toBeDefined();
      await fetch(`http://127.0.0.1:${before!.port}/kv/city`, { method: "PUT", body: "Zürich" });

      const r = await runCli(["migrate", "--node", "demo-kv", "--to", "demo-2", "--copy-data"], {
        env,
        timeoutMs: 60_000,
      });
      expect(r.code, r.stderr).toBe(0);
      const after = (
        JSON.parse((await runCli(["nodes", "--output", "json"], { env })).stdout) as {
          nodeId: string;
          agentId: string;
          status: string;
          pid: number;
          port: number;
        }[]
      ).find((x) => x.nodeId === "demo-kv");
      expect(after).toMatchObject({ agentId: "demo-2", status: "running" });
      expect(after!.pid).not.toBe(before!.pid);
      expect(pidAlive(before!.pid)).toBe(false);
      const got = await fetch(`http://127.0.0.1:${after!.port}/kv/city`);
      expect(await got.text()).toBe("Zürich");
      expect(existsSync(join(dataDir, "agents", "demo-2", "nodes", "demo-kv", "city.val"))).toBe(true);
    } finally {
      demo.kill("SIGINT");
      await demo.exited;
    }
  }, 120_000);
});
