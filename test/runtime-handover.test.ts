// The CLI started by a Node older than 22 hands the command over to the checkout's own Node
// (src/cli/runtime.ts): the caller sees the exit code and the signals as if it had run the command
// itself. Each case runs handOver in a process of its own, towards a small script on this Node.
import { spawn } from "node:child_process";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { ROOT } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

const RUNTIME = pathToFileURL(join(ROOT, "dist/src/cli/runtime.js")).href;
const running = new Set<number>();

/** A process that hands over to `node -e script`, in a process group of its own (as a terminal's job). */
function handingOver(script: string): {
  pid: number;
  out: () => string;
  ended: Promise<[number | null, string | null]>;
} {
  const program = `import { handOver } from ${JSON.stringify(RUNTIME)};
await handOver(process.execPath, ["-e", ${JSON.stringify(script)}]);`;
  const child = spawn(process.execPath, ["--input-type=module", "-e", program], {
    detached: true,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const pid = child.pid!;
  running.add(pid);
  let out = "";
  child.stdout.on("data", (b: Buffer) => (out += b.toString()));
  const ended = new Promise<[number | null, string | null]>((resolve) =>
    child.on("close", (code, signal) => {
      running.delete(pid);
      resolve([code, signal]);
    }),
  );
  return { pid, out: () => out, ended };
}

afterEach(() => {
  for (const pid of running) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
});

describe("handing the CLI over to the checkout's Node", () => {
  it("ends with the command's exit code", async () => {
    const p = handingOver("process.stdout.write('ran on ' + process.version); process.exit(3)");
    expect(await p.ended).toEqual([3, null]);
    expect(p.out()).toBe(`ran on ${process.version}`);
  });

  it("dies of the signal the command died of", async () => {
    const p = handingOver("process.kill(process.pid, 'SIGKILL')");
    expect(await p.ended).toEqual([null, "SIGKILL"]);
  });

  it("passes SIGTERM sent to it on to the command", async () => {
    const p = handingOver(
      "process.on('SIGTERM', () => { process.stdout.write('term'); process.exit(0) }); console.log('ready'); setInterval(() => {}, 1000)",
    );
    await waitFor(() => p.out().includes("ready"), { message: "the command to start" });
    process.kill(p.pid, "SIGTERM");
    expect(await p.ended).toEqual([0, null]);
    expect(p.out()).toContain("term");
  });

  it("leaves Ctrl-C to the terminal, which sends it to the command as well", async () => {
    const p = handingOver(
      "let n = 0; process.on('SIGINT', () => n++);" +
        " process.on('SIGTERM', () => { process.stdout.write('interrupts ' + n); process.exit(0) });" +
        " console.log('ready'); setInterval(() => {}, 1000)",
    );
    await waitFor(() => p.out().includes("ready"), { message: "the command to start" });
    // To this process alone: not passed on (passed on, a Ctrl-C would reach the command twice).
    process.kill(p.pid, "SIGINT");
    process.kill(p.pid, "SIGTERM");
    expect(await p.ended).toEqual([0, null]);
    expect(p.out()).toContain("interrupts 0");
  });

  it("lets a Ctrl-C to the process group end the command, and ends as it did", async () => {
    const p = handingOver(
      "process.on('SIGINT', () => process.exit(130)); console.log('ready'); setInterval(() => {}, 1000)",
    );
    await waitFor(() => p.out().includes("ready"), { message: "the command to start" });
    process.kill(-p.pid, "SIGINT");
    expect(await p.ended).toEqual([130, null]);
  });
});
