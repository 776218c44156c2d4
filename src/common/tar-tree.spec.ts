// Directory trees through tar: a packed tree unpacks to the same files, modes and links; the same tree
// packs to the same bytes twice; hostile archives (absolute names, `..`, symlinks out, entries below a
// symlink, hard links, devices) are refused before anything lands outside the target.
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import tar from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkTarEntry, packTree, TarTreeError, TreeUnpacker } from "./tar-tree.js";

let base: string;
let n = 0;
const fresh = (): string => {
  const d = join(base, `t${n++}`);
  mkdirSync(d);
  return d;
};

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), "sb-tar-tree-"));
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of source) parts.push(b);
  return Buffer.concat(parts);
}

/** Unpacks `archive` into a fresh directory, written in uneven pieces as a network would deliver it. */
async function unpack(archive: Buffer): Promise<{ dir: string; done: Promise<unknown> }> {
  const dir = fresh();
  const u = new TreeUnpacker(dir);
  for (let off = 0; off < archive.length; off += 7777) {
    if (!u.write(archive.subarray(off, off + 7777))) await u.drained();
  }
  u.end();
  return { dir, done: u.done };
}

/** An archive made of these entries (header and optional content). */
async function archive(entries: { header: tar.Headers; body?: string }[]): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) pack.entry(e.header, e.body ?? "");
  pack.finalize();
  return collect(pack as AsyncIterable<Buffer>);
}

/** Relative path -> description of what is there: content hash, link target, mode. */
function describeTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(dir, r);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out[r] = `link ${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[r] = `dir ${(st.mode & 0o7777).toString(8)}`;
        walk(r);
      } else {
        const h = createHash("sha256").update(readFileSync(p)).digest("hex").slice(0, 12);
        out[r] = `file ${(st.mode & 0o7777).toString(8)} ${st.size} ${h}`;
      }
    }
  };
  walk("");
  return out;
}

describe("packTree and TreeUnpacker", () => {
  it("round-trips files, nested and empty directories, modes and symlinks", async () => {
    const src = fresh();
    mkdirSync(join(src, "a/b/c"), { recursive: true });
    mkdirSync(join(src, "empty"));
    writeFileSync(join(src, "a/x.txt"), "hello\n");
    writeFileSync(join(src, "a/b/big.bin"), Buffer.alloc(300_000, 7));
    writeFileSync(join(src, "zero"), "");
    writeFileSync(join(src, "a/b/c/run.sh"), "#!/bin/sh\n");
    chmodSync(join(src, "a/b/c/run.sh"), 0o755);
    chmodSync(join(src, "a/x.txt"), 0o600);
    chmodSync(join(src, "a/b"), 0o750);
    chmodSync(join(src, "empty"), 0o500); // read-only: its mode is applied after it was filled
    symlinkSync("../x.txt", join(src, "a/b/to-x"));
    writeFileSync(join(src, `${"long-name-".repeat(20)}.txt`), "a name past 100 bytes");
    chmodSync(src, 0o711);

    const stats = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
    const bytes = await collect(packTree(src, stats));
    expect(stats).toEqual({ files: 5, dirs: 5, symlinks: 1, bytes: 6 + 300_000 + 10 + 21 });
    // The same tree, the same bytes: a sender may hash one pass and send another.
    expect((await collect(packTree(src))).equals(bytes)).toBe(true);

    const { dir, done } = await unpack(bytes);
    await expect(done).resolves.toMatchObject({ files: 5, symlinks: 1 });
    expect(describeTree(dir)).toEqual(describeTree(src));
    expect(statSync(dir).mode & 0o777).toBe(0o711);
    chmodSync(join(dir, "empty"), 0o700);
    chmodSync(join(src, "empty"), 0o700);
  });

  it("fails a tree holding something that is not a file, a directory or a symlink", async () => {
    const src = fresh();
    const { createServer } = await import("node:net");
    const server = createServer();
    await new Promise<void>((r) => server.listen(join(src, "sock"), r));
    try {
      await expect(collect(packTree(src))).rejects.toThrow(/neither a file, a directory nor a symlink/);
    } finally {
      server.close();
    }
  });

  it("refuses a truncated archive", async () => {
    const src = fresh();
    writeFileSync(join(src, "f"), Buffer.alloc(5000, 1));
    const bytes = await collect(packTree(src));
    const { done } = await unpack(bytes.subarray(0, 3000));
    await expect(done).rejects.toThrow(/not a valid tar stream: Unexpected end of data/);
  });
});

describe("hostile archives", () => {
  const cases: [string, { header: tar.Headers; body?: string }[], RegExp][] = [
    ["an absolute name", [{ header: { name: "/etc/evil", type: "file" }, body: "x" }], /absolute/],
    ["'..' in a name", [{ header: { name: "a/../../evil", type: "file" }, body: "x" }], /'\.\.'/],
    [
      "a symlink to an absolute path",
      [{ header: { name: "l", type: "symlink", linkname: "/etc" } }],
      /outside/,
    ],
    [
      "a symlink climbing out",
      [{ header: { name: "d/l", type: "symlink", linkname: "../../x" } }],
      /outside/,
    ],
    [
      "an entry below a symlink",
      [
        { header: { name: "l", type: "symlink", linkname: "." } },
        { header: { name: "l/x", type: "file" }, body: "x" },
      ],
      /below the symlink/,
    ],
    ["a hard link", [{ header: { name: "h", type: "link", linkname: "f" } }], /hard links/],
    ["a device", [{ header: { name: "dev", type: "character-device" } }], /not supported/],
    [
      "the same file twice",
      [
        { header: { name: "f", type: "file" }, body: "1" },
        { header: { name: "f", type: "file" }, body: "2" },
      ],
      /twice/,
    ],
    [
      "a chain of symlinks that leads out",
      [
        { header: { name: "d", type: "directory" } },
        { header: { name: "d/up", type: "symlink", linkname: ".." } },
        { header: { name: "x", type: "symlink", linkname: "d/up/.." } },
      ],
      /leads outside/,
    ],
  ];
  for (const [what, entries, why] of cases) {
    it(`refuses ${what}`, async () => {
      const { dir, done } = await unpack(await archive(entries));
      await expect(done).rejects.toThrow(why);
      expect(existsSync(join(base, "evil"))).toBe(false);
      expect(existsSync("/etc/evil")).toBe(false);
      void dir;
    });
  }

  it("checkTarEntry never accepts a name that resolves outside the tree", () => {
    const segment = fc.constantFrom("a", "b", ".", "..", "", "c.txt");
    fc.assert(
      fc.property(fc.array(segment, { minLength: 1, maxLength: 6 }), fc.boolean(), (parts, abs) => {
        const name = `${abs ? "/" : ""}${parts.join("/")}`;
        let rel: string | undefined;
        try {
          rel = checkTarEntry({ name, type: "directory" }, new Set()).rel;
        } catch (e) {
          expect(e).toBeInstanceOf(TarTreeError);
          return;
        }
        const resolved = join("/t", rel);
        expect(resolved === "/t" || resolved.startsWith("/t/")).toBe(true);
        expect(name.startsWith("/")).toBe(false);
      }),
    );
  });

  it("checkTarEntry keeps a symlink's target inside the tree, wherever the link sits", () => {
    const segment = fc.constantFrom("a", "b", ".", "..");
    fc.assert(
      fc.property(
        fc.array(fc.constantFrom("a", "b"), { maxLength: 3 }),
        fc.array(segment, { minLength: 1, maxLength: 5 }),
        (dirs, target) => {
          const name = [...dirs, "link"].join("/");
          const linkname = target.join("/");
          try {
            checkTarEntry({ name, type: "symlink", linkname }, new Set());
          } catch {
            return;
          }
          const resolved = join("/t", ...dirs, linkname);
          expect(resolved === "/t" || resolved.startsWith("/t/")).toBe(true);
        },
      ),
    );
  });
});
