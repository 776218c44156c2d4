// A request body that is the task's input: the client's bytes, taken only within the input windows granted
// here and written to the outgoing request as they arrive, each window granted again once the request has
// taken the bytes (its socket drained), so a body of any size passes in bounded memory.
import type { Writable } from "node:stream";
import { drainedOrClosed } from "../../../common/drained.js";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { InputChunk } from "../executor.js";

/** Input granted ahead of what the request has taken: the most a streamed body holds here. */
export const BODY_WINDOW_BYTES = 1024 * 1024;

export class InputBody {
  private queue: Buffer[] = [];
  private eof = false;
  private wake: (() => void) | undefined;
  /** Bytes written to the request so far. */
  private sent = 0;

  /**
   * grant: opens the client's input window by n bytes. length: the declared length (0: unknown); more
   * bytes than that, or fewer at the end, fail the body.
   */
  constructor(
    private readonly grant: (bytes: number) => void,
    readonly length: number,
  ) {}

  /** Input from the client; ignored once the body was written (or given up, after a redirect). */
  push(chunk: InputChunk): void {
    if (chunk.data.length > 0) this.queue.push(chunk.data);
    if (chunk.eof) this.eof = true;
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  /**
   * Writes the body to `req` as it arrives and ends it; rejects when the body breaks its declared length.
   * Once only: a redirect that needs the body again is refused before a second request (http.ts).
   */
  async writeTo(req: Writable, signal: AbortSignal): Promise<void> {
    const onAbort = (): void => {
      const w = this.wake;
      this.wake = undefined;
      w?.();
    };
    signal.addEventListener("abort", onAbort, { once: true });
    req.once("close", onAbort);
    try {
      this.grant(BODY_WINDOW_BYTES);
      for (;;) {
        if (signal.aborted || req.destroyed) return;
        if (this.queue.length === 0) {
          if (this.eof) break;
          await new Promise<void>((resolve) => (this.wake = resolve));
          continue;
        }
        const chunk = this.queue.shift()!;
        if (this.length > 0 && this.sent + chunk.length > this.length) {
          throw new SwitchboardError(
            Code.INVALID_ARGUMENT,
            `the client sent more than the ${this.length} body bytes it declared`,
          );
        }
        this.sent += chunk.length;
        if (!req.write(chunk)) await drainedOrClosed(req);
        this.grant(chunk.length);
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      req.off("close", onAbort);
    }
    if (this.length > 0 && this.sent !== this.length) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `the client ended the body after ${this.sent} of the ${this.length} bytes it declared`,
      );
    }
    req.end();
  }
}
