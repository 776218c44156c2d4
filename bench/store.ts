// The hub's store on the hot path: echo tasks through a hub whose state lives in PostgreSQL against
// the same through a hub on its SQLite file, same load, alternating windows in one run; and the
// round trip with one task in flight. Beside them, what the PostgreSQL store costs the database:
// commits per second and rows written per task (pg_stat_database), graphile-worker's measure.
import { randomBytes } from "node:crypto";
import pg from "pg";
import {
  alternate,
  p50Check,
  ratioResult,
  rttSchedule,
  throughputSchedule,
  withCluster,
  type Benchmark,
  type Measured,
} from "./benchmarks.js";
import { log, round } from "./harness.js";
import { echoViaSession } from "./ours.js";

const SERVER = process.env.SWITCHBOARD_BENCH_PG ?? "postgres://postgres@127.0.0.1:5432";
const PAYLOAD_BYTES = 64;

interface DbStats {
  commits: number;
  rows: number;
}

async function onServer<T>(db: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: `${SERVER}/${db}`, connectionTimeoutMillis: 10_000 });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function dbStats(db: string): Promise<DbStats> {
  return onServer("postgres", async (c) => {
    await c.query("SELECT pg_stat_clear_snapshot()");
    const r = await c.query<{ commits: string; rows: string }>(
      "SELECT xact_commit AS commits, tup_inserted + tup_updated + tup_deleted AS rows FROM pg_stat_database WHERE datname = $1",
      [db],
    );
    return { commits: Number(r.rows[0]?.commits ?? 0), rows: Number(r.rows[0]?.rows ?? 0) };
  });
}

const echoPostgresVsSqlite: Benchmark = {
  name: "echo-store-postgres-vs-sqlite",
  description:
    "Echo tasks per second (64-byte payload, 64 in flight, SDK Session stream) and the p50 round trip (1 in " +
    "flight) through a hub whose state is in PostgreSQL (--store) vs the same hub on its SQLite file; two " +
    "hub+agent clusters, alternating windows. Targets: tasks/s >= 0.7x, p50 <= 1.5x. Beside them: the " +
    "PostgreSQL store's commits per second and rows written per task.",
  async run(o): Promise<Measured> {
    const db = `sb_bench_${randomBytes(4).toString("hex")}`;
    await onServer("postgres", (c) => c.query(`CREATE DATABASE ${db}`));
    try {
      const payload = randomBytes(PAYLOAD_BYTES);
      return await withCluster(o, `${this.name}-sqlite`, false, (lite) =>
        withCluster(
          o,
          `${this.name}-pg`,
          false,
          async (onPg) => {
            const pgSide = (): Promise<void> => echoViaSession(onPg.client, payload);
            const liteSide = (): Promise<void> => echoViaSession(lite.client, payload);
            let tasks = 0;
            const counted = async (): Promise<void> => {
              await pgSide();
              tasks++;
            };
            const before = await dbStats(db);
            const t0 = performance.now();
            const [a, b] = await alternate(
              { name: "postgres store", op: counted, pids: { hub: onPg.hub.pid, agent: onPg.agent.pid } },
              { name: "sqlite store", op: liteSide, pids: { hub: lite.hub.pid, agent: lite.agent.pid } },
              // Four rounds: the side that runs first pays for the machine's warm-up.
              { ...throughputSchedule(o), rounds: 4 },
            );
            const seconds = (performance.now() - t0) / 1000;
            const after = await dbStats(db);
            const [ra, rb] = await alternate(
              { name: "postgres store", op: pgSide, pids: { hub: onPg.hub.pid } },
              { name: "sqlite store", op: liteSide, pids: { hub: lite.hub.pid } },
              rttSchedule(o),
            );
            const p50 = { ours: ra.latency?.p50Us ?? NaN, peer: rb.latency?.p50Us ?? NaN };
            // pg_stat_database counts the whole run's commits, the SQLite windows' quiet time included.
            const commitsPerSec = (after.commits - before.commits) / seconds;
            const rowsPerTask = tasks > 0 ? (after.rows - before.rows) / tasks : NaN;
            log(
              `  postgres store: ${round(commitsPerSec)} commits/s, ${round(rowsPerTask, 2)} rows written per task (${tasks} tasks); p50 ${round(p50.ours)} µs vs sqlite ${round(p50.peer)} µs`,
            );
            const res = ratioResult(
              "echo tasks/s with the hub's state in PostgreSQL",
              "ops/s",
              true,
              a.opsPerSec,
              b.opsPerSec,
              "the same hub on its SQLite file",
              { comparison: ">=", value: 0.7, on: "ours/peer" },
              a.opsPerSec / b.opsPerSec,
              {
                payloadBytes: PAYLOAD_BYTES,
                ours: a,
                peer: b,
                p50: { ...p50, ratio: round(p50.ours / p50.peer, 3) },
                postgres: {
                  commitsPerSec: round(commitsPerSec),
                  rowsWrittenPerTask: round(rowsPerTask, 2),
                  tasks,
                },
              },
            );
            res.extraChecks.push(p50Check("p50 round trip, PostgreSQL / SQLite", p50, 1.5));
            return res;
          },
          [],
          "grpc",
          ["--store", `${SERVER}/${db}`],
        ),
      );
    } finally {
      await onServer("postgres", (c) => c.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`));
    }
  },
};

export const STORE_BENCHMARKS: readonly Benchmark[] = [echoPostgresVsSqlite];
