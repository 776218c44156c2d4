// Soak: a hub and agents behind a TCP proxy that cuts their links every minute, under half the
// measured capacity, for half an hour. Every task must succeed with every output line once and in
// order, and the hub's and agents' memory must stay flat.
//
//   npm run soak                          # 30 minutes (build first)
//   node dist/bench/soak.js --minutes 5   # shorter
//
// Not part of CI. Prints the figures and writes bench/results/soak.json; exit 0 when every target
// was met, 1 when one was missed.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { SwitchboardClient, shell, TaskState } from "../src/client/index.js";
import { createAgentToken, waitForHubJson } from "./cluster.js";
import {
  CLI,
  envInfo,
  installExitHooks,
  log,
  procRssBytes,
  RESULTS_DIR,
  sleep,
  spawnNode,
  stopAll,
  type Child,
} from "./harness.js";
import { waitFor } from "../src/common/wait-for.js";
import { TcpProxy } from "./tcp-proxy.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "30" },
    agents: { type: "string", default: "2" },
    "pool-size": { type: "string", default: "4" },
    lines: { type: "string", default: "200" },
    "cut-every": { type: "string", default: "60" },
    "cut-for": { type: "string", default: "5" },
    "measure-secs": { type: "string", default: "60" },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (values.help) {
  process.stdout.write(
    "usage: node dist/bench/soak.js [--minutes 30] [--agents 2] [--pool-size 4] [--lines 200]\n" +
      "                               [--cut-every 60] [--cut-for 5] [--measure-secs 60]\n" +
      "Each task prints --lines numbered lines, one every 10 ms. First measures capacity (tasks/s with\n" +
      "every slot busy) for --measure-secs, then submits at half of it for --minutes while the proxy\n" +
      "between agents and hub goes down for --cut-for seconds every --cut-every seconds.\n",
  );
  process.exit(0);
}

const num = (name: string, v: string | undefined): number => {
  const n = Number(v);
  if (!(n > 0)) throw new Error(`--${name}: expected a positive number, got ${v}`);
  return n;
};
const MINUTES = num("minutes", values.minutes);
const AGENTS = num("agents", values.agents);
const POOL_SIZE = num("pool-size", values["pool-size"]);
const LINES = num("lines", values.lines);
const CUT_EVERY_MS = num("cut-every", values["cut-every"]) * 1000;
const CUT_FOR_MS = num("cut-for", values["cut-for"]) * 1000;
const MEASURE_MS = num("measure-secs", values["measure-secs"]) * 1000;
/** RSS at the end may exceed RSS after warm-up by at most this factor. */
const RSS_GROWTH_TARGET = 1.2;
const POOL = "soak";

// A numbered line every 10 ms; `read -t` on a pipe nobody writes sleeps without forking.
const SCRIPT = `exec 3<> <(:); for ((i = 1; i <= ${LINES}; i++)); do echo "line $i"; read -t 0.01 -u 3; done; exit 0`;
const EXPECTED = Array.from({ length: LINES }, (_, i) => `line ${i + 1}`).join("\n") + "\n";

interface Tally {
  submitted: number;
  succeeded: number;
  /** Ended in another state, or the stream failed: with the reason. */
  failed: { state: string; reason: string }[];
  linesExpected: number;
  linesMissing: number;
  linesExtra: number;
  outOfOrder: number;
}

const tally: Tally = {
  submitted: 0,
  succeeded: 0,
  failed: [],
  linesExpected: 0,
  linesMissing: 0,
  linesExtra: 0,
  outOfOrder: 0,
};

async function runOne(client: SwitchboardClient): Promise<void> {
  tally.submitted++;
  tally.linesExpected += LINES;
  const chunks: Buffer[] = [];
  let state = "unknown";
  let reason = "";
  try {
    // Submitted during a cut, a task waits in the hub's queue for the agents to come back.
    const req = {
      ...shell({ script: SCRIPT }),
      target: { pool: POOL },
      waitForAgent: true,
      timeoutMs: 300_000,
    };
    for await (const ev of client.run(req)) {
      const e = ev.event;
      if (e?.$case === "output") chunks.push(Buffer.from(e.value.data));
      if (e?.$case === "finished") {
        state = TaskState[e.value.state] ?? String(e.value.state);
        reason = e.value.reason || e.value.error?.message || "";
      }
    }
  } catch (err) {
    state = "stream failed";
    reason = err instanceof Error ? err.message : String(err);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (text !== EXPECTED) {
    const got = text.split("\n").filter((l) => l !== "");
    const want = new Set(EXPECTED.split("\n").filter((l) => l !== ""));
    const seen = new Set<string>();
    let extra = 0;
    let missing = 0;
    for (const l of got) {
      if (!want.has(l) || seen.has(l)) extra++;
      seen.add(l);
    }
    for (const l of want) if (!seen.has(l)) missing++;
    tally.linesExtra += extra;
    tally.linesMissing += missing;
    if (extra === 0 && missing === 0) tally.outOfOrder++; // all there once, but not in order
  }
  if (state === "TASK_STATE_SUCCEEDED") tally.succeeded++;
  else tally.failed.push({ state, reason });
}

interface RssSeries {
  name: string;
  pid: number;
  samples: { tMs: number; rss: number }[];
}

async function main(): Promise<void> {
  installExitHooks();
  const root = mkdtempSync(path.join(os.tmpdir(), "switchboard-soak-"));
  const childEnv = { SWITCHBOARD_LOG_LEVEL: "warn" };
  const hubDir = path.join(root, "hub");
  const hub = spawnNode("hub", CLI, {
    args: ["hub", "--listen", "127.0.0.1:0", "--data", hubDir],
    env: childEnv,
  });
  const address = await waitForHubJson(hub, hubDir);
  const adminToken = readFileSync(path.join(hubDir, "admin.token"), "utf8").trim();
  const agentToken = await createAgentToken(address, adminToken, POOL, "soak-agent");
  const proxy = await TcpProxy.start(address);
  const agents: Child[] = [];
  for (let i = 1; i <= AGENTS; i++) {
    agents.push(
      spawnNode(`agent-${i}`, CLI, {
        args: [
          "agent",
          "--hub",
          proxy.address,
          "--token",
          agentToken,
          "--agent-id",
          `soak-${i}`,
          "--pool",
          POOL,
          "--pool-size",
          String(POOL_SIZE),
          "--shell",
          "--data",
          path.join(root, `agent-${i}`),
        ],
        env: childEnv,
      }),
    );
  }
  const client = new SwitchboardClient({ hub: address, token: adminToken });
  await waitFor(
    async () => (await client.admin.listAgents()).filter((a) => a.connected).length === AGENTS || undefined,
    { timeout: 30_000, interval: 200, message: "the agents to connect" },
  );
  log(`hub ${address} (pid ${hub.pid}), ${AGENTS} agents x ${POOL_SIZE} slots behind proxy ${proxy.address}`);

  // Capacity: every slot busy, closed loop.
  const slots = AGENTS * POOL_SIZE;
  log(`measuring capacity for ${MEASURE_MS / 1000}s with ${slots} tasks in flight`);
  const measureEnd = Date.now() + MEASURE_MS;
  let measured = 0;
  await Promise.all(
    Array.from({ length: slots }, async () => {
      while (Date.now() < measureEnd) {
        await runOne(client);
        measured++;
      }
    }),
  );
  const capacity = measured / (MEASURE_MS / 1000);
  const rate = capacity / 2;
  log(`capacity ${capacity.toFixed(2)} tasks/s; soaking at ${rate.toFixed(2)} tasks/s for ${MINUTES} min`);

  // Soak: open-loop arrivals at half capacity, cuts every CUT_EVERY_MS, RSS every 5 s.
  const series: RssSeries[] = [hub, ...agents].map((c) => ({ name: c.name, pid: c.pid, samples: [] }));
  const t0 = Date.now();
  const sampler = setInterval(() => {
    for (const s of series) {
      const rss = procRssBytes(s.pid);
      if (!Number.isNaN(rss)) s.samples.push({ tMs: Date.now() - t0, rss });
    }
  }, 5_000);
  const end = t0 + MINUTES * 60_000;
  let cuts = 0;
  const cutter = (async () => {
    for (;;) {
      await sleep(Math.min(CUT_EVERY_MS - CUT_FOR_MS, Math.max(0, end - Date.now())));
      if (Date.now() >= end) return;
      proxy.down();
      cuts++;
      await sleep(CUT_FOR_MS);
      proxy.up();
    }
  })();
  const running = new Set<Promise<void>>();
  let next = Date.now();
  const before = { ...tally, failed: tally.failed.length };
  while (Date.now() < end) {
    next += 1000 / rate;
    const p = runOne(client).finally(() => running.delete(p));
    running.add(p);
    const wait = next - Date.now();
    if (wait > 0) await sleep(wait);
  }
  await cutter;
  await Promise.all(running);
  clearInterval(sampler);
  client.close();
  await proxy.close();
  await stopAll();
  rmSync(root, { recursive: true, force: true });

  // Flat memory: median of the last tenth against the median of the second tenth (after warm-up).
  const median = (xs: number[]): number => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.floor(s.length / 2)] ?? NaN;
  };
  const rss = series.map((s) => {
    const n = s.samples.length;
    const early = median(
      s.samples.slice(Math.floor(n / 10), Math.max(Math.floor(n / 5), 1)).map((x) => x.rss),
    );
    const late = median(s.samples.slice(Math.floor((n * 9) / 10)).map((x) => x.rss));
    return { name: s.name, earlyMiB: early / 2 ** 20, lateMiB: late / 2 ** 20, growth: late / early };
  });

  const soakTasks = tally.submitted - before.submitted;
  const lost = tally.failed.length;
  const linesLost = tally.linesMissing;
  const checks = [
    { name: "tasks not succeeded", value: lost, target: 0, pass: lost === 0 },
    { name: "output lines lost", value: linesLost, target: 0, pass: linesLost === 0 },
    { name: "output lines duplicated", value: tally.linesExtra, target: 0, pass: tally.linesExtra === 0 },
    { name: "tasks out of order", value: tally.outOfOrder, target: 0, pass: tally.outOfOrder === 0 },
    ...rss.map((r) => ({
      name: `${r.name} RSS late/early`,
      value: Number(r.growth.toFixed(3)),
      target: RSS_GROWTH_TARGET,
      pass: r.growth <= RSS_GROWTH_TARGET,
    })),
  ];
  for (const c of checks) {
    process.stdout.write(
      `soak  ${c.name.padEnd(26)} ${String(c.value).padStart(8)}  target ${c.name.includes("RSS") ? "<=" : "="} ${c.target}  ${c.pass ? "MET" : "MISS"}\n`,
    );
  }
  for (const r of rss) {
    process.stdout.write(
      `soak  ${r.name.padEnd(26)} RSS ${r.earlyMiB.toFixed(1)} MiB after warm-up, ${r.lateMiB.toFixed(1)} MiB at the end\n`,
    );
  }
  process.stdout.write(
    `soak  ${tally.submitted} tasks (${soakTasks} in the soak at ${rate.toFixed(2)}/s, capacity ${capacity.toFixed(2)}/s), ${cuts} link cuts of ${CUT_FOR_MS / 1000}s, ${tally.linesExpected} lines expected\n`,
  );
  if (lost > 0) process.stdout.write(`soak  first failures: ${JSON.stringify(tally.failed.slice(0, 5))}\n`);
  mkdirSync(RESULTS_DIR, { recursive: true });
  writeFileSync(
    path.join(RESULTS_DIR, "soak.json"),
    JSON.stringify(
      {
        name: "soak",
        minutes: MINUTES,
        agents: AGENTS,
        poolSize: POOL_SIZE,
        linesPerTask: LINES,
        capacityTasksPerSec: capacity,
        rateTasksPerSec: rate,
        cuts,
        cutForMs: CUT_FOR_MS,
        tally: { ...tally, failed: tally.failed.slice(0, 50) },
        rss,
        checks,
        env: envInfo(),
        startedAt: new Date(t0).toISOString(),
      },
      null,
      2,
    ) + "\n",
  );
  process.exit(checks.every((c) => c.pass) ? 0 : 1);
}

main().catch(async (err: unknown) => {
  log(`soak failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  await stopAll();
  process.exit(2);
});
