// Copies of output chunks kept until the hub acknowledges them, in a few reused slabs. Keeping the
// chunks themselves costs far more than copying them: each is its own ArrayBuffer, and one that
// outlives a young-generation collection is freed only by a full one, so a stream of retained
// chunks turns into a stream of full collections (measured: most of the agent's CPU at 250 MB/s).
// Slabs are few and long-lived; chunks die young. Released strictly first in, first out.

const SLAB_BYTES = 4 * 1024 * 1024;
/** Empty slabs kept for reuse. */
const SPARE_SLABS = 1;

interface Slab {
  buf: Buffer;
  used: number;
  /** Copies in this slab not released yet. */
  live: number;
}

/** Where a copy lives; release() takes it back. */
export interface ArenaCopy {
  slab: Slab;
  offset: number;
  length: number;
  /** A copy too big for a slab, in a buffer of its own. */
  own: boolean;
}

export class RetainArena {
  private readonly slabs: Slab[] = [];
  private readonly spare: Slab[] = [];

  /**
   * Copies `data`; returns where the copy lives. No view over it is made until read(): a view is an
   * object that would outlive young collections too.
   */
  copy(data: Uint8Array): ArenaCopy {
    const n = data.byteLength;
    if (n > SLAB_BYTES / 4) {
      // Large chunks are few: their own buffer, allocated outside the pool.
      const own: Slab = { buf: Buffer.allocUnsafeSlow(n), used: n, live: 1 };
      own.buf.set(data);
      return { slab: own, offset: 0, length: n, own: true };
    }
    let slab = this.slabs.at(-1);
    if (!slab || slab.used + n > SLAB_BYTES) {
      slab = this.spare.pop() ?? { buf: Buffer.allocUnsafeSlow(SLAB_BYTES), used: 0, live: 0 };
      this.slabs.push(slab);
    }
    slab.buf.set(data, slab.used);
    const offset = slab.used;
    slab.used += n;
    slab.live += 1;
    return { slab, offset, length: n, own: false };
  }

  /** A copy's bytes, as a new buffer of their own. */
  static read(c: ArenaCopy): Buffer {
    return Buffer.from(c.slab.buf.subarray(c.offset, c.offset + c.length));
  }

  /** A copy is no longer needed (copies are released in the order they were made). */
  release(c: ArenaCopy): void {
    if (c.own) return;
    c.slab.live -= 1;
    // Slabs empty from the front; the last one stays in use for new copies.
    while (this.slabs.length > 1 && this.slabs[0]!.live === 0) {
      const s = this.slabs.shift()!;
      s.used = 0;
      if (this.spare.length < SPARE_SLABS) this.spare.push(s);
    }
    const last = this.slabs.at(-1);
    if (last && last.live === 0 && this.slabs.length === 1) last.used = 0;
  }

  /** Releases everything (the copies must no longer be used). */
  reset(): void {
    for (const s of this.slabs.splice(0)) {
      s.used = 0;
      s.live = 0;
      if (this.spare.length < SPARE_SLABS) this.spare.push(s);
    }
  }
}
