// Directory trees as tar streams, for file tasks at both ends. packTree writes a tar of a directory that is
// the same byte for byte as long as the tree is (sorted names, permission bits and mtimes kept, no owners),
// so a sender can hash it in one pass and send it in a second. TreeUnpacker writes a tar into an empty
// directory and refuses, before touching the disk, every entry that could land outside it: absolute names,
// `..`, symlinks whose target leaves the tree, entries below a symlink, hard links and devices.
import { createReadStream } from "node:fs";
import { chmod, lstat, mkdir, open, readdir, readlink, realpath, symlink, utimes } from "node:fs/promises";
import { constants } from "node:fs";
import { join, posix } from "node:path";
import tar from "tar-stream";
import { Code, SwitchboardError } from "./errors.js";

/**
 * An entry that may not be unpacked, or a tree that cannot be packed (FAILED_PRECONDITION); the message
 * names it. Its own class because a caller tells a refused tree apart from a failed disk.
 */
export class TarTreeError extends SwitchboardError {
  /** escapes: the entry would reach outside the tree (rather than being malformed or unsupported). */
  constructor(
    message: string,
    readonly escapes = false,
  ) {
    super(Code.FAILED_PRECONDITION, message);
    this.name = "TarTreeError";
  }
}

export interface TreeStats {
  files: number;
  dirs: number;
  symlinks: number;
  /** Bytes of file content. */
  bytes: number;
}

const READ_CHUNK = 256 * 1024;
/** Permission bits kept; set-id bits are not carried from one machine to another. */
const MODE_BITS = 0o1777;

type Sink = ReturnType<tar.Pack["entry"]>;

/**
 * The tar stream of the directory `root`: its own entry first ("./"), then everything below it in sorted
 * order. Files, directories and symlinks (as links); anything else (a socket, a device) fails the stream.
 */
export async function* packTree(root: string, stats?: TreeStats): AsyncGenerator<Buffer, void, undefined> {
  const pack = tar.pack();
  const counts = stats ?? { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  let done = false;
  const producing = addTree(pack, root, counts).then(
    () => pack.finalize(),
    (e: unknown) => pack.destroy(e instanceof Error ? e : new Error(String(e))),
  );
  try {
    for await (const chunk of pack) yield chunk;
    done = true;
  } finally {
    if (!done) pack.destroy(new Error("the reader stopped"));
    await producing;
  }
}

async function addTree(pack: tar.Pack, root: string, stats: TreeStats): Promise<void> {
  const st = await lstat(root);
  if (!st.isDirectory()) throw new TarTreeError(`${root} is not a directory`);
  await addEntry(pack, { name: "./", type: "directory", mode: st.mode & MODE_BITS, mtime: st.mtime });
  stats.dirs++;
  // Depth first, each directory's names sorted: a stack of directories still to list.
  const pending: string[] = [""];
  while (pending.length > 0) {
    const rel = pending.pop()!;
    const names = (await readdir(join(root, rel))).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    const subdirs: string[] = [];
    for (const name of names) {
      const relPath = rel === "" ? name : `${rel}/${name}`;
      const full = join(root, relPath);
      const s = await lstat(full);
      const mode = s.mode & MODE_BITS;
      if (s.isDirectory()) {
        await addEntry(pack, { name: `${relPath}/`, type: "directory", mode, mtime: s.mtime });
        stats.dirs++;
        subdirs.push(relPath);
      } else if (s.isSymbolicLink()) {
        await addEntry(pack, {
          name: relPath,
          type: "symlink",
          linkname: await readlink(full),
          mode,
          mtime: s.mtime,
        });
        stats.symlinks++;
      } else if (s.isFile()) {
        await addFile(pack, full, { name: relPath, type: "file", size: s.size, mode, mtime: s.mtime });
        stats.files++;
        stats.bytes += s.size;
      } else {
        throw new TarTreeError(
          `${full} is neither a file, a directory nor a symlink; only those can be copied`,
        );
      }
    }
    // Reversed onto the stack so that they come off it in sorted order.
    for (let i = subdirs.length - 1; i >= 0; i--) pending.push(subdirs[i]!);
  }
}

function addEntry(pack: tar.Pack, header: tar.Headers): Promise<void> {
  return new Promise((resolve, reject) => {
    const sink = pack.entry({ uid: 0, gid: 0, ...header }, (err) => (err ? reject(err) : resolve()));
    sink.end();
  });
}

async function addFile(pack: tar.Pack, full: string, header: tar.Headers): Promise<void> {
  let added!: Promise<void>;
  const sink = await new Promise<Sink>((resolve) => {
    added = new Promise<void>((res, rej) => {
      resolve(pack.entry({ uid: 0, gid: 0, ...header }, (err) => (err ? rej(err) : res())));
    });
  });
  added.catch(() => undefined); // awaited below; a failure shows there
  const size = header.size ?? 0;
  if (size > 0) {
    // Exactly the size the header promised: a file that grew is cut there, one that shrank fails the entry.
    const file = createReadStream(full, { start: 0, end: size - 1, highWaterMark: READ_CHUNK });
    try {
      for await (const chunk of file) {
        if (!sink.write(chunk as Buffer)) await drained(sink);
      }
    } catch (e) {
      sink.destroy(e instanceof Error ? e : new Error(String(e)));
      throw e;
    } finally {
      file.destroy();
    }
  }
  sink.end();
  try {
    await added;
  } catch (e) {
    throw new TarTreeError(`${full} changed while it was being packed: ${(e as Error).message}`);
  }
}

/** Resolves on 'drain'; rejects when the stream ends or fails first. */
function drained(stream: NodeJS.EventEmitter): Promise<void> {
  return new Promise((resolve, reject) => {
    const cleanup = (): void => {
      stream.off("drain", onDrain);
      stream.off("error", onError);
      stream.off("close", onClose);
    };
    const onDrain = (): void => {
      cleanup();
      resolve();
    };
    const onError = (e: Error): void => {
      cleanup();
      reject(e);
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error("the stream closed"));
    };
    stream.on("drain", onDrain);
    stream.on("error", onError);
    stream.on("close", onClose);
  });
}

// ---- unpacking ----

/** An entry that passed the checks: where it goes (relative, "" for the top) and what it is. */
export interface CheckedEntry {
  rel: string;
  type: "file" | "directory" | "symlink";
  mode: number;
  linkname?: string;
}

/**
 * Checks one tar header against the tree being unpacked; `symlinks` holds the relative paths of the
 * symlinks unpacked so far. Throws TarTreeError naming the entry and the reason.
 */
export function checkTarEntry(header: tar.Headers, symlinks: ReadonlySet<string>): CheckedEntry {
  const name = header.name;
  const shown = JSON.stringify(name.length > 200 ? `${name.slice(0, 197)}...` : name);
  const refuse = (why: string, escapes = false): never => {
    throw new TarTreeError(`tar entry ${shown}: ${why}`, escapes);
  };
  if (name.includes("\0")) refuse("the name holds NUL");
  if (name.startsWith("/")) refuse("absolute names are not allowed", true);
  const parts = name.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) refuse("'..' is not allowed", true);
  const rel = parts.join("/");
  const type = header.type ?? "file";
  const mode = (header.mode ?? (type === "directory" ? 0o755 : 0o644)) & MODE_BITS;
  for (let i = 1; i < parts.length; i++) {
    const prefix = parts.slice(0, i).join("/");
    if (symlinks.has(prefix)) refuse(`it lies below the symlink ${JSON.stringify(prefix)}`, true);
  }
  if (rel === "" && type !== "directory") refuse("the top of the tree must be a directory");
  switch (type) {
    case "file":
    case "contiguous-file":
      return { rel, type: "file", mode };
    case "directory":
      return { rel, type: "directory", mode };
    case "symlink": {
      const target = header.linkname ?? "";
      if (target === "") refuse("a symlink without a target");
      if (target.includes("\0")) refuse("the symlink's target holds NUL");
      if (posix.isAbsolute(target)) refuse(`the symlink points outside the tree (to ${target})`, true);
      const resolved = posix.normalize(posix.join(posix.dirname(rel), target));
      if (resolved === ".." || resolved.startsWith("../")) {
        refuse(`the symlink points outside the tree (to ${target})`, true);
      }
      return { rel, type: "symlink", mode, linkname: target };
    }
    case "link":
      return refuse("hard links are not supported");
    default:
      return refuse(`${type} entries are not supported; only files, directories and symlinks`);
  }
}

/**
 * Writes a tar stream into `dir`, which must exist and be empty: `write` the stream's bytes (awaiting
 * `drained()` when it returns false), then `end()`; `done` settles once every entry is on disk, with the
 * counts, or with the first refusal (a TarTreeError) or failure. Modes of directories are applied last, so
 * that a read-only directory can still be filled.
 */
export class TreeUnpacker {
  readonly done: Promise<TreeStats>;
  private readonly extract = tar.extract();
  private failure: Error | undefined;
  private streamError: Error | undefined;
  private readonly stats: TreeStats = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };

  constructor(private readonly dir: string) {
    // The stream's own error (a truncated or malformed archive) says more than the entry it broke.
    this.extract.on("error", (e: Error) => (this.streamError ??= e));
    this.done = this.run().catch((e: unknown) => {
      const se = this.streamError;
      if (se && se !== this.failure && !(e instanceof TarTreeError)) {
        throw new TarTreeError(`not a valid tar stream: ${se.message}`);
      }
      throw e;
    });
    this.done.catch((e: unknown) => {
      this.failure ??= e instanceof Error ? e : new Error(String(e));
    });
  }

  /** False: wait for drained() before writing more. Bytes after a failure are dropped. */
  write(chunk: Buffer): boolean {
    if (this.failure || this.extract.destroyed) return true;
    return this.extract.write(chunk);
  }

  drained(): Promise<void> {
    if (this.failure || this.extract.destroyed) return Promise.resolve();
    return drained(this.extract).catch(() => undefined);
  }

  end(): void {
    if (!this.failure && !this.extract.destroyed) this.extract.end();
  }

  /** Stops early (a cancel): `done` rejects with this error. */
  abort(err: Error): void {
    this.failure ??= err;
    this.extract.destroy(err);
  }

  private async run(): Promise<TreeStats> {
    const symlinks = new Set<string>();
    const seen = new Set<string>();
    const dirModes: { path: string; mode: number; mtime: Date | undefined }[] = [];
    const links: { rel: string; path: string }[] = [];
    for await (const entry of this.extract) {
      const e = checkTarEntry(entry.header, symlinks);
      const path = e.rel === "" ? this.dir : join(this.dir, e.rel);
      if (e.type !== "directory" && seen.has(e.rel)) {
        throw new TarTreeError(`tar entry ${JSON.stringify(e.rel)} appears twice`);
      }
      seen.add(e.rel);
      if (e.rel !== "") await mkdir(join(path, ".."), { recursive: true, mode: 0o755 });
      switch (e.type) {
        case "directory":
          if (e.rel !== "") await mkdir(path, { recursive: true, mode: 0o700 });
          dirModes.push({ path, mode: e.mode, mtime: entry.header.mtime });
          this.stats.dirs++;
          entry.resume();
          break;
        case "symlink":
          await symlink(e.linkname!, path);
          symlinks.add(e.rel);
          links.push({ rel: e.rel, path });
          this.stats.symlinks++;
          entry.resume();
          break;
        case "file": {
          // O_EXCL and O_NOFOLLOW: never through or over something already there.
          const fh = await open(
            path,
            constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
            0o600,
          );
          try {
            for await (const b of entry) {
              await fh.write(b, 0, b.length);
              this.stats.bytes += b.length;
            }
            await fh.chmod(e.mode);
          } finally {
            await fh.close();
          }
          if (entry.header.mtime) await utimes(path, entry.header.mtime, entry.header.mtime);
          this.stats.files++;
          break;
        }
      }
    }
    // Deepest first, so that a directory made read-only does not stop its parent's turn.
    for (const d of dirModes.reverse()) {
      await chmod(d.path, d.mode);
      if (d.mtime) await utimes(d.path, d.mtime, d.mtime);
    }
    // The names were checked as written; a chain of symlinks is checked here, on the finished tree.
    const realDir = await realpath(this.dir);
    for (const l of links) {
      let real: string;
      try {
        real = await realpath(l.path);
      } catch {
        continue; // dangling: it leads nowhere
      }
      if (real !== realDir && !real.startsWith(`${realDir}/`)) {
        throw new TarTreeError(
          `tar entry ${JSON.stringify(l.rel)}: the symlink leads outside the tree`,
          true,
        );
      }
    }
    return this.stats;
  }
}
