// A cluster's cost on the hot path: echo tasks from a client on hub A run by an agent on hub B (two
// hubs on one PostgreSQL database, talking through the machine's NATS), against the same load on
// one hub alone on its SQLite file; alternating windows in one run, then the p50 round trip with
// one task in flight. The pool's task goes the whole way: hub A has no agent of the pool, asks
// the others for an offer, submits through hub B, and relays the events back.
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { SwitchboardClient } from "../src/client/index.js";
import {
  alternate,
  p50Check,
  ratioResult,
  rttSchedule,
  throughputSchedule,
  withCluster,
  type Benchmark,
} from "./benchmarks.js";
import { waitForHubJson } from "./cluster.js";
import { CLI, log, round, spawnNode } from "./harness.js";
import { echoViaSession } from "./ours.js";
import { onServer, SERVER } from "./store.js";

const NATS = process.env.SWITCHBOARD_BENCH_NATS ?? "nats://127.0.0.1:4222";
const PAYLOAD_BYTES = 64;

const echoTwoHubsVsOne: Benchmark = {
  name: "echo-two-hubs-vs-one",
  description:
    "Echo tasks per second (64-byte payload, 64 in flight, SDK Session stream) from a client on hub A to the " +
    "pool's agent on hub B (a cluster of two hubs on PostgreSQL and NATS) vs the same through one hub on " +
    "SQLite, alternating windows; then the p50 round trip with one in flight. Targets: tasks/s >= 0.5x, " +
    "p50 <= 2x.",
  async run(o) {
    const db = `sb_bench_cluster_${randomBytes(4).toString("hex")}`;
    await onServer("postgres", (c) => c.query(`CREATE DATABASE ${db}`));
    const store = `${SERVER}/${db}`;
    const dirA = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-hub-a-"));
    try {
      const payload = randomBytes(PAYLOAD_BYTES);
      return await withCluster(o, `${this.name}-single`, false, (single) =>
        withCluster(
          o,
          `${this.name}-b`,
          false,
          async (b) => {
            const hubA = spawnNode("hub-a", CLI, {
              args: [
                "hub",
                "--listen",
                "127.0.0.1:0",
                "--http-listen",
                "off",
                "--data",
                dirA,
                "--store",
                store,
                "--nats",
                NATS,
                "--hub-id",
                "bench-a",
              ],
              env: { SWITCHBOARD_LOG_LEVEL: "warn" },
              nodeFlags: [],
            });
            const clientA = new SwitchboardClient({
              hub: await waitForHubJson(hubA, dirA),
              token: b.adminToken,
            });
            try {
              const viaA = (): Promise<void> => echoViaSession(clientA, payload);
              const alone = (): Promise<void> => echoViaSession(single.client, payload);
              await viaA(); // the cluster has formed: hub A knows hub B
              const [ta, tb] = await alternate(
                { name: "two hubs", op: viaA, pids: { hubA: hubA.pid, hubB: b.hub.pid, agent: b.agent.pid } },
                { name: "one hub", op: alone, pids: { hub: single.hub.pid, agent: single.agent.pid } },
                { ...throughputSchedule(o), rounds: 4 },
              );
              const [ra, rb] = await alternate(
                { name: "two hubs", op: viaA, pids: { hubA: hubA.pid, hubB: b.hub.pid } },
                { name: "one hub", op: alone, pids: { hub: single.hub.pid } },
                rttSchedule(o),
              );
              const p50 = { ours: ra.latency?.p50Us ?? NaN, peer: rb.latency?.p50Us ?? NaN };
              log(`  p50 through two hubs ${round(p50.ours)} µs vs one hub ${round(p50.peer)} µs`);
              const res = ratioResult(
                "echo tasks/s from a client on hub A to an agent on hub B",
                "ops/s",
                true,
                ta.opsPerSec,
                tb.opsPerSec,
                "one hub on its SQLite file",
                { comparison: ">=", value: 0.5, on: "ours/peer" },
                ta.opsPerSec / tb.opsPerSec,
                {
                  payloadBytes: PAYLOAD_BYTES,
                  ours: ta,
                  peer: tb,
                  p50: { ...p50, ratio: round(p50.ours / p50.peer, 3) },
                },
              );
              res.extraChecks.push(p50Check("p50 round trip, two hubs / one hub", p50, 2));
              return res;
            } finally {
              clientA.close();
              await hubA.stop();
            }
          },
          [],
          "grpc",
          ["--store", store, "--nats", NATS, "--hub-id", "bench-b"],
        ),
      );
    } finally {
      rmSync(dirA, { recursive: true, force: true });
      await onServer("postgres", (c) => c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`));
    }
  },
};

export const CLUSTER_BENCHMARKS: readonly Benchmark[] = [echoTwoHubsVsOne];
