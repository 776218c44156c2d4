// `switchboard ping`: echo tasks to an agent or pool, one at a time, with each round trip, like ping(8).
import type { Command } from "commander";
import { echo, type SwitchboardClient, type TargetInput } from "../../client/index.js";
import { TaskState } from "../../gen/switchboard/v1/task.js";
import { CliError } from "../cli-error.js";
import {
  clientCommand,
  describeTarget,
  targetAction,
  withClient,
  type TargetFlags,
} from "../client-command.js";
import { durationFlag, intFlag } from "../flags.js";
import { cancelOnInterrupt } from "../signals.js";

interface PingFlags extends TargetFlags {
  count?: string;
  interval?: string;
  size?: string;
  timeout?: string;
}

export function registerPing(program: Command): void {
  const cmd = clientCommand(program, "ping", "send echo tasks and show each round trip through hub and agent")
    .option("-c, --count <n>", "how many (default 5; 0 = until Ctrl-C)")
    .option("-i, --interval <duration>", "pause between pings (default 1s)")
    .option("-s, --size <bytes>", "payload size (default 56)")
    .option("--timeout <duration>", "per ping (default 5s)");
  targetAction(cmd, async (target, flags: PingFlags, command: Command) => {
    const count = intFlag("--count", flags.count ?? "5", 0);
    const size = intFlag("--size", flags.size ?? "56", 0);
    const intervalMs = durationFlag("--interval", flags.interval ?? "1s");
    const timeoutMs = durationFlag("--timeout", flags.timeout ?? "5s");
    const failed = await withClient(command, (client) =>
      pingLoop(client, target, { count, size, intervalMs, timeoutMs }),
    );
    if (failed) process.exitCode = 1;
  });
}

async function pingLoop(
  client: SwitchboardClient,
  target: TargetInput,
  o: { count: number; size: number; intervalMs: number; timeoutMs: number },
): Promise<boolean> {
  const payload = Buffer.alloc(o.size, 0x61);
  const rtts: number[] = [];
  let sent = 0;
  // Ctrl-C ends the run after the echo in flight and prints the statistics; more Ctrl-Cs change nothing.
  const interrupt = cancelOnInterrupt({ signals: ["SIGINT"], again: "ignore" });
  const stopped = interrupt.signal;
  process.stdout.write(`PING ${describeTarget(target)}: ${o.size}-byte echo tasks\n`);
  try {
    while (!stopped.aborted && (o.count === 0 || sent < o.count)) {
      sent++;
      const t0 = process.hrtime.bigint();
      try {
        const r = await client.execute({ ...echo(payload), target, timeoutMs: o.timeoutMs });
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        const info = r.info;
        if (info?.state !== TaskState.TASK_STATE_SUCCEEDED || !r.result.equals(payload)) {
          process.stdout.write(
            `seq=${sent} failed: ${info?.reason || info?.error?.message || "wrong payload"}\n`,
          );
        } else {
          rtts.push(ms);
          process.stdout.write(
            `${r.result.length} bytes from ${info.agentId}: seq=${sent} time=${ms.toFixed(2)} ms\n`,
          );
        }
      } catch (e) {
        if (sent === 1 && rtts.length === 0 && o.count !== 1) throw e;
        process.stdout.write(`seq=${sent} error: ${(e as Error).message}\n`);
      }
      if (!stopped.aborted && (o.count === 0 || sent < o.count))
        await new Promise((r) => setTimeout(r, o.intervalMs));
    }
  } finally {
    interrupt.dispose();
  }
  const lost = sent - rtts.length;
  process.stdout.write(`\n--- ${describeTarget(target)} ping statistics ---\n`);
  process.stdout.write(
    `${sent} sent, ${rtts.length} answered, ${sent ? Math.round((lost / sent) * 100) : 0}% lost\n`,
  );
  if (rtts.length > 0) {
    const sorted = [...rtts].sort((a, b) => a - b);
    const avg = rtts.reduce((a, b) => a + b, 0) / rtts.length;
    const p = (q: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
    process.stdout.write(
      `rtt min/avg/p50/p99/max = ${[sorted[0]!, avg, p(0.5), p(0.99), sorted[sorted.length - 1]!].map((x) => x.toFixed(2)).join("/")} ms\n`,
    );
  }
  if (rtts.length === 0) throw new CliError(`no ping was answered by ${describeTarget(target)}`);
  return lost > 0;
}
