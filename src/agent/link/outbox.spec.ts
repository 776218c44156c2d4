// The outbox: FIFO order with heartbeats ahead, the stream's backpressure, bounded room, and clearing.
import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { AgentMessage } from "../../gen/switchboard/v1/agent.js";
import { Outbox, type StreamWriter } from "./outbox.js";

const credits = (n: number): AgentMessage => ({ body: { $case: "credits", value: { grantedTotal: n } } });
const beat = (): AgentMessage => ({
  body: {
    $case: "heartbeat",
    value: {
      datasources: [],
      nodes: [],
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

const event = (taskId: string, seq: number, bytes = 8): AgentMessage => ({
  body: {
    $case: "event",
    value: {
      taskId,
      seq,
      event: { $case: "output", value: { stream: 1, data: Buffer.alloc(bytes, seq) } },
    },
  },
});
const seqs = (ms: AgentMessage[]): string[] =>
  ms.map((m) => (m.body?.$case === "event" ? `${m.body.value.taskId}:${m.body.value.seq}` : m.body!.$case));

describe("Outbox resume", () => {
  it("re-sends exactly the events the hub did not acknowledge, before what was queued since", () => {
    const o = new Outbox(100);
    const first = new Stream();
    o.attach(first);
    for (let i = 1; i <= 5; i++) o.push(event("a", i));
    o.push(credits(4));
    expect(o.unackedCount).toBe(5); // credits are not kept: a new session grants afresh
    o.ack(2);
    expect(o.unackedCount).toBe(3);
    o.detach();
    o.suspend();
    o.push(event("a", 6));
    o.push(event("b", 1));
    expect(o.taskIdsWithEvents()).toEqual(new Set(["a", "b"]));
    // The hub had received 4 of them when the stream broke (its Ack for 3 and 4 was lost).
    o.resume(4);
    const second = new Stream();
    o.attach(second);
    expect(seqs(second.got)).toEqual(["a:5", "a:6", "b:1"]);
    expect(o.unackedCount).toBe(3);
    o.ack(3);
    expect(o.unackedCount).toBe(0);
  });

  it("drops session-bound messages on suspend and the events of tasks the hub no longer holds", () => {
    const o = new Outbox(100);
    o.push(event("a", 1));
    o.push(credits(1));
    o.pushUrgent(beat());
    o.push(event("b", 1));
    o.suspend();
    expect(o.depth).toBe(2);
    expect(o.dropTasks(new Set(["b"]))).toBe(1);
    o.resume(0);
    const s = new Stream();
    o.attach(s);
    expect(seqs(s.got)).toEqual(["a:1"]);
  });

  it("forgets unacknowledged events when a new session resumes nothing", () => {
    const o = new Outbox(100);
    o.attach(new Stream());
    o.push(event("a", 1));
    expect(o.unackedCount).toBe(1);
    o.forget();
    expect(o.unackedCount).toBe(0);
  });

  it("holds back once too much is unacknowledged, and goes on at the Ack", () => {
    const o = new Outbox(100, {}, 1 << 30, { memoryBytes: 1000 });
    const s = new Stream();
    o.attach(s);
    for (let i = 1; i <= 4; i++) o.push(event("a", i, 400));
    expect(s.got.length).toBe(3); // 1200 bytes out and unacknowledged: the fourth waits
    o.ack(3);
    expect(seqs(s.got)).toEqual(["a:1", "a:2", "a:3", "a:4"]);
  });

  it("lets producers go on while the link is down, spilling to a file past the memory cap", () => {
    const dir = mkdtempSync(join(tmpdir(), "sb-outbox-"));
    const path = join(dir, "spill", "outbox.spill");
    const o = new Outbox(10, {}, 4096, { memoryBytes: 4096, spillMaxBytes: 64 * 1024, spillPath: path });
    o.suspend();
    let pushed = 0;
    while (o.hasRoom()) o.push(event("a", ++pushed, 1000));
    // Far past the attached limits (10 events, 4 KiB): the file took the rest, up to its cap.
    expect(pushed).toBeGreaterThan(60);
    expect(o.spilledBytes).toBeGreaterThanOrEqual(64 * 1024);
    expect(existsSync(path)).toBe(true);
    o.resume(0);
    const s = new Stream();
    o.attach(s);
    // The hub acknowledges as events arrive; unacknowledged bytes stay under the memory cap.
    for (let acked = -1; acked !== s.got.length;) {
      acked = s.got.length;
      o.ack(acked);
    }
    expect(seqs(s.got)).toEqual(Array.from({ length: pushed }, (_, i) => `a:${i + 1}`));
    const last = s.got.at(-1)!;
    expect(last.body?.$case === "event" && last.body.value.event?.$case === "output").toBe(true);
    expect(o.spilledBytes).toBe(0);
    o.close();
    expect(existsSync(path)).toBe(false);
  });
});
