import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { OutputStreamName, StoredOutput } from "./interfaces.js";
import { OutputBuffer, splitCap, streamIndex, STREAM_NAMES, type PersistedOutput } from "./output-buffer.js";
import { openSqliteStore } from "./sqlite/store.js";
import { newTask, tempDir, type TempDir } from "./testing/fixtures.js";

interface Chunk {
  stream: OutputStreamName;
  data: Uint8Array;
}

const chunkArb = (maxLength: number): fc.Arbitrary<Chunk> =>
  fc.record({
    stream: fc.constantFrom<OutputStreamName>("stdout", "stderr"),
    data: fc.uint8Array({ maxLength }),
  });

/** What the cap must keep, computed naively from the whole output. */
function expected(chunks: Chunk[], cap: number) {
  const { headCap, tailCap } = splitCap(cap);
  const whole = Buffer.concat(chunks.map((c) => c.data));
  const tailStart = Math.max(headCap, whole.length - tailCap);
  const perStream = (name: OutputStreamName) => {
    const head: Uint8Array[] = [];
    const tail: Uint8Array[] = [];
    let total = 0;
    let at = 0;
    for (const c of chunks) {
      const end = at + c.data.length;
      if (c.stream === name) {
        total += c.data.length;
        head.push(c.data.subarray(0, Math.max(0, Math.min(end, headCap) - at)));
        tail.push(c.data.subarray(Math.max(0, tailStart - at)));
      }
      at = end;
    }
    const h = Buffer.concat(head);
    const t = Buffer.concat(tail);
    return { head: h, tail: t, droppedBytes: total - h.length - t.length, totalBytes: total };
  };
  return {
    head: whole.subarray(0, Math.min(headCap, whole.length)),
    tail: whole.subarray(Math.min(tailStart, whole.length)),
    dropped: Math.max(0, tailStart - headCap),
    total: whole.length,
    stdout: perStream("stdout"),
    stderr: perStream("stderr"),
  };
}

/** The properties any kept output must have against the naive model. */
function checkStored(out: StoredOutput, chunks: Chunk[], cap: number): void {
  const want = expected(chunks, cap);
  const gapAt = out.chunks.findIndex((c) => c.gapBefore > 0);
  const kept = Buffer.concat(out.chunks.map((c) => c.data));
  if (want.dropped === 0) {
    expect(gapAt).toBe(-1);
    expect(kept).toEqual(Buffer.concat(chunks.map((c) => c.data))); // under the cap: all of it
  } else {
    expect(out.chunks.reduce((n, c) => n + c.gapBefore, 0)).toBe(want.dropped);
    expect(Buffer.concat(out.chunks.slice(0, gapAt).map((c) => c.data))).toEqual(want.head);
    expect(Buffer.concat(out.chunks.slice(gapAt).map((c) => c.data))).toEqual(want.tail);
  }
  for (const name of STREAM_NAMES) {
    const got = out[name];
    expect(Buffer.from(got.head)).toEqual(want[name].head);
    expect(Buffer.from(got.tail)).toEqual(want[name].tail);
    expect(got.droppedBytes).toBe(want[name].droppedBytes);
    expect(got.totalBytes).toBe(want[name].totalBytes);
    expect(got.droppedBytes + got.head.length + got.tail.length).toBe(got.totalBytes);
  }
}

/** What a buffer would have written: its head rows and current tail, as the store reads them back. */
function persist(buffer: OutputBuffer): PersistedOutput {
  const head = buffer.pendingHeadRows();
  const tail = buffer.tailRows(buffer.headRows + head.length);
  return {
    totals: [...buffer.totals],
    rows: [
      ...head.map((r) => ({ ...r, part: "head" as const, data: Uint8Array.from(r.data) })),
      ...tail.map((r) => ({ ...r, part: "tail" as const, data: Uint8Array.from(r.data) })),
    ],
  };
}

function asStored(p: PersistedOutput, gap: number): StoredOutput {
  const stream = (s: 0 | 1) => {
    const head = Buffer.concat(p.rows.filter((r) => r.stream === s && r.part === "head").map((r) => r.data));
    const tail = Buffer.concat(p.rows.filter((r) => r.stream === s && r.part === "tail").map((r) => r.data));
    return { head, tail, droppedBytes: p.totals[s] - head.length - tail.length, totalBytes: p.totals[s] };
  };
  const firstTail = p.rows.findIndex((r) => r.part === "tail");
  return {
    stdout: stream(0),
    stderr: stream(1),
    chunks: p.rows.map((r, i) => ({
      stream: STREAM_NAMES[r.stream],
      data: r.data,
      gapBefore: i === firstTail ? gap : 0,
    })),
  };
}

describe("OutputBuffer", () => {
  it("keeps the first and last cap/2 bytes and counts the rest", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 80 }),
        fc.array(chunkArb(50), { maxLength: 40 }),
        (cap, chunks) => {
          const buffer = new OutputBuffer("t", cap);
          for (const c of chunks) buffer.append(streamIndex(c.stream), c.data);
          expect(buffer.tail.size).toBeLessThanOrEqual(splitCap(cap).tailCap);
          checkStored(asStored(persist(buffer), buffer.dropped), chunks, cap);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("carries on exactly from what it persisted", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 2, max: 80 }),
        fc.array(chunkArb(50), { maxLength: 40 }),
        fc.nat(),
        (cap, chunks, cut) => {
          const at = chunks.length === 0 ? 0 : cut % (chunks.length + 1);
          const first = new OutputBuffer("t", cap);
          for (const c of chunks.slice(0, at)) first.append(streamIndex(c.stream), c.data);
          const second = new OutputBuffer("t", cap, persist(first));
          for (const c of chunks.slice(at)) second.append(streamIndex(c.stream), c.data);
          // The second buffer's head rows are only the ones it added; rebuild the whole set.
          const before = persist(first);
          const after = persist(second);
          const rows = [...before.rows.filter((r) => r.part === "head"), ...after.rows];
          checkStored(asStored({ totals: after.totals, rows }, second.dropped), chunks, cap);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("holds a huge stream in memory bounded by the cap", () => {
    const buffer = new OutputBuffer("t", 1024);
    const chunk = new Uint8Array(64 * 1024).fill(7);
    for (let i = 0; i < 256; i++) buffer.append(i % 2 ? 1 : 0, chunk); // 16 MiB
    expect(buffer.tail.size).toBe(512);
    expect(buffer.headSize).toBe(512);
    expect(buffer.dropped).toBe(16 * 1024 * 1024 - 1024);
    expect(buffer.tail.runs()).toHaveLength(1);
  });
});

describe("output cap through the store", () => {
  let dir: TempDir;
  beforeAll(() => {
    dir = tempDir();
  });
  afterAll(() => dir.remove());

  it("stores head, tail and counts as the model says, across flushes", async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 64 }),
        fc.array(fc.oneof(chunkArb(40), fc.constant("flush" as const)), { maxLength: 30 }),
        async (cap, steps) => {
          const store = openSqliteStore(dir.file(`cap-${n++}.db`), { outputCapBytes: cap });
          try {
            const task = newTask();
            await store.insertTask(task);
            const chunks: Chunk[] = [];
            for (const step of steps) {
              if (step === "flush") await store.flush();
              else {
                chunks.push(step);
                store.appendOutput(task.id, step.stream, step.data);
              }
            }
            checkStored(await store.getOutput(task.id), chunks, cap);
            const want = expected(chunks, cap);
            expect(await store.getTask(task.id)).toMatchObject({
              stdoutBytes: want.stdout.totalBytes,
              stderrBytes: want.stderr.totalBytes,
            });
          } finally {
            await store.close();
          }
        },
      ),
      // Each run opens a database on disk: 25 keep the unit tests under a minute; the in-memory
      // properties above run the same model hundreds of times.
      { numRuns: 25 },
    );
  });
});
