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

export const SERVER = process.env.SWITCHBOARD_BENCH_PG ?? "postgres://postgres@127.0.0.1:5432";
const PAYLOAD_BYTES = 64;

interface DbStats {
  commits: number;
  rows: number;
}

export async function onServer<T>(db: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
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

/**
 * The database's own floor for a round trip that waits for one commit: the p50 of a one-row INSERT
 * committed alone (fsync'd, as the store's are), with the pause between commits that a round trip
 * with one task in flight leaves (the WAL device idles between them, as it does under the hub).
 */
async function bareCommitP50Us(db: string, gapUs: number): Promise<number> {
  return onServer(db, async (c) => {
    await c.query("CREATE TABLE bare_commit (id text PRIMARY KEY, v bytea)");
    const payload = randomBytes(PAYLOAD_BYTES);
    const times: number[] = [];
    for (let i = 0; i < 1500; i++) {
      const until = performance.now() + gapUs / 1000;
      while (performance.now() < until) await new Promise<void>((r) => setImmediate(r));
      const t = performance.now();
      await c.query({
        text: "INSERT INTO bare_commit VALUES ($1, $2)",
        values: [`c${i}`, payload],
        name: "bare",
      });
      times.push(performance.now() - t);
    }
    await c.query("DROP TABLE bare_commit");
    times.sort((a, b) => a - b);
    return times[times.length >> 1]! * 1000;
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
            // What a durable commit costs this database alone, paced like the round trip: the part
            // of the p50 that no store on PostgreSQL can avoid (SQLite's commit does not fsync).
            const floorUs = await bareCommitP50Us(db, p50.peer);
            // pg_stat_database counts the whole run's commits, the SQLite windows' quiet time included.
            const commitsPerSec = (after.commits - before.commits) / seconds;
            const rowsPerTask = tasks > 0 ? (after.rows - before.rows) / tasks : NaN;
            log(
              `  postgres store: ${round(commitsPerSec)} commits/s, ${round(rowsPerTask, 2)} rows written per task (${tasks} tasks); p50 ${round(p50.ours)} µs vs sqlite ${round(p50.peer)} µs`,
            );
            log(
              `  one durable one-row commit on this database, paced like the round trip: p50 ${round(floorUs)} µs; ` +
                `the PostgreSQL hub's round trip is sqlite's + ${round(p50.ours - p50.peer)} µs (${round((p50.ours - p50.peer) / floorUs, 2)} such commits); ` +
                `the least ratio a store waiting for that commit can reach here: ${round((p50.peer + floorUs) / p50.peer, 2)}x`,
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
                bareCommitP50Us: round(floorUs),
                leastP50Ratio: round((p50.peer + floorUs) / p50.peer, 3),
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
