// Where file tasks may read and write: under the agent's `[files] roots`. A task's path must be absolute
// and normalized and lie inside a root as written; then, before anything is opened, its symlinks are
// resolved (the path's own for a download, its parent's for an upload) and the real path must still lie
// inside a root's real path, so neither `..` nor a symlink leads out.
import { realpath, stat } from "node:fs/promises";
import { basename, dirname, join, posix } from "node:path";
import { Code, SwitchboardError } from "../../../common/errors.js";

/** A path inside a root: the real directory it goes in, its name, and the two joined. */
export interface PlacedPath {
  dir: string;
  name: string;
  path: string;
}

export class FileRoots {
  /** Absolute and normalized, without a trailing slash (except "/"). */
  readonly roots: readonly string[];

  constructor(
    roots: readonly string[],
    private readonly agentId: string,
  ) {
    this.roots = roots.map((r) => {
      if (!posix.isAbsolute(r)) throw new Error(`[files] roots: ${JSON.stringify(r)} is not absolute`);
      return trimSlash(posix.normalize(r));
    });
  }

  get enabled(): boolean {
    return this.roots.length > 0;
  }

  /** "/srv/data, /var/exports": for messages. */
  describe(): string {
    return this.roots.join(", ");
  }

  /** The checks that need no disk: absolute, normalized, no `..`, inside a root as written. */
  check(path: string): SwitchboardError | undefined {
    if (path === "") return new SwitchboardError(Code.INVALID_ARGUMENT, "a file task needs a path");
    if (path.includes("\0")) return new SwitchboardError(Code.INVALID_ARGUMENT, "a path may not hold NUL");
    if (!posix.isAbsolute(path)) {
      return new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `${JSON.stringify(path)} is not an absolute path; give one under ${this.describe()}`,
      );
    }
    if (path.split("/").includes("..")) {
      return new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `${JSON.stringify(path)} holds '..'; give a normalized path under ${this.describe()}`,
      );
    }
    if (trimSlash(posix.normalize(path)) !== trimSlash(path)) {
      return new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `${JSON.stringify(path)} is not normalized (no '.', '//'); did you mean ${posix.normalize(path)}?`,
      );
    }
    if (!this.roots.some((r) => inside(trimSlash(path), r))) return this.outside(path);
    return undefined;
  }

  /** The real path of an existing file or directory, inside a root once symlinks are resolved. */
  async resolveExisting(path: string): Promise<string> {
    const refused = this.check(path);
    if (refused) throw refused;
    let real: string;
    try {
      real = await realpath(path);
    } catch (e) {
      throw this.fsError(e, path);
    }
    await this.assertInside(path, real);
    return real;
  }

  /** Where a new file or directory named by `path` goes: its parent resolved, inside a root. */
  async resolveForCreate(path: string): Promise<PlacedPath> {
    const refused = this.check(path);
    if (refused) throw refused;
    const p = trimSlash(path);
    if (this.roots.includes(p)) {
      throw new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `${p} is one of the agent's file roots; upload to a path inside it`,
      );
    }
    const parent = dirname(p);
    let realParent: string;
    try {
      realParent = await realpath(parent);
    } catch (e) {
      throw this.fsError(e, parent);
    }
    await this.assertInside(parent, realParent);
    const st = await stat(realParent);
    if (!st.isDirectory()) {
      throw new SwitchboardError(
        Code.FAILED_PRECONDITION,
        `${parent} on agent ${this.agentId} is not a directory`,
      );
    }
    const name = basename(p);
    return { dir: realParent, name, path: join(realParent, name) };
  }

  private async assertInside(path: string, real: string): Promise<void> {
    const realRoots: string[] = [];
    for (const r of this.roots) {
      try {
        realRoots.push(await realpath(r));
      } catch {
        // a root that does not exist (yet) holds nothing
      }
    }
    if (realRoots.some((r) => inside(real, r))) return;
    throw new SwitchboardError(
      Code.PERMISSION_DENIED,
      `${path} leads to ${real} through a symlink, outside agent ${this.agentId}'s file roots (${this.describe()})`,
    );
  }

  private outside(path: string): SwitchboardError {
    return new SwitchboardError(
      Code.PERMISSION_DENIED,
      `${path} is outside agent ${this.agentId}'s file roots (${this.describe()}); see [files] roots in its config`,
    );
  }

  private fsError(e: unknown, path: string): SwitchboardError {
    return fsTaskError(e, path, this.agentId);
  }
}

/** A file system error as a file task's failure, by its errno code. */
export function fsTaskError(e: unknown, path: string, agentId: string): SwitchboardError {
  if (e instanceof SwitchboardError) return e;
  const err = e as NodeJS.ErrnoException;
  const code = err.code ?? "";
  const on = `on agent ${agentId}`;
  switch (code) {
    case "ENOENT":
      return new SwitchboardError(Code.NOT_FOUND, `${path} does not exist ${on}`);
    case "ENOTDIR":
      return new SwitchboardError(Code.FAILED_PRECONDITION, `a part of ${path} is not a directory ${on}`);
    case "EACCES":
    case "EPERM":
      return new SwitchboardError(Code.PERMISSION_DENIED, `${path}: permission denied ${on} (${code})`);
    case "ELOOP":
      return new SwitchboardError(Code.FAILED_PRECONDITION, `${path}: a symlink where a file must be ${on}`);
    case "ENOSPC":
    case "EDQUOT":
      return new SwitchboardError(Code.RESOURCE_EXHAUSTED, `${path}: no space left ${on} (${code})`);
    case "ENAMETOOLONG":
      return new SwitchboardError(
        Code.INVALID_ARGUMENT,
        `${path}: a name is too long ${on} (an upload's temporary name is 28 characters longer)`,
      );
    case "EISDIR":
      return new SwitchboardError(Code.FAILED_PRECONDITION, `${path} is a directory ${on}`);
    default:
      return new SwitchboardError(Code.INTERNAL, `${path} ${on}: ${err.message ?? String(e)}`);
  }
}

function trimSlash(p: string): string {
  return p.length > 1 && p.endsWith("/") ? p.slice(0, -1) : p;
}

/** Whether `p` is `root` or below it; both absolute and normalized. */
export function inside(p: string, root: string): boolean {
  if (root === "/") return p.startsWith("/");
  return p === root || p.startsWith(`${root}/`);
}
