// An upload: the client's bytes arrive as task input, only within the windows granted here (a few MiB
// ahead of what is on disk), so memory stays bounded whatever the size. A file goes to a hidden temporary
// name next to the target (`.NAME.sb-upload-<sha256 prefix>`); at the end of input its size and SHA-256
// must match the task's, then it gets its mode, is synced and renamed onto the target. A directory is a tar
// stream unpacked into a temporary directory the same way. Nothing ever appears under the target's name
// half-written. A stopped or broken upload of a file keeps its temporary file: an upload of the same
// content with `resume` continues it from its length (announced as {"offset":N} on stdout).
import { createHash, type Hash } from "node:crypto";
import { constants } from "node:fs";
import { link, lstat, mkdir, open, rename, rm, stat, unlink, type FileHandle } from "node:fs/promises";
import { join } from "node:path";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { offsetLine, uploadTempName, type FileResult } from "../../../common/file-transfer.js";
import { TarTreeError, TreeUnpacker } from "../../../common/tar-tree.js";
import type { Finished, FileSpec } from "../../../gen/switchboard/v1/task.js";
import type { Execution, ExecutionContext, InputChunk } from "../executor.js";
import type { Partials } from "./file-partials.js";
import { FileRun } from "./file-run.js";
import { type FileRoots, type PlacedPath } from "./file-roots.js";

/**
 * resolving: checking the path and the target. resuming: hashing what an earlier attempt wrote.
 * receiving: taking input. verifying: size and digest at the end of input. placing: the rename.
 */
export type UploadPhase = "resolving" | "resuming" | "receiving" | "verifying" | "placing" | "done";

const PHASES: Record<UploadPhase, readonly UploadPhase[]> = {
  resolving: ["resuming", "receiving", "done"],
  resuming: ["receiving", "done"],
  receiving: ["verifying", "done"],
  verifying: ["placing", "done"],
  placing: ["done"],
  done: [],
};

/** Input granted ahead of what is written: the most an upload holds in memory. */
export const UPLOAD_WINDOW_BYTES = 4 * 1024 * 1024;
/** Written bytes are granted again in steps of at least this much (fewer InputWindow messages). */
const REGRANT_BYTES = UPLOAD_WINDOW_BYTES / 4;

export interface FileUploadDeps {
  roots: FileRoots;
  agentId: string;
  idleTimeoutMs: number;
  claims: UploadClaims;
  /** Where partials kept for a resume are noted, to be removed once nobody resumed them in time. */
  partials: Partials;
}

/** Where received bytes go: a temporary file (for a tree, also unpacked into a temporary directory). */
interface UploadSink {
  write(chunks: Buffer[], bytes: number): Promise<void>;
}

/** Writes what arrives to `file` from `offset` on, then hands it to `also` (a tree's unpacker). */
function fileSink(file: FileHandle, offset: number, also?: (chunks: Buffer[]) => Promise<void>): UploadSink {
  let pos = offset;
  return {
    write: async (chunks, bytes) => {
      const { bytesWritten } = await file.writev(chunks, pos);
      if (bytesWritten !== bytes) throw new Error(`short write: ${bytesWritten} of ${bytes} bytes`);
      pos += bytes;
      await also?.(chunks);
    },
  };
}

const SHRANK = "the partial upload shrank while it was read";

/** A tree upload keeps its tar stream beside its temporary directory, under this suffix. */
const TREE_STREAM_SUFFIX = ".tar";

export class FileUpload extends FileRun implements Execution {
  readonly done: Promise<Finished>;
  private phase: UploadPhase = "resolving";
  private readonly isTree: boolean;
  private readonly hash: Hash = createHash("sha256");
  /** Bytes of the content taken so far, the resumed part included. */
  private received = 0;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private eof = false;
  /** The digest the client sent with the end of input (when the spec left it out). */
  private endSha256 = "";
  private failure: SwitchboardError | undefined;
  private wake: (() => void) | undefined;

  constructor(
    private readonly spec: FileSpec,
    ctx: ExecutionContext,
    private readonly deps: FileUploadDeps,
  ) {
    super(ctx, deps.agentId);
    this.isTree = spec.archive === "tar";
    this.done = this.finish(() => this.run()).finally(() => this.move("done"));
  }

  /** A newer upload of the same file takes over (its client resumed after this one's went away). */
  supersede(byTaskId: string): void {
    this.stop({
      cause: "cancelled",
      reason: `superseded by task ${byTaskId}, a newer upload of the same file`,
    });
  }

  input(chunk: InputChunk): void {
    if (this.phase !== "receiving" || this.failure || this.stopRequest) {
      if (chunk.data.length > 0 || chunk.eof) {
        this.ctx.logger.debug({ taskId: this.ctx.taskId, phase: this.phase }, "upload input ignored");
      }
      return;
    }
    const n = chunk.data.length;
    if (n > 0) {
      const sized = !this.isTree || this.spec.sha256 !== "";
      if (sized && this.received + n > this.spec.size) {
        this.failure = new SwitchboardError(
          Code.INVALID_ARGUMENT,
          `the client sent more than the ${this.spec.size} bytes it declared for ${this.spec.path}`,
        );
        this.wakeUp();
        return;
      }
      this.hash.update(chunk.data);
      this.received += n;
      this.queue.push(chunk.data);
      this.queuedBytes += n;
    }
    if (chunk.eof) {
      this.eof = true;
      this.endSha256 = chunk.sha256 ?? "";
    }
    this.wakeUp();
  }

  protected override onStop(): void {
    this.wakeUp();
  }

  private wakeUp(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private async run(): Promise<FileResult> {
    const place = await this.deps.roots.resolveForCreate(this.spec.path);
    const existing = await lstat(place.path).catch(() => undefined);
    if (existing) {
      if (!this.spec.overwrite) {
        throw new SwitchboardError(
          Code.ALREADY_EXISTS,
          `${this.spec.path} already exists on agent ${this.agentId}; replace it with overwrite (cp --force)`,
        );
      }
      if (!this.isTree && existing.isDirectory()) {
        throw new SwitchboardError(
          Code.FAILED_PRECONDITION,
          `${this.spec.path} is a directory on agent ${this.agentId}; end the destination with / to copy into it`,
        );
      }
      if (this.isTree && !existing.isDirectory()) {
        throw new SwitchboardError(
          Code.FAILED_PRECONDITION,
          `${this.spec.path} exists on agent ${this.agentId} and is not a directory`,
        );
      }
    }
    const key = this.spec.sha256 || this.spec.resumeKey || this.ctx.taskId;
    const tmp = join(place.dir, uploadTempName(place.name, key));
    const release = await this.deps.claims.claim(tmp, this, this.ctx.taskId);
    const kept = this.isTree ? [tmp, `${tmp}${TREE_STREAM_SUFFIX}`] : [tmp];
    try {
      this.checkStopped();
      await this.deps.partials.note(...kept);
      return this.isTree ? await this.receiveTree(place, tmp) : await this.receiveFile(place, tmp);
    } finally {
      release();
      // What is still there is kept for a resume; the rest was placed or discarded.
      const gone = [];
      for (const p of kept) if (!(await lstat(p).catch(() => undefined))) gone.push(p);
      await this.deps.partials.forget(...gone);
    }
  }

  private async receiveFile(place: PlacedPath, tmp: string): Promise<FileResult> {
    let fh: FileHandle | undefined;
    let offset = 0;
    let keepTemp = true;
    try {
      ({ fh, offset } = await this.openPartial(tmp));
      this.ctx.started(0);
      if (offset > 0) {
        this.move("resuming");
        await this.hashPrefix(fh, offset, this.hash, SHRANK);
      }
      if (this.spec.resume) await this.writeOut(offsetLine(offset));
      this.received = offset;
      await this.receive(fileSink(fh, offset));
      this.move("verifying");
      if (this.received !== this.spec.size) {
        throw new SwitchboardError(
          Code.DATA_LOSS,
          `the upload of ${this.spec.path} ended after ${this.received} of ${this.spec.size} bytes; ` +
            `what arrived is kept for a resumed upload`,
        );
      }
      const digest = this.hash.digest("hex");
      const declared = this.spec.sha256 || this.endSha256;
      if (declared === "") {
        keepTemp = false;
        throw new SwitchboardError(
          Code.INVALID_ARGUMENT,
          `the upload of ${this.spec.path} ended without its SHA-256 (in the task or with the end of input); ` +
            `the upload was discarded`,
        );
      }
      if (digest !== declared) {
        keepTemp = false;
        throw new SwitchboardError(
          Code.DATA_LOSS,
          `SHA-256 mismatch for ${this.spec.path}: the client declared ${declared}, ` +
            `agent ${this.agentId} received ${digest}; the upload was discarded`,
        );
      }
      const mode = (this.spec.mode || 0o644) & 0o777;
      await fh.chmod(mode);
      await fh.sync();
      await fh.close();
      fh = undefined;
      this.move("placing");
      await this.placeFile(tmp, place.path);
      await syncDir(place.dir);
      return {
        sha256: digest,
        bytes: this.received,
        mode,
        type: "file",
        path: place.path,
        resumed_from: offset,
      };
    } catch (e) {
      if (e instanceof SwitchboardError && e.code === Code.INVALID_ARGUMENT) keepTemp = false;
      throw e;
    } finally {
      await fh?.close().catch(() => undefined);
      if (!keepTemp) await rm(tmp, { force: true });
    }
  }

  /**
   * The file an upload writes to: with resume, what an earlier attempt kept there (writing on at its end);
   * otherwise, or when what is there cannot be a prefix of the content, a new empty file.
   */
  private async openPartial(path: string): Promise<{ fh: FileHandle; offset: number }> {
    const old = await lstat(path).catch(() => undefined);
    // Only a regular file no longer than the content can be a prefix of it.
    if (this.spec.resume && old?.isFile() && old.size <= this.spec.size) {
      return { fh: await open(path, constants.O_RDWR | constants.O_NOFOLLOW), offset: old.size };
    }
    if (old) await rm(path, { force: true, recursive: true });
    const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
    return { fh: await open(path, flags, 0o600), offset: 0 };
  }

  /** Onto the target: replacing it only with overwrite, never leaving a second name behind. */
  private async placeFile(tmp: string, target: string): Promise<void> {
    if (this.spec.overwrite) {
      await rename(tmp, target);
      return;
    }
    try {
      // link() fails on an existing target, where rename() would replace it.
      await link(tmp, target);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EEXIST") {
        await rm(tmp, { force: true });
        throw new SwitchboardError(
          Code.ALREADY_EXISTS,
          `${this.spec.path} appeared on agent ${this.agentId} during the upload; replace it with overwrite (cp --force)`,
        );
      }
      if (code !== "EPERM" && code !== "ENOTSUP" && code !== "EOPNOTSUPP") throw e;
      // A file system without hard links: check, then rename.
      if (await lstat(target).catch(() => undefined)) {
        throw new SwitchboardError(Code.ALREADY_EXISTS, `${this.spec.path} appeared during the upload`);
      }
      await rename(tmp, target);
      return;
    }
    await unlink(tmp);
  }

  /**
   * A tree's tar stream is unpacked as it arrives and also kept, in `<tmp>.tar`, until the tree is placed:
   * an interrupted upload resumes (cp -r --resume) from the end of that file, unpacking the kept part
   * again first. The stream's digest is in the task, so the kept file belongs to this content only.
   */
  private async receiveTree(place: PlacedPath, tmp: string): Promise<FileResult> {
    const spool = `${tmp}${TREE_STREAM_SUFFIX}`;
    await rm(tmp, { recursive: true, force: true });
    await mkdir(tmp, { mode: 0o700 });
    const unpacker = new TreeUnpacker(tmp);
    let placed = false;
    // Kept for a resume only when it can be found again: named by the digest in the task.
    let keepSpool = this.spec.sha256 !== "";
    let fh: FileHandle | undefined;
    try {
      let offset: number;
      ({ fh, offset } = await this.openPartial(spool));
      this.ctx.started(0);
      // A refusal from the unpacker ends the upload at once, not at the end of input.
      unpacker.done.catch((e: unknown) => {
        this.failure ??= this.describe(e);
        this.wakeUp();
      });
      const unpack = async (chunks: Buffer[]): Promise<void> => {
        for (const c of chunks) if (!unpacker.write(c)) await unpacker.drained();
      };
      if (offset > 0) {
        this.move("resuming");
        await this.hashPrefix(fh, offset, this.hash, SHRANK, async (piece) => {
          await unpack([piece]);
          this.checkFailed();
        });
      }
      if (this.spec.resume) await this.writeOut(offsetLine(offset));
      this.received = offset;
      await this.receive(fileSink(fh, offset, unpack));
      this.move("verifying");
      // Without a digest in the task (an SDK may leave it out) there is nothing to check the stream against.
      const declared = this.spec.sha256 !== "";
      if (declared && this.received !== this.spec.size) {
        throw new SwitchboardError(
          Code.DATA_LOSS,
          `the tar stream for ${this.spec.path} ended after ${this.received} of ${this.spec.size} bytes; ` +
            `what arrived is kept for a resumed upload (cp -r --resume)`,
        );
      }
      unpacker.end();
      await unpacker.done;
      const digest = this.hash.digest("hex");
      if (declared && digest !== this.spec.sha256) {
        keepSpool = false;
        throw new SwitchboardError(
          Code.DATA_LOSS,
          `the tar stream for ${this.spec.path} does not match what the client declared ` +
            `(${this.spec.size} bytes, SHA-256 ${this.spec.sha256}); agent ${this.agentId} received ` +
            `${this.received} bytes, SHA-256 ${digest}; the upload was discarded`,
        );
      }
      this.move("placing");
      await this.placeTree(tmp, place);
      placed = true;
      const st = await stat(place.path);
      return {
        sha256: digest,
        bytes: this.received,
        mode: st.mode & 0o7777,
        type: "dir",
        path: place.path,
        resumed_from: offset,
      };
    } catch (e) {
      // A stream the unpacker refused (or one without its digest) is not worth resuming.
      const f = this.describe(e);
      if (f.code === Code.INVALID_ARGUMENT || f.code === Code.PERMISSION_DENIED) keepSpool = false;
      throw e;
    } finally {
      await fh?.close().catch(() => undefined);
      if (!placed) {
        unpacker.abort(new Error("the upload ended"));
        await unpacker.done.catch(() => undefined);
        await rm(tmp, { recursive: true, force: true });
      }
      if (placed || !keepSpool) await rm(spool, { force: true });
    }
  }

  private async placeTree(tmp: string, place: PlacedPath): Promise<void> {
    const existing = await lstat(place.path).catch(() => undefined);
    if (!existing) {
      await rename(tmp, place.path);
      return;
    }
    if (!this.spec.overwrite) {
      throw new SwitchboardError(
        Code.ALREADY_EXISTS,
        `${this.spec.path} appeared on agent ${this.agentId} during the upload; replace it with overwrite (cp --force)`,
      );
    }
    // The old tree steps aside, the new one takes its name, then the old one goes.
    const aside = join(place.dir, `.${place.name}.sb-replaced-${this.ctx.taskId}`);
    await rename(place.path, aside);
    try {
      await rename(tmp, place.path);
    } catch (e) {
      await rename(aside, place.path).catch(() => undefined);
      throw e;
    }
    await rm(aside, { recursive: true, force: true });
  }

  /** Takes input until its end, writing it through `sink`, granting windows as the writes complete. */
  private async receive(sink: UploadSink): Promise<void> {
    this.move("receiving");
    this.ctx.grantInput(UPLOAD_WINDOW_BYTES);
    let written = 0;
    for (;;) {
      this.checkStopped();
      this.checkFailed();
      if (this.queuedBytes === 0 && this.queue.length === 0) {
        if (this.eof) break;
        await this.nextInput();
        continue;
      }
      const chunks = this.queue;
      const bytes = this.queuedBytes;
      this.queue = [];
      this.queuedBytes = 0;
      await sink.write(chunks, bytes);
      written += bytes;
      if (written >= REGRANT_BYTES) {
        this.ctx.grantInput(written);
        written = 0;
      }
    }
    this.checkStopped();
    this.checkFailed();
  }

  /** Throws the failure input or the unpacker reported, if any. */
  private checkFailed(): void {
    if (this.failure) throw this.failure;
  }

  /** Waits for input, a stop or a failure; fails when the client sends nothing for the idle timeout. */
  private nextInput(): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.failure ??= new SwitchboardError(
          Code.DEADLINE_EXCEEDED,
          `no upload bytes arrived for ${this.deps.idleTimeoutMs / 1000} s ([files] idle_timeout_secs on agent ${this.agentId}); ` +
            `the ${this.received} bytes received are kept for a resumed upload`,
        );
        this.wakeUp();
      }, this.deps.idleTimeoutMs);
      this.wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  protected describe(e: unknown): SwitchboardError {
    if (e instanceof TarTreeError) {
      return new SwitchboardError(e.escapes ? Code.PERMISSION_DENIED : Code.INVALID_ARGUMENT, e.message);
    }
    if (e instanceof SwitchboardError) return e;
    return this.fsError(e, this.spec.path);
  }

  private move(next: UploadPhase): void {
    if (PHASES[this.phase].includes(next)) this.phase = next;
  }
}

/** fsync of a directory, so that a rename in it survives a crash. */
async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, constants.O_RDONLY);
  try {
    await fh.sync();
  } catch {
    // some file systems refuse fsync on a directory; the rename stands anyway
  } finally {
    await fh.close();
  }
}

/** What an upload needs to be told when a newer one of the same file takes over. */
interface ClaimHolder {
  supersede(byTaskId: string): void;
  readonly done: Promise<unknown>;
}

/**
 * Who writes which temporary path. A client that was killed mid-upload leaves its task waiting for input;
 * the upload that resumes it must not write the same file beside it, so it stops the older one and waits
 * for it to close the file.
 */
export class UploadClaims {
  private readonly holders = new Map<string, ClaimHolder>();

  /** An upload is writing to this partial now (its temporary file or directory, or a tree's kept stream). */
  holds(partial: string): boolean {
    if (this.holders.has(partial)) return true;
    return (
      partial.endsWith(TREE_STREAM_SUFFIX) && this.holders.has(partial.slice(0, -TREE_STREAM_SUFFIX.length))
    );
  }

  async claim(path: string, holder: ClaimHolder, taskId: string): Promise<() => void> {
    for (;;) {
      const prev = this.holders.get(path);
      if (!prev || prev === holder) break;
      prev.supersede(taskId);
      await prev.done.catch(() => undefined);
      // Released in its run, before its done settled; if not, it is gone for good now.
      if (this.holders.get(path) === prev) this.holders.delete(path);
    }
    this.holders.set(path, holder);
    return () => {
      if (this.holders.get(path) === holder) this.holders.delete(path);
    };
  }
}
