// Ctrl-C (SIGINT) and SIGTERM for the CLI, wired in one place: a command gets an AbortSignal that the
// first one aborts, and says what a second one does (nothing, the signal's own default, or its own
// "stop waiting"). The long-running commands (hub, agent, storage-node, demo) stop gracefully on top of it.
import type { Logger } from "../common/logger.js";
import { onPipeClosed } from "./pipe-closed.js";

export interface InterruptOptions {
  /** The signals that interrupt; SIGINT and SIGTERM unless told. An empty list: nothing does. */
  signals?: readonly NodeJS.Signals[];
  /** Called once, on the first interrupt, before the signal aborts (to say what is being stopped). */
  onInterrupt?: (signal: NodeJS.Signals) => void;
  /**
   * What a later interrupt does. "default" (the default): each signal is caught once only, so the
   * same signal again gets Node's own handling (the process dies by it). "ignore": nothing more
   * happens. A function: it is called on each one after the first (to stop waiting, say).
   */
  again?: "default" | "ignore" | ((signal: NodeJS.Signals) => void);
}

export interface Interrupt {
  /** Aborted on the first interrupt. */
  readonly signal: AbortSignal;
  /** Stops listening for the signals; call it once the command no longer waits. */
  dispose(): void;
}

/** Listens for Ctrl-C (and SIGTERM) until disposed, turning the first one into an aborted signal. */
export function cancelOnInterrupt(opts: InterruptOptions = {}): Interrupt {
  const signals = opts.signals ?? ["SIGINT", "SIGTERM"];
  const again = opts.again ?? "default";
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    if (!abort.signal.aborted) {
      opts.onInterrupt?.(signal);
      abort.abort();
    } else if (typeof again === "function") {
      again(signal);
    }
  };
  for (const s of signals) {
    if (again === "default") process.once(s, onSignal);
    else process.on(s, onSignal);
  }
  return {
    signal: abort.signal,
    dispose: () => {
      for (const s of signals) process.off(s, onSignal);
    },
  };
}

export interface Cancellation extends Interrupt {
  /** Cancels from within (a request body that cannot be read, say). */
  abort(): void;
}

/**
 * For a command that streams a result here: Ctrl-C or SIGTERM (printing `saying` on stderr), a closed
 * stdout pipe (\`| head\`) or the command itself cancel it, all through one signal.
 */
export function cancelOnInterruptOrClosedPipe(saying: string): Cancellation {
  const abort = new AbortController();
  const interrupt = cancelOnInterrupt({
    onInterrupt: () => {
      process.stderr.write(`\nswitchboard: ${saying}\n`);
    },
  });
  interrupt.signal.addEventListener("abort", () => abort.abort());
  const unregister = onPipeClosed(() => {
    abort.abort();
    return Promise.resolve();
  });
  return {
    signal: abort.signal,
    abort: () => abort.abort(),
    dispose: () => {
      interrupt.dispose();
      unregister();
    },
  };
}

/**
 * For the long-running commands: the first SIGTERM or SIGINT starts a graceful stop, a second one
 * cuts the grace short. Resolves once the stop has finished (the process then exits 0).
 */
export function stopOnSignals(
  logger: Logger,
  stop: (opts: { graceMs?: number }) => Promise<void>,
): Promise<void> {
  return serveUntilSignalled(logger, Promise.resolve(), (_, opts) => stop(opts));
}

/**
 * Starts a long-running part and serves until SIGTERM or SIGINT, listening from before it starts: a
 * signal that comes while it starts stops it as soon as it has started (never the signal's default,
 * which would end the process without a graceful stop). A second signal cuts the grace short.
 * Resolves once it has stopped; rejects with the start's error if it fails to start.
 */
export async function serveUntilSignalled<T>(
  logger: Logger,
  starting: Promise<T>,
  stop: (part: T, opts: { graceMs?: number }) => Promise<void>,
): Promise<void> {
  let interrupt: Interrupt | undefined;
  try {
    const stopped = new Promise<void>((resolve, reject) => {
      const stopWith = (opts: { graceMs?: number }): void => {
        starting.then((part) => stop(part, opts)).then(resolve, reject);
      };
      interrupt = cancelOnInterrupt({
        onInterrupt: (signal) => {
          logger.info({ signal }, "stopping: finishing work in flight (send the signal again to stop now)");
          stopWith({});
        },
        again: (signal) => {
          logger.warn({ signal }, "stopping now: cutting the grace short");
          stopWith({ graceMs: 0 });
        },
      });
    });
    stopped.catch(() => undefined); // a start that fails is reported through `starting`
    await starting;
    await stopped;
  } finally {
    interrupt?.dispose(); // stopped, or never started: a later signal has its default effect
  }
}
