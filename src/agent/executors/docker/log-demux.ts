// The Docker Engine API's multiplexed stream (the logs of a container without a TTY): frames of an 8-byte
// header (stream type: 0 stdin, 1 stdout, 2 stderr, 3 the engine's own errors; three zero bytes; the payload
// length as a big-endian uint32) followed by the payload. The socket cuts frames anywhere; payload bytes go
// out as they arrive (views of the chunks read, no copy), so a large frame is never gathered whole.
export type ContainerStream = "stdout" | "stderr";

const HEADER_BYTES = 8;

export class LogDemuxer {
  private readonly header = Buffer.alloc(HEADER_BYTES);
  private headerFill = 0;
  /** Payload bytes of the current frame still to come. */
  private remaining = 0;
  private current: ContainerStream = "stdout";

  /** emit returns false when the receiver wants the source paused; push() passes that on. */
  constructor(private readonly emit: (stream: ContainerStream, data: Buffer) => boolean) {}

  /** True when the stream stopped inside a frame (a header or a payload cut short). */
  get midFrame(): boolean {
    return this.headerFill > 0 || this.remaining > 0;
  }

  /** Adds what one read returned. Returns false when the receiver asked for a pause; throws on a malformed header. */
  push(chunk: Buffer): boolean {
    let ok = true;
    let off = 0;
    while (off < chunk.length) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - off);
        ok = this.emit(this.current, chunk.subarray(off, off + n)) && ok;
        this.remaining -= n;
        off += n;
        continue;
      }
      const n = Math.min(HEADER_BYTES - this.headerFill, chunk.length - off);
      chunk.copy(this.header, this.headerFill, off, off + n);
      this.headerFill += n;
      off += n;
      if (this.headerFill < HEADER_BYTES) break;
      this.headerFill = 0;
      this.current = streamOf(this.header);
      this.remaining = this.header.readUInt32BE(4);
    }
    return ok;
  }
}

function streamOf(header: Buffer): ContainerStream {
  const type = header[0]!;
  if (header[1] !== 0 || header[2] !== 0 || header[3] !== 0 || type > 3) {
    throw new Error(
      `not a multiplexed log stream (frame header ${header.toString("hex")}); was the container started with a TTY?`,
    );
  }
  // stdin never appears in logs; the engine's own messages (3) belong with the errors.
  return type === 2 || type === 3 ? "stderr" : "stdout";
}
