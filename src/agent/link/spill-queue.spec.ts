// The spill queue: order across memory and file, removal from both, the file reused once drained.
import { existsSync, mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { SpillQueue } from "./spill-queue.js";

function queue(memoryBytes: number): { q: SpillQueue<string>; path: string } {
  const path = join(mkdtempSync(join(tmpdir(), "sb-spill-")), "q.spill");
  const q = new SpillQueue<string>({
    path,
    memoryBytes,
    codec: {
      encode: (s) => Buffer.from(s, "utf8"),
      decode: (b) => Buffer.from(b).toString("utf8"),
      size: (s) => s.length,
    },
  });
  return { q, path };
}

describe("SpillQueue", () => {
  it("keeps first-in first-out order whatever mix of pushes, shifts and prepends", () => {
    fc.assert(
      fc.property(
        fc.array(fc.oneof(fc.constant<"shift">("shift"), fc.string({ maxLength: 40 })), { maxLength: 300 }),
        fc.integer({ min: 0, max: 200 }),
        (ops, cap) => {
          const { q } = queue(cap);
          const model: string[] = [];
          for (const op of ops) {
            if (op === "shift") expect(q.shift()).toBe(model.shift());
            else {
              q.push(op);
              model.push(op);
            }
            expect(q.length).toBe(model.length);
          }
          expect([...q]).toEqual(model);
          expect(q.clear()).toEqual(model);
          q.close();
        },
      ),
      { numRuns: 200 },
    );
  });

  it("spills past its memory cap, removes from memory and file alike, and starts the file over", () => {
    const { q, path } = queue(10);
    for (const s of ["aaaa", "bbbb", "cccc", "dddd", "eeee"]) q.push(s);
    expect(q.memoryBytes).toBe(8);
    expect(q.fileBytes).toBe(3 * (4 + 4));
    expect(q.removeWhere((s) => s === "bbbb" || s === "dddd")).toEqual(["bbbb", "dddd"]);
    q.prepend(["zz"]);
    expect([...q]).toEqual(["zz", "aaaa", "cccc", "eeee"]);
    expect(q.clear()).toEqual(["zz", "aaaa", "cccc", "eeee"]);
    expect(statSync(path).size).toBe(0);
    q.push("x");
    expect(q.fileBytes).toBe(0); // under the cap again: memory
    q.close();
    expect(existsSync(path)).toBe(false);
  });
});
