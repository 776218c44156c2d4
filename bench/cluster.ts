// Our side of every benchmark: a hub and one agent, each its own child process started through the
// built CLI as in production, and an SDK client in this process.
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { SwitchboardClient } from "../src/client/index.js";
import { CLI, log, spawnNode, type Child } from "./harness.js";
import { waitFor } from "../src/common/wait-for.js";

const execFileP = promisify(execFile);

export const POOL = "bench";
export const AGENT_ID = "bench-1";

export interface ClusterOptions {
  poolSize: number;
  shell: boolean;
  /** Extra node flags for the hub and the agent (e.g. --cpu-prof). */
  hubNodeFlags?: readonly string[];
  agentNodeFlags?: readonly string[];
  /** Extra arguments for `switchboard agent` (e.g. --config FILE). */
  agentArgs?: readonly string[];
  /** The agent's transport: "grpc" (default) or "http" (long-polling on the hub's HTTP port). */
  transport?: "grpc" | "http";
  /** Extra arguments for `switchboard hub` (e.g. --store URL). */
  hubArgs?: readonly string[];
  /** The built CLI to start the hub and the agent from (default: this checkout's). */
  cli?: string;
}

export interface Cluster {
  hub: Child;
  agent: Child;
  address: string;
  client: SwitchboardClient;
  /** The hub's admin token (an operator token for seed-000 and CLI calls). */
  adminToken: string;
  /** Stops the client, the agent, then the hub, and removes their data directories. */
  stop(): Promise<void>;
}

const childEnv = { SWITCHBOARD_LOG_LEVEL: "warn" };

/** Waits until the hub process `hub` has written its hub.json in `dataDir`; returns its address. */
export async function waitForHubJson(hub: Child, dataDir: string): Promise<string> {
  return (await waitForHubAddresses(hub, dataDir)).address;
}

/** The hub's gRPC address and, if it serves one, its agent HTTP API address, from its hub.json. */
export function waitForHubAddresses(
  hub: Child,
  dataDir: string,
): Promise<{ address: string; httpAddress?: string }> {
  return waitFor(
    () => {
      if (hub.exited()) throw new Error(`hub exited:\n${hub.output()}`);
      const j = JSON.parse(readFileSync(path.join(dataDir, "hub.json"), "utf8")) as {
        address?: string;
        httpAddress?: string;
        pid?: number;
      };
      return j.pid === hub.pid && typeof j.address === "string"
        ? { address: j.address, ...(j.httpAddress ? { httpAddress: j.httpAddress } : {}) }
        : undefined;
    },
    { timeout: 20_000, message: "hub.json" },
  );
}

/** An agent token for `pool`, made with the CLI as an operator would. */
export async function createAgentToken(
  address: string,
  adminToken: string,
  pool: string,
  name: string,
): Promise<string> {
  const { stdout } = await execFileP(
    process.execPath,
    [
      CLI,
      "--hub",
      address,
      "--token",
      adminToken,
      "token",
      "create",
      "--role",
      "agent",
      "--pool",
      pool,
      "--name",
      name,
    ],
    { env: { ...process.env, ...childEnv } },
  ).catch((err: unknown) => {
    throw new Error(`token create failed: ${err instanceof Error ? err.message : String(err)}`);
  });
  const token = stdout.trim().split("\n").pop()?.trim() ?? "";
  if (token === "") throw new Error("token create printed nothing");
  return token;
}

export async function startCluster(o: ClusterOptions): Promise<Cluster> {
  const root = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-"));
  const hubDir = path.join(root, "hub");
  const agentDir = path.join(root, "agent");
  let hub: Child | undefined;
  let agent: Child | undefined;
  let client: SwitchboardClient | undefined;
  const cleanup = async (): Promise<void> => {
    client?.close();
    await agent?.stop();
    await hub?.stop();
    rmSync(root, { recursive: true, force: true });
  };
  try {
    const cli = o.cli ?? CLI;
    hub = spawnNode("hub", cli, {
      args: [
        "hub",
        "--listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--data",
        hubDir,
        ...(o.hubArgs ?? []),
      ],
      env: childEnv,
      nodeFlags: o.hubNodeFlags ?? [],
    });
    const h = hub;
    const addresses = await waitForHubAddresses(h, hubDir);
    const info = addresses.address;
    const http = o.transport === "http";
    if (http && !addresses.httpAddress) throw new Error("the hub serves no agent HTTP API");
    const adminToken = readFileSync(path.join(hubDir, "admin.token"), "utf8").trim();
    const agentToken = await createAgentToken(info, adminToken, POOL, "bench-agent");

    agent = spawnNode("agent", cli, {
      args: [
        "agent",
        ...(http ? ["--transport", "http"] : []),
        "--hub",
        http ? addresses.httpAddress! : info,
        "--token",
        agentToken,
        "--agent-id",
        AGENT_ID,
        "--pool",
        POOL,
        "--pool-size",
        String(o.poolSize),
        ...(o.shell ? ["--shell"] : []),
        ...(o.agentArgs ?? []),
        "--data",
        agentDir,
      ],
      env: childEnv,
      nodeFlags: o.agentNodeFlags ?? [],
    });
    client = new SwitchboardClient({ hub: info, token: adminToken });
    const c = client;
    const a = agent;
    await waitFor(
      async () => {
        if (a.exited()) throw new Error(`agent exited:\n${a.output()}`);
        const agents = await c.admin.listAgents();
        const me = agents.find((x) => x.agentId === AGENT_ID);
        return me?.connected === true && me.freeSlots > 0 ? true : undefined;
      },
      { timeout: 20_000, interval: 100, message: "the agent to connect" },
    );
    log(`cluster up: hub ${info} (pid ${h.pid}), agent ${AGENT_ID} (pid ${a.pid}), pool size ${o.poolSize}`);
    return { hub: h, agent: a, address: info, client: c, adminToken, stop: cleanup };
  } catch (err) {
    const detail = [hub, agent]
      .filter((x): x is Child => x !== undefined)
      .map((x) => `--- ${x.name} output ---\n${x.output()}`)
      .join("\n");
    await cleanup();
    throw new Error(`${err instanceof Error ? err.message : String(err)}\n${detail}`);
  }
}
