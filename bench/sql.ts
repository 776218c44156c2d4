// The SQL benchmarks: a 1 GiB PostgreSQL result through agent, hub and the CLI writing CSV against
// psql's own COPY TO STDOUT, and seed-000 SendCommand round trips against the SDK's query() and a
// bare grpc-js unary echo server. Both start a real hub and agent with datasources of their own; the
// PostgreSQL one connects as a least-privilege role made for the run, as a read_only datasource must.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { credentials, Metadata } from "@grpc/grpc-js";
import Database from "better-sqlite3";
import pg from "pg";
import { sql } from "../src/client/index.js";
import { ClientServiceClient, type CommandResponse } from "../src/gen/seed000/app.js";
import {
  alternateSides,
  profileFlags,
  ratioResult,
  withCluster,
  type Benchmark,
  type Measured,
  type RunOptions,
  type Schedule,
  rssChecks,
} from "./benchmarks.js";
import { POOL, type Cluster } from "./cluster.js";
import { CLI, CpuMeter, fmt, log, procCpuMs, RssSampler, round } from "./harness.js";
import { startGrpcEchoPeer } from "./peers.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const PG_URL = process.env.SWITCHBOARD_BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

/**
 * A login role that may only connect to PG_URL's database (the benchmark reads generate_series, no table),
 * made for one run and dropped after: the agent refuses a read_only datasource whose role is a superuser, as
 * PG_URL's usually is. fn gets PG_URL with that role (and its one-off password) as the user.
 */
async function withReadOnlyRole<T>(fn: (url: string) => Promise<T>): Promise<T> {
  const name = `sbbench_${randomBytes(6).toString("hex")}`;
  const password = randomBytes(12).toString("hex");
  const admin = new pg.Client({ connectionString: PG_URL });
  admin.on("error", () => undefined);
  try {
    await admin.connect();
    const { db } = (await admin.query<{ db: string }>("SELECT current_database() AS db")).rows[0]!;
    await admin.query(`CREATE ROLE ${name} LOGIN PASSWORD '${password}'`);
    await admin.query(`GRANT CONNECT ON DATABASE "${db.replace(/"/g, '""')}" TO ${name}`);
  } catch (e) {
    await admin.end().catch(() => undefined);
    throw new Error(
      `cannot make a read-only role for the benchmark through SWITCHBOARD_BENCH_PG_URL (a user that may ` +
        `CREATE ROLE): ${e instanceof Error ? e.message : String(e)}`,
    );
  }
  try {
    const url = new URL(PG_URL);
    url.username = name;
    url.password = password;
    return await fn(url.toString());
  } finally {
    await admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", [name]);
    // Revokes its CONNECT (a grant on a shared object) so that the role can go.
    await admin.query(`DROP OWNED BY ${name}`);
    await admin.query(`DROP ROLE ${name}`);
    await admin.end();
  }
}

async function withSqlCluster<T>(
  o: RunOptions,
  bench: string,
  datasources: string,
  fn: (c: Cluster) => Promise<T>,
): Promise<T> {
  const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-sql-"));
  const config = path.join(dir, "agent.toml");
  writeFileSync(config, datasources);
  try {
    return await withCluster(o, bench, false, fn, ["--config", config]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interface Transfer {
  bytes: number;
  ms: number;
  exitCode: number | null;
  stderr: string;
  peakRssMiB: number;
  /** The child's own CPU (user + system) over its run, in % of one core (last reading before it exits). */
  cpuPctOfCore: number;
}

/** Runs a program whose stdout is the result, counting (and discarding) its bytes. */
function pull(
  file: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<Transfer> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(file, args, { stdio: ["ignore", "pipe", "pipe"], env });
    const rss = new RssSampler(child.pid ?? 0, 100);
    let bytes = 0;
    let stderr = "";
    child.stdout.on("data", (b: Buffer) => (bytes += b.length));
    child.stderr.on("data", (b: Buffer) => (stderr = (stderr + b.toString()).slice(-4000)));
    child.on("error", (e) => {
      rss.stop();
      reject(e);
    });
    let cpuMs = 0;
    const cpuTimer = setInterval(() => {
      const v = procCpuMs(child.pid ?? 0);
      if (Number.isFinite(v)) cpuMs = v;
    }, 100);
    child.on("close", (code) => {
      clearInterval(cpuTimer);
      rss.stop();
      const ms = performance.now() - t0;
      resolve({
        bytes,
        ms,
        exitCode: code,
        stderr,
        peakRssMiB: rss.peak() / MiB,
        cpuPctOfCore: round((cpuMs * 100) / ms),
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// 1 GiB of PostgreSQL rows as CSV

const pgCsv1GiB: Benchmark = {
  name: "sql-pg-1gib-csv",
  description:
    "MB/s of a 1 GiB PostgreSQL result (generate_series, 242-byte CSV rows) through agent and hub to " +
    '`switchboard query --format csv` writing to a pipe; vs `psql -c "COPY (same query) TO STDOUT WITH ' +
    'CSV HEADER"` on the same machine, alternating. Also the peak RSS of agent, hub and CLI client.',
  async run(o) {
    const total = o.quick ? 128 * MiB : GiB;
    // g (avg ~7 digits), md5 (32), 200 x's, two commas and a newline: about 242 bytes a row.
    const rowsWanted = Math.round(total / 242);
    const query = `SELECT g, md5(g::text) AS h, repeat('x', 200) AS pad FROM generate_series(1, ${rowsWanted}) g`;
    const pgUrl = new URL(PG_URL);
    const psqlArgs = [
      "-X",
      "-q",
      "-h",
      pgUrl.hostname,
      "-p",
      pgUrl.port || "5432",
      "-U",
      decodeURIComponent(pgUrl.username || "postgres"),
      "-d",
      pgUrl.pathname.slice(1) || "postgres",
      "-c",
      `COPY (${query}) TO STDOUT WITH CSV HEADER`,
    ];
    const rssTargetMiB = 128;
    return withReadOnlyRole((readerUrl) =>
      withSqlCluster(
        o,
        this.name,
        `[datasources.main]\ndriver = "postgres"\nurl = "${readerUrl}"\npool_size = 2\n`,
        async (c) => {
          const hubRss = new RssSampler(c.hub.pid, 100);
          const agentRss = new RssSampler(c.agent.pid, 100);
          const cliArgs = [
            ...profileFlags(o, this.name, "client"),
            CLI,
            "--hub",
            c.address,
            "--token",
            c.adminToken,
            "query",
            "--pool",
            POOL,
            "--db",
            "main",
            "--format",
            "csv",
            "--no-progress",
            query,
          ];
          const runs: { side: "ours" | "peer"; t: Transfer; cpuPctOfCore: Record<string, number> }[] = [];
          try {
            for (const side of ["peer", "ours", "ours", "peer"] as const) {
              // Where the CPU goes (PostgreSQL's backend is not counted).
              const meter = new CpuMeter({ hub: c.hub.pid, agent: c.agent.pid });
              const t =
                side === "peer" ? await pull("psql", psqlArgs) : await pull(process.execPath, cliArgs);
              const cpuPctOfCore = { ...meter.stop(), client: t.cpuPctOfCore };
              if (t.exitCode !== 0) throw new Error(`${side} exited ${t.exitCode}: ${t.stderr}`);
              log(
                `  ${side === "peer" ? "psql COPY" : "switchboard query"}: ${fmt(t.bytes / 1e6 / (t.ms / 1000))} MB/s ` +
                  `(${t.bytes} bytes in ${fmt(t.ms)} ms, peak RSS ${fmt(t.peakRssMiB)} MiB) cpu% ${JSON.stringify(cpuPctOfCore)}`,
              );
              runs.push({ side, t, cpuPctOfCore });
            }
          } finally {
            hubRss.stop();
            agentRss.stop();
          }
          const sum = (side: "ours" | "peer"): { bytes: number; ms: number } =>
            runs
              .filter((r) => r.side === side)
              .reduce((a, r) => ({ bytes: a.bytes + r.t.bytes, ms: a.ms + r.t.ms }), { bytes: 0, ms: 0 });
          const ours = sum("ours");
          const peer = sum("peer");
          const oursMBps = ours.bytes / 1e6 / (ours.ms / 1000);
          const peerMBps = peer.bytes / 1e6 / (peer.ms / 1000);
          const clientPeak = Math.max(...runs.filter((r) => r.side === "ours").map((r) => r.t.peakRssMiB));
          const peaks = { agent: agentRss.peak() / MiB, hub: hubRss.peak() / MiB, client: clientPeak };
          const sameBytes = runs.every((r) => r.t.bytes === runs[0]!.t.bytes);
          const res: Measured = ratioResult(
            "CSV throughput",
            "MB/s",
            true,
            oursMBps,
            peerMBps,
            "psql COPY (query) TO STDOUT WITH CSV HEADER, same machine",
            { comparison: ">=", value: 0.7, on: "ours/peer" },
            oursMBps / peerMBps,
            {
              query,
              rows: rowsWanted,
              bytesPerRun: runs[0]!.t.bytes,
              runs: runs.map((r) => ({
                side: r.side,
                bytes: r.t.bytes,
                ms: round(r.t.ms),
                cpuPctOfCore: r.cpuPctOfCore,
              })),
              peakRssMiB: { agent: round(peaks.agent), hub: round(peaks.hub), client: round(peaks.client) },
              psqlPeakRssMiB: round(
                Math.max(...runs.filter((r) => r.side === "peer").map((r) => r.t.peakRssMiB)),
              ),
            },
          );
          res.extraChecks.push(...rssChecks(peaks, rssTargetMiB));
          res.extraChecks.push({
            name: "same CSV bytes as psql",
            value: runs[1]!.t.bytes,
            unit: "bytes",
            comparison: ">=",
            target: runs[0]!.t.bytes,
            pass: sameBytes,
          });
          res.pass = res.extraChecks.every((x) => x.pass) && res.pass;
          return res;
        },
      ),
    );
  },
};

// ---------------------------------------------------------------------------------------------
// seed-000 SendCommand round trips

const sendCommandVsGrpcEcho: Benchmark = {
  name: "seed-sendcommand-vs-grpc-echo",
  description:
    "Requests/s and p50/p99 of seed-000 SendCommand (one-row query on a SQLite datasource), 64 in " +
    "flight, beside the same query through the SDK's query() and a bare grpc-js unary echo server " +
    "(child process), alternating windows in one run.",
  async run(o) {
    const dir = mkdtempSync(path.join(os.tmpdir(), "switchboard-bench-seed-"));
    const file = path.join(dir, "one.db");
    const db = new Database(file);
    db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL); INSERT INTO t VALUES (1, 'one');");
    db.close();
    const query = "SELECT id, name FROM t WHERE id = 1";
    const echo = await startGrpcEchoPeer();
    try {
      return await withSqlCluster(
        o,
        this.name,
        `[datasources.one]\ndriver = "sqlite"\npath = "${file}"\n`,
        async (c) => {
          const seed = new ClientServiceClient(c.address, credentials.createInsecure());
          const md = new Metadata();
          md.set("authorization", `Bearer ${c.adminToken}`);
          const sendCommand = (): Promise<void> =>
            new Promise((resolve, reject) => {
              seed.sendCommand(
                { agentId: POOL, database: "one", query, tblName: "" },
                md,
                (err: Error | null, res?: CommandResponse) => {
                  if (err) reject(err);
                  else if (res?.json !== '[{"id":1,"name":"one"}]') {
                    reject(new Error(`SendCommand: unexpected answer ${JSON.stringify(res)}`));
                  } else resolve();
                },
              );
            });
          const viaSdk = async (): Promise<void> => {
            let n = 0;
            for await (const ev of c.client.query({
              ...sql({ datasource: "one", query }),
              target: { pool: POOL },
            })) {
              if (ev.kind === "rows") n += ev.rows.length;
            }
            if (n !== 1) throw new Error(`query(): ${n} rows`);
          };
          const payload = Buffer.alloc(64, 7);
          const s: Schedule = {
            rounds: 2,
            warmupMs: o.quick ? 500 : 2000,
            rewarmMs: o.quick ? 250 : 750,
            windowMs: o.quick ? 1000 : 4000,
            concurrency: 64,
            maxOpsPerWindow: 2e6,
            latencies: true,
          };
          try {
            const pids = { hub: c.hub.pid, agent: c.agent.pid };
            const [sc, sdk, bare] = await alternateSides(
              [
                { name: "seed SendCommand", op: sendCommand, pids },
                { name: "SDK query()", op: viaSdk, pids },
                { name: "grpc-js echo", op: () => echo.call(payload), pids: { grpcServer: echo.server.pid } },
              ],
              s,
            );
            const lat = (r: typeof sc): { p50Ms: number; p99Ms: number } => ({
              p50Ms: round((r!.latency?.p50Us ?? NaN) / 1000, 2),
              p99Ms: round((r!.latency?.p99Us ?? NaN) / 1000, 2),
            });
            log(
              `  SendCommand ${fmt(sc!.opsPerSec)}/s ${JSON.stringify(lat(sc))}, query() ${fmt(sdk!.opsPerSec)}/s ` +
                `${JSON.stringify(lat(sdk))}, echo ${fmt(bare!.opsPerSec)}/s ${JSON.stringify(lat(bare))}`,
            );
            const res = ratioResult(
              "SendCommand requests/s",
              "req/s",
              true,
              sc!.opsPerSec,
              bare!.opsPerSec,
              "bare @grpc/grpc-js unary echo server (child process), 64 in flight",
              { comparison: ">=", value: 0.7, on: "ours/peer" },
              sc!.opsPerSec / bare!.opsPerSec,
              {
                query,
                sendCommand: { ...sc, latency: lat(sc) },
                sdkQuery: { ...sdk, latency: lat(sdk) },
                grpcEcho: { ...bare, latency: lat(bare) },
              },
            );
            const errors = sc!.errors + sdk!.errors;
            res.extraChecks.push({
              name: "errors",
              value: errors,
              unit: "",
              comparison: "<=",
              target: 0,
              pass: errors === 0,
            });
            res.pass = res.pass && errors === 0;
            return res;
          } finally {
            seed.close();
          }
        },
      );
    } finally {
      await echo.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

export const SQL_BENCHMARKS: readonly Benchmark[] = [pgCsv1GiB, sendCommandVsGrpcEcho];
