// The benchmarks against peers (and agents-10k, with absolute targets). Each starts our side (hub and agent processes, SDK client here) and its
// peer in the same run, measures both the same way, and returns ours, peer, their ratio and the
// verdict against the target.
import { randomBytes } from "node:crypto";
import path from "node:path";
import { startCluster, type Cluster } from "./cluster.js";
import {
  check,
  closedLoop,
  CpuMeter,
  fmt,
  log,
  procCpuMs,
  round,
  RssSampler,
  sleep,
  summarize,
  type BenchResult,
  type LatencySummary,
  type LoopResult,
} from "./harness.js";
import { echoViaSession, echoViaUnary, runShellDiscarding } from "./ours.js";
import { natsServerVersion, startGrpcEchoPeer, startGrpcStreamPeer, startNatsPeer } from "./peers.js";

export interface RunOptions {
  /** Short windows and a smaller transfer: a smoke test of the harness, not a measurement. */
  quick: boolean;
  /** When set, hub and agent run with --cpu-prof and write their profiles under this directory. */
  profileDir?: string;
}

export type Measured = Omit<BenchResult, "name" | "description" | "env" | "startedAt" | "durationMs">;

export interface Benchmark {
  name: string;
  description: string;
  run(o: RunOptions): Promise<Measured>;
}

const PAYLOAD_BYTES = 64;
const IN_FLIGHT = 64;
const GiB = 1024 * 1024 * 1024;
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Alternating closed-loop measurement

export interface Side {
  name: string;
  op: () => Promise<void>;
  /** Processes whose CPU is reported per window (and waited on to go quiet before one). */
  pids: Record<string, number>;
}

export interface Schedule {
  rounds: number;
  warmupMs: number;
  rewarmMs: number;
  windowMs: number;
  concurrency: number;
  maxOpsPerWindow: number;
  latencies: boolean;
}

export interface SideResult {
  opsPerSec: number;
  ops: number;
  windowMs: number;
  errors: number;
  firstError?: string;
  perWindow: { opsPerSec: number; ops: number; windowMs: number; cpuPctOfCore: Record<string, number> }[];
  latency?: LatencySummary;
}

/** Waits (at most `maxMs`) until the given processes use under 5% of a core over 200 ms. */
async function settle(pids: Record<string, number>, maxMs = 3000): Promise<void> {
  const deadline = performance.now() + maxMs;
  while (performance.now() < deadline) {
    const before = Object.values(pids).map(procCpuMs);
    await sleep(200);
    const after = Object.values(pids).map(procCpuMs);
    const busiest = Math.max(0, ...after.map((v, i) => (v - (before[i] ?? 0)) / 2));
    if (!(busiest >= 5)) return;
  }
}

/**
 * Measures A and B in `rounds` windows each, in the order A B B A A B ..., so that drift of a
 * shared machine falls on both alike. Every window is preceded by a warmup that is not counted.
 */
export async function alternate(a: Side, b: Side, s: Schedule): Promise<[SideResult, SideResult]> {
  const [ra, rb] = await alternateSides([a, b], s);
  return [ra!, rb!];
}

/** `alternate` for any number of sides: each round runs them all, forwards then backwards. */
export async function alternateSides(sides: readonly Side[], s: Schedule): Promise<SideResult[]> {
  const acc = new Map<Side, { loops: LoopResult[]; cpu: Record<string, number>[] }>(
    sides.map((side) => [side, { loops: [], cpu: [] }]),
  );
  const allPids = Object.assign({}, ...sides.map((side) => side.pids)) as Record<string, number>;
  const warmed = new Set<Side>();
  for (let r = 0; r < s.rounds; r++) {
    const order = r % 2 === 0 ? sides : [...sides].reverse();
    for (const side of order) {
      await settle(allPids);
      let meter: CpuMeter | undefined;
      const loop = await closedLoop(side.op, {
        concurrency: s.concurrency,
        warmupMs: warmed.has(side) ? s.rewarmMs : s.warmupMs,
        windowMs: s.windowMs,
        maxOps: s.maxOpsPerWindow,
        latencies: s.latencies,
        onWindowStart: () => {
          meter = new CpuMeter({ ...side.pids, bench: process.pid });
        },
      });
      warmed.add(side);
      const cpu = meter?.stop() ?? {};
      const slot = acc.get(side);
      slot?.loops.push(loop);
      slot?.cpu.push(cpu);
      log(
        `  ${side.name} round ${r + 1}: ${fmt(loop.opsPerSec)} ops/s (${loop.ops} ops in ${fmt(loop.windowMs)} ms` +
          `${loop.errors > 0 ? `, ${loop.errors} errors: ${loop.firstError ?? ""}` : ""}) cpu% ${JSON.stringify(cpu)}`,
      );
    }
  }
  const fold = (side: Side): SideResult => {
    const slot = acc.get(side) ?? { loops: [], cpu: [] };
    const ops = slot.loops.reduce((n, l) => n + l.ops, 0);
    const windowMs = slot.loops.reduce((n, l) => n + l.windowMs, 0);
    const errors = slot.loops.reduce((n, l) => n + l.errors, 0);
    const firstError = slot.loops.find((l) => l.firstError !== undefined)?.firstError;
    const res: SideResult = {
      opsPerSec: windowMs > 0 ? (ops * 1000) / windowMs : NaN,
      ops,
      windowMs: round(windowMs),
      errors,
      ...(firstError === undefined ? {} : { firstError }),
      perWindow: slot.loops.map((l, i) => ({
        opsPerSec: round(l.opsPerSec),
        ops: l.ops,
        windowMs: round(l.windowMs),
        cpuPctOfCore: slot.cpu[i] ?? {},
      })),
    };
    if (s.latencies) {
      const all = new Float64Array(slot.loops.reduce((n, l) => n + l.latenciesUs.length, 0));
      let off = 0;
      for (const l of slot.loops) {
        all.set(l.latenciesUs, off);
        off += l.latenciesUs.length;
      }
      res.latency = summarize(all);
    }
    return res;
  };
  return sides.map(fold);
}

export function profileFlags(o: RunOptions, bench: string, proc: string): string[] {
  if (o.profileDir === undefined) return [];
  return [
    "--cpu-prof",
    `--cpu-prof-dir=${path.join(o.profileDir, bench)}`,
    `--cpu-prof-name=${proc}.cpuprofile`,
  ];
}

/** A hub and one agent (pool size 64) for the length of fn; agentArgs such as --config FILE. */
export async function withCluster<T>(
  o: RunOptions,
  bench: string,
  shell: boolean,
  fn: (c: Cluster) => Promise<T>,
  agentArgs: readonly string[] = [],
  transport: "grpc" | "http" = "grpc",
  hubArgs: readonly string[] = [],
): Promise<T> {
  const cluster = await startCluster({
    poolSize: 64,
    shell,
    agentArgs,
    transport,
    hubArgs,
    hubNodeFlags: profileFlags(o, bench, "hub"),
    agentNodeFlags: profileFlags(o, bench, "agent"),
  });
  try {
    return await fn(cluster);
  } finally {
    await cluster.stop();
  }
}

/** One task in flight, latencies kept: for a p50 beside a throughput figure. */
export function rttSchedule(o: RunOptions): Schedule {
  return {
    rounds: 2,
    warmupMs: o.quick ? 300 : 1000,
    rewarmMs: o.quick ? 200 : 500,
    windowMs: o.quick ? 1000 : 3000,
    concurrency: 1,
    maxOpsPerWindow: 2e5,
    latencies: true,
  };
}

export function throughputSchedule(o: RunOptions): Schedule {
  return o.quick
    ? {
        rounds: 2,
        warmupMs: 500,
        rewarmMs: 250,
        windowMs: 1000,
        concurrency: IN_FLIGHT,
        maxOpsPerWindow: 2e6,
        latencies: false,
      }
    : {
        rounds: 2,
        warmupMs: 2000,
        rewarmMs: 750,
        windowMs: 4000,
        concurrency: IN_FLIGHT,
        maxOpsPerWindow: 2e6,
        latencies: false,
      };
}

/** One `<= target` check per process on its peak RSS in MiB. */
/** The p50 round trip of two sides as a check: ours/peer at most `target`. */
export function p50Check(
  name: string,
  p50: { ours: number; peer: number },
  target: number,
): BenchResult["extraChecks"][number] {
  const value = round(p50.ours / p50.peer, 3);
  return { name, value, unit: "x", comparison: "<=", target, pass: p50.ours / p50.peer <= target };
}

export function rssChecks(peaksMiB: Record<string, number>, targetMiB: number): BenchResult["extraChecks"] {
  return Object.entries(peaksMiB).map(([proc, v]) => ({
    name: `${proc} peak RSS`,
    value: round(v),
    unit: "MiB",
    comparison: "<=" as const,
    target: targetMiB,
    pass: check(v, "<=", targetMiB),
  }));
}

export function ratioResult(
  metric: string,
  unit: string,
  higherIsBetter: boolean,
  ours: number,
  peer: number,
  peerName: string,
  target: BenchResult["target"],
  ratio: number,
  details: Record<string, unknown>,
): Measured {
  return {
    metric,
    unit,
    higherIsBetter,
    ours: round(ours),
    peer: round(peer),
    peerName,
    ratio: round(ratio, 3),
    target,
    pass: check(ratio, target.comparison, target.value),
    extraChecks: [],
    details,
  };
}

// ---------------------------------------------------------------------------------------------
// 1. echo over the Session stream vs NATS request/reply

/** Echo tasks/s through our side against a peer's requests/s, alternating windows. */
async function echoThroughputVsPeer<P extends { stop(): Promise<void> }>(
  o: RunOptions,
  name: string,
  startPeer: () => Promise<P>,
  ours: { name: string; op: (c: Cluster, payload: Buffer) => Promise<void> },
  peer: {
    name: string;
    op: (p: P, payload: Buffer) => Promise<unknown>;
    pids: (p: P) => Record<string, number>;
  },
  peerName: () => string,
  targetRatio: number,
): Promise<Measured> {
  const payload = randomBytes(PAYLOAD_BYTES);
  const p = await startPeer();
  try {
    return await withCluster(o, name, false, async (c) => {
      const [a, b] = await alternate(
        { name: ours.name, op: () => ours.op(c, payload), pids: { hub: c.hub.pid, agent: c.agent.pid } },
        { name: peer.name, op: async () => void (await peer.op(p, payload)), pids: peer.pids(p) },
        throughputSchedule(o),
      );
      return ratioResult(
        "echo tasks/s",
        "ops/s",
        true,
        a.opsPerSec,
        b.opsPerSec,
        peerName(),
        { comparison: ">=", value: targetRatio, on: "ours/peer" },
        a.opsPerSec / b.opsPerSec,
        {
          payloadBytes: PAYLOAD_BYTES,
          inFlight: IN_FLIGHT,
          schedule: throughputSchedule(o),
          ours: a,
          peer: b,
        },
      );
    });
  } finally {
    await p.stop();
  }
}

const echoSessionVsNats: Benchmark = {
  name: "echo-session-vs-nats",
  description:
    "Echo tasks per second, 64-byte payload, 64 in flight, through the SDK's shared Session stream, " +
    "hub and agent processes; vs NATS request/reply through nats-server to a queue group of two responders.",
  run(o) {
    return echoThroughputVsPeer(
      o,
      this.name,
      () => startNatsPeer(2),
      { name: "switchboard session", op: (c, payload) => echoViaSession(c.client, payload) },
      {
        name: "nats",
        op: (nats, payload) => nats.request(payload),
        pids: (nats) => ({ natsServer: nats.server.pid, natsResponders: nats.responders.pid }),
      },
      () => `nats-server ${natsServerVersion()} + nats.js request/reply, 2 queue responders`,
      1.0,
    );
  },
};

// ---------------------------------------------------------------------------------------------
// 2. unary Execute vs a bare grpc-js unary echo

const executeUnaryVsGrpcEcho: Benchmark = {
  name: "execute-unary-vs-grpc-echo",
  description:
    "Echo tasks per second, 64-byte payload, 64 in flight, one unary Execute RPC each (hub and agent " +
    "processes); vs a bare grpc-js unary echo server in a child process (raw Buffer serializers).",
  run(o) {
    return echoThroughputVsPeer(
      o,
      this.name,
      () => startGrpcEchoPeer(),
      { name: "switchboard unary Execute", op: (c, payload) => echoViaUnary(c.client, payload) },
      {
        name: "grpc-js echo",
        op: (g, payload) => g.call(payload),
        pids: (g) => ({ grpcServer: g.server.pid }),
      },
      () => "bare @grpc/grpc-js unary echo server (child process)",
      0.8,
    );
  },
};

// ---------------------------------------------------------------------------------------------
// 3. round trip, one in flight

const rtt1InFlight: Benchmark = {
  name: "rtt-1-in-flight",
  description:
    "Round-trip latency with one request in flight: an echo task over the SDK's Session stream vs a " +
    "NATS request/reply. Lower is better; the verdict is on the p50 ratio ours/NATS.",
  async run(o) {
    const payload = randomBytes(PAYLOAD_BYTES);
    const schedule: Schedule = o.quick
      ? {
          rounds: 2,
          warmupMs: 300,
          rewarmMs: 200,
          windowMs: 1000,
          concurrency: 1,
          maxOpsPerWindow: 1e5,
          latencies: true,
        }
      : {
          rounds: 2,
          warmupMs: 1500,
          rewarmMs: 500,
          windowMs: 3000,
          concurrency: 1,
          maxOpsPerWindow: 2e5,
          latencies: true,
        };
    const nats = await startNatsPeer(2);
    try {
      return await withCluster(o, this.name, false, async (c) => {
        const [ours, peer] = await alternate(
          {
            name: "switchboard session",
            op: () => echoViaSession(c.client, payload),
            pids: { hub: c.hub.pid, agent: c.agent.pid },
          },
          {
            name: "nats",
            op: () => nats.request(payload),
            pids: { natsServer: nats.server.pid, natsResponders: nats.responders.pid },
          },
          schedule,
        );
        const op50 = ours.latency?.p50Us ?? NaN;
        const pp50 = peer.latency?.p50Us ?? NaN;
        const op99 = ours.latency?.p99Us ?? NaN;
        const pp99 = peer.latency?.p99Us ?? NaN;
        const res = ratioResult(
          "p50 round trip",
          "µs",
          false,
          op50,
          pp50,
          `nats-server ${natsServerVersion()} + nats.js request/reply`,
          { comparison: "<=", value: 1.5, on: "p50 ours/peer (lower is better)" },
          op50 / pp50,
          {
            payloadBytes: PAYLOAD_BYTES,
            schedule,
            p50: { ours: op50, peer: pp50, ratio: round(op50 / pp50, 3) },
            p99: { ours: op99, peer: pp99, ratio: round(op99 / pp99, 3) },
            ours,
            peer,
          },
        );
        return res;
      });
    } finally {
      await nats.stop();
    }
  },
};

// ---------------------------------------------------------------------------------------------
// 4. 1 GiB of shell stdout through agent and hub

const shellStdout1GiB: Benchmark = {
  name: "shell-stdout-1gib",
  description:
    "MB/s of 1 GiB of shell stdout (head -c 1073741824 /dev/zero) through agent and hub to this " +
    "client via client.run(), bytes discarded; vs a bare grpc-js server-streaming child process " +
    "sending 1 GiB in 64 KiB messages. Also the hub's peak RSS growth during the transfer.",
  async run(o) {
    const total = o.quick ? 128 * MiB : GiB;
    const timeLimitMs = o.quick ? 60_000 : 150_000;
    const rssTargetMiB = 64;

    // Peer first: a short, self-contained transfer.
    const streamPeer = await startGrpcStreamPeer();
    let peerRes: { bytes: number; messages: number; ms: number; cpuPctOfCore: Record<string, number> };
    try {
      await streamPeer.pull(16 * MiB, 64 * 1024, 30_000); // warm both ends
      const meter = new CpuMeter({ streamServer: streamPeer.server.pid, bench: process.pid });
      const t0 = performance.now();
      const r = await streamPeer.pull(total, 64 * 1024, timeLimitMs);
      const ms = performance.now() - t0;
      peerRes = { ...r, ms: round(ms), cpuPctOfCore: meter.stop() };
      if (r.bytes !== total) throw new Error(`grpc stream peer delivered ${r.bytes} of ${total} bytes`);
    } finally {
      await streamPeer.stop();
    }
    const peerMBps = peerRes.bytes / 1e6 / (peerRes.ms / 1000);
    log(
      `  grpc-js stream: ${fmt(peerMBps)} MB/s (${fmt(peerRes.ms)} ms) cpu% ${JSON.stringify(peerRes.cpuPctOfCore)}`,
    );

    return withCluster(o, this.name, true, async (c) => {
      const hubRss = new RssSampler(c.hub.pid, 100);
      const agentRss = new RssSampler(c.agent.pid, 100);
      await sleep(1000); // the "before" samples
      const baselineSamples = hubRss.samples.slice();
      const baseline = baselineSamples.reduce((n, s) => n + s.rss, 0) / Math.max(1, baselineSamples.length);
      const agentBaseline =
        agentRss.samples.reduce((n, s) => n + s.rss, 0) / Math.max(1, agentRss.samples.length);
      const meter = new CpuMeter({ hub: c.hub.pid, agent: c.agent.pid, bench: process.pid });
      const t0 = performance.now();
      let outcome;
      try {
        outcome = await runShellDiscarding(c.client, `head -c ${total} /dev/zero`, t0 + timeLimitMs);
      } finally {
        hubRss.stop();
        agentRss.stop();
      }
      const ms = performance.now() - t0;
      const cpu = meter.stop();
      const oursMBps = outcome.stdoutBytes / 1e6 / (ms / 1000);
      const growthMiB = (hubRss.peak() - baseline) / MiB;
      log(
        `  switchboard run(): ${fmt(oursMBps)} MB/s (${outcome.stdoutBytes} bytes in ${fmt(ms)} ms, ` +
          `${outcome.outputEvents} output events) hub RSS +${fmt(growthMiB, 1)} MiB cpu% ${JSON.stringify(cpu)}`,
      );
      const complete = outcome.stdoutBytes === total && !outcome.cutShort;
      const res = ratioResult(
        "stdout throughput",
        "MB/s",
        true,
        oursMBps,
        peerMBps,
        "bare @grpc/grpc-js server-streaming child process, 64 KiB messages",
        { comparison: ">=", value: 0.7, on: "ours/peer" },
        oursMBps / peerMBps,
        {
          totalBytes: total,
          ours: {
            bytes: outcome.stdoutBytes,
            ms: round(ms),
            outputEvents: outcome.outputEvents,
            meanEventBytes: round(outcome.stdoutBytes / Math.max(1, outcome.outputEvents)),
            finishedState: outcome.finishedState,
            exitCode: outcome.exitCode,
            cutShortAtTimeLimit: outcome.cutShort,
            timeLimitMs,
            cpuPctOfCore: cpu,
          },
          peer: { ...peerRes, MBps: round(peerMBps) },
          hubRss: {
            baselineMiB: round(baseline / MiB),
            peakMiB: round(hubRss.peak() / MiB),
            peakGrowthMiB: round(growthMiB),
            samples: hubRss.samples.length,
            intervalMs: 100,
          },
          agentRss: {
            baselineMiB: round(agentBaseline / MiB),
            peakMiB: round(agentRss.peak() / MiB),
            peakGrowthMiB: round((agentRss.peak() - agentBaseline) / MiB),
          },
        },
      );
      const rssOk = check(growthMiB, "<=", rssTargetMiB);
      res.extraChecks.push({
        name: "hub peak RSS growth during the transfer",
        value: round(growthMiB),
        unit: "MiB",
        comparison: "<=",
        target: rssTargetMiB,
        pass: rssOk,
      });
      res.extraChecks.push({
        name: "all bytes delivered and the task finished",
        value: outcome.stdoutBytes,
        unit: "bytes",
        comparison: ">=",
        target: total,
        pass: complete,
      });
      res.pass = res.pass && rssOk && complete;
      return res;
    });
  },
};

// ---------------------------------------------------------------------------------------------
// echo over the HTTP long-poll transport beside the gRPC stream

const echoHttpVsGrpcTransport: Benchmark = {
  name: "echo-http-vs-grpc-transport",
  description:
    "Echo tasks per second, 64-byte payload, 64 in flight through the SDK's Session stream, to an agent on " +
    "the HTTP/1.1 long-poll transport (2 requests in flight to the hub) vs the same to an agent on the gRPC " +
    "stream; two hub+agent clusters, measured in alternating windows.",
  run(o) {
    const payload = randomBytes(PAYLOAD_BYTES);
    return withCluster(o, `${this.name}-grpc`, false, (grpc) =>
      withCluster(
        o,
        `${this.name}-http`,
        false,
        async (http) => {
          const [a, b] = await alternate(
            {
              name: "http transport",
              op: () => echoViaSession(http.client, payload),
              pids: { hub: http.hub.pid, agent: http.agent.pid },
            },
            {
              name: "grpc transport",
              op: () => echoViaSession(grpc.client, payload),
              pids: { hub: grpc.hub.pid, agent: grpc.agent.pid },
            },
            throughputSchedule(o),
          );
          return ratioResult(
            "echo tasks/s over the HTTP transport",
            "ops/s",
            true,
            a.opsPerSec,
            b.opsPerSec,
            "the same echo tasks to an agent on the gRPC stream transport",
            // The issue asks for the figure beside the gRPC one; 0.25 is our own floor for it.
            { comparison: ">=", value: 0.25, on: "ours/peer" },
            a.opsPerSec / b.opsPerSec,
            {
              payloadBytes: PAYLOAD_BYTES,
              inFlight: IN_FLIGHT,
              schedule: throughputSchedule(o),
              ours: a,
              peer: b,
            },
          );
        },
        [],
        "http",
      ),
    );
  },
};

export const BENCHMARKS: readonly Benchmark[] = [
  echoSessionVsNats,
  echoHttpVsGrpcTransport,
  executeUnaryVsGrpcEcho,
  rtt1InFlight,
  shellStdout1GiB,
];
