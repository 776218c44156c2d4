// The outbox: FIFO order with heartbeats ahead, the stream's backpressure, bounded room, and clearing.
import { describe, expect, it } from "vitest";
import type { AgentMessage } from "../gen/switchboard/v1/agent.js";
import { Outbox, type StreamWriter } from "./outbox.js";

const credits = (n: number): AgentMessage => ({ body: { $case: "credits", value: { grantedTotal: n } } });
const beat = (): AgentMessage => ({
  body: {
    $case: "heartbeat",
    value: {
      sentAtMs: 1,
      running: 0,
      inboxDepth: 0,
      outboxDepth: 0,
      outboxCapacity: 0,
      lastCompletedTaskId: "",
      degraded: false,
      degradedReason: "",
      completedTotal: 0,
    },
  },
});
const output = (bytes: number): AgentMessage => ({
  body: {
    $case: "event",
    value: {
      taskId: "t",
      seq: 1,
      event: { $case: "output", value: { stream: 1, data: Buffer.alloc(bytes) } },
    },
  },
});

class Stream implements StreamWriter {
  readonly got: AgentMessage[] = [];
  acceptBeforeFull = Infinity;
  drain: (() => void) | undefined;
  write(msg: AgentMessage): boolean {
    this.got.push(msg);
    return this.got.length < this.acceptBeforeFull;
  }
  onceDrain(cb: () => void): void {
    this.drain = cb;
  }
}

describe("Outbox", () => {
  it("writes in order, heartbeats first, and waits for 'drain' when the stream is full", () => {
    let shrank = 0;
    const o = new Outbox(10, { shrank: () => (shrank += 1) });
    o.push(credits(1));
    o.push(credits(2));
    o.pushUrgent(beat());
    expect(o.depth).toBe(2);
    const s = new Stream();
    s.acceptBeforeFull = 2;
    o.attach(s);
    expect(s.got.map((m) => m.body?.$case)).toEqual(["heartbeat", "credits"]);
    expect(o.depth).toBe(1);
    o.push(credits(3));
    expect(s.got).toHaveLength(2); // blocked until drain
    s.acceptBeforeFull = Infinity;
    s.drain!();
    expect(s.got.map((m) => (m.body?.$case === "credits" ? m.body.value.grantedTotal : 0))).toEqual([
      0, 1, 2, 3,
    ]);
    expect(o.depth).toBe(0);
    expect(shrank).toBeGreaterThan(0);
  });

  it("has room while below its event capacity and its byte bound", () => {
    const o = new Outbox(3, {}, 1000);
    expect(o.hasRoom()).toBe(true);
    o.push(output(600));
    expect(o.hasRoom()).toBe(true);
    o.push(output(600));
    expect(o.hasRoom()).toBe(false); // bytes
    let roomAgain = false;
    o.onceRoom(() => (roomAgain = true));
    const s = new Stream();
    o.attach(s);
    expect(roomAgain).toBe(true);
    expect(o.queuedBytes).toBe(0);
    o.detach();
    o.push(credits(1));
    o.push(credits(2));
    o.push(credits(3));
    expect(o.hasRoom()).toBe(false); // events
  });

  it("ignores a stale drain after a new stream was attached, and clears a lost session's messages", async () => {
    const o = new Outbox(10);
    const old = new Stream();
    old.acceptBeforeFull = 1;
    o.attach(old);
    o.push(credits(1));
    o.push(credits(2));
    expect(o.depth).toBe(1);
    o.detach();
    expect(o.clear()).toBe(1);
    const fresh = new Stream();
    fresh.acceptBeforeFull = 1;
    o.attach(fresh);
    o.push(credits(5));
    o.push(credits(6));
    old.drain!(); // from the dead stream: must not write to the new one while it is full
    expect(fresh.got).toHaveLength(1);
    expect(await o.whenEmpty(20)).toBe(false);
    const empty = o.whenEmpty(5000);
    fresh.acceptBeforeFull = Infinity;
    fresh.drain!();
    expect(await empty).toBe(true);
  });
});
