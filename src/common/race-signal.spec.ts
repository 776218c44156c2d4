import { describe, expect, it } from "vitest";
import { raceSignal } from "./race-signal.js";

describe("raceSignal", () => {
  it("gives the promise's value when it comes first", async () => {
    const ac = new AbortController();
    await expect(raceSignal(Promise.resolve(1), ac.signal, () => "aborted")).resolves.toBe(1);
  });

  it("gives the promise's rejection when it comes first", async () => {
    const ac = new AbortController();
    await expect(raceSignal(Promise.reject(new Error("no")), ac.signal, () => 0)).rejects.toThrow("no");
  });

  it("gives what aborted() returns or throws once the signal fires first, and drops the promise", async () => {
    const never = new Promise<number>(() => undefined);
    const ac = new AbortController();
    const r = raceSignal(never, ac.signal, () => undefined);
    ac.abort();
    await expect(r).resolves.toBeUndefined();
    const late = Promise.reject(new Error("late"));
    const ac2 = new AbortController();
    ac2.abort();
    await expect(
      raceSignal(late, ac2.signal, () => {
        throw new Error("cancelled");
      }),
    ).rejects.toThrow("cancelled");
  });

  it("is the promise itself without a signal", () => {
    const p = Promise.resolve(3);
    expect(raceSignal(p, undefined, () => 0)).toBe(p);
  });
});
