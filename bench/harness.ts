// Shared pieces of the benchmark suite: child processes that are always stopped, closed-loop load
// with a warmup and a fixed window, percentiles, CPU and RSS sampling of other processes, and the
// result files.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root (this file runs as dist/bench/harness.js). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const DIST_BENCH = path.join(ROOT, "dist", "bench");
export const CLI = path.join(ROOT, "dist", "src", "cli", "main.js");
export const RESULTS_DIR = path.join(ROOT, "bench", "results");

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function log(message: string): void {
  process.stderr.write(`[bench] ${message}\n`);
}

// ---------------------------------------------------------------------------------------------
// Child processes

export interface Child {
  readonly name: string;
  readonly proc: ChildProcess;
  readonly pid: number;
  /** Everything the child wrote on stderr and stdout, last 64 KiB, for failure reports. */
  output(): string;
  /** Resolves when a line matching `re` appears on stdout; rejects if the child exits first. */
  waitForLine(re: RegExp, timeoutMs: number): Promise<RegExpMatchArray>;
  exited(): boolean;
  /** SIGTERM, then SIGKILL after `graceMs`. Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
}

const live = new Set<Child>();

export interface SpawnOptions {
  args: readonly string[];
  env?: Record<string, string>;
  /** Extra flags for node itself (e.g. --cpu-prof). */
  nodeFlags?: readonly string[];
  cwd?: string;
}

/** Starts `node <script> ...args` as a child that is stopped when the suite ends, whatever happens. */
export function spawnNode(name: string, script: string, opts: SpawnOptions): Child {
  const proc = spawn(process.execPath, [...(opts.nodeFlags ?? []), script, ...opts.args], {
    cwd: opts.cwd ?? ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  if (proc.pid === undefined) throw new Error(`${name}: spawn failed`);
  return track(name, proc, proc.pid);
}

export function spawnBinary(name: string, file: string, args: readonly string[]): Child {
  const proc = spawn(file, args, { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  if (proc.pid === undefined) throw new Error(`${name}: spawn of ${file} failed`);
  return track(name, proc, proc.pid);
}

function track(name: string, proc: ChildProcess, pid: number): Child {
  let out = "";
  let stdoutBuf = "";
  let done = false;
  const lineWaiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];
  const exitWaiters: ((err: Error) => void)[] = [];
  const keep = (s: string): void => {
    out = (out + s).slice(-65536);
  };
  proc.stdout?.setEncoding("utf8");
  proc.stderr?.setEncoding("utf8");
  proc.stdout?.on("data", (s: string) => {
    keep(s);
    stdoutBuf += s;
    let nl: number;
    while ((nl = stdoutBuf.indexOf("\n")) >= 0) {
      const line = stdoutBuf.slice(0, nl);
      stdoutBuf = stdoutBuf.slice(nl + 1);
      for (let i = lineWaiters.length - 1; i >= 0; i--) {
        const w = lineWaiters[i];
        const m = w === undefined ? null : line.match(w.re);
        if (w !== undefined && m !== null) {
          lineWaiters.splice(i, 1);
          w.resolve(m);
        }
      }
    }
  });
  proc.stderr?.on("data", keep);
  const exitPromise = new Promise<void>((resolve) => {
    proc.once("exit", (code, signal) => {
      done = true;
      live.delete(child);
      const err = new Error(`${name} exited (code ${String(code)}, signal ${String(signal)})`);
      for (const w of exitWaiters.splice(0)) w(err);
      resolve();
    });
  });
  proc.once("error", (err) => keep(`spawn error: ${err.message}\n`));

  const child: Child = {
    name,
    proc,
    pid,
    output: () => out,
    exited: () => done,
    waitForLine(re, timeoutMs) {
      return new Promise<RegExpMatchArray>((resolve, reject) => {
        if (done) {
          reject(new Error(`${name} has exited:\n${out}`));
          return;
        }
        const timer = setTimeout(() => {
          reject(new Error(`${name}: no line matching ${String(re)} within ${timeoutMs} ms:\n${out}`));
        }, timeoutMs);
        lineWaiters.push({
          re,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m);
          },
        });
        exitWaiters.push((err) => {
          clearTimeout(timer);
          reject(new Error(`${err.message}:\n${out}`));
        });
      });
    },
    async stop(graceMs = 5000) {
      if (done) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => {
        if (!done) proc.kill("SIGKILL");
      }, graceMs);
      await exitPromise;
      clearTimeout(timer);
    },
  };
  live.add(child);
  return child;
}

/** Stops every child still running; used on the way out, success or not. */
export async function stopAll(): Promise<void> {
  await Promise.all([...live].map((c) => c.stop(3000)));
}

function killAllNow(): void {
  for (const c of live) {
    try {
      c.proc.kill("SIGKILL");
    } catch {
      // already gone
    }
  }
}

let exitHooksInstalled = false;
/** Makes sure no child outlives this process: on signals, on an uncaught error, and at exit. */
export function installExitHooks(): void {
  if (exitHooksInstalled) return;
  exitHooksInstalled = true;
  process.on("exit", killAllNow);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      log(`${sig}: stopping children`);
      void stopAll().finally(() => process.exit(130));
    });
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const addr = srv.address();
  const port = typeof addr === "object" && addr !== null ? addr.port : 0;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  if (port === 0) throw new Error("could not find a free port");
  return port;
}

// ---------------------------------------------------------------------------------------------
// Load

export interface LoopOptions {
  concurrency: number;
  warmupMs: number;
  windowMs: number;
  /** Upper bound on operations started (warmup included), whatever the time. */
  maxOps: number;
  /** Record the latency of each operation completed inside the window. */
  latencies?: boolean;
  /** Called once when the warmup ends and the window begins. */
  onWindowStart?: () => void;
}

export interface LoopResult {
  /** Operations completed inside the window. */
  ops: number;
  /** Length of the window actually measured (ends early when maxOps is reached). */
  windowMs: number;
  opsPerSec: number;
  /** Microseconds, in completion order; empty unless asked for. */
  latenciesUs: Float64Array;
  errors: number;
  firstError?: string;
  /** CPU time of this process during the window (user+system ms). */
  selfCpuMs: number;
}

/**
 * Closed loop: `concurrency` workers, each starting the next operation when its previous one
 * completes. The first `warmupMs` are not counted; then completions are counted for `windowMs`.
 */
export async function closedLoop(op: () => Promise<void>, o: LoopOptions): Promise<LoopResult> {
  const start = performance.now();
  const windowStart = start + o.warmupMs;
  const windowEnd = windowStart + o.windowMs;
  let started = 0;
  let ops = 0;
  let errors = 0;
  let firstError: string | undefined;
  let lastCompletion = windowStart;
  const lat = o.latencies ? new Float64Array(Math.min(o.maxOps, 2_000_000)) : new Float64Array(0);
  let nLat = 0;
  let cpuAtWindow: NodeJS.CpuUsage | undefined;

  const worker = async (): Promise<void> => {
    while (started < o.maxOps) {
      const t0 = performance.now();
      if (t0 >= windowEnd) return;
      started++;
      try {
        await op();
      } catch (err) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
        if (errors > 100) throw new Error(`too many errors; first: ${firstError}`);
        continue;
      }
      const t1 = performance.now();
      if (t1 >= windowStart && t1 < windowEnd) {
        cpuAtWindow ??= process.cpuUsage();
        ops++;
        lastCompletion = t1;
        if (o.latencies && nLat < lat.length) lat[nLat++] = (t1 - t0) * 1000;
      }
    }
  };
  const cpuTimer = setTimeout(
    () => {
      cpuAtWindow ??= process.cpuUsage();
      o.onWindowStart?.();
    },
    Math.max(0, o.warmupMs),
  );
  await Promise.all(Array.from({ length: o.concurrency }, worker));
  clearTimeout(cpuTimer);
  const cpu = process.cpuUsage(cpuAtWindow);
  // Ended by maxOps before the window closed: the window is as long as completions went on.
  const measured = started >= o.maxOps ? Math.max(1, lastCompletion - windowStart) : o.windowMs;
  return {
    ops,
    windowMs: measured,
    opsPerSec: (ops * 1000) / measured,
    latenciesUs: lat.subarray(0, nLat),
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    selfCpuMs: (cpu.user + cpu.system) / 1000,
  };
}

export interface LatencySummary {
  count: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  minUs: number;
  maxUs: number;
  meanUs: number;
}

export function summarize(latUs: Float64Array): LatencySummary {
  const s = Float64Array.from(latUs).sort();
  const n = s.length;
  const at = (q: number): number => (n === 0 ? NaN : (s[Math.min(n - 1, Math.floor(q * n))] ?? NaN));
  let sum = 0;
  for (const v of s) sum += v;
  return {
    count: n,
    p50Us: round(at(0.5)),
    p90Us: round(at(0.9)),
    p99Us: round(at(0.99)),
    p999Us: round(at(0.999)),
    minUs: round(n === 0 ? NaN : (s[0] ?? NaN)),
    maxUs: round(n === 0 ? NaN : (s[n - 1] ?? NaN)),
    meanUs: round(n === 0 ? NaN : sum / n),
  };
}

export function round(v: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(v * f) / f;
}

// ---------------------------------------------------------------------------------------------
// Other processes: CPU time and resident memory, from /proc

const CLK_TCK = 100;

/** user+system CPU time of a process in ms, or NaN if it cannot be read. */
export function procCpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may hold spaces.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(rest[11]);
    const stime = Number(rest[12]);
    return ((utime + stime) * 1000) / CLK_TCK;
  } catch {
    return NaN;
  }
}

/** VmRSS of a process in bytes, or NaN. */
export function procRssBytes(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m?.[1] === undefined ? NaN : Number(m[1]) * 1024;
  } catch {
    return NaN;
  }
}

/** CPU used by each named process between `start()` and `stop()`, as % of one core. */
export class CpuMeter {
  private readonly t0 = performance.now();
  private readonly before: Map<string, number>;
  constructor(private readonly pids: Record<string, number>) {
    this.before = new Map(Object.entries(pids).map(([k, pid]) => [k, procCpuMs(pid)]));
  }
  stop(): Record<string, number> {
    const wall = performance.now() - this.t0;
    const out: Record<string, number> = {};
    for (const [k, pid] of Object.entries(this.pids)) {
      out[k] = round(((procCpuMs(pid) - (this.before.get(k) ?? NaN)) * 100) / wall);
    }
    return out;
  }
}

/** Samples a process's VmRSS on a timer. */
export class RssSampler {
  private readonly timer: NodeJS.Timeout;
  readonly samples: { tMs: number; rss: number }[] = [];
  private readonly t0 = performance.now();
  constructor(
    private readonly pid: number,
    intervalMs = 100,
  ) {
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }
  private sample(): void {
    const rss = procRssBytes(this.pid);
    if (!Number.isNaN(rss)) this.samples.push({ tMs: Math.round(performance.now() - this.t0), rss });
  }
  stop(): void {
    this.sample();
    clearInterval(this.timer);
  }
  peak(): number {
    let p = 0;
    for (const s of this.samples) p = Math.max(p, s.rss);
    return p;
  }
}

// ---------------------------------------------------------------------------------------------
// Results

export type Comparison = ">=" | "<=";

export interface BenchResult {
  name: string;
  description: string;
  /** What `ours` and `peer` are, and their unit. */
  metric: string;
  unit: string;
  higherIsBetter: boolean;
  ours: number;
  peer: number;
  peerName: string;
  /** ours / peer. */
  ratio: number;
  target: { comparison: Comparison; value: number; on: string };
  pass: boolean;
  /** Further targets checked by the same benchmark (e.g. memory growth); all must pass. */
  extraChecks: {
    name: string;
    value: number;
    unit: string;
    comparison: Comparison;
    target: number;
    pass: boolean;
  }[];
  details: Record<string, unknown>;
  env: EnvInfo;
  startedAt: string;
  durationMs: number;
  error?: string;
}

export interface EnvInfo {
  nproc: number;
  availableParallelism: number;
  node: string;
  platform: string;
  arch: string;
  cpuModel: string;
  loadavg: number[];
  totalMemBytes: number;
  natsServer?: string;
}

export function envInfo(): EnvInfo {
  return {
    nproc: os.cpus().length,
    availableParallelism: os.availableParallelism(),
    node: process.version,
    platform: `${os.type()} ${os.release()}`,
    arch: process.arch,
    cpuModel: os.cpus()[0]?.model ?? "unknown",
    loadavg: os.loadavg().map((v) => round(v, 2)),
    totalMemBytes: os.totalmem(),
  };
}

export function check(value: number, comparison: Comparison, target: number): boolean {
  if (!Number.isFinite(value)) return false;
  return comparison === ">=" ? value >= target : value <= target;
}

/** Writes bench/results/<name>.json and merges the result into bench/results/latest.json. */
export function writeResult(r: BenchResult): void {
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(path.join(RESULTS_DIR, `${r.name}.json`), JSON.stringify(r, null, 2) + "\n");
  const latestPath = path.join(RESULTS_DIR, "latest.json");
  let results: Record<string, BenchResult> = {};
  if (existsSync(latestPath)) {
    try {
      const prev = JSON.parse(readFileSync(latestPath, "utf8")) as { results?: Record<string, BenchResult> };
      results = prev.results ?? {};
    } catch {
      results = {};
    }
  }
  results[r.name] = r;
  const all = Object.values(results);
  const latest = {
    updatedAt: new Date().toISOString(),
    env: r.env,
    allPass: all.every((x) => x.pass),
    summary: all.map((x) => ({
      name: x.name,
      ours: x.ours,
      peer: x.peer,
      ratio: x.ratio,
      target: `${x.target.on} ${x.target.comparison} ${x.target.value}`,
      pass: x.pass,
      startedAt: x.startedAt,
    })),
    results,
  };
  writeFileSync(latestPath, JSON.stringify(latest, null, 2) + "\n");
}

export function fmt(v: number, digits = 0): string {
  if (!Number.isFinite(v)) return String(v);
  return v.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
