// The output gate's window from the hub: increments, or a total that makes good a grant a broken link lost.
import { describe, expect, it } from "vitest";
import { OutputStream } from "../gen/switchboard/v1/task.js";
import { OutputGate } from "./output-gate.js";

function gate(window: number): { g: OutputGate; sent: () => number } {
  let sent = 0;
  const room = { hasRoom: () => true, onceRoom: (cb: () => void) => cb() };
  const g = new OutputGate(window, room, (_stream, data) => (sent += data.length));
  return { g, sent: () => sent };
}

describe("OutputGate window", () => {
  it("sends within increments, and within a total minus what it sent", () => {
    const { g, sent } = gate(10);
    g.write(OutputStream.OUTPUT_STREAM_STDOUT, Buffer.alloc(25));
    expect(sent()).toBe(10);
    g.grant(5);
    expect(sent()).toBe(15);
    // A grant of 5 was lost with the link; the next says 30 in all: the rest fits now.
    g.grant(0, 30);
    expect(sent()).toBe(25);
    g.write(OutputStream.OUTPUT_STREAM_STDOUT, Buffer.alloc(10));
    expect(sent()).toBe(30);
    g.grant(0, 30); // the same total again gives nothing more
    expect(sent()).toBe(30);
  });
});
