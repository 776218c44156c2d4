// A run's output streams (a child's stdout and stderr, or a container's one stream) copied to the task's
// output through chunkers: read only while the output has room, so a full window holds the writer back
// instead of filling the agent's memory; each ended exactly once; given up on when they stay open and
// silent after the process is gone.
import type { ChildProcess } from "node:child_process";
import type { Readable } from "node:stream";
import { OutputStream } from "../../gen/switchboard/v1/task.js";
import { OutputChunker, type OutputChunkerOptions } from "../output-chunker.js";
import type { OutputSink } from "../output-gate.js";

/** A chunker that writes one of the task's output streams. */
export function outputChunker(
  output: OutputSink,
  which: OutputStream,
  opts: OutputChunkerOptions,
): OutputChunker {
  return new OutputChunker(opts, (chunk) => output.write(which, chunk));
}

/** What calls a run's timers (its RunState). */
interface Timers {
  after(ms: number, fn: () => void): void;
}

/** The output streams of one run, read together and paused together. */
export class OutputPipes {
  private readonly streams: Readable[] = [];
  private openCount = 0;
  private paused = false;
  private lastDataAt = 0;

  constructor(private readonly output: OutputSink) {}

  /** How many of the streams have not ended yet. */
  get open(): number {
    return this.openCount;
  }

  /**
   * Reads `stream` into `push` (a chunker, or a demuxer feeding two), pausing every stream of the run
   * while push says the output is full. `closed` is called once, when the stream ended or closed, or with
   * the failure when it broke: an 'error', push threw, or `endFailure` finds its end short.
   */
  pipe(
    stream: Readable,
    push: (data: Buffer) => boolean,
    closed: (failure?: Error) => void,
    opts: { endFailure?: () => Error | undefined; holdUntil?: Promise<void> } = {},
  ): void {
    this.streams.push(stream);
    this.openCount += 1;
    if (opts.holdUntil) this.hold(stream, opts.holdUntil);
    let ended = false;
    const close = (failure?: Error): void => {
      if (ended) return;
      ended = true;
      this.openCount -= 1;
      closed(failure);
    };
    stream.on("data", (data: Buffer) => {
      this.lastDataAt = Date.now();
      let ok: boolean;
      try {
        ok = push(data);
      } catch (e) {
        stream.destroy();
        return close(e as Error);
      }
      if (!ok) this.pause();
    });
    stream.on("end", () => close(opts.endFailure?.()));
    stream.on("close", () => close());
    stream.on("error", (e) => close(e));
  }

  /**
   * A child's stdout and stderr, each through its own chunker; `closed` is called as each one ends
   * (after its chunker sent what it held).
   */
  pipeChild(child: ChildProcess, chunking: OutputChunkerOptions, closed: (failure?: Error) => void): void {
    const pairs = [
      [child.stdout, OutputStream.OUTPUT_STREAM_STDOUT],
      [child.stderr, OutputStream.OUTPUT_STREAM_STDERR],
    ] as const;
    for (const [stream, which] of pairs) {
      if (!stream) continue;
      const chunker = outputChunker(this.output, which, chunking);
      this.pipe(
        stream,
        (data) => chunker.push(data),
        (failure) => {
          chunker.end();
          closed(failure);
        },
      );
    }
  }

  /**
   * After the process exited, a process outside the task's group (or the engine) may keep the streams
   * open with nothing in them. Stops waiting once they stayed quiet for lingerMs (not while we paused
   * them ourselves for the output window, unless the task is stopping): `gaveUp` is told, and the
   * streams are destroyed, which ends them.
   */
  watchLinger(
    timers: Timers,
    opts: { exitedAt: number; lingerMs: number; stopping: () => boolean; gaveUp: () => void },
  ): void {
    const every = Math.min(250, opts.lingerMs);
    const check = (): void => {
      if (this.openCount === 0) return;
      const quietSince = Math.max(this.lastDataAt, opts.exitedAt);
      if ((!this.paused || opts.stopping()) && Date.now() - quietSince >= opts.lingerMs) {
        opts.gaveUp();
        this.destroy();
        return;
      }
      timers.after(every, check);
    };
    timers.after(every, check);
  }

  /** Lets go of the streams without waiting for their end. */
  destroy(): void {
    for (const s of this.streams) s.destroy();
  }

  /** The output is full (window used up or outbox full): stop reading, so the writer blocks, until it has room. */
  private pause(): void {
    if (this.paused) return;
    this.paused = true;
    for (const s of this.streams) s.pause();
    this.output.onceWritable(() => {
      this.paused = false;
      for (const s of this.streams) s.resume();
    });
  }

  /** Nothing is read from `stream` before `until` settles (a run that reports Started first). */
  private hold(stream: Readable, until: Promise<void>): void {
    stream.pause();
    this.paused = true;
    void until.then(() => {
      this.paused = false;
      stream.resume();
    });
  }
}

/** Resolves once the output has room again, or as soon as `signal` aborts (at once if it did). */
export async function outputRoom(output: OutputSink, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return;
  await new Promise<void>((resolve) => {
    const done = (): void => {
      signal.removeEventListener("abort", done);
      resolve();
    };
    signal.addEventListener("abort", done, { once: true });
    output.onceWritable(done);
  });
}
