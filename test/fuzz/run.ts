// `npm run fuzz`: the hub fuzzer at full size (100,000 inputs unless --inputs N).
import { parseArgs } from "node:util";
import { stopAll } from "../support/processes.js";
import { fuzzHub } from "./hub-fuzzer.js";

const { values } = parseArgs({ options: { inputs: { type: "string" }, seed: { type: "string" } } });
const inputs = Number(values.inputs ?? 100_000);
// Ctrl-C or a kill still ends the hub and agents the fuzzer started.
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    void stopAll().finally(() => process.exit(130));
  });
}
try {
  const report = await fuzzHub({
    inputs,
    ...(values.seed ? { seed: Number(values.seed) } : {}),
    log: (l) => process.stderr.write(`[fuzz] ${l}\n`),
  });
  process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  process.stdout.write(
    `fuzz: ${report.inputs} inputs in ${(report.elapsedMs / 1000).toFixed(1)} s; hub up; control checks ${report.controlChecks} passed\n`,
  );
} catch (e) {
  process.stderr.write(`fuzz FAILED: ${(e as Error).message}\n`);
  process.exitCode = 1;
} finally {
  await stopAll();
}
