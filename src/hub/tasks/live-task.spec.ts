// A live task's event numbering, replay, and the output window that bounds what the hub holds.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { OutputStream, type TaskEvent } from "../../gen/switchboard/v1/task.js";
import { LiveTask, RETAINED_OUTPUT_BYTES, type Watcher } from "./live-task.js";

function task(window: number, grants: number[]): LiveTask {
  return new LiveTask(
    "t1",
    "shell",
    { kind: undefined },
    { pool: "p" },
    "me",
    [],
    Date.now(),
    null,
    false,
    window,
    (b) => grants.push(b),
  );
}

const out = (n: number): TaskEvent["event"] => ({
  $case: "output",
  value: { stream: OutputStream.OUTPUT_STREAM_STDOUT, data: Buffer.alloc(n) },
});

/** A watcher that holds what it was given until released, like a slow network client. */
function slowWatcher(): Watcher & { events: TaskEvent[]; pending: (() => void)[]; release(): void } {
  const w = {
    consumedBytes: 0,
    events: [] as TaskEvent[],
    pending: [] as (() => void)[],
    deliver(ev: TaskEvent, consumed: () => void) {
      w.events.push(ev);
      w.pending.push(consumed);
    },
    release() {
      for (const c of w.pending.splice(0)) c();
    },
  };
  return w;
}

describe("LiveTask", () => {
  it("numbers events from 1 without gaps", () => {
    const t = task(0, []);
    const seqs = [
      t.emit({ $case: "queued", value: { queuedAtMs: 1 } }).seq,
      t.emit(out(3), 3).seq,
      t.emit(out(3), 3).seq,
    ];
    expect(seqs).toEqual([1, 2, 3]);
  });

  it("replays after a sequence number, then follows live, without duplicates", () => {
    const t = task(0, []);
    for (let i = 0; i < 5; i++) t.emit(out(1), 1);
    const w = slowWatcher();
    t.attach(w, 3);
    t.emit(out(1), 1);
    expect(w.events.map((e) => e.seq)).toEqual([4, 5, 6]);
  });

  it("never lets the agent run more than one window ahead of the slowest watcher", () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 1, max: 70_000 }), fc.boolean()), { maxLength: 200 }),
        (steps) => {
          const grants: number[] = [];
          const window = 256 * 1024;
          const t = task(window, grants);
          const w = slowWatcher();
          t.attach(w, 0);
          let sent = 0;
          for (const [size, release] of steps) {
            const allowed = window + grants.reduce((a, b) => a + b, 0);
            const n = Math.min(size, allowed - sent); // the agent respects its window
            if (n > 0) {
              t.emit(out(n), n);
              sent += n;
            }
            if (release) w.release();
            const granted = window + grants.reduce((a, b) => a + b, 0);
            // Outstanding output (granted but not consumed by the watcher) stays within one window.
            expect(granted - w.consumedBytes).toBeLessThanOrEqual(window);
          }
          // Once the watcher has caught up, the agent may always send again.
          w.release();
          expect(window + grants.reduce((a, b) => a + b, 0) - sent).toBeGreaterThan(0);
        },
      ),
    );
  });

  it("grants at once when nobody watches", () => {
    const grants: number[] = [];
    const t = task(1024, grants);
    t.emit(out(1024), 1024);
    expect(grants.reduce((a, b) => a + b, 0)).toBe(1024);
  });

  it("keeps at most the retained amount of output for late watchers and marks the gap", () => {
    const t = task(0, []);
    const chunk = 1024 * 1024;
    for (let i = 0; i < 6; i++) t.emit(out(chunk), chunk);
    const w = slowWatcher();
    t.attach(w, 0);
    const bytes = w.events.reduce(
      (a, e) => a + (e.event?.$case === "output" ? e.event.value.data.length : 0),
      0,
    );
    expect(bytes).toBeLessThanOrEqual(RETAINED_OUTPUT_BYTES);
    expect(w.events[0]!.gapBytes).toBe(6 * chunk - bytes);
  });

  it("follows the state machine and tells finish listeners once", () => {
    const t = task(0, []);
    let told = 0;
    t.onFinish(() => told++);
    expect(t.transition("running")).toBe(false); // queued -> running skips assigned
    expect(t.transition("assigned")).toBe(true);
    expect(t.transition("running")).toBe(true);
    expect(t.transition("succeeded")).toBe(true);
    t.complete(
      {
        state: "succeeded",
        exitCode: 0,
        signal: null,
        errorCode: null,
        errorMessage: null,
        reason: null,
        durationMs: 1,
        result: null,
      },
      Date.now(),
    );
    expect(t.transition("failed")).toBe(false);
    expect(told).toBe(1);
    t.onFinish(() => told++);
    expect(told).toBe(2);
  });
});
