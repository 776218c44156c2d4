// The http task benchmark: a 1 GiB HTTP body fetched by the agent from a local server and streamed
// through agent and hub into a file by `switchboard http -o`, against curl fetching the same body from the
// same server into a file, alternating in one run. Also the peak RSS of hub, agent and CLI.
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import {
  createReadStream,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import os from "node:os";
import path from "node:path";
import {
  profileFlags,
  ratioResult,
  withCluster,
  type Benchmark,
  type Measured,
  type RunOptions,
  rssChecks,
} from "./benchmarks.js";
import { AGENT_ID, type Cluster } from "./cluster.js";
import {
  CLI,
  CpuMeter,
  DIST_BENCH,
  fmt,
  log,
  procCpuMs,
  round,
  RssSampler,
  spawnBinary,
  spawnNode,
  type Child,
} from "./harness.js";
import { BODY_PATH, bodyChunks } from "./http-body-server.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** VmHWM, the kernel's own peak of VmRSS over the process's life, in bytes; NaN once it has exited. */
function procPeakRssBytes(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m?.[1] === undefined ? NaN : Number(m[1]) * 1024;
  } catch {
    return NaN;
  }
}

/** Bytes in `dir` under names starting with `base` (the CLI writes `<file>.partial-<pid>` until done). */
function bytesWritten(dir: string, base: string): number {
  let n = 0;
  for (const name of readdirSync(dir)) {
    if (!name.startsWith(base)) continue;
    try {
      n += statSync(path.join(dir, name)).size;
    } catch {
      // renamed or removed between the listing and the stat
    }
  }
  return n;
}

/** Removes `dir`'s files whose names start with `base`: the output and any partial one. */
function removeOutputs(dir: string, base: string): void {
  for (const name of readdirSync(dir)) {
    if (name.startsWith(base)) rmSync(path.join(dir, name), { force: true });
  }
}

async function sha256File(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const b of createReadStream(file, { highWaterMark: MiB })) h.update(b as Buffer);
  return h.digest("hex");
}

const bodySha256 = new Map<number, string>();

/** The sha256 of the body the server sends for `?bytes=total` (computed once per size). */
function sha256Body(total: number): string {
  let hex = bodySha256.get(total);
  if (hex === undefined) {
    const h = createHash("sha256");
    for (const chunk of bodyChunks(total)) h.update(chunk);
    hex = h.digest("hex");
    bodySha256.set(total, hex);
  }
  return hex;
}

interface Download {
  /** Size of the output file (or, cut short, of what had been written). */
  bytes: number;
  ms: number;
  exitCode: number | null;
  cutShort: boolean;
  /** The downloading process's VmHWM, last reading before it exited. */
  peakRssBytes: number;
  /** Its own CPU over its run, in % of one core. */
  cpuPctOfCore: number;
}

/**
 * Runs one download into `file` and times it from spawn to exit (so the CLI's start-up counts, as
 * curl's does). Stopped after `limitMs`; a non-zero exit before that is an error.
 */
async function download(start: () => Child, file: string, limitMs: number): Promise<Download> {
  const dir = path.dirname(file);
  const base = path.basename(file);
  const t0 = performance.now();
  const child = start();
  const exited = once(child.proc, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  let peak = 0;
  let cpuMs = 0;
  let written = 0;
  const poll = (): void => {
    const p = procPeakRssBytes(child.pid);
    if (p > peak) peak = p;
    const c = procCpuMs(child.pid);
    if (Number.isFinite(c)) cpuMs = c;
    written = Math.max(written, bytesWritten(dir, base));
  };
  poll();
  const timer = setInterval(poll, 50);
  let cutShort = false;
  const limit = setTimeout(() => {
    cutShort = true;
    poll();
    void child.stop(1000);
  }, limitMs);
  try {
    const [code] = await exited;
    const ms = performance.now() - t0;
    if (!cutShort && code !== 0) {
      throw new Error(`${child.name} exited with code ${String(code)}:\n${child.output()}`);
    }
    return {
      bytes: cutShort ? written : statSync(file).size,
      ms,
      exitCode: code,
      cutShort,
      peakRssBytes: peak,
      cpuPctOfCore: round((cpuMs * 100) / ms),
    };
  } finally {
    clearInterval(timer);
    clearTimeout(limit);
    await child.stop(1000);
  }
}

type Side = "ours" | "curl";

interface Run {
  side: Side;
  /** Not counted: a short transfer first, so that hub and agent are past their start-up and JIT. */
  warmup: boolean;
  d: Download;
  /** The file had exactly the bytes served (size and sha256). */
  intact: boolean;
  /** CPU of each process over the download, in % of one core. */
  cpuPctOfCore: Record<string, number>;
}

interface RunPlan {
  side: Side;
  bytes: number;
  warmup: boolean;
  /** Index in the schedule: names the output file and the CLI's CPU profile. */
  index: number;
}

/** One download by `switchboard http -o` or `curl -o` into a file in `dir`, checked, then removed. */
async function timeRun(
  o: RunOptions,
  c: Cluster,
  server: Child,
  bodyUrl: (bytes: number) => string,
  dir: string,
  plan: RunPlan,
  limitMs: number,
): Promise<Run> {
  const file = path.join(dir, `${plan.side}-${plan.index}.bin`);
  const url = bodyUrl(plan.bytes);
  const start =
    plan.side === "ours"
      ? (): Child =>
          spawnNode("switchboard http", CLI, {
            args: [
              "--hub",
              c.address,
              "--token",
              c.adminToken,
              "http",
              "--agent",
              AGENT_ID,
              "--no-progress",
              "--timeout",
              "10m",
              url,
              "-o",
              file,
            ],
            env: { SWITCHBOARD_LOG_LEVEL: "warn" },
            nodeFlags: profileFlags(o, BENCH_NAME, `client-${plan.index}`),
          })
      : (): Child => spawnBinary("curl", "curl", ["-s", "-S", "-f", "-o", file, url]);
  // Where the CPU goes: hub, agent, the body server, and the downloading process itself.
  const meter = new CpuMeter({ hub: c.hub.pid, agent: c.agent.pid, bodyServer: server.pid });
  try {
    const d = await download(start, file, limitMs);
    const cpuPctOfCore = { ...meter.stop(), [plan.side === "ours" ? "cli" : "curl"]: d.cpuPctOfCore };
    const intact =
      !d.cutShort && d.bytes === plan.bytes && (await sha256File(file)) === sha256Body(plan.bytes);
    log(
      `  ${plan.side === "ours" ? "switchboard http -o" : "curl -o"}${plan.warmup ? " (warmup)" : ""}: ` +
        `${fmt(d.bytes / 1e6 / (d.ms / 1000))} MB/s (${d.bytes} bytes in ${fmt(d.ms)} ms` +
        `${d.cutShort ? ", CUT SHORT at the time limit" : ""}${intact ? "" : ", NOT the bytes served"}, ` +
        `peak RSS ${fmt(d.peakRssBytes / MiB)} MiB) cpu% ${JSON.stringify(cpuPctOfCore)}`,
    );
    return { side: plan.side, warmup: plan.warmup, d, intact, cpuPctOfCore };
  } finally {
    removeOutputs(dir, path.basename(file));
  }
}

/** MB/s over all counted runs of a side: bytes over time, summed (as sql-pg-1gib-csv does). */
function throughput(runs: readonly Run[], side: Side): { bytes: number; ms: number; MBps: number } {
  const mine = runs.filter((r) => r.side === side && !r.warmup);
  const bytes = mine.reduce((n, r) => n + r.d.bytes, 0);
  const ms = mine.reduce((n, r) => n + r.d.ms, 0);
  return { bytes, ms, MBps: bytes / 1e6 / (ms / 1000) };
}

/**
 * CPU seconds each process spent per GiB moved, over the counted runs of a side: on a small machine
 * their sum, not any one process, can be what holds the transfer back.
 */
function cpuSecondsPerGiB(runs: readonly Run[], side: Side): Record<string, number> {
  const mine = runs.filter((r) => r.side === side && !r.warmup);
  const bytes = mine.reduce((n, r) => n + r.d.bytes, 0);
  const secs: Record<string, number> = {};
  for (const r of mine) {
    for (const [proc, pct] of Object.entries(r.cpuPctOfCore)) {
      secs[proc] = (secs[proc] ?? 0) + (pct * r.d.ms) / 100 / 1000;
    }
  }
  return Object.fromEntries(Object.entries(secs).map(([k, v]) => [k, round((v * GiB) / bytes, 2)]));
}

const BENCH_NAME = "http-body-1gib-vs-curl";

const httpBody1GiBVsCurl: Benchmark = {
  name: BENCH_NAME,
  description:
    "MB/s of a 1 GiB HTTP body (Content-Length set, from a node:http child process on loopback) fetched " +
    "by an http task on the agent and streamed through agent and hub to `switchboard http -o FILE`; vs " +
    "`curl -s -o FILE` from the same server, alternating ours, curl, curl, ours after a 16 MiB warmup of " +
    "each. Also the peak RSS of agent, hub and CLI.",
  async run(o) {
    const total = o.quick ? 64 * MiB : GiB;
    const warmupBytes = 16 * MiB;
    const timeLimitMs = o.quick ? 60_000 : 150_000;
    const rssTargetMiB = 128;
    const schedule: RunPlan[] = (
      [
        ["ours", warmupBytes],
        ["curl", warmupBytes],
        ["ours", total],
        ["curl", total],
        ["curl", total],
        ["ours", total],
      ] as const
    ).map(([side, bytes], index) => ({ side, bytes, warmup: bytes !== total, index }));
    const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-http-"));
    const server = spawnNode("http-body-server", path.join(DIST_BENCH, "http-body-server.js"), { args: [] });
    try {
      const port = (await server.waitForLine(/^READY (\d+)/, 10_000))[1];
      const bodyUrl = (bytes: number): string => `http://127.0.0.1:${port}${BODY_PATH}?bytes=${bytes}`;
      const config = path.join(dir, "agent.toml");
      // The agent's own request timeout (60 s by default) would end a slow transfer before our limit.
      writeFileSync(config, `[http]\nallow = ["http://127.0.0.1:${port}/"]\ntimeout_secs = 600\n`);
      return await withCluster(
        o,
        this.name,
        false,
        async (c) => {
          const hubRss = new RssSampler(c.hub.pid, 100);
          const agentRss = new RssSampler(c.agent.pid, 100);
          const runs: Run[] = [];
          let hubPeak: number;
          let agentPeak: number;
          try {
            for (const plan of schedule)
              runs.push(await timeRun(o, c, server, bodyUrl, dir, plan, timeLimitMs));
          } finally {
            hubRss.stop();
            agentRss.stop();
            // Lifetime peaks, read while both still run; the 100 ms samples can miss a short spike.
            hubPeak = Math.max(procPeakRssBytes(c.hub.pid), hubRss.peak());
            agentPeak = Math.max(procPeakRssBytes(c.agent.pid), agentRss.peak());
          }
          const ours = throughput(runs, "ours");
          const curl = throughput(runs, "curl");
          const cpuPerGiB = { ours: cpuSecondsPerGiB(runs, "ours"), curl: cpuSecondsPerGiB(runs, "curl") };
          log(`  CPU seconds per GiB: ${JSON.stringify(cpuPerGiB)}`);
          const peakOf = (side: Side): number =>
            Math.max(...runs.filter((r) => r.side === side).map((r) => r.d.peakRssBytes));
          const peaks = { hub: hubPeak / MiB, agent: agentPeak / MiB, cli: peakOf("ours") / MiB };
          const counted = runs.filter((r) => !r.warmup);
          const res: Measured = ratioResult(
            "HTTP body throughput to a file",
            "MB/s",
            true,
            ours.MBps,
            curl.MBps,
            `curl -s -o FILE (${curlVersion()}) from the same node:http server, same machine`,
            { comparison: ">=", value: 0.7, on: "ours/peer" },
            ours.MBps / curl.MBps,
            {
              totalBytes: total,
              warmupBytes,
              timeLimitMs,
              runs: runs.map((r) => ({
                side: r.side,
                warmup: r.warmup,
                bytes: r.d.bytes,
                ms: round(r.d.ms),
                MBps: round(r.d.bytes / 1e6 / (r.d.ms / 1000)),
                exitCode: r.d.exitCode,
                cutShortAtTimeLimit: r.d.cutShort,
                intact: r.intact,
                peakRssMiB: round(r.d.peakRssBytes / MiB),
                cpuPctOfCore: r.cpuPctOfCore,
              })),
              // VmHWM of each process (for the CLI, its last reading before it exited).
              peakRssMiB: { hub: round(peaks.hub), agent: round(peaks.agent), cli: round(peaks.cli) },
              cpuSecondsPerGiB: cpuPerGiB,
              rssBeforeTransfersMiB: {
                hub: round((hubRss.samples[0]?.rss ?? NaN) / MiB),
                agent: round((agentRss.samples[0]?.rss ?? NaN) / MiB),
              },
              // The highest VmRSS of the 100 ms samples taken during the transfers.
              sampledPeakRssMiB: { hub: round(hubRss.peak() / MiB), agent: round(agentRss.peak() / MiB) },
              curlPeakRssMiB: round(peakOf("curl") / MiB),
            },
          );
          res.extraChecks.push(...rssChecks(peaks, rssTargetMiB));
          res.extraChecks.push({
            name: "every run wrote exactly the body served (size, sha256)",
            value: Math.min(...counted.map((r) => (r.intact ? r.d.bytes : 0))),
            unit: "bytes",
            comparison: ">=",
            target: total,
            pass: runs.every((r) => r.intact),
          });
          res.pass = res.extraChecks.every((x) => x.pass) && res.pass;
          return res;
        },
        ["--config", config],
      );
    } finally {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

/** "curl 7.88.1" from the first line of `curl --version`. */
function curlVersion(): string {
  try {
    return execFileSync("curl", ["--version"], { encoding: "utf8" }).split(" ").slice(0, 2).join(" ");
  } catch {
    return "curl";
  }
}

export const HTTP_BENCHMARKS: readonly Benchmark[] = [httpBody1GiBVsCurl];
