// exec end to end: real hub and agent processes, driven through the CLI as a user would.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CLI,
  pidAlive,
  runCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
  waitForTaskState,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

let hub: HubProc;

beforeAll(async () => {
  hub = await startHub();
  await startAgent(hub, { agentId: "exec-1", pool: "exec" });
  await startAgent(hub, { agentId: "exec-2", pool: "exec" });
});

afterAll(stopAll);

describe("switchboard exec", () => {
  it("returns stdout and the remote exit code", async () => {
    const ok = await runCli([...hub.cli, "exec", "--pool", "exec", "--", "echo", "hello", "world"]);
    expect(ok.stdout).toBe("hello world\n");
    expect(ok.code).toBe(0);
    const fail = await runCli([...hub.cli, "exec", "--pool", "exec", "--shell", "exit 42"]);
    expect(fail.code).toBe(42);
  });

  it("keeps stderr apart from stdout", async () => {
    const r = await runCli([
      ...hub.cli,
      "exec",
      "--pool",
      "exec",
      "--shell",
      "echo out; echo err >&2; echo out2",
    ]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe("out\nout2\n");
    expect(r.stderr).toContain("err\n");
    expect(r.stdout).not.toContain("err");
  });

  it("passes stdin, cwd and env", async () => {
    const dir = tempDir("cwd");
    const r = await runCli(
      [
        ...hub.cli,
        "exec",
        "--pool",
        "exec",
        "--cwd",
        dir,
        "--env",
        "GREETING=hi there",
        "--stdin",
        "--shell",
        'pwd; echo "$GREETING"; cat',
      ],
      { stdin: "from stdin\n" },
    );
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${dir}\nhi there\nfrom stdin\n`);
  });

  it("streams 100 MB of output byte-identical", async () => {
    const script = "seq 1 13000000";
    const expected = createHash("sha256");
    await new Promise<void>((resolve, reject) => {
      const local = spawn("bash", ["-c", script]);
      local.stdout.on("data", (b: Buffer) => expected.update(b));
      local.on("error", reject);
      local.on("close", () => resolve());
    });
    const got = createHash("sha256");
    let bytes = 0;
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...hub.cli, "exec", "--pool", "exec", "--shell", script], {
        stdio: ["ignore", "pipe", "inherit"],
      });
      child.stdout.on("data", (b: Buffer) => {
        bytes += b.length;
        got.update(b);
      });
      child.on("error", reject);
      child.on("close", resolve);
    });
    expect(code).toBe(0);
    expect(bytes).toBeGreaterThan(100_000_000);
    expect(got.digest("hex")).toBe(expected.digest("hex"));
  }, 180_000);

  it("Ctrl-C cancels the remote task and its whole process tree", async () => {
    const dir = tempDir("tree");
    const pidFile = join(dir, "pids");
    // Two children, each starting a grandchild; every pid is written down before "ready".
    const script = `for i in 1 2; do (sleep 300 & echo $! >> ${pidFile}; sleep 300) & echo $! >> ${pidFile}; done; sleep 0.2; echo ready; wait`;
    const child = spawn(process.execPath, [CLI, ...hub.cli, "exec", "--pool", "exec", "--shell", script], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    child.stderr.on("data", (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((r) => child.on("close", r));
    await waitFor(() => out.includes("ready"), {
      timeout: 20_000,
      message: "the remote script to start its tree",
    });
    const pids = readFileSync(pidFile, "utf8").trim().split("\n").map(Number);
    expect(pids).toHaveLength(4);
    expect(pids.every(pidAlive)).toBe(true);
    child.kill("SIGINT");
    expect(await exited).toBe(130);
    expect(err).toMatch(/cancel/i);
    await waitFor(() => pids.every((p) => !pidAlive(p)), {
      timeout: 15_000,
      message: "every process of the tree to be gone",
    });
  }, 60_000);

  it("times out a command that runs too long (exit 124)", async () => {
    const r = await runCli([...hub.cli, "exec", "--pool", "exec", "--timeout", "1s", "--", "sleep", "30"]);
    expect(r.code).toBe(124);
    expect(r.stderr).toMatch(/time/i);
  });

  it("runs on a named agent", async () => {
    const r = await runCli([...hub.cli, "exec", "--agent", "exec-2", "--shell", "echo on exec-2"]);
    expect(r.code).toBe(0);
    const list = await runCli([...hub.cli, "tasks", "--agent", "exec-2", "--output", "json"]);
    expect(list.code).toBe(0);
    const tasks = JSON.parse(list.stdout) as { agentId: string }[];
    expect(tasks.length).toBeGreaterThan(0);
    expect(tasks.every((t) => t.agentId === "exec-2")).toBe(true);
  });

  it("keeps the output for `switchboard logs` and `task`", async () => {
    const r = await runCli([
      ...hub.cli,
      "exec",
      "--pool",
      "exec",
      "--detach",
      "--shell",
      "echo kept; echo kept-err >&2",
    ]);
    expect(r.code).toBe(0);
    const id = r.stdout.trim();
    await waitForTaskState(hub, id, "succeeded");
    const logs = await runCli([...hub.cli, "logs", id]);
    expect(logs.stdout).toBe("kept\n");
    expect(logs.stderr).toContain("kept-err");
  });

  it("pings agents with echo tasks", async () => {
    const r = await runCli([...hub.cli, "ping", "--pool", "exec", "--count", "3", "--interval", "10ms"]);
    expect(r.code).toBe(0);
    expect(r.stdout.match(/time=/g)?.length).toBe(3);
  });
});
