// cancelOnInterrupt, driven by emitting the signals on `process` (its listeners run as on a real one).
import { afterEach, describe, expect, it, vi } from "vitest";
import { silentLogger } from "../common/logger.js";
import { cancelOnInterrupt, serveUntilSignalled } from "./signals.js";

const listeners = (s: NodeJS.Signals): number => process.listenerCount(s);

describe("cancelOnInterrupt", () => {
  const before = { SIGINT: listeners("SIGINT"), SIGTERM: listeners("SIGTERM") };
  afterEach(() => {
    expect(listeners("SIGINT")).toBe(before.SIGINT);
    expect(listeners("SIGTERM")).toBe(before.SIGTERM);
  });

  it("aborts on the first Ctrl-C, says so once, and calls `again` on each later one", () => {
    const onInterrupt = vi.fn();
    const again = vi.fn();
    const i = cancelOnInterrupt({ onInterrupt, again });
    expect(i.signal.aborted).toBe(false);
    process.emit("SIGINT", "SIGINT");
    expect(i.signal.aborted).toBe(true);
    expect(onInterrupt).toHaveBeenCalledExactlyOnceWith("SIGINT");
    expect(again).not.toHaveBeenCalled();
    process.emit("SIGTERM", "SIGTERM");
    process.emit("SIGINT", "SIGINT");
    expect(onInterrupt).toHaveBeenCalledTimes(1);
    expect(again.mock.calls).toEqual([["SIGTERM"], ["SIGINT"]]);
    i.dispose();
  });

  it("by default catches each signal once, leaving a second one to Node's own handling", () => {
    const i = cancelOnInterrupt();
    process.emit("SIGTERM", "SIGTERM");
    expect(i.signal.aborted).toBe(true);
    expect(listeners("SIGTERM")).toBe(before.SIGTERM);
    expect(listeners("SIGINT")).toBe(before.SIGINT + 1);
    i.dispose();
  });

  it("listens to the signals named only, and to none for an empty list", () => {
    const onlyInt = cancelOnInterrupt({ signals: ["SIGINT"], again: "ignore" });
    const none = cancelOnInterrupt({ signals: [] });
    process.emit("SIGTERM", "SIGTERM");
    expect(onlyInt.signal.aborted).toBe(false);
    onlyInt.dispose();
    none.dispose();
  });
});

describe("serveUntilSignalled", () => {
  it("listens from before the start: a SIGTERM while starting stops the part once it has started", async () => {
    const before = listeners("SIGTERM");
    let started!: (part: string) => void;
    const starting = new Promise<string>((r) => (started = r));
    const stop = vi.fn((_part: string, _o: { graceMs?: number }) => Promise.resolve());
    const serving = serveUntilSignalled(silentLogger(), starting, stop);
    expect(listeners("SIGTERM")).toBe(before + 1);
    process.emit("SIGTERM", "SIGTERM"); // while it starts
    await Promise.resolve();
    expect(stop).not.toHaveBeenCalled();
    started("hub");
    await serving;
    expect(stop).toHaveBeenCalledExactlyOnceWith("hub", {});
    expect(listeners("SIGTERM")).toBe(before);
  });

  it("reports a start that fails, and stops listening", async () => {
    const before = listeners("SIGINT");
    const failing = Promise.reject(new Error("port in use"));
    await expect(serveUntilSignalled(silentLogger(), failing, () => Promise.resolve())).rejects.toThrow(
      "port in use",
    );
    expect(listeners("SIGINT")).toBe(before);
  });
});
