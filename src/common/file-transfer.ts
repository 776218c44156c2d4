// What a file task says besides its bytes, shared by the agent that writes it and the clients that read
// it: Finished.result (JSON, below), the one stdout line a resumed upload starts with ({"offset":N}), and
// the names of the temporary files both ends write before renaming onto the real name.
import { createHash } from "node:crypto";

/** Finished.result of a file task that succeeded. */
export interface FileResult {
  /** Hex SHA-256 of the whole content: the file (from byte 0, also after an offset), or the tar stream. */
  sha256: string;
  /** The file's size, or the tar stream's length. */
  bytes: number;
  /** Permission bits of the file or the top directory. */
  mode: number;
  /** What was transferred: one file, or a directory as a tar stream. */
  type: "file" | "dir";
  /** The path on the agent, symlinks of its parent resolved. */
  path: string;
  /** Upload: the byte the client was asked to carry on from (0 unless resumed). */
  resumed_from?: number;
}

/** Parses a file task's Finished.result; undefined when the bytes are not one. */
export function parseFileResult(bytes: Uint8Array): FileResult | undefined {
  let v: unknown;
  try {
    v = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    return undefined;
  }
  if (typeof v !== "object" || v === null) return undefined;
  const r = v as Partial<FileResult>;
  if (typeof r.sha256 !== "string" || typeof r.bytes !== "number" || typeof r.mode !== "number") {
    return undefined;
  }
  if (r.type !== "file" && r.type !== "dir") return undefined;
  return {
    sha256: r.sha256,
    bytes: r.bytes,
    mode: r.mode,
    type: r.type,
    path: typeof r.path === "string" ? r.path : "",
    ...(typeof r.resumed_from === "number" ? { resumed_from: r.resumed_from } : {}),
  };
}

/** The stdout line a resumed upload sends right after Started. */
export function offsetLine(offset: number): Buffer {
  return Buffer.from(`${JSON.stringify({ offset })}\n`);
}

/** The offset in such a line; undefined when the text is not one. */
export function parseOffsetLine(line: string): number | undefined {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return undefined;
  }
  const offset = (v as { offset?: unknown } | null)?.offset;
  return typeof offset === "number" && Number.isSafeInteger(offset) && offset >= 0 ? offset : undefined;
}

export const SHA256_HEX = /^[0-9a-f]{64}$/;

/**
 * The agent's temporary name for an upload of `name`: hidden, next to the target, and the same for every
 * attempt with the same content, so that a resumed upload finds what an interrupted one wrote.
 */
export function uploadTempName(name: string, sha256: string): string {
  return `.${name}.sb-upload-${sha256.slice(0, 16)}`;
}

/**
 * What names the partial file of an upload whose digest comes at its end: the same for every attempt to
 * send the same local file unchanged (path, size, modification time). A file changed in a way this misses
 * still fails the final SHA-256 check, and the partial is discarded.
 */
export function uploadResumeKey(realPath: string, size: number, mtimeMs: number): string {
  return createHash("sha256")
    .update(`${realPath}\0${size}\0${Math.round(mtimeMs * 1000)}`)
    .digest("hex");
}

/** The CLI's temporary name for a download of `name`, stable across attempts for --resume. */
export function downloadTempName(name: string): string {
  return `.${name}.sb-download`;
}
