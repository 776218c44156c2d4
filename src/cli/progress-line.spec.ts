import { describe, expect, it } from "vitest";
import { formatBytes, formatCount, ProgressLine, type ProgressStream } from "./progress-line.js";

/** A terminal (or a pipe) that keeps what is written to it, and a clock the test moves. */
function setup(
  isTTY: boolean,
  enabled = true,
): { line: ProgressLine; written: string[]; at: (ms: number) => void } {
  const written: string[] = [];
  const stream: ProgressStream = {
    isTTY,
    write(text: string) {
      written.push(text);
      return true;
    },
  };
  let now = 0;
  const line = new ProgressLine(stream, { enabled, now: () => now });
  return { line, written, at: (ms) => (now = ms) };
}

const MIB = 1024 * 1024;

describe("ProgressLine", () => {
  it("shows nothing before the transfer has run one second", () => {
    const { line, written, at } = setup(true);
    at(0);
    line.update(100, 1000);
    at(500);
    line.update(200, 2000);
    at(999);
    line.update(300, 3000);
    expect(written).toEqual([]);
    line.done();
    expect(written).toEqual([]);
  });

  it("draws in place after one second: counts, sizes and rates", () => {
    const { line, written, at } = setup(true);
    at(10_000);
    line.update(0, 0);
    at(11_000);
    line.update(1_234_567, 512.3125 * MIB);
    expect(written).toEqual(["\r1,234,567 rows  512.3 MiB  512.3 MiB/s  1,234,567 rows/s\x1b[K"]);
  });

  it("redraws at most every 250 ms", () => {
    const { line, written, at } = setup(true);
    at(0);
    line.update(0, 0);
    for (let t = 1000; t <= 2000; t += 50) {
      at(t);
      line.update(t, t * 2048);
    }
    // Drawn at 1000, 1250, 1500, 1750 and 2000.
    expect(written.length).toBe(5);
    expect(written[4]).toBe("\r2,000 rows  3.9 MiB  2.0 MiB/s  1,000 rows/s\x1b[K");
  });

  it("done() leaves the final figures on their own line, once", () => {
    const { line, written, at } = setup(true);
    at(0);
    line.update(0, 0);
    at(2000);
    line.update(4000, 4096);
    at(2100);
    line.update(5000, 8192);
    line.done();
    expect(written.slice(1)).toEqual(["\r5,000 rows  8.0 KiB  3.8 KiB/s  2,381 rows/s\x1b[K", "\n"]);
    line.done();
    at(5000);
    line.update(9000, 9000);
    expect(written.length).toBe(3);
  });

  it.each([
    { when: "to a stream that is not a terminal", tty: false, enabled: true },
    { when: "when disabled (--no-progress)", tty: true, enabled: false },
  ])("never writes $when", ({ tty, enabled }) => {
    const { line, written, at } = setup(tty, enabled);
    at(0);
    line.update(1, 1);
    at(5000);
    line.update(1_000_000, 100 * MIB);
    line.done();
    expect(written).toEqual([]);
  });

  it("shows bytes only for a byte transfer, with the total when it is known", () => {
    const written: string[] = [];
    let now = 0;
    const stream: ProgressStream = { isTTY: true, write: (t: string) => written.push(t) > 0 };
    const line = new ProgressLine(stream, { enabled: true, now: () => now, rows: false });
    line.update(0, 0);
    now = 2000;
    line.update(0, 4 * MIB);
    line.setTotal(20 * MIB);
    now = 4000;
    line.update(0, 8 * MIB);
    expect(written).toEqual(["\r4.0 MiB  2.0 MiB/s\x1b[K", "\r8.0 MiB of 20.0 MiB  2.0 MiB/s\x1b[K"]);
  });

  it("formats counts and sizes the same in every locale", () => {
    expect(formatCount(1_234_567)).toBe("1,234,567");
    expect(formatBytes(0)).toBe("0 B");
    expect(formatBytes(1023)).toBe("1023 B");
    expect(formatBytes(1536)).toBe("1.5 KiB");
    expect(formatBytes(3 * 1024 * MIB)).toBe("3.0 GiB");
  });
});
