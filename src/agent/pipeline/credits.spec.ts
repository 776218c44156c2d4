// Credits across concurrency changes. Credits already granted cannot be taken back (totals only
// grow), so a lowered concurrency shows in credits once the hub has spent what it held; the
// pipeline meanwhile runs no more than the new number at once. Whatever happens in between, the
// ledger settles at exactly the final concurrency.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { CreditLedger } from "./credits.js";

type Op = { kind: "assign" } | { kind: "finish" } | { kind: "resize"; to: number };

const op: fc.Arbitrary<Op> = fc.oneof(
  fc.constant({ kind: "assign" } as const),
  fc.constant({ kind: "finish" } as const),
  fc.integer({ min: 1, max: 8 }).map((to) => ({ kind: "resize", to }) as const),
);

describe("CreditLedger", () => {
  it("settles at the final concurrency once every task has ended (property)", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.array(op, { maxLength: 200 }), (start, ops) => {
        const l = new CreditLedger();
        let size = start;
        let running = 0;
        l.begin(size);
        l.grantInitial();
        for (const o of ops) {
          if (o.kind === "assign") {
            if (l.grantedTotal - l.assignedTotal > 0) {
              expect(l.tryAssign()).toBe(true);
              running++;
            } else {
              expect(l.tryAssign()).toBe(false);
            }
          } else if (o.kind === "finish") {
            if (running === 0) continue;
            running--;
            l.release();
          } else {
            l.resize(o.to - size);
            size = o.to;
          }
          l.grantOwed();
        }
        while (running > 0) {
          running--;
          l.release();
          l.grantOwed();
        }
        // The hub spends what it held beyond the new size; those tasks end too.
        while (l.grantedTotal - l.assignedTotal > size) {
          expect(l.tryAssign()).toBe(true);
          l.release();
          l.grantOwed();
        }
        expect(l.grantedTotal - l.assignedTotal).toBe(size);
      }),
    );
  });
});
