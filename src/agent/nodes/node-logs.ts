// A node's captured output: its stdout and stderr files under the agent's state dir, written by the node
// itself (appending), rotated by copy-and-truncate past a size, read back by offset for `node logs` and
// by tail for the error of a node that did not start.
import { copyFileSync, renameSync, statSync, truncateSync } from "node:fs";
import { mkdir, open } from "node:fs/promises";
import { join } from "node:path";

export interface LogChunk {
  data: Buffer;
  offset: number;
  size: number;
  /** The offset asked for was past the end: the file was rotated since, and the read starts over. */
  rotated: boolean;
}

export class NodeLogs {
  private readonly dir: string;

  constructor(
    stateDir: string,
    private readonly maxBytes: number,
    private readonly files: number,
  ) {
    this.dir = join(stateDir, "node-logs");
  }

  async ensureDir(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  /** The node's stdout and stderr files (the newest; older ones end in .1, .2 ...). */
  paths(nodeId: string): [string, string] {
    return [join(this.dir, `${nodeId}.out.log`), join(this.dir, `${nodeId}.err.log`)];
  }

  /** Rotates the node's files that have grown past the limit. */
  rotate(nodeId: string): void {
    for (const p of this.paths(nodeId)) rotateIfLarge(p, this.maxBytes, this.files);
  }

  /** The last bytes of the node's stderr, as text (empty when there is none), for an error message. */
  stderrTail(nodeId: string, bytes: number): Promise<string> {
    return tailOf(this.paths(nodeId)[1], bytes);
  }

  /** Reads a node's current stdout or stderr file from an offset (negative: the last -offset bytes). */
  async read(nodeId: string, stderr: boolean, offset: number, maxBytes: number): Promise<LogChunk> {
    const path = this.paths(nodeId)[stderr ? 1 : 0];
    let f;
    try {
      f = await open(path, "r");
    } catch {
      return { data: Buffer.alloc(0), offset: 0, size: 0, rotated: false };
    }
    try {
      const size = (await f.stat()).size;
      let start = offset < 0 ? Math.max(0, size + offset) : offset;
      let rotated = false;
      if (start > size) {
        start = 0;
        rotated = true;
      }
      const n = Math.max(0, Math.min(maxBytes, size - start));
      const data = Buffer.alloc(n);
      if (n > 0) await f.read(data, 0, n, start);
      return { data, offset: start, size, rotated };
    } finally {
      await f.close();
    }
  }
}

/** The last bytes of a file, as text, for an error message. */
async function tailOf(path: string, bytes: number): Promise<string> {
  try {
    const f = await open(path, "r");
    try {
      const size = (await f.stat()).size;
      const start = Math.max(0, size - bytes);
      const buf = Buffer.alloc(size - start);
      await f.read(buf, 0, buf.length, start);
      return buf.toString("utf8").trim();
    } finally {
      await f.close();
    }
  } catch {
    return "";
  }
}

/**
 * Past maxBytes, FILE is copied to FILE.1 (FILE.1 moved to FILE.2 ..., `files` kept) and truncated: the node
 * keeps its descriptor and, appending, writes on at the start of the emptied file.
 */
function rotateIfLarge(path: string, maxBytes: number, files: number): void {
  try {
    if (statSync(path).size <= maxBytes) return;
    for (let i = files - 1; i >= 2; i--) {
      try {
        renameSync(`${path}.${i - 1}`, `${path}.${i}`);
      } catch {
        // nothing to move yet
      }
    }
    copyFileSync(path, `${path}.1`);
    truncateSync(path, 0);
  } catch {
    // no file yet
  }
}
