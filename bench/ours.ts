// The operations the benchmarks time on our side, through the public SDK only.
import { echo, shell, type SwitchboardClient } from "../src/client/index.js";
import { POOL } from "./cluster.js";

const target = { pool: POOL };

/** One echo task over the client's shared, pipelined Session stream. */
export async function echoViaSession(client: SwitchboardClient, payload: Buffer): Promise<void> {
  const res = await client.execute({ ...echo(payload), target });
  if (res.result.length !== payload.length) throw new Error("echo: result of the wrong size");
}

/** One echo task through the unary Execute RPC. */
export async function echoViaUnary(client: SwitchboardClient, payload: Buffer): Promise<void> {
  const res = await client.executeUnary({ ...echo(payload), target });
  if (res.result.length !== payload.length) throw new Error("echo: result of the wrong size");
}

export interface ShellOutcome {
  stdoutBytes: number;
  outputEvents: number;
  /** Terminal state name or number as the event carried it; undefined if the loop was cut short. */
  finishedState?: number;
  exitCode?: number;
  cutShort: boolean;
}

/**
 * Runs a shell script on the pool and streams its events, counting and discarding output bytes.
 * Stops reading (which cancels the task) once `deadline` (performance.now() ms) has passed.
 */
export async function runShellDiscarding(
  client: SwitchboardClient,
  script: string,
  deadline: number,
): Promise<ShellOutcome> {
  let stdoutBytes = 0;
  let outputEvents = 0;
  for await (const ev of client.run({ ...shell({ script }), target })) {
    const e = ev.event;
    if (e?.$case === "output") {
      stdoutBytes += e.value.data.length;
      outputEvents++;
      if ((outputEvents & 63) === 0 && performance.now() > deadline) {
        return { stdoutBytes, outputEvents, cutShort: true };
      }
    } else if (e?.$case === "finished") {
      return {
        stdoutBytes,
        outputEvents,
        finishedState: e.value.state,
        exitCode: e.value.exitCode,
        cutShort: false,
      };
    }
  }
  return { stdoutBytes, outputEvents, cutShort: false };
}
