// The demultiplexer gives every payload byte to its own stream, in order, however the socket cut the frames.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { LogDemuxer, type ContainerStream } from "./log-demux.js";

function frame(type: number, payload: Buffer): Buffer {
  const header = Buffer.alloc(8);
  header[0] = type;
  header.writeUInt32BE(payload.length, 4);
  return Buffer.concat([header, payload]);
}

/** Cuts a buffer at the given offsets (taken modulo its length). */
function cut(all: Buffer, offsets: number[]): Buffer[] {
  const points = [...new Set(offsets.map((o) => (all.length === 0 ? 0 : o % (all.length + 1))))].sort(
    (a, b) => a - b,
  );
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, all.length]) {
    if (p > prev) out.push(all.subarray(prev, p));
    prev = Math.max(prev, p);
  }
  return out;
}

describe("LogDemuxer", () => {
  it("keeps each stream's bytes whole and in order for any framing and any cuts", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.constantFrom(1, 2), fc.uint8Array({ maxLength: 200 }))),
        fc.array(fc.nat()),
        (frames, offsets) => {
          const wire = Buffer.concat(frames.map(([t, p]) => frame(t, Buffer.from(p))));
          const got: Record<ContainerStream, Buffer[]> = { stdout: [], stderr: [] };
          const d = new LogDemuxer((s, data) => {
            got[s].push(Buffer.from(data));
            return true;
          });
          for (const piece of cut(wire, offsets)) d.push(piece);
          const want = (t: number): Buffer =>
            Buffer.concat(frames.filter(([x]) => x === t).map(([, p]) => p));
          expect(Buffer.concat(got.stdout).equals(want(1))).toBe(true);
          expect(Buffer.concat(got.stderr).equals(want(2))).toBe(true);
          expect(d.midFrame).toBe(false);
        },
      ),
    );
  });

  it("passes on a pause request and notices a stream cut inside a frame", () => {
    const d = new LogDemuxer((s) => s === "stdout");
    expect(d.push(frame(1, Buffer.from("out\n")))).toBe(true);
    expect(d.push(frame(2, Buffer.from("err\n")))).toBe(false);
    d.push(frame(1, Buffer.from("partial")).subarray(0, 10));
    expect(d.midFrame).toBe(true);
  });

  it("puts the engine's own messages (type 3) with stderr", () => {
    const seen: string[] = [];
    const d = new LogDemuxer((s, data) => seen.push(`${s}:${data.toString()}`) > 0);
    d.push(frame(3, Buffer.from("engine says no")));
    expect(seen).toEqual(["stderr:engine says no"]);
  });

  it("refuses a stream that is not multiplexed (a TTY container's raw output)", () => {
    const d = new LogDemuxer(() => true);
    expect(() => d.push(Buffer.from("hello world\n"))).toThrow(/not a multiplexed log stream/);
  });
});
