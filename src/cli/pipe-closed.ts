// When the reader of our output goes away (\`switchboard exec ... | head\`), the command ends
// quietly, after the cleanups a command registered: exec cancels its remote task, as a local
// command would die of SIGPIPE instead of running on for nobody.
const cleanups = new Set<() => Promise<unknown>>();

/** Registers work to do before exiting on a closed pipe; returns the function that unregisters it. */
export function onPipeClosed(cleanup: () => Promise<unknown>): () => void {
  cleanups.add(cleanup);
  return () => cleanups.delete(cleanup);
}

let closing = false;

export function watchForClosedPipes(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on("error", (err: NodeJS.ErrnoException) => {
      if (err.code !== "EPIPE") throw err;
      if (closing) return;
      closing = true;
      const done = (): never => process.exit(process.exitCode ?? 0);
      setTimeout(done, 3_000).unref();
      void Promise.allSettled([...cleanups].map((c) => c())).then(done);
    });
  }
}
