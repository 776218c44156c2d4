// Broken links: a partition without FIN is found by keepalive, a draining hub hands its agents to
// the next hub, and revoking a token ends the client streams that use it.
import { cpSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import { TcpProxy } from "./support/tcp-proxy.js";
import {
  agentToken,
  freePort,
  listAgents,
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

const proxies: TcpProxy[] = [];
afterAll(async () => {
  await Promise.all(proxies.map((p) => p.close()));
  await stopAll();
});

async function connected(hub: HubProc, agentId: string): Promise<boolean> {
  return (await listAgents(hub)).some((a) => a.agentId === agentId && a.connected);
}

/** A hub, a proxy in front of it, and an agent token for `pool`: the agent dials the proxy. */
async function hubBehindProxy(pool: string): Promise<{ hub: HubProc; proxy: TcpProxy; token: string }> {
  const hub = await startHub();
  const proxy = await TcpProxy.start(hub.address);
  proxies.push(proxy);
  return { hub, proxy, token: await agentToken(hub, pool) };
}

function agentVia(address: string, token: string, agentId: string, pool: string, extra: string[] = []) {
  return spawnCli([
    "agent",
    "--hub",
    address,
    "--token",
    token,
    "--agent-id",
    agentId,
    "--pool",
    pool,
    "--data",
    tempDir(agentId),
    ...extra,
  ]);
}

describe("links", () => {
  it("finds a blackholed agent within 15 s and takes it back once the link heals", async () => {
    const { hub, proxy, token } = await hubBehindProxy("hole");
    const agent = agentVia(proxy.address, token, "hole-1", "hole");
    await waitFor(() => connected(hub, "hole-1"), { timeout: 20_000, message: "the agent to connect" });
    const cutAt = Date.now();
    proxy.blackhole();
    await waitFor(async () => !(await connected(hub, "hole-1")), {
      timeout: 16_000,
      interval: 200,
      message: "the hub to see the agent gone",
    });
    const noticedMs = Date.now() - cutAt;
    expect(noticedMs).toBeLessThanOrEqual(16_000);
    proxy.heal();
    await waitFor(() => connected(hub, "hole-1"), {
      timeout: 45_000,
      interval: 200,
      message: "the agent to come back",
    });
    agent.kill("SIGTERM");
    expect(await agent.exited).toBe(0);
  }, 90_000);

  it("lets an agent take over its own stale session after a blip, and refuses an impostor", async () => {
    const { hub, proxy, token } = await hubBehindProxy("blip");
    const agent = agentVia(proxy.address, token, "blip-1", "blip", ["--shell"]);
    await waitFor(() => connected(hub, "blip-1"), { timeout: 20_000, message: "the agent to connect" });
    const sessionOf = async (): Promise<string | undefined> => {
      const r = await runCli([...hub.cli, "agents", "--output", "json"]);
      return (JSON.parse(r.stdout) as { agentId: string; sessionId?: string; connectedAtMs: number }[])
        .filter((a) => a.agentId === "blip-1")
        .map((a) => String(a.connectedAtMs))[0];
    };
    const before = await sessionOf();
    // The agent sees its link drop; the hub's side of it stays open and silent.
    proxy.dropClientSide();
    await waitFor(
      async () => {
        const now = await sessionOf();
        return now !== undefined && now !== before;
      },
      { timeout: 10_000, interval: 100, message: "the agent to be back on a new session" },
    );
    expect(hub.stderr()).toMatch(/taking over its stale session/);
    const r = await runCli([...hub.cli, "exec", "--pool", "blip", "--", "echo", "after the blip"]);
    expect(r.stderr).toBe("");
    expect(r.stdout).toBe("after the blip\n");
    // Another process with the same agent id is refused while the first is live.
    const impostor = agentVia(hub.address, token, "blip-1", "blip");
    await waitFor(() => /already connected/.test(impostor.stderr()), {
      timeout: 15_000,
      message: "the impostor to be refused",
    });
    expect(hub.stderr()).toMatch(/refused a second process/);
    impostor.kill("SIGTERM");
    await impostor.exited;
    // A token that allows takeover lets a replacement process take the live session over.
    const created = await runCli([
      ...hub.cli,
      "token",
      "create",
      "--role",
      "agent",
      "--pool",
      "blip",
      "--allow-takeover",
    ]);
    const replacement = agentVia(hub.address, created.stdout.trim(), "blip-1", "blip", ["--shell"]);
    await waitFor(() => /taken over by another process/.test(hub.stderr()), {
      timeout: 15_000,
      message: "the replacement to take over",
    });
    // The old process is refused from now on: the id belongs to the replacement's token now.
    await waitFor(
      () => /agent id blip-1 is registered to pool blip with another token/.test(agent.stderr()),
      { timeout: 15_000, message: "the old process to be refused" },
    );
    expect(await connected(hub, "blip-1")).toBe(true);
    agent.kill("SIGTERM");
    replacement.kill("SIGTERM");
    await Promise.all([agent.exited, replacement.exited]);
  }, 60_000);

  it("hands a draining hub's agents over to the next hub at once", async () => {
    // Two hubs that know the same tokens: the second starts from a copy of the first's data.
    const dirA = tempDir("hub-a");
    const [portA, portB] = [await freePort(), await freePort()];
    let hubA = await startHub({ dataDir: dirA, args: ["--listen", `127.0.0.1:${portA}`] });
    const token = await agentToken(hubA, "handover");
    hubA.kill("SIGTERM");
    expect(await hubA.exited).toBe(0);
    const dirB = tempDir("hub-b");
    cpSync(dirA, dirB, { recursive: true });
    hubA = await startHub({ dataDir: dirA, args: ["--listen", `127.0.0.1:${portA}`] });
    const hubB = await startHub({ dataDir: dirB, args: ["--listen", `127.0.0.1:${portB}`] });
    await startAgent(hubA, {
      agentId: "mover",
      pool: "handover",
      token,
      args: ["--hub", hubA.address, "--hub", hubB.address],
    });
    expect(await connected(hubB, "mover")).toBe(false);
    const drainAt = Date.now();
    hubA.kill("SIGTERM");
    await waitFor(() => connected(hubB, "mover"), {
      timeout: 10_000,
      interval: 100,
      message: "the agent to be on the second hub",
    });
    expect(Date.now() - drainAt).toBeLessThan(5_000);
    const r = await runCli([...hubB.cli, "exec", "--pool", "handover", "--", "echo", "moved"]);
    expect(r.stdout).toBe("moved\n");
  }, 60_000);

  it("ends a client's live stream within a second of its token being revoked", async () => {
    const hub = await startHub();
    await startAgent(hub, { agentId: "rev-1", pool: "rev" });
    const created = await runCli([...hub.cli, "token", "create", "--role", "operator", "--name", "watcher"]);
    const token = created.stdout.trim();
    const as = ["--hub", hub.address, "--token", token];
    const env = { SWITCHBOARD_DATA: tempDir("rev-empty"), SWITCHBOARD_TOKEN: "" };
    const id = (
      await runCli([...as, "exec", "--pool", "rev", "--detach", "--shell", "sleep 30"], { env })
    ).stdout.trim();
    const follow = spawnCli([...as, "logs", "--follow", id], { env });
    const session = spawnCli([...as, "exec", "--pool", "rev", "--shell", "sleep 30"], { env });
    await waitFor(
      async () => {
        const t = await runCli([
          ...hub.cli,
          "tasks",
          "--pool",
          "rev",
          "--state",
          "running",
          "--output",
          "json",
        ]);
        return (JSON.parse(t.stdout) as unknown[]).length === 2;
      },
      { message: "the streams to be open" },
    );
    const revokedAt = Date.now();
    expect((await runCli([...hub.cli, "token", "revoke", "watcher"])).code).toBe(0);
    expect(await follow.exited).toBe(1);
    expect(await session.exited).not.toBe(0);
    expect(Date.now() - revokedAt).toBeLessThan(2_000);
    expect(follow.stderr()).toMatch(/revoked/);
  }, 60_000);
});
