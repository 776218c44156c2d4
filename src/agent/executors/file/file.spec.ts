// The file executor on a real directory tree, driven as the pipeline drives it: admit, start, output
// through an OutputGate, input within the windows it grants. Downloads (whole, from an offset, under a
// small window, a directory as tar), uploads (placed only when size and SHA-256 match, resumed, taken
// over by a newer upload of the same file, idle, too long, a hostile tar) and every refusal.
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tar from "tar-stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import { parseFileResult, uploadTempName, type FileResult } from "../../../common/file-transfer.js";
import { silentLogger } from "../../../common/logger.js";
import { packTree, TreeUnpacker } from "../../../common/tar-tree.js";
import {
  FileSpec,
  Finished,
  OutputStream,
  TaskState,
  type TaskSpec,
} from "../../../gen/switchboard/v1/task.js";
import { OutputGate } from "../../output-gate.js";
import type { Execution } from "../executor.js";
import { waitFor } from "../../../common/wait-for.js";
import { FileExecutor } from "./file.js";
import { UPLOAD_WINDOW_BYTES } from "./file-upload.js";

let base: string;
let root: string;
let outside: string;

function pattern(size: number, seed = 1): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 31 + seed * 7 + (i >> 11)) & 0xff;
  return b;
}
const sha = (b: Buffer): string => createHash("sha256").update(b).digest("hex");

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), "sb-file-exec-"));
  root = join(base, "root");
  outside = join(base, "outside");
  mkdirSync(join(root, "sub"), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, "secret"), "secret");
  symlinkSync(outside, join(root, "out"));
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

const executor = (idleTimeoutMs = 10_000): FileExecutor =>
  new FileExecutor({ agentId: "a1", roots: [root], idleTimeoutMs, maxChunkBytes: 1024 * 1024 });

function spec(s: Partial<FileSpec>): TaskSpec {
  return { kind: { $case: "file", value: FileSpec.fromPartial(s) } };
}

interface Harness {
  ex: FileExecutor;
  execution: Execution;
  gate: OutputGate;
  stdout(): Buffer;
  started(): boolean;
  /** Input bytes granted so far. */
  granted(): number;
  done: Promise<Finished>;
  result(): Promise<FileResult>;
}

function start(s: TaskSpec, opts: { window?: number; ex?: FileExecutor; taskId?: string } = {}): Harness {
  const out: Buffer[] = [];
  let started = false;
  let granted = 0;
  const room = { hasRoom: () => true, onceRoom: (cb: () => void) => queueMicrotask(cb) };
  const gate = new OutputGate(opts.window ?? Infinity, room, (stream, data) => {
    if (stream === OutputStream.OUTPUT_STREAM_STDOUT) out.push(Buffer.from(data));
  });
  const ex = opts.ex ?? executor();
  const refused = ex.admit(s);
  if (refused) throw new Error(`refused: ${refused.message}`);
  const execution = ex.start(s, {
    taskId: opts.taskId ?? "task-1",
    deadlineMs: 0,
    output: gate,
    started: () => (started = true),
    grantInput: (n) => (granted += n),
    logger: silentLogger(),
  });
  const done = execution.done;
  return {
    ex,
    execution,
    gate,
    stdout: () => Buffer.concat(out),
    started: () => started,
    granted: () => granted,
    done,
    result: async () => {
      const f = await done;
      if (f.state !== TaskState.TASK_STATE_SUCCEEDED) throw new Error(`failed: ${f.error?.message}`);
      return parseFileResult(f.result)!;
    },
  };
}

/** Sends `data` as input in pieces, never past the window granted so far, then the end of input. */
async function send(
  h: Harness,
  data: Buffer,
  piece = 100_000,
  eof = true,
  outstanding?: (bytes: number) => void,
): Promise<void> {
  let off = 0;
  let used = 0;
  while (off < data.length) {
    await waitFor(() => h.granted() > used, { message: "an input window" });
    outstanding?.(h.granted() - used);
    const n = Math.min(piece, data.length - off, h.granted() - used);
    h.execution.input!({ data: data.subarray(off, off + n), eof: false });
    off += n;
    used += n;
    await new Promise((r) => setImmediate(r));
  }
  if (eof) h.execution.input!({ data: Buffer.alloc(0), eof: true });
}

async function failure(h: Harness): Promise<{ code: number; message: string }> {
  const f = await h.done;
  expect(f.state).toBe(TaskState.TASK_STATE_FAILED);
  return { code: f.error!.code, message: f.error!.message };
}

describe("admit", () => {
  it("refuses every file task when no roots are configured, saying where to set them", () => {
    const ex = new FileExecutor({ agentId: "a1", roots: [], idleTimeoutMs: 1000, maxChunkBytes: 1 << 20 });
    const e = ex.admit(spec({ op: "download", path: join(root, "x") }));
    expect(e?.code).toBe(Code.PERMISSION_DENIED);
    expect(e?.message).toContain("[files] roots");
  });

  it("refuses bad ops, paths outside the roots, unnormalized paths, bad digests and keys", () => {
    const ex = executor();
    expect(ex.admit(spec({ op: "move", path: join(root, "x") }))?.code).toBe(Code.INVALID_ARGUMENT);
    expect(ex.admit(spec({ op: "download", path: "/etc/passwd" }))?.code).toBe(Code.PERMISSION_DENIED);
    expect(ex.admit(spec({ op: "download", path: `${root}/../outside/secret` }))?.code).toBe(
      Code.INVALID_ARGUMENT,
    );
    expect(ex.admit(spec({ op: "download", path: "sub/x" }))?.code).toBe(Code.INVALID_ARGUMENT);
    const up = { op: "upload", path: join(root, "x"), size: 1 };
    expect(ex.admit(spec({ ...up, sha256: "ABC" }))?.code).toBe(Code.INVALID_ARGUMENT);
    expect(ex.admit(spec({ ...up, resumeKey: "../x" }))?.code).toBe(Code.INVALID_ARGUMENT);
    expect(ex.admit(spec({ ...up, sha256: "a".repeat(64), resumeKey: "b".repeat(64) }))?.code).toBe(
      Code.INVALID_ARGUMENT,
    );
    // A resumable upload must name its partial file: by its digest, or by a resume key.
    expect(ex.admit(spec({ ...up, resume: true }))?.message).toContain("resume_key");
    expect(ex.admit(spec(up))).toBeUndefined(); // the digest comes with the end of input
    expect(ex.admit(spec({ op: "download", path: join(root, "x"), archive: "zip" }))?.code).toBe(
      Code.INVALID_ARGUMENT,
    );
  });
});

describe("download", () => {
  const content = pattern(3 * 1024 * 1024 + 123);
  beforeAll(() => writeFileSync(join(root, "dl.bin"), content, { mode: 0o640 }));

  it("streams the file and reports its SHA-256, size and mode", async () => {
    const h = start(spec({ op: "download", path: join(root, "dl.bin") }));
    const r = await h.result();
    expect(h.stdout().equals(content)).toBe(true);
    expect(r).toMatchObject({ sha256: sha(content), bytes: content.length, mode: 0o640, type: "file" });
  });

  it("from an offset: the rest of the file, with the digest of the whole", async () => {
    const offset = 1_000_001;
    const h = start(spec({ op: "download", path: join(root, "dl.bin"), offset }));
    const r = await h.result();
    expect(h.stdout().equals(content.subarray(offset))).toBe(true);
    expect(r.sha256).toBe(sha(content));
    expect(r.bytes).toBe(content.length);
  });

  it("reads no further than the output window allows", async () => {
    const h = start(spec({ op: "download", path: join(root, "dl.bin") }), { window: 64 * 1024 });
    await waitFor(() => h.gate.sentBytes === 64 * 1024 && h.gate.pendingBytes > 0, {
      message: "the window to fill",
    });
    await new Promise((r) => setTimeout(r, 50));
    // What the window took, plus one chunk held at the gate: nothing more was read.
    expect(h.gate.sentBytes).toBe(64 * 1024);
    expect(h.gate.pendingBytes).toBeLessThanOrEqual(256 * 1024);
    h.gate.grant(content.length);
    await h.result();
    expect(h.stdout().equals(content)).toBe(true);
  });

  it("refuses an offset past the end, a symlink out of the root, a directory without tar", async () => {
    let h = start(spec({ op: "download", path: join(root, "dl.bin"), offset: content.length + 1 }));
    expect((await failure(h)).code).toBe(Code.OUT_OF_RANGE);
    h = start(spec({ op: "download", path: join(root, "out/secret") }));
    const f = await failure(h);
    expect(f.code).toBe(Code.PERMISSION_DENIED);
    expect(h.started()).toBe(false);
    expect(h.stdout().length).toBe(0);
    h = start(spec({ op: "download", path: join(root, "sub") }));
    expect((await failure(h)).message).toMatch(/is a directory.*cp -r/);
    h = start(spec({ op: "download", path: join(root, "nope") }));
    expect((await failure(h)).code).toBe(Code.NOT_FOUND);
  });

  it("a directory as a tar stream that unpacks to the same tree", async () => {
    const dir = join(root, "tree");
    mkdirSync(join(dir, "a/b"), { recursive: true });
    writeFileSync(join(dir, "a/b/f.bin"), pattern(70_000, 3), { mode: 0o600 });
    writeFileSync(join(dir, "top.txt"), "top");
    const h = start(spec({ op: "download", path: dir, archive: "tar" }));
    const r = await h.result();
    expect(r.type).toBe("dir");
    expect(r.sha256).toBe(sha(h.stdout()));
    const into = join(base, "unpacked");
    mkdirSync(into);
    const u = new TreeUnpacker(into);
    u.write(h.stdout());
    u.end();
    await u.done;
    expect(readFileSync(join(into, "a/b/f.bin")).equals(pattern(70_000, 3))).toBe(true);
    expect(statSync(join(into, "a/b/f.bin")).mode & 0o777).toBe(0o600);

    // From an offset (a resumed download): the rest of the same stream, the digest of all of it.
    const whole = h.stdout();
    const rest = start(spec({ op: "download", path: dir, archive: "tar", offset: 30_000 }), {
      taskId: "t-2",
    });
    expect((await rest.result()).sha256).toBe(sha(whole));
    expect(rest.stdout().equals(whole.subarray(30_000))).toBe(true);
    // Past the end of the stream: the directory changed since.
    const past = start(spec({ op: "download", path: dir, archive: "tar", offset: whole.length + 1 }), {
      taskId: "t-3",
    });
    const f = await failure(past);
    expect(f.code).toBe(Code.OUT_OF_RANGE);
    expect(f.message).toMatch(/past the end of the tar stream .*changed since the interrupted copy/);
  });
});

describe("upload", () => {
  it("writes to a temporary name, then renames onto the target once size and digest match", async () => {
    const data = pattern(2_500_000, 5);
    const target = join(root, "up1.bin");
    const h = start(spec({ op: "upload", path: target, size: data.length, sha256: sha(data), mode: 0o751 }));
    await waitFor(() => h.granted() > 0, { message: "the first window" });
    expect(h.granted()).toBe(UPLOAD_WINDOW_BYTES);
    await send(h, data);
    const r = await h.result();
    expect(readFileSync(target).equals(data)).toBe(true);
    expect(statSync(target).mode & 0o777).toBe(0o751);
    expect(r).toMatchObject({ sha256: sha(data), bytes: data.length, type: "file", resumed_from: 0 });
    expect(readdirSync(root).filter((n) => n.includes("sb-upload"))).toEqual([]);
  });

  it("a SHA-256 mismatch: DATA_LOSS naming both digests, nothing under either name", async () => {
    const data = pattern(500_000, 6);
    const target = join(root, "bad.bin");
    const claimed = sha(Buffer.from("something else"));
    const h = start(spec({ op: "upload", path: target, size: data.length, sha256: claimed }));
    await send(h, data);
    const f = await failure(h);
    expect(f.code).toBe(Code.DATA_LOSS);
    expect(f.message).toContain(claimed);
    expect(f.message).toContain(sha(data));
    expect(existsSync(target)).toBe(false);
    expect(existsSync(join(root, uploadTempName("bad.bin", claimed)))).toBe(false);
  });

  it("refuses an existing target without overwrite, and replaces it with", async () => {
    const target = join(root, "exists.txt");
    writeFileSync(target, "old");
    const data = Buffer.from("new content");
    let h = start(spec({ op: "upload", path: target, size: data.length, sha256: sha(data) }));
    expect((await failure(h)).code).toBe(Code.ALREADY_EXISTS);
    expect(h.started()).toBe(false);
    h = start(spec({ op: "upload", path: target, size: data.length, sha256: sha(data), overwrite: true }));
    await send(h, data);
    await h.result();
    expect(readFileSync(target, "utf8")).toBe("new content");
  });

  it("refuses a parent that is a symlink out of the root", async () => {
    const data = Buffer.from("x");
    const h = start(spec({ op: "upload", path: join(root, "out/planted"), size: 1, sha256: sha(data) }));
    expect((await failure(h)).code).toBe(Code.PERMISSION_DENIED);
    expect(existsSync(join(outside, "planted"))).toBe(false);
  });

  it("more bytes than declared: INVALID_ARGUMENT, the temporary file removed", async () => {
    const data = pattern(10_000, 7);
    const h = start(spec({ op: "upload", path: join(root, "long.bin"), size: 5_000, sha256: sha(data) }));
    await send(h, data, 10_000, false);
    expect((await failure(h)).code).toBe(Code.INVALID_ARGUMENT);
    expect(readdirSync(root).filter((n) => n.startsWith(".long.bin"))).toEqual([]);
  });

  it("a stopped upload keeps what arrived; a resumed one says where to carry on and finishes", async () => {
    const data = pattern(3_000_000, 8);
    const target = join(root, "resumed.bin");
    const s = { op: "upload", path: target, size: data.length, sha256: sha(data) };
    const first = start(spec(s));
    await send(first, data.subarray(0, 1_200_000), 100_000, false);
    await waitFor(
      () => {
        const tmp = join(root, uploadTempName("resumed.bin", sha(data)));
        return existsSync(tmp) && statSync(tmp).size === 1_200_000;
      },
      { message: "the bytes on disk" },
    );
    first.execution.stop({ cause: "cancelled", reason: "cancelled by the test" });
    expect((await first.done).state).toBe(TaskState.TASK_STATE_CANCELLED);
    expect(existsSync(target)).toBe(false);

    const second = start(spec({ ...s, resume: true }), { taskId: "task-2" });
    await waitFor(() => second.stdout().includes("\n"), { message: "the offset line" });
    expect(JSON.parse(second.stdout().toString())).toEqual({ offset: 1_200_000 });
    await send(second, data.subarray(1_200_000));
    const r = await second.result();
    expect(r.resumed_from).toBe(1_200_000);
    expect(readFileSync(target).equals(data)).toBe(true);
  });

  it("with the SHA-256 at the end of input: placed when it matches, discarded when it does not or is missing", async () => {
    const data = pattern(700_000, 12);
    const ok = start(spec({ op: "upload", path: join(root, "end-ok.bin"), size: data.length }));
    await send(ok, data, 100_000, false);
    ok.execution.input!({ data: Buffer.alloc(0), eof: true, sha256: sha(data) });
    expect((await ok.result()).sha256).toBe(sha(data));
    expect(readFileSync(join(root, "end-ok.bin")).equals(data)).toBe(true);

    const wrong = "0".repeat(64);
    const bad = start(spec({ op: "upload", path: join(root, "end-bad.bin"), size: data.length }));
    await send(bad, data, 100_000, false);
    bad.execution.input!({ data: Buffer.alloc(0), eof: true, sha256: wrong });
    const mismatch = await failure(bad);
    expect(mismatch.code).toBe(Code.DATA_LOSS);
    expect(mismatch.message).toContain(wrong);

    const none = start(spec({ op: "upload", path: join(root, "end-none.bin"), size: data.length }));
    await send(none, data);
    const missing = await failure(none);
    expect(missing.code).toBe(Code.INVALID_ARGUMENT);
    expect(missing.message).toContain("without its SHA-256");
    expect(
      readdirSync(root).filter(
        (n) => n.startsWith(".end-") || n.startsWith("end-b") || n.startsWith("end-n"),
      ),
    ).toEqual([]);
  });

  it("resumes by its resume key an upload whose SHA-256 comes at the end", async () => {
    const data = pattern(2_000_000, 13);
    const key = "c".repeat(64);
    const s = { op: "upload", path: join(root, "keyed.bin"), size: data.length, resumeKey: key };
    const first = start(spec(s));
    await send(first, data.subarray(0, 800_000), 100_000, false);
    const tmp = join(root, uploadTempName("keyed.bin", key));
    await waitFor(() => existsSync(tmp) && statSync(tmp).size === 800_000, { message: "the bytes on disk" });
    first.execution.stop({ cause: "cancelled", reason: "cancelled by the test" });
    await first.done;
    const second = start(spec({ ...s, resume: true }), { taskId: "task-k2" });
    await waitFor(() => second.stdout().includes("\n"), { message: "the offset line" });
    expect(JSON.parse(second.stdout().toString())).toEqual({ offset: 800_000 });
    await send(second, data.subarray(800_000), 100_000, false);
    second.execution.input!({ data: Buffer.alloc(0), eof: true, sha256: sha(data) });
    expect((await second.result()).resumed_from).toBe(800_000);
    expect(readFileSync(join(root, "keyed.bin")).equals(data)).toBe(true);
    expect(existsSync(tmp)).toBe(false);
  });

  it("a newer upload of the same file takes over from one whose client went away", async () => {
    const data = pattern(1_000_000, 9);
    const s = { op: "upload", path: join(root, "taken.bin"), size: data.length, sha256: sha(data) };
    const ex = executor();
    const orphan = start(spec(s), { ex });
    await send(orphan, data.subarray(0, 400_000), 100_000, false);
    // What the orphan took is on disk before the newer upload asks where to carry on.
    await waitFor(
      () => {
        const tmp = join(root, uploadTempName("taken.bin", sha(data)));
        return existsSync(tmp) && statSync(tmp).size === 400_000;
      },
      { message: "the orphan's bytes on disk" },
    );
    const next = start(spec({ ...s, resume: true }), { ex, taskId: "task-9" });
    const f = await orphan.done;
    expect(f.state).toBe(TaskState.TASK_STATE_CANCELLED);
    expect(f.reason).toContain("superseded by task task-9");
    await waitFor(() => next.stdout().includes("\n"), { message: "the offset line" });
    expect(JSON.parse(next.stdout().toString())).toEqual({ offset: 400_000 });
    await send(next, data.subarray(400_000));
    await next.result();
    expect(readFileSync(join(root, "taken.bin")).equals(data)).toBe(true);
  });

  it("no input for the idle timeout: DEADLINE_EXCEEDED, what arrived kept for a resume", async () => {
    const data = pattern(300_000, 10);
    const h = start(
      spec({ op: "upload", path: join(root, "idle.bin"), size: data.length, sha256: sha(data) }),
      {
        ex: executor(200),
      },
    );
    await send(h, data.subarray(0, 100_000), 100_000, false);
    const f = await failure(h);
    expect(f.code).toBe(Code.DEADLINE_EXCEEDED);
    expect(f.message).toContain("kept for a resumed upload");
    expect(statSync(join(root, uploadTempName("idle.bin", sha(data)))).size).toBe(100_000);
  });

  it("never has more input outstanding than one window", async () => {
    const data = pattern(12 * 1024 * 1024, 11);
    const h = start(
      spec({ op: "upload", path: join(root, "windowed.bin"), size: data.length, sha256: sha(data) }),
    );
    let maxAhead = 0;
    await send(h, data, 256 * 1024, true, (n) => (maxAhead = Math.max(maxAhead, n)));
    await h.result();
    expect(maxAhead).toBeLessThanOrEqual(UPLOAD_WINDOW_BYTES);
    expect(h.granted()).toBeGreaterThanOrEqual(data.length);
  });

  it("a directory: a tar unpacked under the target, placed only once complete", async () => {
    const src = join(base, "upsrc");
    mkdirSync(join(src, "d/e"), { recursive: true });
    writeFileSync(join(src, "d/e/f"), pattern(200_000, 12), { mode: 0o604 });
    symlinkSync("e/f", join(src, "d/link"));
    const parts: Buffer[] = [];
    for await (const b of packTree(src)) parts.push(b);
    const archive = Buffer.concat(parts);
    const target = join(root, "uptree");
    const h = start(
      spec({ op: "upload", path: target, archive: "tar", size: archive.length, sha256: sha(archive) }),
    );
    await send(h, archive, 3000);
    const r = await h.result();
    expect(r.type).toBe("dir");
    expect(readFileSync(join(target, "d/e/f")).equals(pattern(200_000, 12))).toBe(true);
    expect(statSync(join(target, "d/e/f")).mode & 0o777).toBe(0o604);
    expect(readFileSync(join(target, "d/link")).length).toBe(200_000);
    expect(readdirSync(root).filter((n) => n.startsWith(".uptree"))).toEqual([]);
  });

  it("a stopped directory upload keeps its tar stream; a resumed one unpacks it again and carries on", async () => {
    const src = join(base, "resumesrc");
    mkdirSync(join(src, "x"), { recursive: true });
    writeFileSync(join(src, "x/a.bin"), pattern(900_000, 5));
    writeFileSync(join(src, "b.bin"), pattern(800_000, 6), { mode: 0o640 });
    const parts: Buffer[] = [];
    for await (const b of packTree(src)) parts.push(b);
    const archive = Buffer.concat(parts);
    const target = join(root, "resumed-tree");
    const s = { op: "upload", path: target, archive: "tar", size: archive.length, sha256: sha(archive) };
    const spool = join(root, `${uploadTempName("resumed-tree", sha(archive))}.tar`);
    const ex = executor();
    const first = start(spec(s), { ex });
    await send(first, archive.subarray(0, 1_000_000), 100_000, false);
    await waitFor(() => existsSync(spool) && statSync(spool).size === 1_000_000, {
      message: "the stream on disk",
    });
    first.execution.stop({ cause: "cancelled", reason: "cancelled by the test" });
    expect((await first.done).state).toBe(TaskState.TASK_STATE_CANCELLED);
    expect(existsSync(target)).toBe(false);
    expect(statSync(spool).size).toBe(1_000_000);
    expect(first.ex.partials.has(spool)).toBe(true);

    const second = start(spec({ ...s, resume: true }), { taskId: "task-2", ex });
    await waitFor(() => second.stdout().includes("\n"), { message: "the offset line" });
    expect(JSON.parse(second.stdout().toString())).toEqual({ offset: 1_000_000 });
    await send(second, archive.subarray(1_000_000));
    const r = await second.result();
    expect(r).toMatchObject({ type: "dir", resumed_from: 1_000_000, sha256: sha(archive) });
    // Noted while it was kept for the resume, forgotten once the tree was placed.
    expect(second.ex.partials.has(spool)).toBe(false);
    expect(readFileSync(join(target, "x/a.bin")).equals(pattern(900_000, 5))).toBe(true);
    expect(readFileSync(join(target, "b.bin")).equals(pattern(800_000, 6))).toBe(true);
    expect(statSync(join(target, "b.bin")).mode & 0o777).toBe(0o640);
    expect(readdirSync(root).filter((n) => n.startsWith(".resumed-tree"))).toEqual([]);
  });

  it("a hostile tar is refused with PERMISSION_DENIED and leaves nothing behind", async () => {
    const pack = tar.pack();
    pack.entry({ name: "ok.txt" }, "fine");
    pack.entry({ name: "../escape.txt" }, "evil");
    pack.finalize();
    const parts: Buffer[] = [];
    for await (const b of pack as AsyncIterable<Buffer>) parts.push(b);
    const archive = Buffer.concat(parts);
    const target = join(root, "hostile");
    const h = start(
      spec({ op: "upload", path: target, archive: "tar", size: archive.length, sha256: sha(archive) }),
    );
    await send(h, archive).catch(() => undefined);
    const f = await failure(h);
    expect(f.code).toBe(Code.PERMISSION_DENIED);
    expect(f.message).toContain("'..'");
    expect(existsSync(target)).toBe(false);
    expect(existsSync(join(root, "escape.txt"))).toBe(false);
    expect(readdirSync(root).filter((n) => n.startsWith(".hostile"))).toEqual([]);
  });
});
