// `switchboard cp agent:ID:/path LOCAL`: the file's bytes (or a tar of the directory) arrive as the task's
// output and go to a temporary name beside the destination (`.NAME.sb-download` for a file, a temporary
// directory for a tree), hashed on the way; once the agent's SHA-256 matches, the file gets the agent's
// mode and takes its real name. Each write is awaited before the next output is read, so the stream is
// flow-controlled back to the agent's disk. An interrupted download keeps its temporary file (a tree's tar
// stream too), and --resume asks the agent for the rest from its length.
import { createHash } from "node:crypto";
import { createWriteStream, type WriteStream } from "node:fs";
import { chmod, link, lstat, mkdir, rename, rm, stat, unlink } from "node:fs/promises";
import { once } from "node:events";
import { basename, dirname, join } from "node:path";
import { file, parseFileResult, type FileResult, type SwitchboardClient } from "../client/index.js";
import { downloadTempName } from "../common/file-transfer.js";
import { TarTreeError, TreeUnpacker } from "../common/tar-tree.js";
import { OutputStream, TaskState, type Finished } from "../gen/switchboard/v1/task.js";
import { CliError } from "./cli-error.js";
import type { Location } from "./cp-transfer.js";
import {
  callFailed,
  checkNotInterrupted,
  hashFile,
  transferFailed,
  transferTask,
  type TransferOptions,
} from "./cp-transfer.js";
import { formatBytes } from "./progress-line.js";
import { drainedOrClosed } from "../common/drained.js";

export interface DownloadOptions extends TransferOptions {
  remote: Extract<Location, { kind: "remote" }>;
  local: string;
}

/** Bytes handed to the disk and not yet written, at most: the download's memory besides one chunk. */
const WRITE_AHEAD_BYTES = 4 * 1024 * 1024;

/** Where received bytes go until they are whole. */
interface Landing {
  /** Bytes already there (a resumed file), hashed into the digest before the new ones. */
  offset: number;
  write(data: Buffer): Promise<void>;
  /** The content is verified: give it the mode and the real name. */
  commit(result: FileResult): Promise<void>;
  /** Keep what arrived for --resume (true), or remove it. */
  discard(keep: boolean): Promise<void>;
}

export async function download(client: SwitchboardClient, o: DownloadOptions): Promise<FileResult> {
  const final = await finalPath(o.local, o.remote.path, o.force);
  const hash = createHash("sha256");
  const landing = o.recursive ? await treeLanding(final, o, hash) : await fileLanding(final, o, hash);
  if (o.signal.aborted) {
    await landing.discard(landing.offset > 0);
    checkNotInterrupted(o.signal);
  }
  const req = {
    ...file({
      op: "download",
      path: o.remote.path,
      offset: landing.offset,
      ...(o.recursive ? { archive: "tar" as const } : {}),
    }),
    ...transferTask(o, o.remote.target, o.signal),
  };
  let taskId = "";
  let finished: Finished | undefined;
  let received = 0;
  let committed = false;
  const kept = (): boolean => landing.offset + received > 0;
  try {
    try {
      for await (const ev of client.run(req, { onTaskId: (id) => (taskId = id) })) {
        const e = ev.event;
        if (e?.$case === "output" && e.value.stream === OutputStream.OUTPUT_STREAM_STDOUT) {
          const data = Buffer.from(e.value.data.buffer, e.value.data.byteOffset, e.value.data.byteLength);
          hash.update(data);
          received += data.length;
          await landing.write(data);
          o.progress.update(0, landing.offset + received);
        } else if (e?.$case === "finished") {
          finished = e.value;
        }
      }
    } catch (err) {
      callFailed(err, o.signal, kept(), `${landing.offset + received} bytes`);
    }
    if (!finished) throw new CliError(`the hub ended the stream of task ${taskId} without a result`);
    if (finished.state !== TaskState.TASK_STATE_SUCCEEDED) throw transferFailed(finished, taskId, kept());
    const result = parseFileResult(finished.result);
    if (!result) throw new CliError(`task ${taskId}: the agent's result is not a file result`);
    const digest = hash.digest("hex");
    if (digest !== result.sha256 || landing.offset + received !== result.bytes) {
      await landing.discard(false);
      throw new CliError(
        `SHA-256 mismatch for ${o.remote.path}: agent ${o.remote.shown} sent ${result.bytes} bytes with ` +
          `${result.sha256}, ${landing.offset + received} bytes with ${digest} arrived` +
          (landing.offset > 0
            ? ` (the ${o.recursive ? "directory" : "file"} may have changed since the interrupted copy)`
            : "") +
          `; nothing was written to ${final} (DATA_LOSS)`,
      );
    }
    await landing.commit(result);
    committed = true;
    return { ...result, path: final };
  } finally {
    if (!committed) await landing.discard(kept());
  }
}

/** The destination: into a directory (one given with a trailing slash, or an existing one) by the source's name. */
async function finalPath(local: string, remotePath: string, force: boolean): Promise<string> {
  const name = basename(remotePath.replace(/\/+$/, ""));
  const st = await stat(local).catch(() => undefined);
  const final = local.endsWith("/") || st?.isDirectory() ? join(local, name) : local;
  const existing = await lstat(final).catch(() => undefined);
  if (existing && !force) throw new CliError(`${final} exists`, 1, "pass --force to replace it");
  const parent = await stat(dirname(final)).catch(() => undefined);
  if (!parent?.isDirectory()) throw new CliError(`${dirname(final)} is not a directory`);
  return final;
}

async function fileLanding(
  final: string,
  o: DownloadOptions,
  hash: ReturnType<typeof createHash>,
): Promise<Landing> {
  const tmp = join(dirname(final), downloadTempName(basename(final)));
  const offset = o.resume ? await resumeFrom(tmp, hash, o.signal) : 0;
  const out = await spoolWriter(tmp, offset);
  return {
    offset,
    write: (data) => out.write(data),
    async commit(result) {
      await out.close();
      await chmod(tmp, result.mode & 0o777);
      await place(tmp, final, o.force);
    },
    async discard(keep) {
      await out.close().catch(() => undefined);
      if (!keep) await rm(tmp, { force: true });
    },
  };
}

/**
 * A tree's tar stream is unpacked as it arrives (a refused entry stops the copy at once) and also kept in
 * `.NAME.sb-download.tar` until the tree is placed, so that --resume can carry on: the kept part is
 * unpacked again first, then the agent sends the rest.
 */
async function treeLanding(
  final: string,
  o: DownloadOptions,
  hash: ReturnType<typeof createHash>,
): Promise<Landing> {
  const spoolPath = join(dirname(final), `${downloadTempName(basename(final))}.tar`);
  // A stable name: what a killed attempt unpacked is cleared by the next one.
  const tmp = join(dirname(final), `${downloadTempName(basename(final))}.d`);
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { mode: 0o700 });
  const unpacker = new TreeUnpacker(tmp);
  let refusal: unknown;
  unpacker.done.catch((e: unknown) => (refusal ??= e));
  const failed = (e: unknown): never => {
    if (e instanceof TarTreeError)
      throw new CliError(`the directory from the agent was refused: ${e.message}`);
    throw e;
  };
  const unpack = async (data: Buffer): Promise<void> => {
    if (!unpacker.write(data)) await unpacker.drained();
    // A refused entry stops the copy now, not at its end.
    if (refusal !== undefined) failed(refusal);
  };
  const clear = async (keepSpool: boolean): Promise<void> => {
    unpacker.abort(new Error("the copy stopped"));
    await unpacker.done.catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
    // A stream the unpacker refused is not worth resuming.
    if (!keepSpool || refusal !== undefined) await rm(spoolPath, { force: true });
  };
  let offset = 0;
  let out: SpoolWriter;
  try {
    if (o.resume) offset = await resumeFrom(spoolPath, hash, o.signal, unpack);
    out = await spoolWriter(spoolPath, offset);
  } catch (e) {
    await clear(true);
    throw e;
  }
  return {
    offset,
    async write(data) {
      await out.write(data);
      await unpack(data);
    },
    async commit() {
      await out.close();
      unpacker.end();
      await unpacker.done.catch(failed);
      if (o.force && (await lstat(final).catch(() => undefined))) {
        const aside = join(dirname(final), `.${basename(final)}.sb-replaced-${process.pid}`);
        await rename(final, aside);
        await rename(tmp, final);
        await rm(aside, { recursive: true, force: true });
      } else {
        await place(tmp, final, false);
      }
      await rm(spoolPath, { force: true });
    },
    async discard(keep) {
      await out.close().catch(() => undefined);
      await clear(keep);
    },
  };
}

/** The length of a kept partial (hashed, and handed to `also`), announced on stderr; 0 when there is none. */
async function resumeFrom(
  path: string,
  hash: ReturnType<typeof createHash>,
  signal: AbortSignal,
  also?: (piece: Buffer) => Promise<void>,
): Promise<number> {
  const st = await lstat(path).catch(() => undefined);
  if (!st?.isFile() || st.size === 0) return 0;
  const offset = await hashFile(path, hash, st.size, signal, also);
  process.stderr.write(`switchboard: resuming at byte ${offset} (${formatBytes(offset)} already here)\n`);
  return offset;
}

interface SpoolWriter {
  write(data: Buffer): Promise<void>;
  /** Ends the file; throws a write that failed. */
  close(): Promise<void>;
}

/** Writes to `path` from `offset` (truncating it at 0), a few MiB in flight so that the disk works meanwhile. */
async function spoolWriter(path: string, offset: number): Promise<SpoolWriter> {
  const out: WriteStream = createWriteStream(path, {
    flags: offset > 0 ? "r+" : "w",
    start: offset,
    mode: 0o600,
    highWaterMark: WRITE_AHEAD_BYTES,
  });
  let failure: Error | undefined;
  out.on("error", (e) => (failure ??= e));
  await Promise.race([once(out, "open"), once(out, "error")]).catch(() => undefined);
  const check = (): void => {
    if (failure) throw new CliError(`writing ${path} failed: ${failure.message}`);
  };
  check();
  return {
    async write(data) {
      check();
      if (!out.write(data)) await drainedOrClosed(out);
      check();
    },
    async close() {
      await new Promise<void>((resolve) => {
        if (out.closed) resolve();
        else out.end(() => resolve());
      });
      check();
    },
  };
}

/** Renames onto the destination; without force, never over something that appeared meanwhile. */
async function place(tmp: string, final: string, force: boolean): Promise<void> {
  if (force) {
    await rename(tmp, final);
    return;
  }
  const st = await lstat(tmp);
  if (st.isDirectory()) {
    if (await lstat(final).catch(() => undefined)) throw new CliError(`${final} appeared during the copy`);
    await rename(tmp, final);
    return;
  }
  try {
    await link(tmp, final);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") {
      throw new CliError(`${final} appeared during the copy`, 1, "pass --force to replace it");
    }
    if (await lstat(final).catch(() => undefined)) throw new CliError(`${final} appeared during the copy`);
    await rename(tmp, final);
    return;
  }
  await unlink(tmp);
}
