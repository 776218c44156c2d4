// `switchboard cp agent:ID:/path LOCAL`: the file's bytes (or a tar of the directory) arrive as the task's
// output and go to a temporary name beside the destination (`.NAME.sb-download` for a file, a temporary
// directory for a tree), hashed on the way; once the agent's SHA-256 matches, the file gets the agent's
// mode and takes its real name. Each write is awaited before the next output is read, so the stream is
// flow-controlled back to the agent's disk. An interrupted file download keeps its temporary file, and
// --resume asks the agent for the rest from its length.
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
import type { Location } from "./commands/cp.js";
import {
  callFailed,
  checkNotInterrupted,
  hashFile,
  transferFailed,
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
  const landing = o.recursive ? await treeLanding(final, o.force) : await fileLanding(final, o, hash);
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
    target: o.remote.target,
    signal: o.signal,
    waitForAgent: o.wait,
    // Killed, this command leaves a partial file for --resume; the agent stops reading the source.
    cancelOnDisconnect: true,
    ...(o.timeoutMs > 0 ? { timeoutMs: o.timeoutMs } : {}),
  };
  let taskId = "";
  let finished: Finished | undefined;
  let received = 0;
  let committed = false;
  const kept = (): boolean => !o.recursive && landing.offset + received > 0;
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
          (landing.offset > 0 ? " (the file may have changed since the interrupted copy)" : "") +
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
  let offset = 0;
  if (o.resume) {
    const st = await lstat(tmp).catch(() => undefined);
    if (st?.isFile() && st.size > 0) {
      offset = await hashFile(tmp, hash, st.size, o.signal);
      process.stderr.write(`switchboard: resuming at byte ${offset} (${formatBytes(offset)} already here)\n`);
    }
  }
  // A few MiB of writes may be in flight, so that the disk works while the next chunks arrive.
  const out: WriteStream = createWriteStream(tmp, {
    flags: offset > 0 ? "r+" : "w",
    start: offset,
    mode: 0o600,
    highWaterMark: WRITE_AHEAD_BYTES,
  });
  let failure: Error | undefined;
  out.on("error", (e) => (failure ??= e));
  await Promise.race([once(out, "open"), once(out, "error")]).catch(() => undefined);
  const check = (): void => {
    if (failure) throw new CliError(`writing ${tmp} failed: ${failure.message}`);
  };
  check();
  const close = (): Promise<void> =>
    new Promise((resolve) => {
      if (out.closed) resolve();
      else out.end(() => resolve());
    });
  return {
    offset,
    async write(data) {
      check();
      if (!out.write(data)) await drainedOrClosed(out);
      check();
    },
    async commit(result) {
      await close();
      check();
      await chmod(tmp, result.mode & 0o777);
      await place(tmp, final, o.force);
    },
    async discard(keep) {
      await close();
      if (!keep) await rm(tmp, { force: true });
    },
  };
}

async function treeLanding(final: string, force: boolean): Promise<Landing> {
  const tmp = join(dirname(final), `.${basename(final)}.sb-download-${process.pid}`);
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
  return {
    offset: 0,
    async write(data) {
      if (!unpacker.write(data)) await unpacker.drained();
      // A refused entry stops the copy now, not at its end.
      if (refusal !== undefined) failed(refusal);
    },
    async commit() {
      unpacker.end();
      await unpacker.done.catch(failed);
      if (force && (await lstat(final).catch(() => undefined))) {
        const aside = join(dirname(final), `.${basename(final)}.sb-replaced-${process.pid}`);
        await rename(final, aside);
        await rename(tmp, final);
        await rm(aside, { recursive: true, force: true });
      } else {
        await place(tmp, final, false);
      }
    },
    async discard() {
      unpacker.abort(new Error("the copy stopped"));
      await unpacker.done.catch(() => undefined);
      await rm(tmp, { recursive: true, force: true });
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
