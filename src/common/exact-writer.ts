// A protobuf writer for the generated encoders that writes a message into one buffer of exactly its size,
// copying each `bytes` field once. The library's writer grows one buffer, shifts a nested message's bytes
// whenever its length prefix needs more than one byte (a 1 MiB output chunk inside an event inside a
// response: three shifts of 1 MiB), then copies the result out. This one runs the encoder twice: first
// counting (each nested message's length noted in the order the encoder opens them), then writing, every
// length prefix known before its message. Data is copied once, and the buffer can be reused.
import type { BinaryWriter } from "@bufbuild/protobuf/wire";

/** The part of BinaryWriter that the generated encoders call. */
interface EncoderWriter {
  uint32(value: number): this;
  int32(value: number): this;
  uint64(value: string | number | bigint): this;
  int64(value: string | number | bigint): this;
  bool(value: boolean): this;
  double(value: number): this;
  string(value: string): this;
  bytes(value: Uint8Array): this;
  fork(): this;
  join(): this;
}

export interface Encodes<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
}

function varint32Size(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  if (v < 0x200000) return 3;
  if (v < 0x10000000) return 4;
  return 5;
}

/** A 64-bit value as the wire carries it: unsigned, two's complement for negatives. */
function toUint64(value: string | number | bigint): bigint | number {
  if (typeof value === "number" && value >= 0 && Number.isSafeInteger(value)) return value;
  return BigInt.asUintN(64, BigInt(value));
}

function varint64Size(v: bigint | number): number {
  if (typeof v === "number") {
    let n = 1;
    while (v >= 128) {
      v = Math.floor(v / 128);
      n++;
    }
    return n;
  }
  let n = 1;
  while (v >= 128n) {
    v >>= 7n;
    n++;
  }
  return n;
}

export class ExactWriter implements EncoderWriter {
  private counting = true;
  /** Counting: bytes so far. Writing: the write position. */
  private pos = 0;
  /** Counting: where each open nested message began and which length it fills. */
  private readonly open: { start: number; index: number }[] = [];
  /** Each nested message's length, in the order fork() was called. */
  private lengths: number[] = [];
  private nextLength = 0;
  private buf: Buffer = Buffer.alloc(0);

  /** Encodes `message` into `into(size)` (a buffer of at least `size` bytes); returns the bytes written. */
  encode<T>(type: Encodes<T>, message: T, into: (size: number) => Buffer): Buffer {
    this.counting = true;
    this.pos = 0;
    this.lengths = [];
    this.open.length = 0;
    type.encode(message, this as unknown as BinaryWriter);
    if (this.open.length !== 0) throw new Error("ExactWriter: a nested message was not closed");
    const size = this.pos;
    this.buf = into(size);
    this.counting = false;
    this.pos = 0;
    this.nextLength = 0;
    try {
      type.encode(message, this as unknown as BinaryWriter);
      if (this.pos !== size) throw new Error(`ExactWriter: counted ${size} bytes, wrote ${this.pos}`);
      return this.buf.subarray(0, size);
    } finally {
      this.buf = EMPTY;
      this.lengths = [];
    }
  }

  uint32(value: number): this {
    let v = value >>> 0;
    if (this.counting) {
      this.pos += varint32Size(v);
      return this;
    }
    while (v >= 0x80) {
      this.buf[this.pos++] = (v & 0x7f) | 0x80;
      v >>>= 7;
    }
    this.buf[this.pos++] = v;
    return this;
  }

  int32(value: number): this {
    // Negative values are sign-extended to ten bytes, as in the library's writer.
    return value >= 0 ? this.uint32(value) : this.varint64(BigInt.asUintN(64, BigInt(value | 0)));
  }

  uint64(value: string | number | bigint): this {
    return this.varint64(toUint64(value));
  }

  int64(value: string | number | bigint): this {
    return this.varint64(toUint64(value));
  }

  bool(value: boolean): this {
    if (this.counting) this.pos += 1;
    else this.buf[this.pos++] = value ? 1 : 0;
    return this;
  }

  double(value: number): this {
    if (!this.counting) this.buf.writeDoubleLE(value, this.pos);
    this.pos += 8;
    return this;
  }

  string(value: string): this {
    const n = Buffer.byteLength(value, "utf8");
    this.uint32(n);
    if (!this.counting) this.buf.write(value, this.pos, n, "utf8");
    this.pos += n;
    return this;
  }

  bytes(value: Uint8Array): this {
    this.uint32(value.byteLength);
    if (!this.counting) this.buf.set(value, this.pos);
    this.pos += value.byteLength;
    return this;
  }

  fork(): this {
    if (this.counting) {
      this.open.push({ start: this.pos, index: this.lengths.length });
      this.lengths.push(0);
      return this;
    }
    return this.uint32(this.lengths[this.nextLength++]!);
  }

  join(): this {
    if (!this.counting) return this;
    const f = this.open.pop();
    if (!f) throw new Error("ExactWriter: join() without fork()");
    const len = this.pos - f.start;
    this.lengths[f.index] = len;
    this.pos += varint32Size(len);
    return this;
  }

  private varint64(v: bigint | number): this {
    if (this.counting) {
      this.pos += varint64Size(v);
      return this;
    }
    if (typeof v === "number") {
      while (v >= 128) {
        this.buf[this.pos++] = (v % 128) | 0x80;
        v = Math.floor(v / 128);
      }
      this.buf[this.pos++] = v;
      return this;
    }
    while (v >= 128n) {
      this.buf[this.pos++] = Number(v & 0x7fn) | 0x80;
      v >>= 7n;
    }
    this.buf[this.pos++] = Number(v);
    return this;
  }
}

const EMPTY = Buffer.alloc(0);
