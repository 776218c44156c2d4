// Every refusal of the token model, end to end.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  agentToken,
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  listAgents,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

let hub: HubProc;
// Run CLI calls from a directory with no admin.token, so only the token we pass counts.
const bare = { SWITCHBOARD_TOKEN: "", SWITCHBOARD_DATA: tempDir("empty") };

beforeAll(async () => {
  hub = await startHub();
  await startAgent(hub, { agentId: "auth-1", pool: "auth" });
});

afterAll(stopAll);

async function token(role: string, extra: string[] = []): Promise<string> {
  const r = await runCli([
    ...hub.cli,
    "token",
    "create",
    "--role",
    role,
    "--name",
    `${role}-${Math.random().toString(36).slice(2, 8)}`,
    ...extra,
  ]);
  expect(r.code).toBe(0);
  return r.stdout.trim().split("\n").pop()!.trim();
}

describe("tokens", () => {
  it("refuses a call without a token", async () => {
    const r = await runCli(["--hub", hub.address, "agents"], { env: bare });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/token/i);
  });

  it("refuses an unknown token", async () => {
    const r = await runCli(["--hub", hub.address, "--token", "sbt_not-a-real-token", "agents"], {
      env: bare,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/unknown token/i);
  });

  it("refuses a revoked token", async () => {
    const t = await token("operator");
    const before = await runCli(["--hub", hub.address, "--token", t, "agents"], { env: bare });
    expect(before.code).toBe(0);
    const list = await runCli([...hub.cli, "token", "list", "--output", "json"]);
    const mine = (JSON.parse(list.stdout) as { id: string; name: string; role: string }[]).filter(
      (x) => x.role === "operator",
    );
    expect(mine.length).toBeGreaterThan(0);
    const revoke = await runCli([...hub.cli, "token", "revoke", mine[0]!.id]);
    expect(revoke.code).toBe(0);
    const after = await runCli(["--hub", hub.address, "--token", t, "agents"], { env: bare });
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(/revoked/i);
  });

  it("lets a viewer list but not run tasks", async () => {
    const t = await token("viewer");
    const list = await runCli(["--hub", hub.address, "--token", t, "agents"], { env: bare });
    expect(list.code).toBe(0);
    const run = await runCli(["--hub", hub.address, "--token", t, "exec", "--pool", "auth", "--", "true"], {
      env: bare,
    });
    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/viewer/i);
  });

  it("keeps an operator scoped to a pool out of other pools", async () => {
    const t = await token("operator", ["--pool", "other"]);
    const r = await runCli(["--hub", hub.address, "--token", t, "exec", "--pool", "auth", "--", "true"], {
      env: bare,
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/PERMISSION_DENIED|not allowed|scope/i);
  });

  it("shows a token scoped to a pool only that pool's agents and tasks", async () => {
    const run = await runCli([...hub.cli, "exec", "--pool", "auth", "--detach", "--", "true"]);
    expect(run.code).toBe(0);
    const taskId = run.stdout.trim();
    const t = await token("viewer", ["--pool", "elsewhere"]);
    const as = ["--hub", hub.address, "--token", t];
    const agents = await runCli([...as, "agents", "--output", "json"], { env: bare });
    expect(agents.code).toBe(0);
    expect(JSON.parse(agents.stdout)).toEqual([]);
    const tasks = await runCli([...as, "tasks", "--output", "json"], { env: bare });
    expect(tasks.code).toBe(0);
    expect((JSON.parse(tasks.stdout) as { taskId: string }[]).map((x) => x.taskId)).not.toContain(taskId);
    const other = await runCli([...as, "tasks", "--pool", "auth"], { env: bare });
    expect(other.code).toBe(1);
    expect(other.stderr).toMatch(/PERMISSION_DENIED/);
    const one = await runCli([...as, "task", taskId], { env: bare });
    expect(one.code).toBe(1);
    expect(one.stderr).toMatch(/may not see task/);
    const logs = await runCli([...as, "logs", "--follow", taskId], { env: bare });
    expect(logs.code).toBe(1);
    // The admin token, unscoped, sees it.
    const admin = await runCli([...hub.cli, "task", taskId, "--output", "json"]);
    expect(admin.code).toBe(0);
  });

  it("refuses an agent token on the client API", async () => {
    const t = await agentToken(hub, "auth");
    const r = await runCli(["--hub", hub.address, "--token", t, "agents"], { env: bare });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/agent token|PERMISSION_DENIED/i);
  });

  it("does not let an agent token scoped to one pool register into another", async () => {
    const t = await agentToken(hub, "pool-a");
    const p = spawnCli([
      "agent",
      "--hub",
      hub.address,
      "--token",
      t,
      "--agent-id",
      "intruder",
      "--pool",
      "pool-b",
      "--data",
      tempDir("intruder"),
    ]);
    await waitFor(() => /PERMISSION_DENIED|pool-b/.test(p.stderr()), {
      timeout: 15_000,
      message: "the agent to log the refusal",
    });
    const agents = await listAgents(hub);
    expect(agents.some((a) => a.agentId === "intruder" && a.connected)).toBe(false);
    p.kill("SIGTERM");
    await p.exited;
  });

  it("ends a live agent session when its token is revoked", async () => {
    const t = await agentToken(hub, "revocable");
    const agent = await startAgent(hub, { agentId: "revocable-1", pool: "revocable", token: t });
    const list = await runCli([...hub.cli, "token", "list", "--output", "json"]);
    const tokens = JSON.parse(list.stdout) as { id: string; role: string; pools: string[] }[];
    const mine = tokens.filter((x) => x.role === "agent" && x.pools.includes("revocable"));
    expect(mine).toHaveLength(1);
    expect((await runCli([...hub.cli, "token", "revoke", mine[0]!.id])).code).toBe(0);
    await waitFor(
      async () => !(await listAgents(hub)).some((a) => a.agentId === "revocable-1" && a.connected),
      { timeout: 5_000, message: "the agent to be disconnected" },
    );
    await waitFor(() => /revoked/i.test(agent.stderr()), {
      timeout: 5_000,
      message: "the agent to log the revocation",
    });
    agent.kill("SIGTERM");
    await agent.exited;
  });

  it("refuses an agent with an unknown token", async () => {
    const p = spawnCli([
      "agent",
      "--hub",
      hub.address,
      "--token",
      "sbt_bogus",
      "--agent-id",
      "bogus",
      "--data",
      tempDir("bogus"),
    ]);
    await waitFor(() => /UNAUTHENTICATED|unknown token/i.test(p.stderr()), {
      timeout: 15_000,
      message: "the agent to log the refusal",
    });
    p.kill("SIGTERM");
    await p.exited;
  });
});
