// RunState: the table decides every move, and a run that ended keeps no timer.
import fc from "fast-check";
import { afterEach, describe, expect, it, vi } from "vitest";
import { RunState, canMove, type Transitions } from "./run-state.js";

type S = "a" | "b" | "done";
const TABLE: Transitions<S> = { a: ["b", "done"], b: ["done"], done: [] };

describe("RunState", () => {
  afterEach(() => vi.useRealTimers());

  it("moves only where the table allows, and tells of a refused move", () => {
    const refused: string[] = [];
    const m = new RunState(TABLE, "a", (from, to) => refused.push(`${from}->${to}`));
    expect(m.move("b")).toBe(true);
    expect(m.move("a")).toBe(false);
    expect(m.state).toBe("b");
    expect(m.move("done")).toBe(true);
    expect(m.ended).toBe(true);
    expect(m.move("b")).toBe(false);
    expect(refused).toEqual(["b->a", "done->b"]);
  });

  it("drops its timers on clearTimers and on a terminal state, and arms none after the end", () => {
    vi.useFakeTimers();
    const m = new RunState(TABLE, "a");
    const fired: string[] = [];
    m.after(10, () => fired.push("dropped"));
    m.clearTimers();
    m.after(10, () => fired.push("early"));
    m.after(1000, () => fired.push("late"));
    vi.advanceTimersByTime(20);
    m.move("done");
    m.after(5, () => fired.push("after end"));
    vi.advanceTimersByTime(5000);
    expect(fired).toEqual(["early"]);
  });

  it("fires at a wall-clock time beyond setTimeout's largest delay", () => {
    vi.useFakeTimers();
    const m = new RunState(TABLE, "a");
    let fired = false;
    const at = Date.now() + 3_000_000_000;
    m.at(at, () => (fired = true));
    vi.advanceTimersByTime(2_147_483_647);
    expect(fired).toBe(false);
    vi.advanceTimersByTime(3_000_000_000 - 2_147_483_647);
    expect(fired).toBe(true);
  });

  it("follows the table for any sequence of asked moves", () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom<S>("a", "b", "done")), (asked) => {
        const m = new RunState(TABLE, "a");
        for (const next of asked) {
          const from = m.state;
          expect(m.move(next)).toBe(canMove(TABLE, from, next));
          expect(m.state).toBe(canMove(TABLE, from, next) ? next : from);
        }
      }),
    );
  });
});
