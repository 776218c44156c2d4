// A download: the file (or a tar of the directory) from `offset` on as the task's stdout, read from disk
// only while the output window is open, so a file of any size passes in bounded memory. The SHA-256 in the
// result covers the whole file: after an offset the skipped part is read and hashed first, so a client
// that resumed can check the file it assembled.
import { createHash } from "node:crypto";
import { constants } from "node:fs";
import { open, stat, type FileHandle } from "node:fs/promises";
import { Code, SwitchboardError } from "../../../common/errors.js";
import type { FileResult } from "../../../common/file-transfer.js";
import { packTree } from "../../../common/tar-tree.js";
import type { Finished, FileSpec } from "../../../gen/switchboard/v1/task.js";
import type { Execution, ExecutionContext } from "../executor.js";
import { FileRun } from "./file-run.js";
import { type FileRoots } from "./file-roots.js";

/** resolving: checking the path. hashing: the part before the offset. sending: streaming out. */
export type DownloadPhase = "resolving" | "hashing" | "sending" | "done";

const PHASES: Record<DownloadPhase, readonly DownloadPhase[]> = {
  resolving: ["hashing", "sending", "done"],
  hashing: ["sending", "done"],
  sending: ["done"],
  done: [],
};

export interface FileDownloadDeps {
  roots: FileRoots;
  agentId: string;
  /** Bytes read from disk and sent per Output. */
  chunkBytes: number;
}

export class FileDownload extends FileRun implements Execution {
  readonly done: Promise<Finished>;
  private phase: DownloadPhase = "resolving";

  constructor(
    private readonly spec: FileSpec,
    ctx: ExecutionContext,
    private readonly deps: FileDownloadDeps,
  ) {
    super(ctx, deps.agentId);
    this.done = this.finish(() => this.run()).finally(() => this.move("done"));
  }

  private async run(): Promise<FileResult> {
    const real = await this.deps.roots.resolveExisting(this.spec.path);
    const st = await stat(real);
    const on = `on agent ${this.agentId}`;
    if (st.isDirectory()) {
      if (this.spec.archive !== "tar") {
        throw new SwitchboardError(
          Code.FAILED_PRECONDITION,
          `${this.spec.path} is a directory ${on}: copy it as a tar (cp -r; archive "tar")`,
        );
      }
      return this.sendTree(real, st.mode);
    }
    if (!st.isFile()) {
      throw new SwitchboardError(Code.FAILED_PRECONDITION, `${this.spec.path} is not a regular file ${on}`);
    }
    if (this.spec.archive === "tar") {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `${this.spec.path} is a file ${on}, not a directory: copy it without -r (no archive)`,
      );
    }
    return this.sendFile(real);
  }

  private async sendFile(real: string): Promise<FileResult> {
    // O_NOFOLLOW: the path was resolved; a symlink swapped in since then is not followed.
    const fh = await open(real, constants.O_RDONLY | constants.O_NOFOLLOW);
    let next: Promise<Buffer> | undefined;
    try {
      const st = await fh.stat();
      const offset = this.spec.offset;
      if (offset > st.size) {
        throw new SwitchboardError(
          Code.OUT_OF_RANGE,
          `offset ${offset} is past the end of ${this.spec.path} (${st.size} bytes) on agent ${this.agentId}`,
        );
      }
      this.ctx.started(0);
      const hash = createHash("sha256");
      if (offset > 0) {
        this.move("hashing");
        await this.hashPrefix(fh, offset, hash, `${this.spec.path} shrank while it was being read`);
      }
      this.move("sending");
      const chunk = this.deps.chunkBytes;
      let pos = offset;
      // One read ahead: the disk works while the previous chunk waits for the window.
      next = readAt(fh, chunk, pos);
      for (;;) {
        const data = await next;
        this.checkStopped();
        if (data.length === 0) break;
        pos += data.length;
        next = readAt(fh, chunk, pos);
        hash.update(data);
        await this.writeOut(data);
      }
      return {
        sha256: hash.digest("hex"),
        bytes: pos,
        mode: st.mode & 0o7777,
        type: "file",
        path: real,
      };
    } finally {
      // A read still in flight when the run stopped: its outcome no longer matters.
      await next?.catch(() => undefined);
      await fh.close();
    }
  }

  /**
   * The tree's tar stream. With an offset (a resumed download) the stream is packed again from the start,
   * its first `offset` bytes hashed but not sent: an unchanged tree packs to the same bytes, and a changed
   * one shows in the digest, which covers the whole stream.
   */
  private async sendTree(real: string, mode: number): Promise<FileResult> {
    this.ctx.started(0);
    const offset = this.spec.offset;
    this.move(offset > 0 ? "hashing" : "sending");
    const hash = createHash("sha256");
    let bytes = 0;
    let skip = offset;
    // Tar headers come as 512-byte pieces: gathered into chunks so that they do not each cost a message.
    let pending: Buffer[] = [];
    let pendingBytes = 0;
    const flush = async (): Promise<void> => {
      if (pendingBytes === 0) return;
      const data = pending.length === 1 ? pending[0]! : Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
      await this.writeOut(data);
    };
    for await (const whole of packTree(real)) {
      this.checkStopped();
      hash.update(whole);
      bytes += whole.length;
      let piece = whole;
      if (skip > 0) {
        const n = Math.min(skip, piece.length);
        skip -= n;
        if (n === piece.length) continue;
        piece = piece.subarray(n);
        this.move("sending");
      }
      pending.push(piece);
      pendingBytes += piece.length;
      if (pendingBytes >= this.deps.chunkBytes) await flush();
    }
    if (skip > 0) {
      throw new SwitchboardError(
        Code.OUT_OF_RANGE,
        `offset ${offset} is past the end of the tar stream of ${this.spec.path} (${bytes} bytes) on agent ` +
          `${this.agentId}: the directory changed since the interrupted copy`,
      );
    }
    this.move("sending");
    await flush();
    return { sha256: hash.digest("hex"), bytes, mode: mode & 0o7777, type: "dir", path: real };
  }

  protected describe(e: unknown): SwitchboardError {
    if (e instanceof SwitchboardError) return e; // a refused tree (TarTreeError) is FAILED_PRECONDITION
    return this.fsError(e, this.spec.path);
  }

  private move(next: DownloadPhase): void {
    if (PHASES[this.phase].includes(next)) this.phase = next;
  }
}

/** Up to `size` bytes at `pos` into a fresh buffer (the outbox keeps it until the hub has it). */
async function readAt(fh: FileHandle, size: number, pos: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(size);
  const { bytesRead } = await fh.read(buf, 0, size, pos);
  return bytesRead === size ? buf : buf.subarray(0, bytesRead);
}
