// Benchmark suite entry point.
//
//   npm run bench                                  # build, then every benchmark
//   node dist/bench/run.js --only echo-session-vs-nats [--only ...]
//   node dist/bench/run.js --quick                 # short smoke run of the harness (not a measurement)
//   node dist/bench/run.js --profile DIR           # hub and agent write .cpuprofile files under DIR
//   node dist/bench/run.js --list
//
// Prints one line per benchmark (name, ours, peer, ratio, target, pass/miss), writes
// bench/results/<name>.json and merges into bench/results/latest.json. Exit code 0 when every
// benchmark run met its target, 1 when one missed, 2 when one failed to run.
import { existsSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { agents10k } from "./agents-10k.js";
import { BENCHMARKS as CORE_BENCHMARKS, type Benchmark } from "./benchmarks.js";
import {
  CLI,
  envInfo,
  fmt,
  installExitHooks,
  log,
  RESULTS_DIR,
  stopAll,
  writeResult,
  type BenchResult,
} from "./harness.js";
import { CP_BENCHMARKS } from "./cp.js";
import { HTTP_BENCHMARKS } from "./http.js";
import { HTTP_FLOOD_BENCHMARKS } from "./http-flood.js";
import { NODE_BENCHMARKS } from "./nodes.js";
import { PTY_BENCHMARKS } from "./pty.js";
import { natsServerVersion } from "./peers.js";
import { SQL_BENCHMARKS } from "./sql.js";
import { STORE_BENCHMARKS } from "./store.js";
import { CLUSTER_BENCHMARKS } from "./cluster-hubs.js";
import { BEFORE_SPLIT_BENCHMARKS } from "./before-split.js";

const BENCHMARKS: readonly Benchmark[] = [
  ...CORE_BENCHMARKS,
  agents10k,
  ...SQL_BENCHMARKS,
  ...NODE_BENCHMARKS,
  ...HTTP_BENCHMARKS,
  ...PTY_BENCHMARKS,
  ...CP_BENCHMARKS,
  ...HTTP_FLOOD_BENCHMARKS,
  ...STORE_BENCHMARKS,
  ...CLUSTER_BENCHMARKS,
  ...BEFORE_SPLIT_BENCHMARKS,
];

const { values } = parseArgs({
  options: {
    only: { type: "string", multiple: true },
    quick: { type: "boolean", default: false },
    profile: { type: "string" },
    list: { type: "boolean", default: false },
    help: { type: "boolean", short: "h", default: false },
  },
});

if (values.help) {
  process.stdout.write(
    "usage: node dist/bench/run.js [--only NAME]... [--quick] [--profile DIR] [--list]\n" +
      `benchmarks: ${BENCHMARKS.map((b) => b.name).join(", ")}\n`,
  );
  process.exit(0);
}
if (values.list) {
  for (const b of BENCHMARKS) process.stdout.write(`${b.name}\t${b.description}\n`);
  process.exit(0);
}

const only = values.only ?? [];
const unknown = only.filter((n) => !BENCHMARKS.some((b) => b.name === n));
if (unknown.length > 0) {
  process.stderr.write(`unknown benchmark(s): ${unknown.join(", ")}\n`);
  process.exit(2);
}
const selected: Benchmark[] =
  only.length === 0 ? [...BENCHMARKS] : BENCHMARKS.filter((b) => only.includes(b.name));

if (!existsSync(CLI)) {
  process.stderr.write(`${CLI} not found: run \`npm run build\` first\n`);
  process.exit(2);
}

installExitHooks();

const env = { ...envInfo(), natsServer: natsServerVersion() };
log(`nproc ${env.nproc}, node ${env.node}, ${env.cpuModel}, load ${env.loadavg.join(" ")}`);
if (values.quick) log("--quick: short windows, smaller transfer; figures are not comparable to a full run");
const profileDir = values.profile === undefined ? undefined : path.resolve(values.profile);

function line(r: BenchResult): string {
  const verdict = r.error !== undefined ? "ERROR" : r.pass ? "pass" : "MISS";
  const extras = r.extraChecks
    .map(
      (c) =>
        `; ${c.name}: ${fmt(c.value, 1)} ${c.unit} (${c.comparison} ${c.target}) ${c.pass ? "pass" : "MISS"}`,
    )
    .join("");
  return (
    `${r.name.padEnd(28)} ours ${fmt(r.ours, 1)} ${r.unit}  peer ${fmt(r.peer, 1)} ${r.unit}  ` +
    `ratio ${fmt(r.ratio, 3)}  target ${r.target.on} ${r.target.comparison} ${r.target.value}  ${verdict}${extras}`
  );
}

const results: BenchResult[] = [];
const suiteStart = performance.now();
for (const b of selected) {
  log(`${b.name}: ${b.description}`);
  const startedAt = new Date().toISOString();
  const t0 = performance.now();
  let r: BenchResult;
  try {
    const m = await b.run({ quick: values.quick, ...(profileDir === undefined ? {} : { profileDir }) });
    r = {
      name: b.name,
      description: b.description,
      ...m,
      details: { ...m.details, quick: values.quick },
      env: { ...env, loadavg: envInfo().loadavg },
      startedAt,
      durationMs: Math.round(performance.now() - t0),
    };
  } catch (err) {
    const message = err instanceof Error ? (err.stack ?? err.message) : String(err);
    log(`${b.name} failed: ${message}`);
    r = {
      name: b.name,
      description: b.description,
      metric: "",
      unit: "",
      higherIsBetter: true,
      ours: NaN,
      peer: NaN,
      peerName: "",
      ratio: NaN,
      target: { comparison: ">=", value: NaN, on: "" },
      pass: false,
      extraChecks: [],
      details: { quick: values.quick },
      env,
      startedAt,
      durationMs: Math.round(performance.now() - t0),
      error: message,
    };
    await stopAll();
  }
  results.push(r);
  writeResult(r);
  process.stdout.write(line(r) + "\n");
}

await stopAll();
log(
  `done in ${fmt((performance.now() - suiteStart) / 1000, 1)} s; results in ${path.relative(process.cwd(), RESULTS_DIR)}/`,
);
process.stdout.write(`\n${"benchmark".padEnd(28)} result\n`);
for (const r of results) process.stdout.write(line(r) + "\n");
const failed = results.some((r) => r.error !== undefined);
const missed = results.some((r) => !r.pass);
process.exit(failed ? 2 : missed ? 1 : 0);
