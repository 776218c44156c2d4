// The agent HTTP port under a flood of unauthenticated uploads: 30 concurrent POSTs of 16 MiB each to
// /agent/v1/connect with no valid token. Every one must get 401, and the hub's RSS must grow by at
// most 16 MiB (a hub that read each body before the token grew by hundreds). The peer, in the same
// run, is a bare node:http server that answers 401 from the headers (bench/http-refuse-server.ts):
// what the same flood costs a plain Node process. The target is absolute, as in pty-keystroke-echo:
// the ratio ours/peer is for information.
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request } from "node:http";
import os from "node:os";
import path from "node:path";
import type { Benchmark, Measured } from "./benchmarks.js";
import { waitForHubAddresses } from "./cluster.js";
import { check, CLI, DIST_BENCH, log, procRssBytes, round, sleep, spawnNode, type Child } from "./harness.js";

const MiB = 1024 * 1024;
const CLIENTS = 30;
const BODY_BYTES = 16 * MiB;
const GROWTH_TARGET_MIB = 16;

interface FloodOutcome {
  /** Answers by HTTP status, and requests that ended with no answer by error code. */
  outcomes: Record<string, number>;
  unauthorized: number;
  /** From the first request to the last answer. */
  allAnsweredMs: number;
  baselineMiB: number;
  peakMiB: number;
  growthMiB: number;
  /** RSS 3 s after the flood, over the baseline: what stays. */
  afterMiB: number;
  /** Bytes the server process read from the network during the flood (/proc/PID/io rchar). */
  readMiB: number;
}

function procReadBytes(pid: number): number {
  try {
    const m = /^rchar:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/io`, "utf8"));
    return m?.[1] === undefined ? NaN : Number(m[1]);
  } catch {
    return NaN;
  }
}

/** One POST of the whole body; resolves with the status, or the error when no answer came. */
function postOnce(address: string, body: Buffer, token: string | undefined): Promise<string> {
  const i = address.lastIndexOf(":");
  return new Promise((resolve) => {
    let status: number | undefined;
    const headers: Record<string, string | number> = {
      "content-type": "application/x-protobuf",
      "content-length": body.length,
    };
    if (token) headers.authorization = `Bearer ${token}`;
    const req = request(
      {
        host: address.slice(0, i),
        port: Number(address.slice(i + 1)),
        path: "/agent/v1/connect",
        method: "POST",
        headers,
        agent: false,
      },
      (res) => {
        status = res.statusCode;
        res.resume();
        res.on("end", () => resolve(String(status)));
      },
    );
    // Once answered, a reset of the rest of the upload is the server closing as it should.
    req.on("error", (e: NodeJS.ErrnoException) =>
      resolve(status === undefined ? (e.code ?? e.message) : String(status)),
    );
    req.end(body);
  });
}

/** The flood against `address`, served by process `pid`; RSS sampled every 20 ms against 1 s at rest. */
async function flood(address: string, pid: number, body: Buffer): Promise<FloodOutcome> {
  const rest: number[] = [];
  for (let i = 0; i < 20; i++) {
    rest.push(procRssBytes(pid));
    await sleep(50);
  }
  const baseline = rest.reduce((a, b) => a + b, 0) / rest.length;
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, procRssBytes(pid))), 20);
  const readBefore = procReadBytes(pid);
  const t0 = performance.now();
  let answers: string[];
  try {
    // Half without a token, half with a forged one.
    answers = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) =>
        postOnce(address, body, i % 2 === 0 ? `sbt_forged${i}` : undefined),
      ),
    );
  } finally {
    clearInterval(sampler);
  }
  const allAnsweredMs = performance.now() - t0;
  const end = performance.now() + 3000;
  while (performance.now() < end) {
    peak = Math.max(peak, procRssBytes(pid));
    await sleep(20);
  }
  const readBytes = procReadBytes(pid) - readBefore;
  const outcomes: Record<string, number> = {};
  for (const a of answers) outcomes[a] = (outcomes[a] ?? 0) + 1;
  return {
    outcomes,
    unauthorized: outcomes["401"] ?? 0,
    allAnsweredMs: round(allAnsweredMs),
    baselineMiB: round(baseline / MiB),
    peakMiB: round(peak / MiB),
    growthMiB: round((peak - baseline) / MiB),
    afterMiB: round((procRssBytes(pid) - baseline) / MiB),
    readMiB: round(readBytes / MiB),
  };
}

export const httpUnauthFlood: Benchmark = {
  name: "http-unauth-flood-16mib",
  description:
    `${CLIENTS} concurrent unauthenticated ${BODY_BYTES / MiB} MiB POSTs to the hub's agent HTTP port: all 401, ` +
    `hub RSS growth <= ${GROWTH_TARGET_MIB} MiB; peer: the same flood against a bare node:http server that answers 401 from the headers.`,
  async run(): Promise<Measured> {
    const body = Buffer.alloc(BODY_BYTES, 0x5a);
    const root = mkdtempSync(path.join(os.tmpdir(), "switchboard-flood-"));
    const children: Child[] = [];
    try {
      // The peer first, so that both sides meet a client that has already sent one flood.
      const peer = spawnNode("refuse-server", path.join(DIST_BENCH, "http-refuse-server.js"), { args: [] });
      children.push(peer);
      const port = (await peer.waitForLine(/^READY (\d+)/, 10_000))[1];
      const theirs = await flood(`127.0.0.1:${port}`, peer.pid, body);
      log(`  peer: ${JSON.stringify(theirs)}`);
      await peer.stop();

      const dataDir = path.join(root, "hub");
      const hub = spawnNode("hub", CLI, {
        args: ["hub", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data", dataDir],
        env: { SWITCHBOARD_LOG_LEVEL: "warn" },
      });
      children.push(hub);
      const { httpAddress } = await waitForHubAddresses(hub, dataDir);
      if (!httpAddress) throw new Error("the hub serves no agent HTTP API");
      await sleep(1000); // start-up settles
      const ours = await flood(httpAddress, hub.pid, body);
      log(`  hub:  ${JSON.stringify(ours)}`);

      const allRefused = ours.unauthorized === CLIENTS;
      return {
        metric: "hub RSS growth under the flood",
        unit: "MiB",
        higherIsBetter: false,
        ours: ours.growthMiB,
        peer: theirs.growthMiB,
        peerName:
          "bare node:http server answering 401 from the headers (Node then drains the body), same flood",
        ratio: round(ours.growthMiB / Math.max(theirs.growthMiB, 0.1), 3),
        target: { comparison: "<=", value: GROWTH_TARGET_MIB, on: "hub RSS growth MiB (absolute)" },
        pass: check(ours.growthMiB, "<=", GROWTH_TARGET_MIB) && allRefused,
        extraChecks: [
          {
            name: "answered 401",
            value: ours.unauthorized,
            unit: `of ${CLIENTS}`,
            comparison: ">=",
            target: CLIENTS,
            pass: allRefused,
          },
        ],
        details: { clients: CLIENTS, bodyBytes: BODY_BYTES, ours, peer: theirs },
      };
    } finally {
      await Promise.all(children.map((c) => c.stop()));
      rmSync(root, { recursive: true, force: true });
    }
  },
};

export const HTTP_FLOOD_BENCHMARKS: readonly Benchmark[] = [httpUnauthFlood];
