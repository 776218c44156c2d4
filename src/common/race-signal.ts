// Racing a promise against an AbortSignal: whichever comes first settles the result, and the loser is
// dropped (a late rejection of the promise is caught, never unhandled).

/**
 * `p`'s outcome, or `aborted()`'s once `signal` fires first: its value, or its throw as a rejection.
 * Without a signal, `p` itself.
 */
export function raceSignal<T, A>(
  p: Promise<T>,
  signal: AbortSignal | undefined,
  aborted: () => A,
): Promise<T | A> {
  if (!signal) return p;
  if (signal.aborted) {
    p.catch(() => undefined);
    return new Promise<A>((resolve) => resolve(aborted()));
  }
  return new Promise<T | A>((resolve, reject) => {
    const onAbort = (): void => {
      p.catch(() => undefined);
      try {
        resolve(aborted());
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    };
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
