// 10,000 agent sessions on one hub: the hub's memory and CPU while they heartbeat, and how long
// all of them take to be back after the hub is killed and restarted. The agents are simulated
// (bench/sim-agents.ts, 1,000 per process, each on its own HTTP/2 connection) but speak the real
// protocol. The targets are absolute (there is no peer to run beside it): the "peer" column
// holds the budget and the ratio is figure/budget.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { SwitchboardClient } from "../src/client/index.js";
import type { Benchmark } from "./benchmarks.js";
import { waitForHubJson } from "./cluster.js";
import {
  check,
  CLI,
  CpuMeter,
  DIST_BENCH,
  freePort,
  log,
  round,
  procRssBytes,
  RssSampler,
  sleep,
  spawnNode,
  type Child,
} from "./harness.js";
import { waitFor } from "../src/common/wait-for.js";

const MiB = 1024 * 1024;

export const agents10k: Benchmark = {
  name: "agents-10k",
  description:
    "10,000 simulated agent sessions (real protocol, one HTTP/2 connection each) on one hub at 5 s heartbeats: " +
    "hub RSS (<= 1 GiB) and CPU (<= 25% of a core), and time for all to be back after kill -9 and restart (<= 15 s).",
  async run(o) {
    const total = o.quick ? 1_000 : 10_000;
    const perProcess = 1_000;
    const root = mkdtempSync(path.join(os.tmpdir(), "switchboard-10k-"));
    const dataDir = path.join(root, "hub");
    const port = await freePort();
    const listen = `127.0.0.1:${port}`;
    const env = { SWITCHBOARD_LOG_LEVEL: "warn" };
    const startHub = async (): Promise<Child> => {
      rmSync(path.join(dataDir, "hub.json"), { force: true });
      const hub = spawnNode("hub", CLI, { args: ["hub", "--listen", listen, "--data", dataDir], env });
      await waitForHubJson(hub, dataDir);
      return hub;
    };
    const sims: Child[] = [];
    const counts = new Map<Child, number>();
    const connected = () => [...counts.values()].reduce((a, b) => a + b, 0);
    let hub = await startHub();
    try {
      const admin = new SwitchboardClient({
        hub: listen,
        token: readFileSync(path.join(dataDir, "admin.token"), "utf8").trim(),
      });
      const { token } = await admin.admin.createToken({ name: "sim-agents", role: "agent", pools: ["sim"] });
      admin.close();
      const hubRssIdle = round(procRssBytes(hub.pid) / MiB);
      const t0 = performance.now();
      for (let i = 0; i < total / perProcess; i++) {
        const sim = spawnNode(`sim-${i}`, path.join(DIST_BENCH, "sim-agents.js"), {
          args: [listen, token, String(perProcess), `sim${i}`],
        });
        counts.set(sim, 0);
        sim.proc.stdout?.on("data", (b: Buffer) => {
          const m = /connected (\d+)\s*$/.exec(b.toString());
          if (m) counts.set(sim, Number(m[1]));
        });
        sims.push(sim);
      }
      await waitFor(() => (connected() >= total ? true : undefined), {
        timeout: 180_000,
        interval: 250,
        message: `${total} sessions`,
      });
      const connectAllS = round((performance.now() - t0) / 1000, 2);
      log(`  ${total} sessions up in ${connectAllS} s`);
      await sleep(o.quick ? 3_000 : 10_000); // let the first heartbeats and probes settle
      const rss = new RssSampler(hub.pid, 500);
      const cpu = new CpuMeter({ hub: hub.pid });
      await sleep(o.quick ? 5_000 : 20_000);
      const cpuPct = cpu.stop().hub ?? NaN;
      rss.stop();
      const hubRssMiB = round(rss.peak() / MiB);
      log(`  steady: hub RSS ${hubRssMiB} MiB (idle ${hubRssIdle}), CPU ${cpuPct}% of a core`);

      hub.proc.kill("SIGKILL");
      await waitFor(() => (hub.exited() ? true : undefined), {
        timeout: 10_000,
        interval: 50,
        message: "the hub to die",
      });
      await waitFor(() => (connected() === 0 ? true : undefined), {
        timeout: 60_000,
        interval: 100,
        message: "the agents to notice",
      });
      const restartAt = performance.now();
      hub = await startHub();
      await waitFor(() => (connected() >= total ? true : undefined), {
        timeout: 120_000,
        interval: 100,
        message: `${total} sessions again`,
      });
      const backS = round((performance.now() - restartAt) / 1000, 2);
      log(`  all ${total} back ${backS} s after the restart began`);

      return {
        metric: "hub RSS with all sessions up",
        unit: "MiB",
        higherIsBetter: false,
        ours: hubRssMiB,
        peer: 1024,
        peerName: "budget: 1 GiB (absolute target; no peer)",
        ratio: round(hubRssMiB / 1024, 3),
        target: { comparison: "<=", value: 1, on: "hub RSS / 1 GiB" },
        pass: check(hubRssMiB, "<=", 1024) && check(cpuPct, "<=", 25) && check(backS, "<=", 15),
        extraChecks: [
          {
            name: "hub CPU at 5 s heartbeats",
            value: cpuPct,
            unit: "% of a core",
            comparison: "<=",
            target: 25,
            pass: check(cpuPct, "<=", 25),
          },
          {
            name: "all back after a hub restart",
            value: backS,
            unit: "s",
            comparison: "<=",
            target: 15,
            pass: check(backS, "<=", 15),
          },
        ],
        details: {
          sessions: total,
          perProcess,
          connectAllS,
          hubRssIdleMiB: hubRssIdle,
          hubRssMiB,
          cpuPct,
          backS,
        },
      };
    } finally {
      await Promise.all(sims.map((s) => s.stop(1000)));
      await hub.stop();
      rmSync(root, { recursive: true, force: true });
    }
  },
};
