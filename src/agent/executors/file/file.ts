// File tasks: a download streams a file (or a tar of a directory) from under the agent's `[files] roots`
// as the task's stdout, within the output window; an upload takes the client's bytes as task input, within
// the input windows it grants, into a temporary name next to the target, and renames it onto the target
// only once size and SHA-256 match. See file-download.ts and file-upload.ts; file-roots.ts confines paths.
import { Code } from "../../../common/errors.js";
import { SHA256_HEX } from "../../../common/file-transfer.js";
import type { FileSpec, TaskError, TaskSpec } from "../../../gen/switchboard/v1/task.js";
import { disabledRefusal, type Execution, type ExecutionContext, type Executor } from "../executor.js";
import type { Logger } from "pino";
import { FileDownload } from "./file-download.js";
import { Partials } from "./file-partials.js";
import { FileRoots } from "./file-roots.js";
import { FileUpload, UploadClaims } from "./file-upload.js";

export interface FileExecutorOptions {
  agentId: string;
  /** `[files] roots`: absolute directories; empty: file tasks are refused. */
  roots: readonly string[];
  /** Upload: how long the client may send nothing while the agent waits for bytes. */
  idleTimeoutMs: number;
  /** The largest Output chunk when the session does not say. */
  maxChunkBytes: number;
  /** `[files] partial_ttl_secs`: partial uploads nobody resumed this long are removed; 0: never. */
  partialTtlMs?: number;
  /** Where the partials kept for a resume are listed (under the agent's data dir); none: in memory. */
  partialsFile?: string;
  logger?: Logger;
}

/** Download chunks: large enough to amortize a message, small enough to keep several in a window. */
const DOWNLOAD_CHUNK_BYTES = 256 * 1024;

export class FileExecutor implements Executor {
  readonly kind = "file" as const;
  private readonly roots: FileRoots;
  /** Uploads running now, by temporary path: a newer upload of the same file takes over. */
  private readonly claims = new UploadClaims();
  readonly partials: Partials;

  constructor(private readonly opts: FileExecutorOptions) {
    this.roots = new FileRoots(opts.roots, opts.agentId);
    this.partials = new Partials({
      file: opts.partialsFile,
      ttlMs: opts.partialTtlMs ?? 0,
      busy: (p) => this.claims.holds(p),
      ...(opts.logger ? { logger: opts.logger } : {}),
    });
  }

  /** Reads the list of partials an earlier run kept and starts removing the abandoned ones. */
  async startSweeping(): Promise<void> {
    await this.partials.load();
    this.partials.start();
  }

  stopSweeping(): Promise<void> {
    return this.partials.stop();
  }

  admit(spec: TaskSpec): TaskError | undefined {
    const invalid = (message: string): TaskError => ({ code: Code.INVALID_ARGUMENT, message });
    if (!this.roots.enabled) {
      const turnOn = "list the directories they may use in [files] roots";
      return disabledRefusal("file", this.opts.agentId, turnOn);
    }
    if (spec.kind?.$case !== "file") return invalid("not a file task");
    const s: FileSpec = spec.kind.value;
    if (s.op !== "download" && s.op !== "upload") {
      return invalid(`op must be "download" or "upload", not ${JSON.stringify(s.op.slice(0, 40))}`);
    }
    if (s.archive !== "" && s.archive !== "tar") {
      return invalid(
        `archive must be "tar" (a directory) or empty (a file), not ${JSON.stringify(s.archive.slice(0, 40))}`,
      );
    }
    const refused = this.roots.check(s.path);
    if (refused) return { code: refused.code, message: refused.message };
    if (s.op === "upload") {
      // Files and trees alike: in the task, or (files) with the end of input.
      if (s.sha256 !== "" && !SHA256_HEX.test(s.sha256)) {
        return invalid("sha256 must be 64 lower-case hex digits");
      }
      if (s.resumeKey !== "" && (s.archive !== "" || s.sha256 !== "" || !SHA256_HEX.test(s.resumeKey))) {
        return invalid(
          "resume_key names a file upload whose sha256 comes with the end of input: 64 lower-case hex digits",
        );
      }
      if (s.resume && s.sha256 === "" && (s.archive !== "" || s.resumeKey === "")) {
        return invalid(
          s.archive !== ""
            ? "a resumable tree upload needs the tar stream's sha256 in the task"
            : "a resumable upload needs its sha256 in the task, or a resume_key",
        );
      }
      if (s.mode > 0o7777) return invalid(`mode ${s.mode.toString(8)} is not a set of permission bits`);
      if (s.offset !== 0) return invalid("offset is for downloads; an upload resumes with resume");
    } else if (s.offset < 0 || !Number.isSafeInteger(s.offset)) {
      return invalid("offset must be a byte position");
    }
    return undefined;
  }

  start(spec: TaskSpec, ctx: ExecutionContext): Execution {
    if (spec.kind?.$case !== "file") throw new Error("FileExecutor.start needs a file spec");
    const s = spec.kind.value;
    if (s.op === "download") {
      return new FileDownload(s, ctx, {
        roots: this.roots,
        agentId: this.opts.agentId,
        chunkBytes: Math.max(
          1024,
          Math.min(DOWNLOAD_CHUNK_BYTES, ctx.maxChunkBytes ?? this.opts.maxChunkBytes),
        ),
      });
    }
    return new FileUpload(s, ctx, {
      roots: this.roots,
      agentId: this.opts.agentId,
      idleTimeoutMs: this.opts.idleTimeoutMs,
      claims: this.claims,
      partials: this.partials,
    });
  }
}
