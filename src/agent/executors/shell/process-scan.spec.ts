// Finding a task's processes without cgroups, against real processes: the marker in the environment
// finds one that left the session and its parent (setsid, double fork).
import { spawn } from "node:child_process";
import { describe, expect, it } from "vitest";
import { pidAlive } from "../../testing/wait.js";
import { waitFor } from "../../../common/wait-for.js";
import { TASK_MARKER, environHas, parseStat, taskProcesses } from "./process-scan.js";

describe("process scan", () => {
  it("parses /proc/PID/stat with spaces and parentheses in the command name", () => {
    const line = `42 (a (b) c) S 1 42 42 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 3 0 100 1000 250 18446744073709551615`;
    expect(parseStat(42, line)).toEqual({
      pid: 42,
      ppid: 1,
      pgrp: 42,
      session: 42,
      threads: 3,
      rssBytes: 250 * 4096,
    });
    expect(parseStat(43, line.replace(") S ", ") Z "))).toBeUndefined();
  });

  it("finds KEY=VALUE only as a whole entry of the environment block", () => {
    const env = Buffer.from(`A=1\0${TASK_MARKER}=t-1\0XSWITCHBOARD_TASK_ID=t-2\0`);
    expect(environHas(env, TASK_MARKER, "t-1")).toBe(true);
    expect(environHas(env, TASK_MARKER, "t-2")).toBe(false);
    expect(environHas(env, TASK_MARKER, "t")).toBe(false);
    expect(environHas(Buffer.from(`${TASK_MARKER}=t-3`), TASK_MARKER, "t-3")).toBe(true);
  });

  it("finds a double-forked setsid process by its marker after its parents are gone", async () => {
    const taskId = `scan-${process.pid}-${Date.now()}`;
    const child = spawn(
      "sh",
      ["-c", `(setsid sh -c 'sleep 60; : ${taskId}' >/dev/null 2>&1 & echo $!); exit 0`],
      {
        env: { ...process.env, [TASK_MARKER]: taskId },
        stdio: ["ignore", "pipe", "inherit"],
        detached: true,
      },
    );
    let out = "";
    child.stdout.on("data", (b: Buffer) => (out += b.toString()));
    await new Promise((r) => child.on("close", r));
    const escapee = Number(out.trim());
    expect(pidAlive(escapee)).toBe(true);
    // Found once it has left the session of the task's main process (setsid done).
    const found = await waitFor(
      () => {
        const procs = taskProcesses(taskId, child.pid!);
        return procs.some((p) => p.pid === escapee && p.session === escapee) ? procs : undefined;
      },
      { message: "the escapee to be found in a session of its own" },
    );
    expect(found.map((p) => p.pid)).toContain(escapee);
    await waitFor(
      () => {
        const left = taskProcesses(taskId, child.pid!);
        for (const p of left) process.kill(p.pid, "SIGKILL");
        return left.length === 0;
      },
      { message: "every process of the task to be gone" },
    );
    expect(pidAlive(escapee)).toBe(false);
  });
});
