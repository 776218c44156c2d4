// Durability: a process that writes through the store is killed with SIGKILL, and everything
// the store had promised must be in the file afterwards: every task whose insertTask() promise
// resolved, the output of a task whose flush() resolved, and a recent tail of a task whose output
// was left to the store's timers.
//
// The child is testing/crash-child.ts, run from source by vite-node (the TypeScript runner that
// vitest itself is built on), so the test needs no build step and runs the very code under test.
import { spawn, type ChildProcess } from "node:child_process";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Database from "better-sqlite3";
import { afterEach, beforeEach, expect, it } from "vitest";
import { openSqliteStore } from "./store.js";
import { splitCap } from "../output-buffer.js";
import type { StoredOutput } from "../interfaces.js";
import { tempDir, type TempDir } from "../testing/fixtures.js";
import { WaitAbandoned, waitFor } from "../../../common/wait-for.js";

const CAP = 4096;
const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const viteNode = join(dirname(require.resolve("vite-node/package.json")), "vite-node.mjs");

let dir: TempDir;
let child: ChildProcess | undefined;

beforeEach(() => {
  dir = tempDir();
});

afterEach(() => {
  if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  child = undefined;
  dir.remove();
});

/** The whole output of a task, as the cap must keep it, compared with what was stored. */
function expectCapped(out: StoredOutput, whole: Buffer): void {
  const { headCap, tailCap } = splitCap(CAP);
  const kept = Buffer.concat(out.chunks.map((c) => c.data));
  expect(
    kept.equals(Buffer.concat([whole.subarray(0, headCap), whole.subarray(whole.length - tailCap)])),
  ).toBe(true);
  expect(out.chunks.reduce((n, c) => n + c.gapBefore, 0)).toBe(whole.length - CAP);
  expect(out.stdout.totalBytes + out.stderr.totalBytes).toBe(whole.length);
}

it("keeps every acknowledged write when the process is killed", async () => {
  const path = dir.file("hub.db");
  const proc = spawn(
    process.execPath,
    [viteNode, join(here, "..", "testing", "crash-child.ts"), path, String(CAP)],
    {
      cwd: join(here, "..", "..", "..", ".."),
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  child = proc;
  let stderr = "";
  proc.stderr.on("data", (d: Buffer) => (stderr += d.toString()));

  const committed: string[] = [];
  const reports = new Map<string, { id: string; bytes: Buffer }>();
  let pid = 0;
  let pending = "";
  proc.stdout.on("data", (d: Buffer) => {
    pending += d.toString();
    const lines = pending.split("\n");
    pending = lines.pop() ?? "";
    for (const line of lines) {
      const [what, ...rest] = line.split(" ");
      if (what === "ready") pid = Number(rest[0]);
      else if (what === "committed") committed.push(...rest);
      else if (what === "flushed" || what === "streaming") {
        reports.set(what, { id: rest[0]!, bytes: Buffer.from(rest[1]!, "base64") });
      }
    }
  });
  const alive = () => {
    if (proc.exitCode !== null) throw new WaitAbandoned(`the child exited with ${proc.exitCode}: ${stderr}`);
    return true;
  };

  await waitFor(() => alive() && committed.length >= 2000 && reports.size === 2, {
    timeout: 20_000,
    message: "the child's writes",
  });

  // The streaming task's latest tail reaches the file without any flush() call.
  const streaming = reports.get("streaming")!;
  const wantTail = streaming.bytes.subarray(streaming.bytes.length - splitCap(CAP).tailCap);
  const reader = new Database(path, { readonly: true });
  const storedTail = () =>
    Buffer.concat(
      reader
        .prepare<[string], { data: Buffer }>(
          "SELECT data FROM task_output WHERE task_id = ? AND part = 'tail' ORDER BY seq",
        )
        .all(streaming.id)
        .map((r) => r.data),
    );
  await waitFor(() => alive() && storedTail().equals(wantTail), {
    message: "the streaming task's tail in the file",
  });
  reader.close();

  expect(pid).toBe(proc.pid); // the runner executes the script in this very process
  const exited = new Promise((resolve) => proc.once("exit", resolve));
  proc.kill("SIGKILL");
  await exited;
  // Every id the child printed was committed before it was printed, even those read after the kill.
  const acknowledged = committed;

  const store = openSqliteStore(path);
  try {
    const found = await Promise.all(acknowledged.map((id) => store.getTask(id)));
    const missing = acknowledged.filter((_id, i) => !found[i]);
    expect(missing).toEqual([]);
    expect(await store.countTasks()).toBeGreaterThanOrEqual(acknowledged.length);
    expectCapped(await store.getOutput(reports.get("flushed")!.id), reports.get("flushed")!.bytes);
    expectCapped(await store.getOutput(streaming.id), streaming.bytes);
  } finally {
    await store.close();
  }
});
