// The retain arena: every copy reads back as it was written until it is released, whatever mix of
// sizes and releases, while slabs are reused.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RetainArena, type ArenaCopy } from "./retain-arena.js";

describe("RetainArena", () => {
  it("keeps each copy intact until its release, across slab reuse", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.oneof(
            fc.record({
              copy: fc.oneof(
                fc.integer({ min: 200_000, max: 1_048_576 }),
                fc.integer({ min: 0, max: 1_500_000 }),
              ),
            }),
            fc.record({ release: fc.integer({ min: 1, max: 3 }) }),
          ),
          { maxLength: 120 },
        ),
        (ops) => {
          const arena = new RetainArena();
          const live: { copy: ArenaCopy; fill: number; length: number }[] = [];
          let n = 0;
          for (const op of ops) {
            if ("copy" in op) {
              const fill = ++n % 251;
              live.push({ copy: arena.copy(Buffer.alloc(op.copy, fill)), fill, length: op.copy });
            } else {
              for (const r of live.splice(0, op.release)) arena.release(r.copy);
            }
            for (const r of live) {
              const back = RetainArena.read(r.copy);
              expect(back.length).toBe(r.length);
              if (r.length > 0) {
                expect(back[0]).toBe(r.fill);
                expect(back[r.length - 1]).toBe(r.fill);
                expect(back.every((b) => b === r.fill)).toBe(true);
              }
            }
          }
        },
      ),
      // Each run copies and rereads up to 120 buffers of up to 1.5 MB: 20 keep the unit tests quick.
      { numRuns: 20 },
    );
  });

  it("does not reuse a slab while one copy in it is still held", () => {
    const arena = new RetainArena();
    const size = 1024 * 1024 - 1;
    const first = [1, 2, 3, 4].map((fill) => ({ fill, copy: arena.copy(Buffer.alloc(size, fill)) }));
    const next = [5, 6, 7, 8, 9, 10].map((fill) => ({ fill, copy: arena.copy(Buffer.alloc(size, fill)) }));
    // Three of the first slab's four copies go; the fourth stays while later slabs fill and free up.
    for (const c of first.slice(0, 3)) arena.release(c.copy);
    for (const c of next) arena.release(c.copy);
    const more = [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24].map((fill) =>
      arena.copy(Buffer.alloc(size, fill)),
    );
    expect(RetainArena.read(first[3]!.copy).every((b) => b === 4)).toBe(true);
    expect(more.length).toBe(14);
  });
});
