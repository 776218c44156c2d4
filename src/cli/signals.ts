// SIGTERM and SIGINT for the long-running commands: the first starts a graceful stop, a second
// one cuts the grace short. The process exits 0 once the stop has finished.
import type { Logger } from "../common/logger.js";

export function stopOnSignals(
  logger: Logger,
  stop: (opts: { graceMs?: number }) => Promise<void>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      signals++;
      if (signals === 1) {
        logger.info({ signal }, "stopping: finishing work in flight (send the signal again to stop now)");
        stop({}).then(resolve, reject);
      } else {
        logger.warn({ signal }, "stopping now: cutting the grace short");
        stop({ graceMs: 0 }).then(resolve, reject);
      }
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}
