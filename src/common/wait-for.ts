// Waiting for a condition in tests and benchmarks: poll it against a deadline, never a bare sleep.
// One helper for the whole suite, so that every wait fails the same way: naming what it waited for.

export interface WaitForOptions {
  /** Give up after this long; 15 s unless told. */
  timeout?: number;
  /** Between two polls; 20 ms unless told. */
  interval?: number;
  /** What is awaited, for the error on timeout ("the hub to write hub.json"). */
  message?: string;
}

/** Thrown by a condition to end the wait at once (what it waits for can no longer happen). */
export class WaitAbandoned extends Error {
  override readonly name = "WaitAbandoned";
}

/**
 * Polls `condition` until it returns a value other than `undefined` or `false`, and returns that
 * value. A condition that throws is polled again (the thing awaited may not exist yet), unless it
 * throws a WaitAbandoned, which ends the wait at once; on timeout the error names what was awaited,
 * and the last error thrown, if any.
 */
export async function waitFor<T>(
  condition: () => T | undefined | false | Promise<T | undefined | false>,
  options: WaitForOptions = {},
): Promise<T> {
  const timeout = options.timeout ?? 15_000;
  const interval = options.interval ?? 20;
  const deadline = Date.now() + timeout;
  let lastError: unknown;
  for (;;) {
    try {
      const v = await condition();
      if (v !== undefined && v !== false) return v;
    } catch (e) {
      if (e instanceof WaitAbandoned) throw e;
      lastError = e;
    }
    if (Date.now() > deadline) {
      const why = lastError instanceof Error ? `: ${lastError.message}` : "";
      throw new Error(`timed out after ${timeout} ms waiting for ${options.message ?? "a condition"}${why}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}
