// Path confinement of file tasks on a real directory tree: paths as written (relative, `..`, not normalized,
// outside every root), then symlinks resolved (inside, leading out, a root that is itself a symlink).
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { FileRoots, inside } from "./file-roots.js";

let base: string;
let root: string;
let roots: FileRoots;

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), "sb-file-roots-"));
  root = join(base, "root");
  mkdirSync(join(root, "sub"), { recursive: true });
  mkdirSync(join(base, "outside"));
  writeFileSync(join(root, "sub", "a.txt"), "a");
  writeFileSync(join(base, "outside", "secret"), "s");
  symlinkSync(join(base, "outside"), join(root, "out-link"));
  symlinkSync("sub", join(root, "in-link"));
  symlinkSync(join(base, "outside", "secret"), join(root, "secret-link"));
  // A root given through a symlink: its real path is what counts after resolution.
  symlinkSync(root, join(base, "root-alias"));
  roots = new FileRoots([root, join(base, "root-alias")], "a1");
});

afterAll(() => rmSync(base, { recursive: true, force: true }));

async function refusal(p: Promise<unknown>): Promise<SwitchboardError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof SwitchboardError) return e;
    throw e;
  }
  throw new Error("expected a refusal");
}

describe("FileRoots.check (no disk)", () => {
  it("takes absolute, normalized paths inside a root", () => {
    expect(roots.check(join(root, "sub/a.txt"))).toBeUndefined();
    expect(roots.check(root)).toBeUndefined();
    expect(roots.check(`${root}/`)).toBeUndefined();
  });

  it("refuses relative paths, '..', unnormalized paths and NUL with INVALID_ARGUMENT", () => {
    for (const p of [
      "sub/a.txt",
      `${root}/../root/sub`,
      `${root}/sub/..`,
      `${root}//sub`,
      `${root}/./sub`,
      `${root}/a\0b`,
      "",
    ]) {
      const e = roots.check(p);
      expect(e, p).toBeInstanceOf(SwitchboardError);
      expect(e!.code, p).toBe(Code.INVALID_ARGUMENT);
    }
  });

  it("refuses paths outside every root with PERMISSION_DENIED naming the roots", () => {
    for (const p of ["/etc/passwd", `${root}-other/x`, base, "/"]) {
      const e = roots.check(p);
      expect(e?.code, p).toBe(Code.PERMISSION_DENIED);
      expect(e?.message).toContain(root);
    }
  });

  it("inside() compares whole segments", () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[a-z]{1,6}$/), fc.stringMatching(/^[a-z]{1,6}$/), (a, b) => {
        expect(inside(`/r/${a}`, "/r")).toBe(true);
        expect(inside(`/r${a}`, "/r")).toBe(false);
        expect(inside(`/r/${a}/${b}`, `/r/${a}`)).toBe(true);
        expect(inside(`/${a}`, "/")).toBe(true);
      }),
    );
  });
});

describe("FileRoots.resolveExisting", () => {
  it("resolves symlinks that stay inside", async () => {
    expect(await roots.resolveExisting(join(root, "in-link/a.txt"))).toBe(join(root, "sub", "a.txt"));
    expect(await roots.resolveExisting(join(base, "root-alias/sub/a.txt"))).toBe(join(root, "sub", "a.txt"));
  });

  it("refuses a symlink that leads out, with PERMISSION_DENIED", async () => {
    for (const p of [join(root, "out-link/secret"), join(root, "secret-link"), join(root, "out-link")]) {
      const e = await refusal(roots.resolveExisting(p));
      expect(e.code, p).toBe(Code.PERMISSION_DENIED);
      expect(e.message).toContain("through a symlink");
    }
  });

  it("says NOT_FOUND for a missing path", async () => {
    expect((await refusal(roots.resolveExisting(join(root, "nope")))).code).toBe(Code.NOT_FOUND);
  });
});

describe("FileRoots.resolveForCreate", () => {
  it("places a new name in the real parent directory", async () => {
    expect(await roots.resolveForCreate(join(root, "in-link/new.bin"))).toEqual({
      dir: join(root, "sub"),
      name: "new.bin",
      path: join(root, "sub", "new.bin"),
    });
  });

  it("refuses a parent that leads out, a missing parent, and a root itself", async () => {
    expect((await refusal(roots.resolveForCreate(join(root, "out-link/x")))).code).toBe(
      Code.PERMISSION_DENIED,
    );
    expect((await refusal(roots.resolveForCreate(join(root, "missing/x")))).code).toBe(Code.NOT_FOUND);
    expect((await refusal(roots.resolveForCreate(root))).code).toBe(Code.INVALID_ARGUMENT);
    expect((await refusal(roots.resolveForCreate(join(root, "sub/a.txt/x")))).code).toBe(
      Code.FAILED_PRECONDITION,
    );
  });
});
