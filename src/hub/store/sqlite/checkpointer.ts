// Runs SQLite's WAL checkpoints on a worker thread instead of inside a commit on the hub's event
// loop. A checkpoint copies the WAL into the database file and fsyncs it: milliseconds that
// otherwise land on whichever commit crosses the WAL size threshold, and on the latency of every
// task waiting behind it. The worker's own connection runs a PASSIVE checkpoint (it never blocks
// writers) every second. On a full disk checkpoints fail every second until there is room: that
// is logged once when they start failing and once when they work again.
import { createRequire } from "node:module";
import { Worker } from "node:worker_threads";
import type { Logger } from "../../../common/logger.js";

const WORKER_SOURCE = `
const { workerData, parentPort } = require("node:worker_threads");
const Database = require(workerData.driver);
const db = new Database(workerData.path, { timeout: 5000 });
db.pragma("journal_mode = WAL");
let failing = false;
const timer = setInterval(() => {
  try {
    db.pragma("wal_checkpoint(PASSIVE)");
    if (failing) parentPort.postMessage({ ok: true });
    failing = false;
  } catch (err) {
    if (!failing) parentPort.postMessage({ error: String(err && err.message || err) });
    failing = true;
  }
}, workerData.intervalMs);
parentPort.on("message", (m) => {
  if (m === "stop") {
    clearInterval(timer);
    try { db.close(); } catch {}
    parentPort.postMessage("stopped");
  }
});
`;

export class Checkpointer {
  private readonly worker: Worker;
  private stopped: Promise<void> | undefined;

  constructor(path: string, logger: Logger, intervalMs = 1_000) {
    const driver = createRequire(import.meta.url).resolve("better-sqlite3");
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { path, driver, intervalMs } });
    this.worker.unref();
    this.worker.on("message", (m: unknown) => {
      if (typeof m === "object" && m !== null && "error" in m) {
        logger.warn(
          { error: (m as { error: string }).error },
          "WAL checkpoints fail; retrying every second (logged again once they work)",
        );
      } else if (typeof m === "object" && m !== null && "ok" in m) {
        logger.info("WAL checkpoints work again");
      }
    });
    this.worker.on("error", (err) => logger.error({ err }, "the checkpoint worker failed"));
  }

  /** Stops the worker after its current checkpoint; the caller's close then checkpoints what is left. */
  stop(): Promise<void> {
    this.stopped ??= new Promise<void>((resolve) => {
      const done = (): void => resolve();
      this.worker.on("message", (m: unknown) => {
        if (m === "stopped") done();
      });
      this.worker.once("exit", done);
      this.worker.postMessage("stop");
      setTimeout(() => void this.worker.terminate().then(done, done), 2_000).unref();
    }).then(() =>
      this.worker.terminate().then(
        () => undefined,
        () => undefined,
      ),
    );
    return this.stopped;
  }
}
