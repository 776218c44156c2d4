// What an upload and a download by `switchboard cp` share: their options, hashing a local file, and how a
// file task that did not succeed becomes the command's error (its exit code and a next step).
import type { Hash } from "node:crypto";
import { open } from "node:fs/promises";
import { status } from "@grpc/grpc-js";
import { SwitchboardError, type TargetInput, type TaskRequest } from "../client/index.js";
import { codeName } from "../common/errors.js";
import { TaskState, type Finished } from "../gen/switchboard/v1/task.js";
import { CliError, EXIT, usageError } from "./cli-error.js";
import type { ProgressLine } from "./progress-line.js";

/** One side of a copy: a path here, or a path on an agent (or on one agent of a pool, for uploads). */
export type Location =
  { kind: "local"; path: string } | { kind: "remote"; target: TargetInput; shown: string; path: string };

const REMOTE = /^(agent|pool):([^:/]+):(.*)$/;

export function parseLocation(arg: string): Location {
  const m = REMOTE.exec(arg);
  if (!m) {
    if (arg === "") throw usageError("an empty path");
    return { kind: "local", path: arg };
  }
  const [, kind, name, path] = m as unknown as [string, "agent" | "pool", string, string];
  if (!path.startsWith("/")) {
    throw usageError(
      `${arg}: the path on the agent must be absolute`,
      `e.g. ${kind}:${name}:/srv/data/file (a local file with a colon in its name: ./${arg})`,
    );
  }
  return {
    kind: "remote",
    target: kind === "agent" ? { agentId: name } : { pool: name },
    shown: `${kind} ${name}`,
    path,
  };
}

export interface TransferOptions {
  recursive: boolean;
  force: boolean;
  resume: boolean;
  /** Deadline of the task from its submission; 0: none. */
  timeoutMs: number;
  wait: boolean;
  progress: ProgressLine;
  /** Ctrl-C: the task is cancelled and the copy stops. */
  signal: AbortSignal;
}

/**
 * Where a copy's task runs and for how long. Killed, this command leaves the partial file (here for a
 * download, on the agent for an upload) for --resume, and its task ends at once.
 */
export function transferTask(
  o: TransferOptions,
  target: TargetInput,
  signal: AbortSignal,
): Pick<TaskRequest, "target" | "signal" | "waitForAgent" | "cancelOnDisconnect" | "timeoutMs"> {
  return {
    target,
    signal,
    waitForAgent: o.wait,
    cancelOnDisconnect: true,
    ...(o.timeoutMs > 0 ? { timeoutMs: o.timeoutMs } : {}),
  };
}

/** Bytes sent or read at a time: large enough to amortize a message, small enough to bound memory. */
export const CHUNK_BYTES = 256 * 1024;

/**
 * Feeds the first `end` bytes of a local file (all of it when undefined) into `hash`, through one reused
 * buffer: a read pass over a large file allocates nothing per chunk. With `also`, each piece is handed to it
 * too (awaited), in a buffer of its own.
 */
export async function hashFile(
  path: string,
  hash: Hash,
  end = Infinity,
  signal?: AbortSignal,
  also?: (piece: Buffer) => Promise<void>,
): Promise<number> {
  const fh = await open(path, "r");
  try {
    let buf = Buffer.allocUnsafe(1024 * 1024);
    let pos = 0;
    while (pos < end) {
      if (signal?.aborted) throw new CliError("the copy was interrupted before it started", EXIT.interrupted);
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, end - pos), pos);
      if (bytesRead === 0) break;
      const piece = buf.subarray(0, bytesRead);
      hash.update(piece);
      if (also) {
        await also(piece);
        buf = Buffer.allocUnsafe(buf.length); // `also` may keep the piece
      }
      pos += bytesRead;
    }
    return pos;
  } finally {
    await fh.close();
  }
}

/** Before a task is submitted: an interrupt so far means nothing was started. */
export function checkNotInterrupted(signal: AbortSignal): void {
  if (signal.aborted) throw new CliError("the copy was interrupted before it started", EXIT.interrupted);
}

/**
 * The error for a file task that ended without success. `kept`: what arrived may be kept for --resume
 * (then said in the hint when the failure was an interruption rather than a refusal).
 */
export function transferFailed(f: Finished, taskId: string, kept: boolean): CliError {
  const why = f.error?.message || f.reason || `it ended ${TaskState[f.state]}`;
  const resumeHint = kept ? "run the same command with --resume to carry on from there" : undefined;
  switch (f.state) {
    case TaskState.TASK_STATE_CANCELLED:
      return new CliError(`the copy was cancelled (task ${taskId}): ${why}`, EXIT.interrupted, resumeHint);
    case TaskState.TASK_STATE_TIMED_OUT:
      return new CliError(`the copy timed out (task ${taskId}): ${why}`, EXIT.timeout, resumeHint);
    case TaskState.TASK_STATE_LOST:
      return new CliError(
        `the copy was lost with its agent (task ${taskId}): ${why}`,
        EXIT.failed,
        resumeHint,
      );
    default: {
      const code = f.error?.code;
      const name = code !== undefined ? ` (${codeName(code)})` : "";
      let hint: string | undefined;
      if (code === status.DEADLINE_EXCEEDED || code === status.UNAVAILABLE) hint = resumeHint;
      if (code === status.ALREADY_EXISTS) hint = "pass --force to replace it";
      if (code === status.PERMISSION_DENIED) hint = "paths must lie under the agent's [files] roots";
      return new CliError(`${why}${name}`, EXIT.failed, hint);
    }
  }
}

/** A failure of the call itself (the hub went away, the copy was interrupted) as the command's error. */
export function callFailed(e: unknown, signal: AbortSignal, kept: boolean, done: string): never {
  const hint = kept ? "run the same command with --resume to carry on from there" : undefined;
  if (signal.aborted) throw new CliError(`the copy was interrupted after ${done}`, EXIT.interrupted, hint);
  if (e instanceof SwitchboardError) {
    throw new CliError(`the copy broke after ${done}: ${e.message} (${e.codeName})`, EXIT.failed, hint);
  }
  throw e;
}
