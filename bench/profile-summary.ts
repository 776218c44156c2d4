// Summarizes V8 .cpuprofile files (from `node --cpu-prof`, e.g. `run.js --profile DIR`): the
// functions with the most self time, and self time per source file or package.
//
//   node dist/bench/profile-summary.js FILE.cpuprofile [--top 25]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

const { values, positionals } = parseArgs({
  options: { top: { type: "string", default: "25" } },
  allowPositionals: true,
});
const top = Number(values.top);

/** node_modules/<pkg> or node:internal/<area> or the path under the repository. */
function bucket(url: string): string {
  if (url === "") return "(native/vm)";
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm?.[1] !== undefined) return nm[1];
  if (url.startsWith("node:")) return url.split("/").slice(0, 2).join("/");
  const i = url.indexOf("/dist/");
  return i >= 0 ? url.slice(i + 1) : url;
}

for (const file of positionals) {
  const p = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const samples = p.samples ?? [];
  const deltas = p.timeDeltas ?? [];
  for (let i = 0; i < samples.length; i++) {
    const id = samples[i];
    // A sample's time is the gap to the next one.
    const dt = deltas[i + 1] ?? 0;
    if (id !== undefined) selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  }
  // Inclusive time of the repository's own functions (dist/src, dist/bench): every sample counts
  // once for each distinct such function on its stack.
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const ownInclusive = new Map<string, number>();
  for (let i = 0; i < samples.length; i++) {
    const dt = (deltas[i + 1] ?? 0) / 1000;
    const seen = new Set<string>();
    for (let id = samples[i]; id !== undefined; id = parent.get(id)) {
      const f = byId.get(id)?.callFrame;
      if (f === undefined || !/\/dist\/(src|bench)\//.test(f.url)) continue;
      const key = `${f.functionName || "(anonymous)"} ${bucket(f.url)}:${f.lineNumber + 1}`;
      if (seen.has(key)) continue;
      seen.add(key);
      ownInclusive.set(key, (ownInclusive.get(key) ?? 0) + dt);
    }
  }
  const total = (p.endTime - p.startTime) / 1000;
  const fnSelf = new Map<string, number>();
  const fileSelf = new Map<string, number>();
  let idleMs = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (n === undefined) continue;
    const f = n.callFrame;
    if (f.functionName === "(idle)") {
      idleMs += us / 1000;
      continue;
    }
    const where = f.url === "" ? "" : ` ${bucket(f.url)}:${f.lineNumber + 1}`;
    const key = `${f.functionName || "(anonymous)"}${where}`;
    fnSelf.set(key, (fnSelf.get(key) ?? 0) + us / 1000);
    const b = f.url === "" ? `(${f.functionName})` : bucket(f.url);
    fileSelf.set(b, (fileSelf.get(b) ?? 0) + us / 1000);
  }
  const busy = total - idleMs;
  const pct = (ms: number): string => `${((ms * 100) / Math.max(1, busy)).toFixed(1).padStart(5)}%`;
  process.stdout.write(
    `\n== ${file}\nwall ${total.toFixed(0)} ms, idle ${idleMs.toFixed(0)} ms, busy ${busy.toFixed(0)} ms ` +
      `(${((busy * 100) / Math.max(1, total)).toFixed(0)}% of one core)\n`,
  );
  process.stdout.write(`-- self time by file/package (share of busy)\n`);
  for (const [k, ms] of [...fileSelf].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${pct(ms)} ${ms.toFixed(0).padStart(7)} ms  ${k}\n`);
  }
  process.stdout.write(`-- self time by function\n`);
  for (const [k, ms] of [...fnSelf].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${pct(ms)} ${ms.toFixed(0).padStart(7)} ms  ${k}\n`);
  }
  process.stdout.write(`-- inclusive time of the repository's own functions\n`);
  for (const [k, ms] of [...ownInclusive].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(`${pct(ms)} ${ms.toFixed(0).padStart(7)} ms  ${k}\n`);
  }
}
