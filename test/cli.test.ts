// The CLI's looking-and-steering commands end to end: logs --follow, cancel, status, the
// list-agents alias, --master, SWITCHBOARD_HUB / SWITCHBOARD_TOKEN, and usage errors.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
  waitForTaskState,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

let hub: HubProc;
const bare = { SWITCHBOARD_DATA: tempDir("cli-empty"), SWITCHBOARD_HUB: "", SWITCHBOARD_TOKEN: "" };

beforeAll(async () => {
  hub = await startHub();
  await startAgent(hub, { agentId: "cli-1", pool: "cli", args: ["--labels", "zone=a,disk=ssd"] });
});

afterAll(stopAll);

async function detach(script: string): Promise<string> {
  const r = await runCli([...hub.cli, "exec", "--pool", "cli", "--detach", "--shell", script]);
  expect(r.code).toBe(0);
  return r.stdout.trim();
}

describe("switchboard CLI", () => {
  it("follows a running task's output live until it ends", async () => {
    const id = await detach("echo one; sleep 0.5; echo two >&2; sleep 0.5; echo three");
    const r = await runCli([...hub.cli, "logs", "--follow", id]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("one\nthree\n");
    expect(r.stderr).toContain("two\n");
    expect(r.stderr).toMatch(/succeeded/);
  });

  it("cancels a task by id and reports its state", async () => {
    const id = await detach("sleep 60");
    await waitForTaskState(hub, id, "running");
    const r = await runCli([...hub.cli, "cancel", id]);
    expect(r.code).toBe(0);
    await waitForTaskState(hub, id, "cancelled");
    const list = await runCli([...hub.cli, "tasks", "--state", "cancelled", "--output", "json"]);
    expect((JSON.parse(list.stdout) as { taskId: string }[]).map((t) => t.taskId)).toContain(id);
  });

  it("targets agents by labels", async () => {
    const r = await runCli([...hub.cli, "exec", "--labels", "zone=a", "--", "echo", "labelled"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("labelled\n");
    const none = await runCli([...hub.cli, "exec", "--labels", "zone=b", "--", "true"]);
    expect(none.code).toBe(1);
  });

  it("shows cluster status as JSON and as text", async () => {
    const json = await runCli([...hub.cli, "status", "--output", "json"]);
    expect(json.code).toBe(0);
    const s = JSON.parse(json.stdout) as { agentsHealthy: number; pools: { pool: string }[] };
    expect(s.agentsHealthy).toBeGreaterThanOrEqual(1);
    expect(s.pools.map((p) => p.pool)).toContain("cli");
    const text = await runCli([...hub.cli, "status"]);
    expect(text.stdout).toMatch(/agents\s+1 \(1 healthy/);
  });

  it("accepts list-agents, --master and the SWITCHBOARD_* variables", async () => {
    const alias = await runCli(["--master", hub.address, "--token", hub.adminToken, "list-agents"], {
      env: bare,
    });
    expect(alias.code).toBe(0);
    expect(alias.stdout).toMatch(/cli-1\s+cli\s+healthy/);
    const env = await runCli(["agents", "--output", "json"], {
      env: { ...bare, SWITCHBOARD_HUB: hub.address, SWITCHBOARD_TOKEN: hub.adminToken },
    });
    expect(env.code).toBe(0);
    expect((JSON.parse(env.stdout) as { agentId: string }[]).map((a) => a.agentId)).toContain("cli-1");
    // Connection flags also work after the command name.
    const after = await runCli(["agents", "--hub", hub.address, "--token", hub.adminToken], { env: bare });
    expect(after.code).toBe(0);
  });

  it("shows the audit log: submissions, cancels, tokens and agents", async () => {
    const id = await detach("true");
    const all = await runCli([...hub.cli, "audit", "--limit", "200", "--output", "json"]);
    expect(all.code).toBe(0);
    const rows = JSON.parse(all.stdout) as { action: string; subject: string; actor: string }[];
    expect(rows.some((r) => r.action === "task.submit" && r.subject === id)).toBe(true);
    expect(rows.some((r) => r.action === "agent.connect" && r.subject === "cli-1")).toBe(true);
    expect(rows.some((r) => r.action === "token.create")).toBe(true);
    const one = await runCli([...hub.cli, "audit", "--subject", id, "--output", "json"]);
    expect((JSON.parse(one.stdout) as { subject: string }[]).every((r) => r.subject === id)).toBe(true);
    const text = await runCli([...hub.cli, "audit", "--action", "task.submit", "--limit", "1"]);
    expect(text.stdout).toMatch(/task\.submit/);
    // Reading the audit log needs an admin token.
    const viewer = (await runCli([...hub.cli, "token", "create", "--role", "viewer"])).stdout.trim();
    const refused = await runCli(["--hub", hub.address, "--token", viewer, "audit"], { env: bare });
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/PERMISSION_DENIED/);
  });

  it("ends quietly when its reader closes the pipe early (| head)", async () => {
    const p = spawnCli([...hub.cli, "exec", "--pool", "cli", "--", "seq", "1", "2000000"]);
    await waitFor(() => p.stdout().length > 0, { message: "output to start" });
    p.child.stdout!.destroy();
    const code = await p.exited;
    expect(code).toBe(0);
    expect(p.stderr()).not.toMatch(/EPIPE|Unhandled/);
    // Like a local command killed by SIGPIPE, the remote one is stopped.
    const list = await runCli([...hub.cli, "tasks", "--pool", "cli", "--limit", "1", "--output", "json"]);
    const [last] = JSON.parse(list.stdout) as { state: string; reason: string }[];
    await waitFor(
      async () => {
        const t = await runCli([...hub.cli, "tasks", "--pool", "cli", "--limit", "1", "--output", "json"]);
        return (JSON.parse(t.stdout) as { state: string }[])[0]?.state === "cancelled";
      },
      { message: "the remote task to be cancelled" },
    );
    expect(last).toBeDefined();
  });

  it("answers bad usage with exit 2 and what to do", async () => {
    const noTarget = await runCli([...hub.cli, "exec", "--", "true"]);
    expect(noTarget.code).toBe(2);
    expect(noTarget.stderr).toMatch(/--pool/);
    const nothing = await runCli([...hub.cli, "exec", "--pool", "cli"]);
    expect(nothing.code).toBe(2);
    const badState = await runCli([...hub.cli, "tasks", "--state", "sleeping"]);
    expect(badState.code).toBe(2);
    expect(badState.stderr).toMatch(/unknown state/);
    const badDuration = await runCli([
      ...hub.cli,
      "exec",
      "--pool",
      "cli",
      "--timeout",
      "soon",
      "--",
      "true",
    ]);
    expect(badDuration.code).toBe(2);
    const unknownTask = await runCli([...hub.cli, "task", "01900000-0000-7000-8000-000000000000"]);
    expect(unknownTask.code).toBe(1);
    expect(unknownTask.stderr).toMatch(/NOT_FOUND/);
  });

  it("passes arguments that look like options to the remote command", async () => {
    const r = await runCli([...hub.cli, "exec", "--pool", "cli", "--", "printf", "%s|", "-n", "--x"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("-n|--x|");
  });

  it("leaves the task running when Ctrl-C ends logs --follow", async () => {
    const id = await detach("for i in $(seq 1 100); do echo tick $i; sleep 0.1; done");
    const p = spawnCli([...hub.cli, "logs", "--follow", id]);
    await waitFor(() => p.stdout().includes("tick 2"), { message: "output to arrive" });
    p.kill("SIGINT");
    // Leaving `logs` does not cancel the task: only `cancel` or exec's Ctrl-C does.
    expect(await p.exited).toBe(0);
    const t = await runCli([...hub.cli, "task", id, "--output", "json"]);
    expect((JSON.parse(t.stdout) as { state: string }).state).toBe("running");
    await runCli([...hub.cli, "cancel", id]);
  });
});
