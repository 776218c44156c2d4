// Reconnect backoff: full jitter under a doubling ceiling, capped, reset after success.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Backoff } from "./backoff.js";

describe("Backoff", () => {
  it("doubles its ceiling from 100 ms to the 30 s cap over a long outage", () => {
    let t = 0;
    const b = new Backoff({ random: () => 0.999999, now: () => (t += 60_000) });
    const ceilings: number[] = [];
    for (let i = 0; i < 12; i++) {
      ceilings.push(b.ceiling());
      b.next();
    }
    expect(ceilings).toEqual([100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000, 30000]);
  });

  it("draws every delay uniformly in [0, ceiling) (full jitter), never above the cap", () => {
    fc.assert(
      fc.property(
        fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { maxLength: 80 }),
        (draws) => {
          let i = 0;
          let t = 0;
          const b = new Backoff({
            random: () => draws[i++ % Math.max(1, draws.length)] ?? 0,
            now: () => (t += 10_000),
          });
          for (let n = 0; n < draws.length; n++) {
            const cap = b.ceiling();
            const d = b.next();
            expect(d).toBeGreaterThanOrEqual(0);
            expect(d).toBeLessThan(cap);
            expect(d).toBeLessThanOrEqual(30_000);
          }
        },
      ),
    );
    // The real random source spreads delays over the whole range, down to zero.
    let clock = 0;
    const b = new Backoff({ now: () => (clock += 100_000) });
    for (let n = 0; n < 20; n++) b.next();
    const delays = Array.from({ length: 2000 }, () => b.next());
    expect(Math.min(...delays)).toBeLessThan(3000);
    expect(Math.max(...delays)).toBeGreaterThan(27_000);
  });

  it("starts small again after reset", () => {
    let t = 0;
    const b = new Backoff({ random: () => 0.5, now: () => (t += 60_000) });
    for (let n = 0; n < 10; n++) b.next();
    expect(b.ceiling()).toBe(30_000);
    b.reset();
    expect(b.ceiling()).toBe(100);
    expect(b.next()).toBe(50);
  });

  it("holds the ceiling to half the outage (at least 1 s) while failures come fast", () => {
    let t = 0;
    const b = new Backoff({ random: () => 0.999999, now: () => t });
    const ceilings: number[] = [];
    for (let i = 0; i < 12; i++) {
      b.next();
      t += 250; // a hub that refuses at once: failures every quarter second
      ceilings.push(b.ceiling());
    }
    expect(Math.max(...ceilings)).toBeLessThanOrEqual(1_500);
    t += 120_000; // a long outage lets it grow to the cap
    expect(b.ceiling()).toBe(30_000);
  });

  it("rejects nonsense bounds", () => {
    expect(() => new Backoff({ baseMs: 0 })).toThrow(RangeError);
    expect(() => new Backoff({ baseMs: 10, maxMs: 5 })).toThrow(RangeError);
  });
});
