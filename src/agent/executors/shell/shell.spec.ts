// The shell executor against real child processes: exit codes, streams, stdin/cwd/env, chunking,
// large output, timeouts, process-tree stops and the output window.
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../../common/logger.js";
import { Code } from "../../../common/errors.js";
import {
  Finished,
  OutputStream,
  ShellSpec,
  TaskState,
  type TaskSpec,
} from "../../../gen/switchboard/v1/task.js";
import { OutputGate } from "../../output-gate.js";
import { pidAlive } from "../../testing/wait.js";
import type { StopRequest } from "../executor.js";
import { waitFor } from "../../../common/wait-for.js";
import { groupMembers } from "./process-group.js";
import { ShellExecutor, taskBaseEnv, type ShellExecutorOptions } from "./shell.js";

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "sb-shell-"));
  dirs.push(d);
  return d;
}
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function shellSpec(s: Partial<ShellSpec>): TaskSpec {
  return { kind: { $case: "shell", value: ShellSpec.fromPartial(s) } };
}

interface Harness {
  stdout(): Buffer;
  stderr(): Buffer;
  chunks: { stream: OutputStream; size: number }[];
  pid(): number;
  gate: OutputGate;
  stop(req: StopRequest): void;
  /** The Finished, once all output went through the gate (as the task run does it). */
  done: Promise<Finished>;
}

function run(
  spec: Partial<ShellSpec>,
  opts: { window?: number; deadlineMs?: number; exec?: Partial<ShellExecutorOptions> } = {},
): Harness {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const chunks: { stream: OutputStream; size: number }[] = [];
  const room = { hasRoom: () => true, onceRoom: (cb: () => void) => queueMicrotask(cb) };
  const gate = new OutputGate(opts.window ?? Infinity, room, (stream, data) => {
    chunks.push({ stream, size: data.length });
    (stream === OutputStream.OUTPUT_STREAM_STDOUT ? out : err).push(Buffer.from(data));
  });
  const executor = new ShellExecutor({
    enabled: true,
    agentId: "spec-agent",
    killGraceMs: 2000,
    maxChunkBytes: 1024 * 1024,
    ...opts.exec,
  });
  let pid = 0;
  const execution = executor.start(shellSpec(spec), {
    taskId: "task-1",
    deadlineMs: opts.deadlineMs ?? 0,
    output: gate,
    started: (p) => (pid = p),
    grantInput: () => undefined,
    logger: silentLogger(),
  });
  return {
    stdout: () => Buffer.concat(out),
    stderr: () => Buffer.concat(err),
    chunks,
    pid: () => pid,
    gate,
    stop: (req) => {
      gate.stopHolding();
      execution.stop(req);
    },
    done: execution.done.then(async (f) => {
      await gate.whenFlushed();
      return f;
    }),
  };
}

describe("shell executor", () => {
  it("reports exit codes: 0 succeeds, non-zero fails with the code, a signal fails with its name", async () => {
    const ok = await run({ argv: ["true"] }).done;
    expect(ok.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(ok.exitCode).toBe(0);

    const bad = await run({ script: "exit 3" }).done;
    expect(bad.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(bad.exitCode).toBe(3);
    expect(bad.reason).toBe("exited with code 3");

    const killed = await run({ script: "kill -KILL $$" }).done;
    expect(killed.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(killed.exitCode).toBe(-1);
    expect(killed.signal).toBe("SIGKILL");
    expect(killed.reason).toBe("killed by signal SIGKILL");
  });

  it("keeps stderr apart from stdout, each in order", async () => {
    const h = run({ script: "echo out; echo err >&2; echo out2; echo err2 >&2" });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(h.stdout().toString()).toBe("out\nout2\n");
    expect(h.stderr().toString()).toBe("err\nerr2\n");
    expect(h.pid()).toBeGreaterThan(1);
  });

  it("writes stdin, then closes it", async () => {
    const h = run({ argv: ["cat"], stdin: Buffer.from("hello\nworld") });
    expect((await h.done).exitCode).toBe(0);
    expect(h.stdout().toString()).toBe("hello\nworld");
    // A process that never reads its stdin is no error.
    const ignore = run({ argv: ["true"], stdin: randomBytes(1 << 20) });
    expect((await ignore.done).state).toBe(TaskState.TASK_STATE_SUCCEEDED);
  });

  it("runs in cwd with env merged over the agent's, without the agent's token", async () => {
    const dir = tempDir();
    const h = run(
      {
        script:
          'pwd; echo "$GREETING"; echo "${SWITCHBOARD_TOKEN:-none}"; command -v ls >/dev/null && echo path-ok',
        cwd: dir,
        env: { GREETING: "hi there" },
      },
      {
        exec: { baseEnv: taskBaseEnv({ ...process.env, SWITCHBOARD_TOKEN: "secret" }) },
      },
    );
    expect((await h.done).exitCode).toBe(0);
    expect(h.stdout().toString()).toBe(`${dir}\nhi there\nnone\npath-ok\n`);
  });

  it("fails clearly when the executable or the cwd does not exist, with no Started", async () => {
    const missing = run({ argv: ["definitely-not-a-program-xyz", "a"] });
    const f = await missing.done;
    expect(f.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(f.exitCode).toBe(-1);
    expect(f.error?.code).toBe(Code.INVALID_ARGUMENT);
    expect(f.error?.message).toMatch(/definitely-not-a-program-xyz.*not found/);
    expect(missing.pid()).toBe(0);

    const noDir = run({ argv: ["true"], cwd: "/nonexistent/dir" });
    const g = await noDir.done;
    expect(g.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(g.error?.code).toBe(Code.FAILED_PRECONDITION);
    expect(g.error?.message).toMatch(/\/nonexistent\/dir.*does not exist/);
    expect(noDir.pid()).toBe(0);
  });

  it("refuses when disabled or the spec is malformed", () => {
    const off = new ShellExecutor({ enabled: false, agentId: "edge-7", killGraceMs: 1, maxChunkBytes: 10 });
    expect(off.admit(shellSpec({ argv: ["true"] }))).toEqual({
      code: Code.PERMISSION_DENIED,
      message: "shell tasks are disabled on agent edge-7: set [shell] enabled = true in its config",
    });
    const on = new ShellExecutor({ enabled: true, agentId: "a", killGraceMs: 1, maxChunkBytes: 10 });
    expect(on.admit(shellSpec({ argv: ["true"] }))).toBeUndefined();
    expect(on.admit(shellSpec({}))?.code).toBe(Code.INVALID_ARGUMENT);
    expect(on.admit(shellSpec({ argv: ["x"], script: "y" }))?.code).toBe(Code.INVALID_ARGUMENT);
    expect(on.admit(shellSpec({ argv: [""] }))?.code).toBe(Code.INVALID_ARGUMENT);
    expect(on.admit(shellSpec({ script: "echo", env: { "A=B": "c" } }))?.code).toBe(Code.INVALID_ARGUMENT);
    expect(on.admit(shellSpec({ script: "echo \0" }))?.code).toBe(Code.INVALID_ARGUMENT);
  });

  it("splits a line longer than max_chunk_bytes and coalesces many short lines", async () => {
    const max = 1024 * 1024;
    const long = run({ script: "head -c 2500000 /dev/zero | tr '\\0' a; echo; echo tail" });
    expect((await long.done).exitCode).toBe(0);
    const text = long.stdout().toString();
    expect(text).toBe(`${"a".repeat(2_500_000)}\ntail\n`);
    expect(long.chunks.every((c) => c.size <= max)).toBe(true);
    expect(long.chunks.filter((c) => c.size === max).length).toBe(2);

    const many = run({ argv: ["seq", "1", "200000"] });
    expect((await many.done).exitCode).toBe(0);
    const lines = many.stdout().toString().split("\n");
    expect(lines.length).toBe(200_001);
    expect(lines[199_999]).toBe("200000");
    // Lines that arrive together travel together: far fewer events than lines, each ending at a newline.
    expect(many.chunks.length).toBeLessThan(2000);
  });

  it("streams 50 MB byte-identical", async () => {
    const file = join(tempDir(), "blob");
    const blob = randomBytes(50 * 1024 * 1024);
    writeFileSync(file, blob);
    const h = run({ argv: ["cat", file] });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    const got = h.stdout();
    expect(got.length).toBe(blob.length);
    expect(createHash("sha256").update(got).digest("hex")).toBe(
      createHash("sha256").update(blob).digest("hex"),
    );
    expect(h.chunks.every((c) => c.size <= 1024 * 1024)).toBe(true);
  });

  it("times out (timeout_ms and the task deadline) with TIMED_OUT", async () => {
    const t0 = Date.now();
    const h = run({ argv: ["sleep", "30"], timeoutMs: 300 });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_TIMED_OUT);
    expect(f.reason).toBe("timeout after 300 ms");
    expect(f.error?.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(f.signal).toBe("SIGTERM");
    expect(Date.now() - t0).toBeLessThan(5000);

    const d = await run({ argv: ["sleep", "30"] }, { deadlineMs: Date.now() + 300 }).done;
    expect(d.state).toBe(TaskState.TASK_STATE_TIMED_OUT);
    expect(d.reason).toMatch(/^timeout after \d+ ms$/);

    const late = await run({ argv: ["true"] }, { deadlineMs: Date.now() - 1 }).done;
    expect(late.state).toBe(TaskState.TASK_STATE_TIMED_OUT);
  });

  it("cancel kills the whole process tree, grandchildren included", async () => {
    const h = run({ script: "sleep 100 & sleep 100 & (sleep 100 & wait) & wait" });
    const members = await waitFor(
      () => {
        const m = h.pid() > 0 ? groupMembers(h.pid()) : [];
        return m.length >= 5 ? m : undefined;
      },
      { message: "the tree to start" },
    );
    h.stop({ cause: "cancelled", reason: "cancelled by client" });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_CANCELLED);
    expect(f.reason).toBe("cancelled by client");
    await waitFor(() => members.every((p) => !pidAlive(p)), {
      message: "every process of the group to be gone",
    });
    expect(groupMembers(h.pid())).toEqual([]);
  });

  it("SIGKILLs the group after the grace when SIGTERM is ignored", async () => {
    const h = run({ script: "trap '' TERM; sleep 100 & echo ready; wait", killGraceMs: 200 });
    await waitFor(() => h.stdout().toString().includes("ready"), { message: "the script to be ready" });
    const members = groupMembers(h.pid());
    const t0 = Date.now();
    h.stop({ cause: "cancelled", reason: "stop" });
    const f = await h.done;
    expect(Date.now() - t0).toBeGreaterThanOrEqual(190);
    expect(f.state).toBe(TaskState.TASK_STATE_CANCELLED);
    expect(f.signal).toBe("SIGKILL");
    await waitFor(() => members.every((p) => !pidAlive(p)), { message: "the group to be gone" });
  });

  it("does not wait for a background job left holding the pipes", async () => {
    const h = run({ script: "sleep 100 & echo $!; echo done" });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    const [bgPid, done] = h.stdout().toString().split("\n");
    expect(done).toBe("done");
    await waitFor(() => !pidAlive(Number(bgPid)), { message: "the background job to be killed" });
  });

  it("sends no more than the output window until more is granted", async () => {
    const expected = Array.from({ length: 100_000 }, (_, i) => `${i + 1}\n`).join("");
    const h = run({ argv: ["seq", "1", "100000"] }, { window: 1000 });
    await waitFor(() => h.stdout().length === 1000, { message: "the first window to be used" });
    // The pipe fills and seq blocks: nothing beyond the window leaves, however long we look.
    await waitFor(() => h.gate.pendingBytes > 0 && pidAlive(h.pid()), {
      message: "seq to block on its full pipe",
    });
    await new Promise((r) => setTimeout(r, 150)); // a quiet period, to show that nothing more arrives
    expect(h.stdout().length).toBe(1000);
    expect(pidAlive(h.pid())).toBe(true);

    h.gate.grant(5000);
    await waitFor(() => h.stdout().length === 6000, { message: "the second window to be used" });
    h.gate.grant(expected.length);
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(h.stdout().toString()).toBe(expected);
  });

  it("kills a setsid double-forked escapee when the task ends, found by its marker", async () => {
    const h = run({ script: "(setsid sh -c 'sleep 100; :' >/dev/null 2>&1 & echo $!); echo done" });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    const escapee = Number(h.stdout().toString().split("\n")[0]);
    expect(escapee).toBeGreaterThan(1);
    await waitFor(() => !pidAlive(escapee), { message: "the escapee to be gone" });
  });
});
