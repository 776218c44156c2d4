// Interactive runs against real processes: a terminal under a small output window loses nothing,
// input windows are granted and re-granted, a streamed stdin ends with eof, and what the agent cannot
// honour is refused.
import { describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import { silentLogger } from "../../../common/logger.js";
import { Finished, ShellSpec, TaskState } from "../../../gen/switchboard/v1/task.js";
import { OutputGate } from "../../output-gate.js";
import { pidAlive } from "../../testing/wait.js";
import type { Execution } from "../executor.js";
import { waitFor } from "../../../common/wait-for.js";
import { INPUT_WINDOW_BYTES } from "./interactive-run.js";
import { admitInteractive, startInteractive } from "./interactive.js";

interface Harness {
  execution: Execution;
  pid(): number;
  gate: OutputGate;
  output(): string;
  grants: number[];
  done: Promise<Finished>;
}

function run(spec: Partial<ShellSpec>, window = Infinity): Harness {
  const out: Buffer[] = [];
  const grants: number[] = [];
  let pid = 0;
  const room = { hasRoom: () => true, onceRoom: (cb: () => void) => queueMicrotask(cb) };
  const gate = new OutputGate(window, room, (_stream, data) => out.push(Buffer.from(data)));
  const execution = startInteractive(
    ShellSpec.fromPartial(spec),
    {
      taskId: "task-1",
      deadlineMs: 0,
      output: gate,
      started: (p) => (pid = p),
      grantInput: (n) => grants.push(n),
      logger: silentLogger(),
    },
    { agentId: "spec-agent", pty: true, killGraceMs: 1000, maxChunkBytes: 1024 * 1024 },
  );
  return {
    execution,
    pid: () => pid,
    gate,
    output: () => Buffer.concat(out).toString("utf8"),
    grants,
    done: execution.done.then(async (f) => {
      await gate.whenFlushed();
      return f;
    }),
  };
}

describe("admitInteractive", () => {
  it("refuses a terminal when sessions are off, naming the setting", () => {
    const refusal = admitInteractive(ShellSpec.fromPartial({ argv: ["bash"], tty: true }), {
      agentId: "a1",
      pty: false,
    });
    expect(refusal).toEqual({
      code: Code.PERMISSION_DENIED,
      message: "interactive sessions are off on agent a1: set [shell] pty = true in its config",
    });
    // A streamed stdin is no terminal: it needs no sessions.
    expect(
      admitInteractive(ShellSpec.fromPartial({ argv: ["cat"], stdinStream: true }), { agentId: "a1" }),
    ).toBe(undefined);
  });

  it("refuses a size without a terminal, and a size no terminal has", () => {
    const opts = { agentId: "a1", pty: true };
    expect(
      admitInteractive(ShellSpec.fromPartial({ argv: ["cat"], stdinStream: true, cols: 80 }), opts)?.code,
    ).toBe(Code.INVALID_ARGUMENT);
    expect(
      admitInteractive(ShellSpec.fromPartial({ argv: ["bash"], tty: true, cols: 70_000 }), opts)?.code,
    ).toBe(Code.INVALID_ARGUMENT);
  });
});

describe("terminal runs", () => {
  it("loses nothing when the output window holds the terminal back until after the program exited", async () => {
    const h = run({ argv: ["seq", "1", "3000"], tty: true }, 100);
    // The program's output fits the kernel's terminal buffer: it exits while the window is closed.
    await waitFor(() => h.pid() > 0 && !pidAlive(h.pid()), { message: "the program to exit" });
    // node-pty reports the exit once it has closed the terminal (after up to 200 ms), dropping what
    // nobody read by then: wait for the run to have seen that report.
    let reported = false;
    void h.execution.done.then(() => (reported = true));
    await waitFor(() => reported, { message: "node-pty to report the exit" });
    h.gate.grant(Number.MAX_SAFE_INTEGER);
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    const lines = h.output().split("\r\n").filter(Boolean);
    expect(lines.length).toBe(3000);
    expect(lines.at(-1)).toBe("3000");
  });

  it("holds a program back while the output window is used up, and goes on as it grows", async () => {
    const h = run({ argv: ["seq", "1", "50000"], tty: true }, 4096);
    const feeder = setInterval(() => h.gate.grant(32 * 1024), 10);
    try {
      expect((await h.done).state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    } finally {
      clearInterval(feeder);
    }
    const lines = h.output().split("\r\n").filter(Boolean);
    expect(lines.length).toBe(50000);
    expect(lines.at(-1)).toBe("50000");
  });

  it("grants an input window at start and again as the terminal takes input", async () => {
    // Raw mode first: a terminal's line editor keeps at most 4095 bytes of a line and drops the rest.
    const h = run({
      argv: ["sh", "-c", "stty raw -echo; echo ready; head -c 40000 >/dev/null; echo got-all"],
      tty: true,
    });
    await waitFor(() => h.output().includes("ready"), { message: "the program to be ready" });
    expect(h.grants[0]).toBe(INPUT_WINDOW_BYTES);
    h.execution.input!({ data: Buffer.alloc(40000, 0x61), eof: false });
    const f = await h.done;
    expect(f.exitCode).toBe(0);
    expect(h.output()).toContain("got-all");
    expect(h.grants.slice(1).reduce((a, b) => a + b, 0)).toBe(40000);
  });

  it("refuses a user, limits or secrets it cannot apply without the shell policy's plan", async () => {
    const f = await run({ argv: ["bash"], tty: true, user: "nobody" }).done;
    expect(f.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(f.error?.code).toBe(Code.FAILED_PRECONDITION);
    expect(f.error?.message).toContain("cannot apply a user or group to interactive tasks");
  });

  it("says when the program does not exist", async () => {
    const f = await run({ argv: ["no-such-program-here"], tty: true }).done;
    expect(f.error?.message).toBe(
      `executable "no-such-program-here" was not found on agent spec-agent's PATH`,
    );
  });
});

describe("streamed stdin runs", () => {
  it("writes input as it comes and closes stdin at eof", async () => {
    const h = run({ argv: ["cat"], stdin: Buffer.from("first\n"), stdinStream: true });
    await waitFor(() => h.grants.length > 0, { message: "the first input window" });
    h.execution.input!({ data: Buffer.from("second\n"), eof: false });
    h.execution.input!({ data: Buffer.from("third\n"), eof: true });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    expect(h.output()).toBe("first\nsecond\nthird\n");
  });

  it("stops on a cancel with SIGTERM", async () => {
    const h = run({ argv: ["sleep", "100"], stdinStream: true });
    await waitFor(() => h.grants.length > 0, { message: "the first input window" });
    h.execution.stop({ cause: "cancelled", reason: "test" });
    const f = await h.done;
    expect(f.state).toBe(TaskState.TASK_STATE_CANCELLED);
    expect(f.signal).toBe("SIGTERM");
  });
});
