// Session resume: a task keeps running through a link cut, and the client's copy of its output has
// every line once, in order; past the grace the task ends lost and the agent stops it on return.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TcpProxy } from "./support/tcp-proxy.js";
import {
  agentToken,
  listAgents,
  pidAlive,
  runCli,
  spawnCli,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
  type Proc,
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

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function agentBehindProxy(
  hubArgs: string[],
  agentId: string,
  agentArgs: string[] = [],
): Promise<{ hub: HubProc; proxy: TcpProxy; agent: Proc }> {
  const hub = await startHub({ args: hubArgs });
  const proxy = await TcpProxy.start(hub.address);
  proxies.push(proxy);
  const token = await agentToken(hub, "resume");
  const agent = spawnCli([
    "agent",
    "--hub",
    proxy.address,
    "--token",
    token,
    "--agent-id",
    agentId,
    "--pool",
    "resume",
    "--shell",
    "--data",
    tempDir(agentId),
    ...agentArgs,
  ]);
  await waitFor(() => connected(hub, agentId), { timeout: 20_000, message: "the agent to connect" });
  return { hub, proxy, agent };
}

describe("session resume", () => {
  it("loses no line of a task's output through a 5 s link cut", async () => {
    const { hub, proxy } = await agentBehindProxy([], "resume-1");
    const lines = 1500;
    const exec = spawnCli([
      ...hub.cli,
      "exec",
      "--agent",
      "resume-1",
      "--",
      "bash",
      "-c",
      `for i in $(seq 1 ${lines}); do echo "line $i"; sleep 0.01; done`,
    ]);
    // Cut once the task has printed for a while.
    await waitFor(() => exec.stdout().split("\n").length > 150, {
      timeout: 20_000,
      message: "output to flow",
    });
    proxy.down();
    const cutAt = Date.now();
    await waitFor(async () => !(await connected(hub, "resume-1")), {
      timeout: 5_000,
      message: "the hub to see the link gone",
    });
    await sleep(Math.max(0, 5_000 - (Date.now() - cutAt)));
    proxy.up();
    const code = await exec.exited;
    expect(exec.stderr()).toBe("");
    expect(code).toBe(0);
    const got = exec.stdout().trimEnd().split("\n");
    const want = Array.from({ length: lines }, (_, i) => `line ${i + 1}`);
    expect(got.length).toBe(lines);
    expect(got).toEqual(want);
    // The hub's record agrees: the task succeeded on the same agent, with every byte.
    const tasks = JSON.parse((await runCli([...hub.cli, "tasks", "--output", "json"])).stdout) as {
      state: string;
      agentId: string;
      stdoutBytes: number;
    }[];
    expect(tasks[0]).toMatchObject({
      state: "succeeded",
      agentId: "resume-1",
      stdoutBytes: want.join("\n").length + 1,
    });
  }, 120_000);

  it("resumes when only the agent's side of the link broke, re-sending what was in flight", async () => {
    const { hub, proxy } = await agentBehindProxy([], "resume-3");
    const lines = 600;
    const exec = spawnCli([
      ...hub.cli,
      "exec",
      "--agent",
      "resume-3",
      "--",
      "bash",
      "-c",
      `for i in $(seq 1 ${lines}); do echo "line $i"; sleep 0.01; done`,
    ]);
    await waitFor(() => exec.stdout().split("\n").length > 100, {
      timeout: 20_000,
      message: "output to flow",
    });
    // The agent sees its connection close; the hub sees nothing and still holds the old stream.
    proxy.dropClientSide();
    expect(await exec.exited).toBe(0);
    const got = exec.stdout().trimEnd().split("\n");
    expect(got).toEqual(Array.from({ length: lines }, (_, i) => `line ${i + 1}`));
  }, 120_000);

  it("spills events to a file past its memory cap while the link is down, and loses none", async () => {
    const dir = tempDir("resume-spill");
    const config = join(dir, "agent.toml");
    writeFileSync(config, `[agent]\nresume_buffer_mb = 1\n`);
    const { hub, proxy, agent } = await agentBehindProxy([], "resume-4", ["--config", config]);
    // About 19 MB over several seconds: a 3 s cut leaves megabytes to hold.
    const script = `for i in $(seq 1 200); do yes "$i $(printf '%090d' 0)" | head -n 1000; sleep 0.02; done`;
    const exec = spawnCli([...hub.cli, "exec", "--agent", "resume-4", "--", "bash", "-c", script]);
    await waitFor(() => exec.stdout().length > 1_000_000, { timeout: 20_000, message: "output to flow" });
    proxy.down();
    await sleep(3_000);
    proxy.up();
    expect(await exec.exited).toBe(0);
    const want = execFileSync("bash", ["-c", script], { maxBuffer: 64 * 1024 * 1024 });
    const sha = (b: string | Buffer) => createHash("sha256").update(b).digest("hex");
    // Where the copies part, if they do: the line number and both lines, rather than 19 MB of diff.
    const g = exec.stdout().split("\n");
    const w = want.toString().split("\n");
    const at = w.findIndex((line, n) => g[n] !== line);
    expect(
      at === -1 ? "identical" : `line ${at + 1}: got ${g[at]?.slice(0, 12)}, want ${w[at]?.slice(0, 12)}`,
    ).toBe("identical");
    expect(exec.stdout().length).toBe(want.length);
    expect(sha(exec.stdout())).toBe(sha(want));
    const resumed = agent
      .stderr()
      .split("\n")
      .filter((l) => l.includes("session resumed"))
      .map((l) => JSON.parse(l) as { spilledBytes: number });
    expect(resumed.length).toBeGreaterThan(0);
    expect(resumed[0]!.spilledBytes).toBeGreaterThan(0);
  }, 120_000);

  it("ends a task lost when the cut outlasts the grace, and the agent stops it", async () => {
    const { hub, proxy } = await agentBehindProxy(["--resume-grace", "2s"], "resume-2");
    const dir = tempDir("resume-lost");
    const pidFile = join(dir, "pid");
    const exec = spawnCli([
      ...hub.cli,
      "exec",
      "--agent",
      "resume-2",
      "--",
      "bash",
      "-c",
      `echo $$ > ${pidFile}; while true; do echo tick; sleep 0.1; done`,
    ]);
    await waitFor(() => existsSync(pidFile) && exec.stdout().includes("tick"), {
      timeout: 20_000,
      message: "the task to start",
    });
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    proxy.down();
    const code = await exec.exited;
    expect(code).toBe(1);
    expect(exec.stderr()).toMatch(/lost/i);
    expect(exec.stderr()).toMatch(/did not resume within the 2s grace/);
    // The agent stopped the process on its side.
    await waitFor(() => !pidAlive(pid), {
      timeout: 15_000,
      interval: 100,
      message: "the task's process to end",
    });
    proxy.up();
    await waitFor(() => connected(hub, "resume-2"), {
      timeout: 30_000,
      interval: 200,
      message: "the agent to come back",
    });
    const task = JSON.parse((await runCli([...hub.cli, "tasks", "--output", "json"])).stdout) as {
      state: string;
      reason: string;
    }[];
    expect(task[0]?.state).toBe("lost");
  }, 120_000);
});
