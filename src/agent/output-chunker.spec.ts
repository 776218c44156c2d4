// The chunker never loses, reorders or oversizes output, and cuts at newlines when it can.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { OutputChunker } from "./output-chunker.js";
import { waitFor } from "../common/wait-for.js";

const NL = 0x0a;

describe("OutputChunker", () => {
  it("keeps every byte in order, caps chunks, and cuts at newlines when it can", () => {
    fc.assert(
      fc.property(
        fc.array(
          fc
            .uint8Array({ minLength: 0, maxLength: 300 })
            .map((a) => Buffer.from(a.map((b) => (b % 7 === 0 ? NL : b)))),
        ),
        fc.integer({ min: 1, max: 64 }),
        (reads, max) => {
          const chunks: Buffer[] = [];
          const c = new OutputChunker({ maxChunkBytes: max, idleFlushMs: 0 }, (b) => {
            chunks.push(Buffer.from(b));
            return true;
          });
          for (const r of reads) c.push(r);
          const beforeEnd = chunks.length;
          c.end();
          expect(Buffer.concat(chunks).equals(Buffer.concat(reads))).toBe(true);
          for (const [i, chunk] of chunks.entries()) {
            expect(chunk.length).toBeGreaterThan(0);
            expect(chunk.length).toBeLessThanOrEqual(max);
            // Before the end, a chunk ends at a newline unless the cap forced the cut.
            if (i < beforeEnd && chunk.length < max) expect(chunk[chunk.length - 1]).toBe(NL);
          }
        },
      ),
    );
  });

  it("coalesces the lines of one read into one chunk and keeps the partial line", () => {
    const chunks: string[] = [];
    const c = new OutputChunker(
      { maxChunkBytes: 1024, idleFlushMs: 0 },
      (b) => chunks.push(b.toString()) > 0,
    );
    c.push(Buffer.from("a\nb\nc\npart"));
    expect(chunks).toEqual(["a\nb\nc\n"]);
    c.push(Buffer.from("ial\nnext"));
    expect(chunks).toEqual(["a\nb\nc\n", "partial\n"]);
    c.end();
    expect(chunks).toEqual(["a\nb\nc\n", "partial\n", "next"]);
  });

  it("sends an idle partial line after a short delay", async () => {
    const chunks: string[] = [];
    const c = new OutputChunker(
      { maxChunkBytes: 1024, idleFlushMs: 5 },
      (b) => chunks.push(b.toString()) > 0,
    );
    c.push(Buffer.from("prompt> "));
    expect(chunks).toEqual([]);
    await waitFor(() => chunks.length > 0, { timeout: 2000, message: "the idle flush" });
    expect(chunks).toEqual(["prompt> "]);
    c.dispose();
  });

  it("passes the receiver's pause request on", () => {
    const c = new OutputChunker({ maxChunkBytes: 1024, idleFlushMs: 0 }, () => false);
    expect(c.push(Buffer.from("no newline yet"))).toBe(true);
    expect(c.push(Buffer.from("\n"))).toBe(false);
  });
});
