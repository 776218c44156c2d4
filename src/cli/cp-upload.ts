// `switchboard cp LOCAL agent:ID:/path`: a file is read once, hashed as it is sent as the task's input in
// 256 KiB chunks (each write awaited, so only a few chunks are ever in memory), and its SHA-256 goes with
// the end of input for the agent to check before it places the file. A directory's tar stream is read
// once before for its size and digest, which go in the task. With --resume the agent first says from
// which byte to carry on ({"offset":N}); the part before it is only read for the digest (a tree's is
// packed again and skipped), the rest sent.
import { createHash, type Hash } from "node:crypto";
import { realpath, stat } from "node:fs/promises";
import { basename } from "node:path";
import {
  file,
  parseFileResult,
  parseOffsetLine,
  type FileResult,
  type SwitchboardClient,
} from "../client/index.js";
import { uploadResumeKey } from "../common/file-transfer.js";
import { packTree } from "../common/tar-tree.js";
import { OutputStream, TaskState, type Finished } from "../gen/switchboard/v1/task.js";
import { CliError, usageError } from "./cli-error.js";
import type { Location } from "./cp-transfer.js";
import {
  callFailed,
  checkNotInterrupted,
  CHUNK_BYTES,
  hashFile,
  transferFailed,
  transferTask,
  type TransferOptions,
} from "./cp-transfer.js";
import { fileChunks } from "./file-chunks.js";
import { formatBytes } from "./progress-line.js";

export interface UploadOptions extends TransferOptions {
  local: string;
  remote: Extract<Location, { kind: "remote" }>;
}

/**
 * What is sent: a file from an offset (its digest computed while sending, the part before the offset read
 * for it first), or a directory's tar stream (digest known before).
 */
interface Source {
  kind: "file" | "dir";
  size: number;
  /** The directory's digest; "" for a file. */
  sha256: string;
  /** A file's: names the partial file that --resume continues. */
  resumeKey: string;
  mode: number;
  read(offset: number): AsyncIterable<Buffer>;
  /** A file's: feeds its first `end` bytes into `hash`. */
  hashPrefix(hash: Hash, end: number): Promise<void>;
}

export async function upload(client: SwitchboardClient, o: UploadOptions): Promise<FileResult> {
  const source = await openSource(o.local, o.recursive, o.signal);
  checkNotInterrupted(o.signal);
  const path = o.remote.path.endsWith("/") ? `${o.remote.path}${basename(o.local)}` : o.remote.path;
  o.progress.setTotal(source.size);
  // Ctrl-C, or a broken sender, cancels the task.
  const runAbort = new AbortController();
  const onAbort = (): void => runAbort.abort();
  o.signal.addEventListener("abort", onAbort, { once: true });
  const req = {
    ...file({
      op: "upload",
      path,
      size: source.size,
      sha256: source.sha256,
      resumeKey: source.resumeKey,
      mode: source.mode,
      resume: o.resume,
      overwrite: o.force,
      ...(source.kind === "dir" ? { archive: "tar" as const } : {}),
    }),
    ...transferTask(o, o.remote.target, runAbort.signal),
  };
  let taskId = "";
  let finished: Finished | undefined;
  let offset = 0;
  let sent = 0;
  /** The digest of what was sent (a file's, the part before the offset included), once sent. */
  let sentSha256 = source.sha256;
  let lineText = "";
  // The sender runs beside the event loop below and stops when the task ends.
  const stopSending = new AbortController();
  let sending: Promise<void> | undefined;
  let sendError: unknown;
  const startSending = (from: number): void => {
    offset = from;
    sending = send(from).catch((e: unknown) => {
      sendError ??= e;
      runAbort.abort();
    });
  };
  const send = async (from: number): Promise<void> => {
    const input = client.openInput(taskId);
    let ended = false;
    const hash = source.kind === "file" ? createHash("sha256") : undefined;
    try {
      if (hash && from > 0) await source.hashPrefix(hash, from);
      for await (const chunk of source.read(from)) {
        if (stopSending.signal.aborted) return;
        hash?.update(chunk);
        await input.write(chunk);
        sent += chunk.length;
        o.progress.update(0, from + sent);
      }
      if (stopSending.signal.aborted) return;
      ended = true;
      if (hash) sentSha256 = hash.digest("hex");
      await input.end(hash ? sentSha256 : "");
    } finally {
      if (!ended) input.close();
    }
  };
  const kept = (): boolean => offset + sent > 0;
  try {
    for await (const ev of client.run(req, { onTaskId: (id) => (taskId = id) })) {
      const e = ev.event;
      if (e?.$case === "started" && !o.resume) startSending(0);
      else if (e?.$case === "output" && e.value.stream === OutputStream.OUTPUT_STREAM_STDOUT && !sending) {
        lineText += Buffer.from(e.value.data).toString("utf8");
        const nl = lineText.indexOf("\n");
        if (nl === -1) continue;
        const at = parseOffsetLine(lineText.slice(0, nl));
        if (at === undefined || at > source.size) {
          throw new CliError(
            `task ${taskId}: the agent's resume offset is not one: ${lineText.slice(0, 80)}`,
          );
        }
        if (at > 0) {
          process.stderr.write(
            `switchboard: resuming at byte ${at} (${formatBytes(at)} of ${formatBytes(source.size)} already there)\n`,
          );
        }
        startSending(at);
      } else if (e?.$case === "finished") {
        finished = e.value;
      }
    }
  } catch (err) {
    stopSending.abort();
    await sending;
    callFailed(sendError ?? err, o.signal, kept(), `${offset + sent} bytes`);
  } finally {
    o.signal.removeEventListener("abort", onAbort);
  }
  stopSending.abort();
  await sending;
  if (!finished) throw new CliError(`the hub ended the stream of task ${taskId} without a result`);
  if (finished.state !== TaskState.TASK_STATE_SUCCEEDED) throw transferFailed(finished, taskId, kept());
  if (sendError !== undefined) callFailed(sendError, o.signal, kept(), `${offset + sent} bytes`);
  const result = parseFileResult(finished.result);
  if (!result) throw new CliError(`task ${taskId}: the agent's result is not a file result`);
  if (result.sha256 !== sentSha256 || result.bytes !== source.size) {
    throw new CliError(
      `the agent reports ${result.bytes} bytes with SHA-256 ${result.sha256} for ${path}, ` +
        `but ${o.local} has ${source.size} bytes with SHA-256 ${sentSha256}`,
    );
  }
  return result;
}

async function openSource(local: string, recursive: boolean, signal: AbortSignal): Promise<Source> {
  const st = await stat(local).catch((e: NodeJS.ErrnoException) => {
    throw usageError(`cannot read ${local}: ${e.code ?? e.message}`);
  });
  if (st.isDirectory()) {
    if (!recursive) throw usageError(`${local} is a directory`, "copy a directory with -r");
    // First pass: the tar stream's length and digest, which the agent checks before placing the tree.
    const h = createHash("sha256");
    let size = 0;
    for await (const piece of packTree(local)) {
      checkNotInterrupted(signal);
      h.update(piece);
      size += piece.length;
    }
    return {
      kind: "dir",
      size,
      sha256: h.digest("hex"),
      resumeKey: "",
      mode: st.mode & 0o7777,
      // The same tree packs to the same bytes (its digest says so): a resume skips what the agent has.
      read: (offset) => skipBytes(coalesce(packTree(local), CHUNK_BYTES), offset),
      hashPrefix: () => Promise.resolve(),
    };
  }
  if (!st.isFile()) throw usageError(`${local} is neither a file nor a directory`);
  return {
    kind: "file",
    size: st.size,
    sha256: "",
    resumeKey: uploadResumeKey(await realpath(local), st.size, st.mtimeMs),
    mode: st.mode & 0o777,
    // Only as far as the size stated: a file that grows meanwhile does not overrun the declared size.
    read: (offset) => fileChunks(local, offset, st.size, CHUNK_BYTES),
    hashPrefix: async (hash, end) => {
      const n = await hashFile(local, hash, end, signal);
      if (n < end) throw new CliError(`${local} shrank while it was read: ${n} of ${end} bytes`);
    },
  };
}

async function* skipBytes(source: AsyncIterable<Buffer>, n: number): AsyncGenerator<Buffer> {
  let skip = n;
  for await (const piece of source) {
    if (skip >= piece.length) {
      skip -= piece.length;
      continue;
    }
    yield skip > 0 ? piece.subarray(skip) : piece;
    skip = 0;
  }
}

/** Gathers small pieces (tar headers are 512 bytes) into chunks of about `size`: fewer input messages. */
async function* coalesce(source: AsyncIterable<Buffer>, size: number): AsyncGenerator<Buffer> {
  let parts: Buffer[] = [];
  let n = 0;
  for await (const piece of source) {
    parts.push(piece);
    n += piece.length;
    if (n >= size) {
      yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
      parts = [];
      n = 0;
    }
  }
  if (n > 0) yield parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
}
