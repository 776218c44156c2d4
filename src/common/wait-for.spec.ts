// waitFor: the value once the condition holds, polls through errors, and a timeout that says what it awaited.
import { describe, expect, it } from "vitest";
import { WaitAbandoned, waitFor } from "./wait-for.js";

describe("waitFor", () => {
  it("returns the condition's first value other than undefined and false", async () => {
    let n = 0;
    const v = await waitFor(() => (++n >= 3 ? { n } : n === 1 ? false : undefined), { interval: 1 });
    expect(v).toEqual({ n: 3 });
  });

  it("polls again when the condition throws", async () => {
    let n = 0;
    const v = await waitFor(
      () => {
        if (++n < 3) throw new Error("not yet");
        return n;
      },
      { interval: 1 },
    );
    expect(v).toBe(3);
  });

  it("names what it waited for, and the last error, on timeout", async () => {
    await expect(
      waitFor(
        () => {
          throw new Error("no such file");
        },
        { timeout: 30, interval: 5, message: "the hub to write hub.json" },
      ),
    ).rejects.toThrow("timed out after 30 ms waiting for the hub to write hub.json: no such file");
    await expect(waitFor(() => false, { timeout: 10, interval: 5 })).rejects.toThrow(
      "timed out after 10 ms waiting for a condition",
    );
  });
});

describe("waitFor and WaitAbandoned", () => {
  it("ends the wait at once when the condition gives up", async () => {
    const started = Date.now();
    await expect(
      waitFor(
        () => {
          throw new WaitAbandoned("the hub exited with 1");
        },
        { timeout: 5_000 },
      ),
    ).rejects.toThrow("the hub exited with 1");
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});
