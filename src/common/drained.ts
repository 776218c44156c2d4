// Waiting for a writable stream to take more: its 'drain', or its 'close' (a stream that failed or was
// destroyed drains no more; the caller checks for its error).
import type { Writable } from "node:stream";

export function drainedOrClosed(w: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      w.off("drain", done);
      w.off("close", done);
      resolve();
    };
    w.on("drain", done);
    w.on("close", done);
  });
}
