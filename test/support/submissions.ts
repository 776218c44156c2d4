// Submissions a fault test makes and keeps: each with the id the hub gave it, or the error it
// answered with, so that what ran can be checked against what was accepted and what was refused.
import type { SwitchboardClient } from "../../src/client/index.js";

export interface Submission {
  n: number;
  id?: string;
  err?: { code: string; message: string };
}

/** Submits `request` through `client`, recording the answer in `sub`. */
export async function submitRecorded(
  client: SwitchboardClient,
  request: Parameters<SwitchboardClient["submit"]>[0],
  sub: Submission,
): Promise<Submission> {
  try {
    sub.id = await client.submit(request);
  } catch (e) {
    const err = e as { codeName?: string; message?: string };
    sub.err = { code: err.codeName ?? "?", message: err.message ?? String(e) };
  }
  return sub;
}
