// pty-keystroke-echo: one keystroke into a terminal on the agent and its echo back on the screen,
// client → hub → agent → terminal → cat → agent → hub → client, one at a time; beside it the same
// keystroke into a terminal opened here with node-pty, without the hub. The target is absolute: the
// round trip's p50 through the hub, on loopback.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { spawn as spawnPty } from "node-pty";
import { shell, type TaskInputWriter } from "../src/client/index.js";
import { withCluster, type Benchmark, type Measured, type RunOptions } from "./benchmarks.js";
import { AGENT_ID, type Cluster } from "./cluster.js";
import { check, CpuMeter, log, round, sleep, summarize, type LatencySummary } from "./harness.js";

const NAME = "pty-keystroke-echo";
const P50_TARGET_MS = 5;
/** The terminal's program: raw mode and no echo of its own, so each byte comes back once, from cat. */
const ECHO_PROGRAM = ["sh", "-c", "stty raw -echo; echo ready; exec cat"];
/** Between keystrokes: a fast typist's pace is tens of ms; this keeps the samples apart. */
const GAP_MS = 2;
const KEY_TIMEOUT_MS = 5000;

interface Plan {
  warmup: number;
  samples: number;
}

/** Something that takes a byte and shows its echo: the terminal through the hub, or one here. */
interface EchoTerminal {
  write(byte: Buffer): void;
  /** Calls back with everything the screen shows, in order. */
  onScreen(cb: (data: Buffer) => void): void;
  close(): Promise<void>;
}

/** Times `samples` keystrokes after `warmup`: from the write to the byte on the screen. */
async function keystrokes(t: EchoTerminal, plan: Plan): Promise<number[]> {
  let waiting: { byte: number; resolve: () => void } | undefined;
  t.onScreen((data) => {
    if (waiting && data.includes(waiting.byte)) {
      const w = waiting;
      waiting = undefined;
      w.resolve();
    }
  });
  const ms: number[] = [];
  for (let i = 0; i < plan.warmup + plan.samples; i++) {
    const byte = 0x61 + (i % 26); // a..z: consecutive keys differ, so a late echo is not taken for the next
    let timer: NodeJS.Timeout | undefined;
    const echoed = new Promise<void>((resolve, reject) => {
      waiting = { byte, resolve };
      timer = setTimeout(
        () => reject(new Error(`no echo of keystroke ${i} within ${KEY_TIMEOUT_MS} ms`)),
        KEY_TIMEOUT_MS,
      );
    });
    const t0 = performance.now();
    t.write(Buffer.from([byte]));
    try {
      await echoed;
    } finally {
      clearTimeout(timer);
    }
    if (i >= plan.warmup) ms.push(performance.now() - t0);
    await sleep(GAP_MS);
  }
  return ms;
}

/** A terminal task on the bench agent, driven through the SDK. */
async function hubTerminal(c: Cluster): Promise<EchoTerminal> {
  let input: TaskInputWriter | undefined;
  const listeners: ((d: Buffer) => void)[] = [];
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  let screen = "";
  const abort = new AbortController();
  const events = c.client.run({
    ...shell({ argv: ECHO_PROGRAM, tty: true, cols: 80, rows: 24 }),
    target: { agentId: AGENT_ID },
    signal: abort.signal,
  });
  const pump = (async () => {
    for await (const ev of events) {
      const e = ev.event;
      if (!input && ev.taskId) input = c.client.openInput(ev.taskId);
      if (e?.$case === "output") {
        const data = Buffer.from(e.value.data);
        if (!screen.includes("ready")) {
          screen += data.toString("latin1");
          if (screen.includes("ready")) ready();
          continue;
        }
        for (const l of listeners) l(data);
      } else if (e?.$case === "finished" && !screen.includes("ready")) {
        throw new Error(`the terminal task ended before it was ready: ${JSON.stringify(e.value)}`);
      }
    }
  })();
  pump.catch(() => undefined);
  await Promise.race([isReady, pump.then(() => Promise.reject(new Error("the terminal task ended")))]);
  return {
    write: (b) => void input!.write(b).catch(() => undefined),
    onScreen: (cb) => listeners.push(cb),
    close: async () => {
      abort.abort();
      input?.close();
      await pump.catch(() => undefined);
    },
  };
}

/** The same program in a terminal opened in this process: the floor without the hub and agent. */
async function localTerminal(): Promise<EchoTerminal> {
  const term = spawnPty(ECHO_PROGRAM[0]!, ECHO_PROGRAM.slice(1), {
    name: "xterm-256color",
    cols: 80,
    rows: 24,
    env: process.env,
    encoding: null,
  });
  const listeners: ((d: Buffer) => void)[] = [];
  let screen = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("the local terminal did not start")), KEY_TIMEOUT_MS);
    term.onData((d) => {
      const data = d as unknown as Buffer;
      if (!screen.includes("ready")) {
        screen += data.toString("latin1");
        if (screen.includes("ready")) {
          clearTimeout(timer);
          resolve();
        }
        return;
      }
      for (const l of listeners) l(data);
    });
  });
  const exited = new Promise<void>((r) => term.onExit(() => r()));
  return {
    write: (b) => term.write(b),
    onScreen: (cb) => listeners.push(cb),
    close: async () => {
      term.kill("SIGKILL");
      await Promise.race([exited, sleep(2000)]);
    },
  };
}

interface Distribution extends LatencySummary {
  p50Ms: number;
  p99Ms: number;
}

function distribution(ms: readonly number[]): Distribution {
  const s = summarize(Float64Array.from(ms, (v) => v * 1000));
  return { ...s, p50Ms: round(s.p50Us / 1000, 3), p99Ms: round(s.p99Us / 1000, 3) };
}

async function measure(open: () => Promise<EchoTerminal>, plan: Plan): Promise<number[]> {
  const t = await open();
  try {
    return await keystrokes(t, plan);
  } finally {
    await t.close();
  }
}

async function ptyKeystrokeEcho(o: RunOptions): Promise<Measured> {
  const plan: Plan = o.quick ? { warmup: 20, samples: 100 } : { warmup: 50, samples: 400 };
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-pty-"));
  const config = path.join(dir, "agent.toml");
  writeFileSync(config, "[shell]\npty = true\n");
  try {
    return await withCluster(
      o,
      NAME,
      true,
      async (c) => {
        // Peer, ours, ours, peer: drift of a shared machine falls on both alike.
        const peerMs: number[] = [];
        const oursMs: number[] = [];
        const half = { warmup: plan.warmup, samples: plan.samples / 2 };
        peerMs.push(...(await measure(localTerminal, half)));
        const cpu = new CpuMeter({ hub: c.hub.pid, agent: c.agent.pid, bench: process.pid });
        oursMs.push(...(await measure(() => hubTerminal(c), half)));
        oursMs.push(...(await measure(() => hubTerminal(c), half)));
        const cpuPctOfCore = cpu.stop();
        peerMs.push(...(await measure(localTerminal, half)));
        const ours = distribution(oursMs);
        const peer = distribution(peerMs);
        log(
          `${NAME}: ours p50 ${ours.p50Ms} ms p99 ${ours.p99Ms} ms; local node-pty p50 ${peer.p50Ms} ms p99 ${peer.p99Ms} ms`,
        );
        return {
          metric: "keystroke echo round trip p50: client → hub → agent → terminal → back",
          unit: "ms",
          higherIsBetter: false,
          ours: ours.p50Ms,
          peer: peer.p50Ms,
          peerName: `the same program (${ECHO_PROGRAM.join(" ")}) in a node-pty terminal in this process, no hub`,
          ratio: round(ours.p50Ms / peer.p50Ms, 3),
          target: { comparison: "<=", value: P50_TARGET_MS, on: "ours p50 ms (absolute)" },
          pass: check(ours.p50Ms, "<=", P50_TARGET_MS),
          extraChecks: [],
          details: {
            plan,
            gapMs: GAP_MS,
            program: ECHO_PROGRAM,
            order: "peer, ours, ours, peer (each half the samples, each after its own warmup)",
            percentiles: "nearest rank, sorted[floor(q * n)]",
            ours,
            peer,
            oursCpuPctOfCore: cpuPctOfCore,
          },
        };
      },
      ["--config", config],
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export const PTY_BENCHMARKS: readonly Benchmark[] = [
  {
    name: NAME,
    description: `PTY keystroke echo round trip through hub and agent, p50/p99 (target p50 <= ${P50_TARGET_MS} ms); peer: a local node-pty terminal`,
    run: ptyKeystrokeEcho,
  },
];
