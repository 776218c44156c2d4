// What interrupted uploads left for a resume (`.NAME.sb-upload-<key>`, a tree's `….tar` and unpack
// directory), noted in a small file under the agent's data dir so that they are found again after a
// restart without walking the roots. A partial that nobody resumed within the time to live is removed:
// a copy abandoned for good does not hold its disk space for ever.
import { lstat, mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import type { Logger } from "pino";

export interface PartialsOptions {
  /** Where the list is kept (JSON); undefined: in memory only. */
  file: string | undefined;
  /** A partial untouched this long (by its modification time) is removed; 0: never. */
  ttlMs: number;
  /** True while an upload is writing to the path: it is never removed then. */
  busy: (path: string) => boolean;
  logger?: Logger;
}

export class Partials {
  private readonly paths = new Set<string>();
  private saving: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: PartialsOptions) {}

  /** Reads the list kept by an earlier run (a missing or unreadable list is an empty one). */
  async load(): Promise<void> {
    if (this.o.file === undefined) return;
    try {
      const saved: unknown = JSON.parse(await readFile(this.o.file, "utf8"));
      if (Array.isArray(saved)) for (const p of saved) if (typeof p === "string") this.paths.add(p);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
        this.o.logger?.warn({ err: e, file: this.o.file }, "the list of partial uploads could not be read");
      }
    }
  }

  /** Sweeps now and then every quarter of the time to live (at most hourly); stop() ends it. */
  start(): void {
    if (this.o.ttlMs <= 0) return;
    void this.sweep();
    this.timer = setInterval(() => void this.sweep(), Math.min(this.o.ttlMs / 4, 3_600_000));
    this.timer.unref();
  }

  stop(): Promise<void> {
    clearInterval(this.timer);
    return this.saving;
  }

  get size(): number {
    return this.paths.size;
  }

  has(path: string): boolean {
    return this.paths.has(path);
  }

  /** An upload writes here: kept for a resume should it stop. */
  note(...paths: string[]): Promise<void> {
    let changed = false;
    for (const p of paths) {
      if (!this.paths.has(p)) {
        this.paths.add(p);
        changed = true;
      }
    }
    return changed ? this.save() : this.saving;
  }

  /** Placed or discarded: nothing is left there to remove. */
  forget(...paths: string[]): Promise<void> {
    let changed = false;
    for (const p of paths) changed = this.paths.delete(p) || changed;
    return changed ? this.save() : this.saving;
  }

  /** Removes what is older than the time to live and not in use; forgets what is gone. Returns what it removed. */
  async sweep(now = Date.now()): Promise<string[]> {
    const removed: string[] = [];
    const gone: string[] = [];
    for (const p of [...this.paths]) {
      if (this.o.busy(p)) continue;
      const st = await lstat(p).catch(() => undefined);
      if (!st) {
        gone.push(p);
        continue;
      }
      if (this.o.ttlMs <= 0 || now - st.mtimeMs < this.o.ttlMs || this.o.busy(p)) continue;
      try {
        await rm(p, { recursive: true, force: true });
        removed.push(p);
        this.o.logger?.info(
          { path: p, age_secs: Math.round((now - st.mtimeMs) / 1000) },
          "removed a partial upload nobody resumed ([files] partial_ttl_secs)",
        );
      } catch (e) {
        this.o.logger?.warn({ err: e, path: p }, "a partial upload could not be removed");
      }
    }
    await this.forget(...gone, ...removed);
    return removed;
  }

  private save(): Promise<void> {
    const file = this.o.file;
    if (file === undefined) return this.saving;
    const text = JSON.stringify([...this.paths]);
    this.saving = this.saving.then(async () => {
      try {
        await mkdir(dirname(file), { recursive: true });
        await writeFile(`${file}.tmp`, text);
        await rename(`${file}.tmp`, file);
      } catch (e) {
        this.o.logger?.warn({ err: e, file }, "the list of partial uploads could not be written");
      }
    });
    return this.saving;
  }
}
