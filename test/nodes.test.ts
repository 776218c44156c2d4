// Supervised nodes end to end: a real hub and real agents started from the built CLI, nodes that are
// real `switchboard storage-node` processes, operated through the SDK, the CLI and the agent's local API.
import { credentials, Metadata } from "@grpc/grpc-js";
import { mkdirSync, readFileSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SwitchboardClient, type NodeInfo } from "../src/client/index.js";
import {
  GridAgentClient,
  type ListNodesRequest,
  type ListNodesResponse,
  type NodeStatusRequest,
  type NodeStatusResponse,
  type SpawnNodeRequest,
  type SpawnNodeResponse,
  type StopNodeRequest,
  type StopNodeResponse,
} from "../src/gen/switchboard/grid/v1/grid_agent.js";
import { startNodeAgent, stopNodeAgents, type NodeAgentOptions } from "./support/node-agents.js";
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
/** Node pids seen in this file: whatever still runs at the end is killed (agents killed with -9 leave theirs). */
const nodePids = new Set<number>();

async function agent(id: string, o: NodeAgentOptions = {}): Promise<AgentProc> {
  const a = await startNodeAgent(hub, id, o);
  agents.push(a);
  return a;
}

function remember(n: NodeInfo): NodeInfo {
  if (n.record?.pid) nodePids.add(n.record.pid);
  return n;
}

async function statusOf(nodeId: string): Promise<NodeInfo> {
  return remember(await client.nodes.status(nodeId));
}

function grpcCode(p: Promise<unknown>): Promise<{ code: number; details: string }> {
  return p.then(
    () => ({ code: 0, details: "" }),
    (e: { code: number; details?: string; message: string }) => ({
      code: e.code,
      details: e.details ?? e.message,
    }),
  );
}

beforeAll(async () => {
  hub = await startHub({
    args: ["--reschedule-after", "2s", "--heartbeat-interval", "1s", "--offline-after", "3s"],
  });
  client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
}, 60_000);

afterEach(() => stopNodeAgents(agents, nodePids));

afterAll(async () => {
  client.close();
  await stopAll();
});

describe("supervised nodes", () => {
  it("spawns a node that answers, shows it live, lists it, stops it; CLI and cluster status agree", async () => {
    await agent("n-basic");
    const n = remember(
      await client.nodes.spawn({
        agentId: "n-basic",
        storagePath: "kv1",
        memoryLimitMb: 256,
        args: ["--test-faults"],
      }),
    );
    expect(n.nodeId).toMatch(/^node-[0-9a-f-]{36}$/);
    expect(n.record?.status).toBe("running");
    const port = n.record!.port;
    expect(await healthz(port)).toBe(true);
    const put = await fetch(`http://127.0.0.1:${port}/kv/greeting`, { method: "PUT", body: "hello" });
    expect(put.ok).toBe(true);

    const st = await statusOf(n.nodeId);
    expect(st.stale).toBe(false);
    expect(st.record?.pid).toBe(n.record?.pid);
    expect(st.agentId).toBe("n-basic");

    const cliStatus = await runCli([...hub.cli, "node-status", "--node", n.nodeId]);
    expect(cliStatus.code).toBe(0);
    expect(cliStatus.stdout).toContain("running");
    expect(cliStatus.stdout).toContain(String(n.record?.pid));

    const listed = await runCli([...hub.cli, "nodes", "--output", "json"]);
    expect(listed.code).toBe(0);
    const rows = JSON.parse(listed.stdout) as { nodeId: string }[];
    expect(rows.map((r) => r.nodeId)).toContain(n.nodeId);

    const status = await runCli([...hub.cli, "status"]);
    expect(status.stdout).toMatch(/^Cluster: \d+ agents \(\d+ healthy\), 1 storage nodes \(1 running\)/);
    const agentsTable = await runCli([...hub.cli, "list-agents"]);
    expect(agentsTable.stdout).toMatch(/n-basic .* 1\/5 /);
    const logs = await runCli([...hub.cli, "logs", "--node", n.nodeId]);
    expect(logs.code, logs.stderr).toBe(0);
    expect(logs.stdout).toContain(`listening on 127.0.0.1:${port}`);
    const badAgent = await runCli([...hub.cli, "nodes", "--agent", "no-such-agent"]);
    expect(badAgent.code).not.toBe(0);
    expect(badAgent.stderr).toContain("no agent no-such-agent");

    const cluster = await client.admin.clusterStatus();
    expect(cluster.summary).toMatch(/^Cluster: \d+ agents \(\d+ healthy\), 1 storage nodes \(1 running\) - /);

    const agents = await client.admin.listAgents();
    const a = agents.find((x) => x.agentId === "n-basic")!;
    expect(a.maxStorageNodes).toBe(5);
    expect(a.storageNodes).toBe(1);
    expect(a.agentEndpoint).toMatch(/:\d+$/);

    const stop = await runCli([...hub.cli, "stop", "--node", n.nodeId, "--agent", "n-basic"]);
    expect(stop.code, stop.stderr).toBe(0);
    expect(await healthz(port)).toBe(false);
    expect(pidAlive(n.record!.pid)).toBe(false);
    const after = await client.nodes.status(n.nodeId);
    expect(after.record?.status).toBe("stopped");
    expect(after.desired).toBe("stopped");
    expect((await client.nodes.list()).map((x) => x.nodeId)).not.toContain(n.nodeId);
    expect((await client.nodes.list({ includeStopped: true })).map((x) => x.nodeId)).toContain(n.nodeId);
  }, 60_000);

  it("restarts a node killed with -9 (restart count + 1); a crash loop backs off and makes the agent Degraded; stop during backoff holds", async () => {
    await agent("n-crash", { extraToml: "" });
    const n = remember(await client.nodes.spawn({ agentId: "n-crash", args: ["--test-faults"] }));
    const pid = n.record!.pid;
    const follow = spawnCli([...hub.cli, "logs", "--node", n.nodeId, "--follow"]);
    await waitFor(() => follow.stdout().includes("listening"), {
      message: "logs --follow to print the start-up line",
    });
    process.kill(pid, "SIGKILL");
    const restarted = await waitFor(
      async () => {
        const s = await statusOf(n.nodeId);
        return s.record?.status === "running" && s.record.pid !== pid ? s : undefined;
      },
      { message: "the node to be restarted" },
    );
    expect(restarted.record?.restartCount).toBe(1);
    expect(restarted.record?.lastExit).toContain("SIGKILL");
    expect(await healthz(restarted.record!.port)).toBe(true);
    // The restarted node's start-up line reaches the follower too.
    await waitFor(() => follow.stdout().split("listening").length === 3, {
      message: "logs --follow to show the restart",
    });
    follow.kill("SIGINT");
    expect(await follow.exited).toBe(0);

    // Crash it until the agent calls it a crash loop.
    const port = restarted.record!.port;
    const degraded = await waitFor(
      async () => {
        await fetch(`http://127.0.0.1:${port}/_test/crash`, { method: "POST" }).catch(() => undefined);
        const a = (await client.admin.listAgents()).find((x) => x.agentId === "n-crash");
        return a?.healthReason.includes(n.nodeId) ? a : undefined;
      },
      { timeout: 30_000, interval: 150, message: "the agent to report the crash loop" },
    );
    expect(degraded.healthReason).toContain("crash-looping");

    // Stop it while it backs off (or starts): it stays stopped.
    const stopped = await client.nodes.stop(n.nodeId);
    expect(stopped.record?.status).toBe("stopped");
    await new Promise((r) => setTimeout(r, 800));
    const later = await statusOf(n.nodeId);
    expect(later.record?.status).toBe("stopped");
    expect(await healthz(port)).toBe(false);
  }, 90_000);

  it("kills a node over its memory limit and restarts it with the reason", async () => {
    await agent("n-mem");
    const n = remember(
      await client.nodes.spawn({ agentId: "n-mem", memoryLimitMb: 150, args: ["--test-faults"] }),
    );
    await fetch(`http://127.0.0.1:${n.record!.port}/_test/grow?mb=200`, { method: "POST" }).catch(
      () => undefined,
    );
    const after = await waitFor(
      async () => {
        const s = await statusOf(n.nodeId);
        return s.record?.restartCount === 1 && s.record.status === "running" ? s : undefined;
      },
      { timeout: 20_000, message: "the node to be killed for memory and restarted" },
    );
    expect(after.record?.lastExit).toContain("memory limit");
    const log = await runCli([...hub.cli, "audit", "--output", "json"]);
    expect(log.code).toBe(0);
  }, 60_000);

  it("after the agent's kill -9 and restart, its nodes are adopted; while it is away status is the cached record, marked stale", async () => {
    const dir = tempDir("nodes-adopt");
    const token = await agentToken(hub, "default");
    const a1 = await agent("n-adopt", { dataDir: dir, token, extraToml: "" });
    const n = remember(await client.nodes.spawn({ agentId: "n-adopt", storagePath: "keep" }));
    const gone = remember(await client.nodes.spawn({ agentId: "n-adopt", storagePath: "gone" }));
    const pid = n.record!.pid;
    a1.kill("SIGKILL");
    await a1.exited;
    expect(pidAlive(pid)).toBe(true); // the node outlives its agent
    process.kill(gone.record!.pid, "SIGKILL"); // ...and this one dies while its agent is away

    const stale = await waitFor(
      async () => {
        const s = await client.nodes.status(n.nodeId);
        return s.stale ? s : undefined;
      },
      { message: "status to fall back to the cached record" },
    );
    expect(stale.record?.status).toBe("running");
    expect(stale.record?.pid).toBe(pid);
    expect(stale.ageMs).toBeGreaterThanOrEqual(0);
    await waitFor(async () => (await listAgents(hub)).some((x) => x.agentId === "n-adopt" && !x.connected), {
      message: "the hub to see the agent offline",
    });
    const refused = await grpcCode(client.nodes.spawn({ agentId: "n-adopt" }));
    expect(refused).toEqual({ code: 14, details: "agent n-adopt is offline" });

    await agent("n-adopt", { dataDir: dir, token, extraToml: "" });
    const back = await waitFor(
      async () => {
        const s = await statusOf(n.nodeId);
        return !s.stale && s.record?.status === "running" ? s : undefined;
      },
      { message: "the adopted node to show live" },
    );
    expect(back.record?.pid).toBe(pid);
    expect(back.record?.restartCount).toBe(0);
    expect(await healthz(n.record!.port)).toBe(true);
    const restarted = await waitFor(
      async () => {
        const s = await statusOf(gone.nodeId);
        return s.record?.status === "running" ? s : undefined;
      },
      { message: "the node that died meanwhile to be restarted" },
    );
    expect(restarted.record?.pid).not.toBe(gone.record?.pid);
    expect(restarted.record?.lastExit).toContain("not running after the agent restarted");
    expect(await healthz(restarted.record!.port)).toBe(true);
  }, 90_000);

  it("places nodes on the agent with the most free slots, spawns and stops in batches, refuses when no agent matches", async () => {
    await agent("n-place-a", { maxNodes: 2, labels: "zone=a" });
    await agent("n-place-b", { maxNodes: 4, labels: "zone=b" });
    const first = remember(await client.nodes.spawn({ labels: { zone: "b" } }));
    expect(first.agentId).toBe("n-place-b");
    const batch = await client.nodes.spawnMany([{}, {}, {}]);
    for (const item of batch) {
      expect(item.code, item.errorMessage).toBe(0);
      remember(item.node!);
    }
    // b had 3 free, a 2: b, then a tie (2/2) broken by name (a), then b or a.
    const counts: Record<string, number> = {};
    for (const item of batch) counts[item.node!.agentId] = (counts[item.node!.agentId] ?? 0) + 1;
    expect(Object.keys(counts).sort()).toEqual(["n-place-a", "n-place-b"]);
    const none = await grpcCode(client.nodes.spawn({ labels: { zone: "c" } }));
    expect(none.code).toBe(14);
    expect(none.details).toContain("zone=c");

    const atomic = await client.nodes.spawnMany([{ labels: { zone: "a" } }, { labels: { zone: "a" } }], {
      atomic: true,
    });
    // a holds at most 2: the batch cannot fit entirely, so nothing of it stays.
    expect(atomic.some((i) => i.code !== 0)).toBe(true);
    expect(atomic.every((i) => i.node === undefined)).toBe(true);

    const stopped = await client.nodes.stopMany(
      [first, ...batch.map((i) => i.node!)].map((x) => ({ nodeId: x.nodeId })),
    );
    expect(stopped.every((i) => i.code === 0)).toBe(true);
    for (const id of ["n-place-a", "n-place-b"]) expect(await client.nodes.list({ agentId: id })).toEqual([]);
  }, 90_000);

  it("reschedules a node marked --reschedule off an agent that stays offline", async () => {
    const shared = tempDir("nodes-shared");
    const a = await agent("n-lost", { storageData: shared, extraToml: "" });
    await agent("n-spare", { storageData: shared });
    const n = remember(await client.nodes.spawn({ agentId: "n-lost", reschedule: true }));
    a.kill("SIGKILL");
    await a.exited;
    process.kill(n.record!.pid, "SIGKILL"); // the machine is gone, its processes with it
    const moved = await waitFor(
      async () => {
        const s = await statusOf(n.nodeId);
        return s.agentId === "n-spare" && s.record?.status === "running" && !s.stale ? s : undefined;
      },
      { timeout: 30_000, interval: 200, message: "the node to run on the spare agent" },
    );
    expect(await healthz(moved.record!.port)).toBe(true);
    const audit = await client.admin.listAudit({ action: "node.reschedule" });
    expect(audit.map((e) => e.subject)).toContain(n.nodeId);
    await client.nodes.stop(n.nodeId); // or it moves on to the next test's agents
  }, 60_000);

  it("migrates a node to another agent, with its data", async () => {
    const shared = tempDir("nodes-migrate");
    await agent("n-from", { storageData: shared });
    await agent("n-to", { storageData: shared });
    const n = remember(await client.nodes.spawn({ agentId: "n-from", storagePath: "m1" }));
    await fetch(`http://127.0.0.1:${n.record!.port}/kv/k`, { method: "PUT", body: "kept" });
    const r = await runCli([
      ...hub.cli,
      "migrate",
      "--node",
      n.nodeId,
      "--to",
      "n-to",
      "--copy-data",
      "--storage-path",
      "m1-moved",
      "--output",
      "json",
    ]);
    expect(r.code, r.stderr).toBe(0);
    const moved = remember(await client.nodes.status(n.nodeId));
    expect(moved.agentId).toBe("n-to");
    expect(moved.record?.storagePath).toBe(join(shared, "m1-moved"));
    expect(pidAlive(n.record!.pid)).toBe(false);
    const got = await fetch(`http://127.0.0.1:${moved.record!.port}/kv/k`);
    expect(await got.text()).toBe("kept");
  }, 60_000);

  it("refuses bad requests clearly and leaves nothing running", async () => {
    const dir = tempDir("nodes-refuse");
    await agent("n-refuse", { dataDir: dir });
    const code = async (p: Promise<unknown>): Promise<{ code: number; details: string }> => grpcCode(p);

    expect((await code(client.nodes.status("node-nope"))).code).toBe(5);
    expect((await code(client.nodes.stop("node-nope"))).code).toBe(5);
    expect((await code(client.nodes.spawn({ agentId: "no-such-agent" }))).code).toBe(5);

    const up = remember(await client.nodes.spawn({ agentId: "n-refuse" }));
    const dupPort = await code(client.nodes.spawn({ agentId: "n-refuse", port: up.record!.port }));
    expect(dupPort.code).toBe(6);
    expect(dupPort.details).toContain(String(up.record!.port));

    const dotdot = await code(client.nodes.spawn({ agentId: "n-refuse", storagePath: "../../etc" }));
    expect(dotdot.code).toBe(3);
    mkdirSync(join(dir, "nodes"), { recursive: true });
    symlinkSync(tempDir("outside"), join(dir, "nodes", "escape"));
    const link = await code(client.nodes.spawn({ agentId: "n-refuse", storagePath: "escape" }));
    expect(link.code).toBe(3);
    expect(link.details).toContain("outside storage.data_path");

    const notAllowed = await code(client.nodes.spawn({ agentId: "n-refuse", binary: "/bin/sh" }));
    expect(notAllowed.code).toBe(7);
    const missing = await code(client.nodes.spawn({ agentId: "n-refuse", binary: "/no/such/binary" }));
    expect(missing.code).toBe(9);
    expect(missing.details).toContain("does not exist");
    const quick = await code(
      client.nodes.spawn({ agentId: "n-refuse", binary: "/bin/false", nodeId: "node-quick" }),
    );
    expect(quick.code).toBe(9);
    expect(quick.details).toContain("exited with code 1");

    const listed = await client.nodes.list({ agentId: "n-refuse", includeStopped: true });
    expect(listed.map((x) => x.nodeId)).toEqual([up.nodeId]);
    // Nothing orphaned: the agent's own table has only the node that runs.
    const table = JSON.parse(readFileSync(join(dir, "nodes.json"), "utf8")) as { nodeId: string }[];
    expect(table.map((x) => x.nodeId)).toEqual([up.nodeId]);
  }, 60_000);

  it("serves the GridAgent API, /healthz and /metrics on its local port; the hub adopts nodes spawned there", async () => {
    const token = await agentToken(hub, "default");
    const a = await agent("n-local", { token });
    const info = (await client.admin.listAgents()).find((x) => x.agentId === "n-local")!;
    const port = Number(info.agentEndpoint.split(":").pop());
    const grid = new GridAgentClient(`127.0.0.1:${port}`, credentials.createInsecure());
    const md = (t: string): Metadata => {
      const m = new Metadata();
      m.set("authorization", `Bearer ${t}`);
      return m;
    };
    const unary =
      <Req, Res>(method: string) =>
      (req: Req, t = token): Promise<Res> =>
        new Promise((res, rej) => {
          type Unary = (r: Req, m: Metadata, cb: (e: Error | null, r?: Res) => void) => unknown;
          const fn = (grid as unknown as Record<string, Unary>)[method]!;
          fn.call(grid, req, md(t), (e, r) => (e ? rej(e) : res(r!)));
        });
    const g = {
      spawnNode: unary<SpawnNodeRequest, SpawnNodeResponse>("spawnNode"),
      stopNode: unary<StopNodeRequest, StopNodeResponse>("stopNode"),
      getNodeStatus: unary<NodeStatusRequest, NodeStatusResponse>("getNodeStatus"),
      listNodes: unary<ListNodesRequest, ListNodesResponse>("listNodes"),
    };
    try {
      const denied = await grpcCode(g.listNodes({}, "wrong-token"));
      expect(denied).toEqual({ code: 16, details: "this token is not accepted by the agent" });
      const spawned = await g.spawnNode({ nodeId: "", storagePath: "local1", port: 0, memoryLimitMb: 0 });
      expect(spawned.success).toBe(true);
      nodePids.add(spawned.pid);
      expect(await healthz(spawned.port)).toBe(true);
      const st = await g.getNodeStatus({ nodeId: spawned.nodeId });
      expect(st.status).toBe("running");
      expect(st.pid).toBe(spawned.pid);
      const bad = await g.spawnNode({ nodeId: "", storagePath: "../x", port: 0, memoryLimitMb: 0 });
      expect(bad.success).toBe(false);
      expect(bad.errorMessage).toContain("outside");

      const health = await fetch(`http://127.0.0.1:${port}/healthz`);
      expect(health.status).toBe(200);
      const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
      expect(metrics).toContain('switchboard_agent_nodes{status="running"} 1');

      const adopted = await waitFor(
        async () =>
          (await client.nodes.list({ agentId: "n-local" })).find((x) => x.nodeId === spawned.nodeId),
        { message: "the hub to adopt the node" },
      );
      expect(adopted.record?.pid).toBe(spawned.pid);

      const stopped = await g.stopNode({ nodeId: spawned.nodeId });
      expect(stopped.success).toBe(true);
      const unknown = await grpcCode(g.getNodeStatus({ nodeId: "nope" }));
      expect(unknown.code).toBe(5);
    } finally {
      grid.close();
      a.kill();
    }
  }, 60_000);

  it("keeps the registry across a hub restart: nodes listed again, live once their agent is back", async () => {
    await agent("n-hubrestart");
    const n = remember(await client.nodes.spawn({ agentId: "n-hubrestart" }));
    hub.kill("SIGKILL");
    await hub.exited;
    hub = await startHub({
      dataDir: hub.dataDir,
      args: ["--listen", hub.address, "--heartbeat-interval", "1s", "--offline-after", "3s"],
    });
    const back = await waitFor(
      async () => {
        const s = await client.nodes.status(n.nodeId);
        return !s.stale && s.record?.status === "running" ? s : undefined;
      },
      { timeout: 30_000, interval: 200, message: "the node to be live again" },
    );
    expect(back.record?.pid).toBe(n.record?.pid);
  }, 90_000);
});
