// `switchboard cp LOCAL agent:ID:/path`: the local file (or a tar of the directory) is read once for its
// SHA-256 and size, which go in the task, then again to be sent as the task's input in 256 KiB chunks,
// each write awaited, so only a few chunks are ever in memory. With --resume the agent first says from
// which byte to carry on ({"offset":N}), and only the rest is read and sent.
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { stat } from "node:fs/promises";
import { basename } from "node:path";
import {
  file,
  parseFileResult,
  parseOffsetLine,
  type FileResult,
  type SwitchboardClient,
} from "../client/index.js";
import { packTree } from "../common/tar-tree.js";
import { OutputStream, TaskState, type Finished } from "../gen/switchboard/v1/task.js";
import { CliError, usageError } from "./cli-error.js";
import type { Location } from "./commands/cp.js";
import {
  callFailed,
  checkNotInterrupted,
  CHUNK_BYTES,
  sha256File,
  transferFailed,
  type TransferOptions,
} from "./cp-transfer.js";
import { formatBytes } from "./progress-line.js";

export interface UploadOptions extends TransferOptions {
  local: string;
  remote: Extract<Location, { kind: "remote" }>;
}

/** What is sent: a file from an offset, or a directory's tar stream; its digest and length. */
interface Source {
  kind: "file" | "dir";
  size: number;
  sha256: string;
  mode: number;
  read(offset: number): AsyncIterable<Buffer>;
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
      mode: source.mode,
      resume: o.resume,
      overwrite: o.force,
      ...(source.kind === "dir" ? { archive: "tar" as const } : {}),
    }),
    target: o.remote.target,
    signal: runAbort.signal,
    waitForAgent: o.wait,
    ...(o.timeoutMs > 0 ? { timeoutMs: o.timeoutMs } : {}),
  };
  let taskId = "";
  let finished: Finished | undefined;
  let offset = 0;
  let sent = 0;
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
    try {
      for await (const chunk of source.read(from)) {
        if (stopSending.signal.aborted) return;
        await input.write(chunk);
        sent += chunk.length;
        o.progress.update(0, from + sent);
      }
      if (stopSending.signal.aborted) return;
      ended = true;
      await input.end();
    } finally {
      if (!ended) input.close();
    }
  };
  const kept = (): boolean => source.kind === "file" && offset + sent > 0;
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
  if (result.sha256 !== source.sha256 || result.bytes !== source.size) {
    throw new CliError(
      `the agent reports ${result.bytes} bytes with SHA-256 ${result.sha256} for ${path}, ` +
        `but ${o.local} has ${source.size} bytes with SHA-256 ${source.sha256}`,
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
      mode: st.mode & 0o7777,
      read: () => coalesce(packTree(local), CHUNK_BYTES),
    };
  }
  if (!st.isFile()) throw usageError(`${local} is neither a file nor a directory`);
  return {
    kind: "file",
    size: st.size,
    sha256: await sha256File(local, signal),
    mode: st.mode & 0o777,
    read: (offset) =>
      offset >= st.size
        ? emptySource()
        : (createReadStream(local, { start: offset, highWaterMark: CHUNK_BYTES }) as AsyncIterable<Buffer>),
  };
}

async function* emptySource(): AsyncGenerator<Buffer> {}

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
