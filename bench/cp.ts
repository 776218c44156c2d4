// The file-transfer benchmarks: 1 GiB uploaded with `switchboard cp FILE agent:ID:/path` (CLI -> hub ->
// agent -> disk) and downloaded with `switchboard cp agent:ID:/path FILE`, each against the same file sent
// over one bare grpc-js stream between two processes (bench/grpc-file-client.ts and grpc-file-server.ts),
// alternating ours, peer, peer, ours in one run. Also the peak RSS of hub, agent and CLI.
import { createHash } from "node:crypto";
import { once } from "node:events";
import { createReadStream, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { open } from "node:fs/promises";
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
  spawnNode,
  type Child,
} from "./harness.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

type Direction = "upload" | "download";
type Side = "ours" | "peer";

/** VmHWM, the kernel's own peak of VmRSS over the process's life, in bytes; NaN once it has exited. */
function procPeakRssBytes(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m?.[1] === undefined ? NaN : Number(m[1]) * 1024;
  } catch {
    return NaN;
  }
}

async function sha256File(file: string): Promise<string> {
  const h = createHash("sha256");
  for await (const b of createReadStream(file, { highWaterMark: MiB })) h.update(b as Buffer);
  return h.digest("hex");
}

/** `bytes` of content that is not one repeated byte: a random MiB, each copy with its index in front. */
async function writeSource(file: string, bytes: number): Promise<void> {
  const block = Buffer.alloc(MiB);
  for (let i = 0; i < block.length; i++) block[i] = (i * 131 + (i >> 9)) & 0xff;
  const fh = await open(file, "w");
  try {
    for (let off = 0; off < bytes; off += MiB) {
      block.writeUInt32BE(off / MiB, 0);
      await fh.write(block, 0, Math.min(MiB, bytes - off));
    }
  } finally {
    await fh.close();
  }
}

interface Transfer {
  bytes: number;
  ms: number;
  /** The transferring process's VmHWM, last reading before it exited. */
  peakRssBytes: number;
  /** Its own CPU over its run, in % of one core. */
  cpuPctOfCore: number;
}

/** Runs one transfer process to its exit (bounded by `limitMs`), timed from spawn to exit. */
async function timeTransfer(start: () => Child, limitMs: number): Promise<Omit<Transfer, "bytes">> {
  const t0 = performance.now();
  const child = start();
  const exited = once(child.proc, "exit") as Promise<[number | null, NodeJS.Signals | null]>;
  let peak = 0;
  let cpuMs = 0;
  const poll = (): void => {
    const p = procPeakRssBytes(child.pid);
    if (p > peak) peak = p;
    const c = procCpuMs(child.pid);
    if (Number.isFinite(c)) cpuMs = c;
  };
  poll();
  const timer = setInterval(poll, 50);
  let cutShort = false;
  const limit = setTimeout(() => {
    cutShort = true;
    void child.stop(1000);
  }, limitMs);
  try {
    const [code] = await exited;
    const ms = performance.now() - t0;
    if (cutShort) throw new Error(`${child.name} did not finish within ${limitMs} ms`);
    if (code !== 0) throw new Error(`${child.name} exited with code ${String(code)}:\n${child.output()}`);
    return { ms, peakRssBytes: peak, cpuPctOfCore: round((cpuMs * 100) / ms) };
  } finally {
    clearInterval(timer);
    clearTimeout(limit);
    await child.stop(1000);
  }
}

interface Run {
  side: Side;
  warmup: boolean;
  t: Transfer;
  intact: boolean;
  cpuPctOfCore: Record<string, number>;
}

interface Setup {
  o: RunOptions;
  c: Cluster;
  server: Child;
  serverAddress: string;
  /** The agent's [files] root; the download source lives in it, uploads land in it. */
  root: string;
  /** Where downloads land. */
  local: string;
  sources: Map<number, { file: string; sha256: string }>;
}

async function oneRun(
  s: Setup,
  direction: Direction,
  side: Side,
  bytes: number,
  index: number,
  limitMs: number,
): Promise<Run> {
  const src = s.sources.get(bytes)!;
  const dest =
    direction === "upload"
      ? path.join(s.root, `up-${side}-${index}.bin`)
      : path.join(s.local, `down-${side}-${index}.bin`);
  const start =
    side === "ours"
      ? (): Child =>
          spawnNode("switchboard cp", CLI, {
            args: [
              "--hub",
              s.c.address,
              "--token",
              s.c.adminToken,
              "cp",
              "--no-progress",
              ...(direction === "upload"
                ? [src.file, `agent:${AGENT_ID}:${dest}`]
                : [`agent:${AGENT_ID}:${src.file}`, dest]),
            ],
            env: { SWITCHBOARD_LOG_LEVEL: "warn" },
            nodeFlags: profileFlags(s.o, `cp-${direction}-1gib`, `client-${index}`),
          })
      : (): Child =>
          spawnNode("grpc-file-client", path.join(DIST_BENCH, "grpc-file-client.js"), {
            args: [direction, s.serverAddress, src.file, dest],
          });
  const meter = new CpuMeter({ hub: s.c.hub.pid, agent: s.c.agent.pid, peerServer: s.server.pid });
  try {
    const t = await timeTransfer(start, limitMs);
    const cpuPctOfCore = { ...meter.stop(), [side === "ours" ? "cli" : "peerClient"]: t.cpuPctOfCore };
    const size = statSync(dest).size;
    const intact = size === bytes && (await sha256File(dest)) === src.sha256;
    log(
      `  ${direction} ${side === "ours" ? "switchboard cp" : "grpc-js stream"}${bytes < GiB ? " (warmup)" : ""}: ` +
        `${fmt(size / 1e6 / (t.ms / 1000))} MB/s (${size} bytes in ${fmt(t.ms)} ms${intact ? "" : ", NOT the source's bytes"}, ` +
        `peak RSS ${fmt(t.peakRssBytes / MiB)} MiB) cpu% ${JSON.stringify(cpuPctOfCore)}`,
    );
    return { side, warmup: false, t: { ...t, bytes: size }, intact, cpuPctOfCore };
  } finally {
    rmSync(dest, { force: true });
  }
}

function throughput(runs: readonly Run[], side: Side): number {
  const mine = runs.filter((r) => r.side === side && !r.warmup);
  const bytes = mine.reduce((n, r) => n + r.t.bytes, 0);
  const ms = mine.reduce((n, r) => n + r.t.ms, 0);
  return bytes / 1e6 / (ms / 1000);
}

/** CPU seconds each process spent per GiB moved, over the counted runs of a side. */
function cpuSecondsPerGiB(runs: readonly Run[], side: Side): Record<string, number> {
  const mine = runs.filter((r) => r.side === side && !r.warmup);
  const bytes = mine.reduce((n, r) => n + r.t.bytes, 0);
  const secs: Record<string, number> = {};
  for (const r of mine) {
    for (const [proc, pct] of Object.entries(r.cpuPctOfCore)) {
      secs[proc] = (secs[proc] ?? 0) + (pct * r.t.ms) / 100 / 1000;
    }
  }
  return Object.fromEntries(Object.entries(secs).map(([k, v]) => [k, round((v * GiB) / bytes, 2)]));
}

function cpBenchmark(direction: Direction): Benchmark {
  const name = `cp-${direction}-1gib`;
  return {
    name,
    description:
      `MB/s of a 1 GiB file ${direction === "upload" ? "uploaded with `switchboard cp FILE agent:ID:/path` (CLI -> hub -> agent -> disk)" : "downloaded with `switchboard cp agent:ID:/path FILE` (disk -> agent -> hub -> CLI)"}, ` +
      "SHA-256 checked at both ends, timed from spawn to exit; vs the same file sent over one bare grpc-js " +
      `${direction === "upload" ? "client" : "server"}-streaming call between two processes (256 KiB messages, read from and written to disk), ` +
      "alternating ours, peer, peer, ours after a 16 MiB warmup of each. Also the peak RSS of hub, agent and CLI.",
    async run(o) {
      const total = o.quick ? 64 * MiB : GiB;
      const warmupBytes = 16 * MiB;
      const limitMs = o.quick ? 60_000 : 180_000;
      const rssTargetMiB = 128;
      const dir = path.join(os.tmpdir(), `switchboard-bench-cp-${process.pid}`);
      const root = path.join(dir, "root");
      const local = path.join(dir, "local");
      mkdirSync(root, { recursive: true });
      mkdirSync(local, { recursive: true });
      const server = spawnNode("grpc-file-server", path.join(DIST_BENCH, "grpc-file-server.js"), {
        args: [],
      });
      const ready = server.waitForLine(/^READY (\d+)/, 10_000);
      try {
        const port = (await ready)[1]!;
        const sources = new Map<number, { file: string; sha256: string }>();
        for (const bytes of [warmupBytes, total]) {
          const file = path.join(root, `source-${bytes}.bin`);
          await writeSource(file, bytes);
          sources.set(bytes, { file, sha256: await sha256File(file) });
        }
        const config = path.join(dir, "agent.toml");
        writeFileSync(config, `[files]\nroots = [${JSON.stringify(root)}]\n`);
        return await withCluster(
          o,
          name,
          false,
          async (c) => {
            const s: Setup = { o, c, server, serverAddress: `127.0.0.1:${port}`, root, local, sources };
            const hubRss = new RssSampler(c.hub.pid, 100);
            const agentRss = new RssSampler(c.agent.pid, 100);
            const runs: Run[] = [];
            let hubPeak: number;
            let agentPeak: number;
            try {
              let index = 0;
              for (const side of ["ours", "peer"] as const) {
                const r = await oneRun(s, direction, side, warmupBytes, index++, limitMs);
                runs.push({ ...r, warmup: true });
              }
              for (const side of ["ours", "peer", "peer", "ours"] as const) {
                runs.push(await oneRun(s, direction, side, total, index++, limitMs));
              }
            } finally {
              hubRss.stop();
              agentRss.stop();
              hubPeak = Math.max(procPeakRssBytes(c.hub.pid), hubRss.peak());
              agentPeak = Math.max(procPeakRssBytes(c.agent.pid), agentRss.peak());
            }
            const ours = throughput(runs, "ours");
            const peer = throughput(runs, "peer");
            const cpuPerGiB = { ours: cpuSecondsPerGiB(runs, "ours"), peer: cpuSecondsPerGiB(runs, "peer") };
            log(`  CPU seconds per GiB: ${JSON.stringify(cpuPerGiB)}`);
            const peakOf = (side: Side): number =>
              Math.max(...runs.filter((r) => r.side === side).map((r) => r.t.peakRssBytes));
            const peaks = { hub: hubPeak / MiB, agent: agentPeak / MiB, cli: peakOf("ours") / MiB };
            const res: Measured = ratioResult(
              `${direction} throughput of a 1 GiB file`,
              "MB/s",
              true,
              ours,
              peer,
              `the same file over one bare @grpc/grpc-js ${direction === "upload" ? "client" : "server"}-streaming call between two processes`,
              { comparison: ">=", value: 0.7, on: "ours/peer" },
              ours / peer,
              {
                totalBytes: total,
                warmupBytes,
                runs: runs.map((r) => ({
                  side: r.side,
                  warmup: r.warmup,
                  bytes: r.t.bytes,
                  ms: round(r.t.ms),
                  MBps: round(r.t.bytes / 1e6 / (r.t.ms / 1000)),
                  intact: r.intact,
                  peakRssMiB: round(r.t.peakRssBytes / MiB),
                  cpuPctOfCore: r.cpuPctOfCore,
                })),
                peakRssMiB: { hub: round(peaks.hub), agent: round(peaks.agent), cli: round(peaks.cli) },
                peerClientPeakRssMiB: round(peakOf("peer") / MiB),
                rssBeforeTransfersMiB: {
                  hub: round((hubRss.samples[0]?.rss ?? NaN) / MiB),
                  agent: round((agentRss.samples[0]?.rss ?? NaN) / MiB),
                },
                cpuSecondsPerGiB: cpuPerGiB,
              },
            );
            res.extraChecks.push(...rssChecks(peaks, rssTargetMiB));
            res.extraChecks.push({
              name: "every run wrote exactly the source's bytes (size, sha256)",
              value: Math.min(...runs.map((r) => (r.intact ? r.t.bytes : 0))),
              unit: "bytes",
              comparison: ">=",
              target: warmupBytes,
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
}

export const CP_BENCHMARKS: readonly Benchmark[] = [cpBenchmark("upload"), cpBenchmark("download")];
