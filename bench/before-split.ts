// The SQLite hub of this checkout against the same hub as it was before its core was split along
// its seams and its store made asynchronous for PostgreSQL (BEFORE_SPLIT), in one run: the split
// must not have cost the embedded default anything. The old commit is checked out in a temporary
// git worktree beside this one and built with this checkout's dependencies.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import {
  alternate,
  profileFlags,
  p50Check,
  ratioResult,
  rttSchedule,
  throughputSchedule,
  type Benchmark,
  type Measured,
} from "./benchmarks.js";
import { startCluster, type Cluster } from "./cluster.js";
import { log, ROOT, round } from "./harness.js";
import { echoViaSession } from "./ours.js";

/** The last commit before the hub core split (the merge's first parent). */
export const BEFORE_SPLIT = "02edf81";

/** Checks BEFORE_SPLIT out into a temporary worktree and builds it; returns its CLI and a cleanup. */
function buildBeforeSplit(): { cli: string; remove: () => void } {
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-before-split-"));
  rmSync(dir, { recursive: true });
  const git = (...args: string[]): void => void execFileSync("git", args, { cwd: ROOT, stdio: "pipe" });
  git("worktree", "add", "--detach", dir, BEFORE_SPLIT);
  const remove = (): void => {
    try {
      git("worktree", "remove", "--force", dir);
    } catch {
      rmSync(dir, { recursive: true, force: true });
    }
  };
  try {
    symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"));
    log(`building ${BEFORE_SPLIT} in ${dir}`);
    execFileSync(
      process.execPath,
      [path.join(ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"],
      {
        cwd: dir,
        stdio: "pipe",
      },
    );
    const cli = path.join(dir, "dist/src/cli/main.js");
    if (!existsSync(cli)) throw new Error(`the build of ${BEFORE_SPLIT} has no ${cli}`);
    return { cli, remove };
  } catch (err) {
    remove();
    throw err;
  }
}

const PAYLOAD_BYTES = 64;

const sqliteVsBeforeSplit: Benchmark = {
  name: "echo-sqlite-vs-before-split",
  description:
    `Echo tasks per second (64-byte payload, 64 in flight, SDK Session stream) and the p50 round trip (1 in ` +
    `flight) through this checkout's hub on its SQLite file vs the hub of ${BEFORE_SPLIT}, the commit before ` +
    "its core was split and its store made asynchronous; alternating windows. Targets: tasks/s >= 0.95x, " +
    "p50 <= 1.05x.",
  async run(o): Promise<Measured> {
    const before = buildBeforeSplit();
    const clusters: Cluster[] = [];
    try {
      const now = await startCluster({
        poolSize: 64,
        shell: false,
        hubNodeFlags: profileFlags(o, this.name, "hub"),
      });
      clusters.push(now);
      const old = await startCluster({
        poolSize: 64,
        shell: false,
        cli: before.cli,
        hubNodeFlags: profileFlags(o, this.name, "hub-before-split"),
      });
      clusters.push(old);
      const payload = randomBytes(PAYLOAD_BYTES);
      const ours = { name: "this checkout", op: () => echoViaSession(now.client, payload) };
      const peer = { name: BEFORE_SPLIT, op: () => echoViaSession(old.client, payload) };
      const [a, b] = await alternate(
        { ...ours, pids: { hub: now.hub.pid, agent: now.agent.pid } },
        { ...peer, pids: { hub: old.hub.pid, agent: old.agent.pid } },
        // Four rounds: the side that runs first pays for the machine's warm-up; the order alternates.
        { ...throughputSchedule(o), rounds: 4 },
      );
      const [ra, rb] = await alternate(
        { ...ours, pids: { hub: now.hub.pid } },
        { ...peer, pids: { hub: old.hub.pid } },
        rttSchedule(o),
      );
      const p50 = { ours: ra.latency?.p50Us ?? NaN, peer: rb.latency?.p50Us ?? NaN };
      log(`  p50 ${round(p50.ours)} µs vs ${BEFORE_SPLIT} ${round(p50.peer)} µs`);
      const res = ratioResult(
        "echo tasks/s, the hub on its SQLite file",
        "ops/s",
        true,
        a.opsPerSec,
        b.opsPerSec,
        `the same hub at ${BEFORE_SPLIT} (before the split)`,
        { comparison: ">=", value: 0.95, on: "ours/peer" },
        a.opsPerSec / b.opsPerSec,
        {
          payloadBytes: PAYLOAD_BYTES,
          ours: a,
          peer: b,
          p50: { ...p50, ratio: round(p50.ours / p50.peer, 3) },
        },
      );
      res.extraChecks.push(p50Check(`p50 round trip, this checkout / ${BEFORE_SPLIT}`, p50, 1.05));
      return res;
    } finally {
      for (const c of clusters) await c.stop();
      before.remove();
    }
  },
};

export const BEFORE_SPLIT_BENCHMARKS: readonly Benchmark[] = [sqliteVsBeforeSplit];
