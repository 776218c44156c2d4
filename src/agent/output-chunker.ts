// Cuts one output stream into chunks for Output events: at newlines when it can, the lines of one read()
// coalesced into one chunk, never more than maxChunkBytes (long lines split), nothing dropped or
// reordered. An idle partial line goes out after a short delay, so prompts and progress bars show.
export interface OutputChunkerOptions {
  maxChunkBytes: number;
  /** How long a partial line (no newline yet) may wait for the rest. */
  idleFlushMs?: number;
}

const NEWLINE = 0x0a;
export const DEFAULT_IDLE_FLUSH_MS = 25;

export class OutputChunker {
  private readonly maxChunk: number;
  private readonly idleFlushMs: number;
  /** The partial line not sent yet, as the reads delivered it (joined only when cut). */
  private pieces: Buffer[] = [];
  private pendingBytes = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private ended = false;

  /** emit returns false when the receiver wants the source paused; push() passes that on. */
  constructor(
    opts: OutputChunkerOptions,
    private readonly emit: (chunk: Buffer) => boolean,
  ) {
    if (!(opts.maxChunkBytes >= 1)) throw new RangeError(`maxChunkBytes must be at least 1`);
    this.maxChunk = opts.maxChunkBytes;
    this.idleFlushMs = opts.idleFlushMs ?? DEFAULT_IDLE_FLUSH_MS;
  }

  /** Adds what one read() returned. Returns false when the receiver asked for a pause. */
  push(data: Buffer): boolean {
    if (this.ended || data.length === 0) return true;
    this.clearIdle();
    this.pieces.push(data);
    this.pendingBytes += data.length;
    // Nothing to cut yet: no newline arrived and the partial line is below the cap. Skipping the join
    // here keeps a long line's assembly linear instead of re-copying it on every read.
    if (data.indexOf(NEWLINE) === -1 && this.pendingBytes < this.maxChunk) {
      this.armIdle();
      return true;
    }
    const all = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.pendingBytes);
    this.pieces = [];
    this.pendingBytes = 0;
    let ok = true;
    let off = 0;
    while (all.length - off >= this.maxChunk) {
      const windowEnd = off + this.maxChunk;
      const nl = all.lastIndexOf(NEWLINE, windowEnd - 1);
      const cut = nl >= off ? nl + 1 : windowEnd;
      ok = this.emit(all.subarray(off, cut)) && ok;
      off = cut;
    }
    const nl = all.lastIndexOf(NEWLINE);
    if (nl >= off) {
      ok = this.emit(all.subarray(off, nl + 1)) && ok;
      off = nl + 1;
    }
    if (off < all.length) {
      const rest = all.subarray(off);
      this.pieces = [rest];
      this.pendingBytes = rest.length;
      this.armIdle();
    }
    return ok;
  }

  /** Sends the partial line now (end of stream, or idle). */
  flush(): boolean {
    this.clearIdle();
    if (this.pendingBytes === 0) return true;
    const all = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces, this.pendingBytes);
    this.pieces = [];
    this.pendingBytes = 0;
    return this.emit(all);
  }

  /** The stream ended: flush, and ignore anything after. */
  end(): boolean {
    const ok = this.flush();
    this.ended = true;
    return ok;
  }

  /** Forgets the partial line (the task is being torn down). */
  dispose(): void {
    this.clearIdle();
    this.pieces = [];
    this.pendingBytes = 0;
    this.ended = true;
  }

  private armIdle(): void {
    if (this.idleFlushMs <= 0) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      this.flush();
    }, this.idleFlushMs);
  }

  private clearIdle(): void {
    if (this.idleTimer) {
      clearTimeout(this.idleTimer);
      this.idleTimer = undefined;
    }
  }
}
