// `switchboard cp` end to end: a real hub and agents (with [files] roots) from the built CLI, driven as a
// user would. A 1 GiB file up and down, compared byte for byte; a directory tree with modes, nested and
// empty directories and a symlink; every refusal (outside the roots, `..`, a symlink out, a checksum that
// does not match); and interrupted transfers resumed: the CLI killed mid-upload and mid-download, the
// client's connection cut, the agent's link cut. Nothing ever appears under the final name half-written.
import { createHash } from "node:crypto";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { file, SwitchboardClient, TaskState } from "../src/client/index.js";
import { uploadResumeKey, uploadTempName } from "../src/common/file-transfer.js";
import {
  runCli,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";
import { TcpProxy } from "./support/tcp-proxy.js";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
/** The fault tests use a smaller file: they only need a transfer long enough to be cut. */
const FAULT_BYTES = 256 * MiB;

let hub: HubProc;
let client: SwitchboardClient;
let work: string;
/** The agents' [files] root. */
let root: string;
/** Files here, outside every root. */
let local: string;
let big: { path: string; sha256: string };
let mid: { path: string; sha256: string };
const proxies: TcpProxy[] = [];

/** `bytes` that repeat no block: a random MiB, each copy stamped with its index. */
async function makeFile(path: string, bytes: number): Promise<{ path: string; sha256: string }> {
  const block = Buffer.alloc(MiB);
  for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((Math.random() * 2 ** 32) >>> 0, i);
  const h = createHash("sha256");
  const fh = await open(path, "w");
  try {
    for (let off = 0; off < bytes; off += MiB) {
      block.writeUInt32BE(off / MiB, 0);
      const piece = block.subarray(0, Math.min(MiB, bytes - off));
      h.update(piece);
      await fh.write(piece);
    }
  } finally {
    await fh.close();
  }
  return { path, sha256: h.digest("hex") };
}

/** Compares two files byte for byte, a MiB at a time. */
async function sameBytes(a: string, b: string): Promise<boolean> {
  if (statSync(a).size !== statSync(b).size) return false;
  const [fa, fb] = await Promise.all([open(a), open(b)]);
  try {
    const ba = Buffer.alloc(MiB);
    const bb = Buffer.alloc(MiB);
    for (let pos = 0; ; pos += MiB) {
      const [ra, rb] = await Promise.all([fa.read(ba, 0, MiB, pos), fb.read(bb, 0, MiB, pos)]);
      if (ra.bytesRead !== rb.bytesRead) return false;
      if (ra.bytesRead === 0) return true;
      if (!ba.subarray(0, ra.bytesRead).equals(bb.subarray(0, rb.bytesRead))) return false;
    }
  } finally {
    await Promise.all([fa.close(), fb.close()]);
  }
}

/** Relative path -> what is there: content digest and mode, a link's target, a directory's mode. */
function describeTree(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (rel: string): void => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(dir, r);
      const st = lstatSync(p);
      if (st.isSymbolicLink()) out[r] = `link ${readlinkSync(p)}`;
      else if (st.isDirectory()) {
        out[r] = `dir ${(st.mode & 0o777).toString(8)}`;
        walk(r);
      } else {
        const h = createHash("sha256").update(readFileSync(p)).digest("hex").slice(0, 16);
        out[r] = `file ${(st.mode & 0o777).toString(8)} ${h}`;
      }
    }
  };
  walk("");
  return out;
}

const cp = (args: string[], timeoutMs = 240_000) =>
  runCli([...hub.cli, "cp", "--no-progress", ...args], { timeoutMs });
const sizeOf = (p: string): number => (existsSync(p) ? statSync(p).size : 0);
/**
 * Runs `cp ARGS` and kills it (SIGKILL) once the partial file at `partial()` holds 32 MiB (or the copy has
 * ended, which the test's own checks then show).
 */
async function killMidway(args: string[], what: string, partial: () => string): Promise<void> {
  const p = spawnCli([...hub.cli, "cp", ...args]);
  await waitFor(() => sizeOf(partial()) >= 32 * MiB || p.child.exitCode !== null, {
    timeout: 60_000,
    interval: 5,
    message: what,
  });
  p.kill("SIGKILL");
  await p.exited;
}
const junk = (dir: string): string[] => readdirSync(dir).filter((n) => n.includes(".sb-"));

beforeAll(async () => {
  work = tempDir("cp");
  root = join(work, "root");
  local = join(work, "local");
  mkdirSync(root);
  mkdirSync(local);
  mkdirSync(join(work, "outside"));
  writeFileSync(join(work, "outside", "secret"), "not for clients");
  symlinkSync(join(work, "outside"), join(root, "escape"));
  const config = join(work, "agent.toml");
  writeFileSync(config, `[files]\nroots = [${JSON.stringify(root)}]\nidle_timeout_secs = 5\n`);
  hub = await startHub();
  const proxy = await TcpProxy.start(hub.address);
  proxies.push(proxy);
  await Promise.all([
    startAgent(hub, { agentId: "files-1", pool: "files", shell: false, args: ["--config", config] }),
    // The same root through a proxy, for the link cut: both agents are on this machine.
    startAgent(hub, {
      agentId: "files-2",
      pool: "files-via-proxy",
      shell: false,
      args: ["--config", config, "--hub", proxy.address],
    }),
  ]);
  client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
  [big, mid] = await Promise.all([
    makeFile(join(local, "big.bin"), GiB),
    makeFile(join(local, "mid.bin"), FAULT_BYTES),
  ]);
}, 120_000);

afterAll(async () => {
  client?.close();
  await Promise.all(proxies.map((p) => p.close()));
  await stopAll();
  // Several GiB of test files: never left behind.
  if (work) rmSync(work, { recursive: true, force: true });
});

/** The name the CLI gives the partial file of an upload of `file` (see uploadResumeKey). */
function resumeKeyOf(file: string): string {
  const st = statSync(file);
  return uploadResumeKey(realpathSync(file), st.size, st.mtimeMs);
}

describe("cp of a 1 GiB file", () => {
  it("uploads it; the agent's copy is the same, byte for byte", async () => {
    const t0 = Date.now();
    const r = await cp(["--output", "json", big.path, `agent:files-1:${root}/big.bin`]);
    const ms = Date.now() - t0;
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ sha256: big.sha256, bytes: GiB, type: "file" });
    expect(await sameBytes(big.path, join(root, "big.bin"))).toBe(true);
    expect(junk(root)).toEqual([]);
    console.log(`1 GiB upload: ${ms} ms (${(GiB / 1e6 / (ms / 1000)).toFixed(0)} MB/s)`);
  }, 300_000);

  it("downloads it; the local copy is the same, byte for byte, with the agent's mode", async () => {
    chmodSync(join(root, "big.bin"), 0o640);
    const t0 = Date.now();
    const r = await cp(["--output", "json", `agent:files-1:${root}/big.bin`, join(local, "big-down.bin")]);
    const ms = Date.now() - t0;
    expect(r.stderr).toBe("");
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ sha256: big.sha256, bytes: GiB });
    expect(await sameBytes(big.path, join(local, "big-down.bin"))).toBe(true);
    expect(statSync(join(local, "big-down.bin")).mode & 0o777).toBe(0o640);
    expect(junk(local)).toEqual([]);
    console.log(`1 GiB download: ${ms} ms (${(GiB / 1e6 / (ms / 1000)).toFixed(0)} MB/s)`);
  }, 300_000);
});

describe("cp -r of a directory tree", () => {
  it("uploads and downloads nested and empty directories, modes and a symlink, file by file", async () => {
    const src = join(local, "tree");
    mkdirSync(join(src, "a/b/c"), { recursive: true });
    mkdirSync(join(src, "empty"));
    writeFileSync(join(src, "a/notes.txt"), "notes\n");
    writeFileSync(join(src, "a/b/data.bin"), Buffer.alloc(3 * MiB + 5, 9));
    writeFileSync(join(src, "a/b/c/run.sh"), "#!/bin/sh\necho hi\n");
    writeFileSync(join(src, "zero-length"), "");
    chmodSync(join(src, "a/b/c/run.sh"), 0o755);
    chmodSync(join(src, "a/notes.txt"), 0o600);
    chmodSync(join(src, "a/b"), 0o750);
    chmodSync(join(src, "empty"), 0o700);
    symlinkSync("b/c/run.sh", join(src, "a/run"));

    const up = await cp(["-r", src, `agent:files-1:${root}/`]);
    expect(up.stderr).toBe("");
    expect(up.code).toBe(0);
    expect(describeTree(join(root, "tree"))).toEqual(describeTree(src));

    const down = await cp(["-r", `agent:files-1:${root}/tree`, join(local, "tree-down")]);
    expect(down.stderr).toBe("");
    expect(down.code).toBe(0);
    expect(describeTree(join(local, "tree-down"))).toEqual(describeTree(src));
    expect(junk(root)).toEqual([]);
    expect(junk(local)).toEqual([]);

    // Again without --force: refused; with it: replaced.
    const again = await cp(["-r", src, `agent:files-1:${root}/tree`]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("ALREADY_EXISTS");
    expect((await cp(["-r", "--force", src, `agent:files-1:${root}/tree`])).code).toBe(0);
  }, 120_000);

  it("uploads to one agent of a pool", async () => {
    const r = await cp([join(local, "tree/a/notes.txt"), `pool:files:${root}/pooled.txt`]);
    expect(r.code).toBe(0);
    expect(readFileSync(join(root, "pooled.txt"), "utf8")).toBe("notes\n");
    expect(statSync(join(root, "pooled.txt")).mode & 0o777).toBe(0o600);
  });
});

describe("refusals", () => {
  it("a path outside the roots, with '..', or through a symlink out: clear errors, nothing written", async () => {
    const small = join(local, "small.txt");
    writeFileSync(small, "small");
    const cases: [string[], RegExp][] = [
      [
        [small, "agent:files-1:/etc/switchboard-test"],
        /outside agent files-1's file roots.*PERMISSION_DENIED/,
      ],
      [[small, `agent:files-1:${root}/../outside/x`], /'\.\.'.*INVALID_ARGUMENT/],
      [[small, `agent:files-1:${root}/escape/planted`], /through a symlink, outside.*PERMISSION_DENIED/],
      [
        [`agent:files-1:${root}/escape/secret`, join(local, "stolen")],
        /through a symlink.*PERMISSION_DENIED/,
      ],
      [[`agent:files-1:/etc/hostname`, join(local, "stolen")], /outside.*PERMISSION_DENIED/],
      [[`agent:files-1:${root}/no-such-file`, join(local, "nothing")], /does not exist.*NOT_FOUND/],
    ];
    for (const [args, why] of cases) {
      const r = await cp(args);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr, args.join(" ")).toMatch(why);
    }
    expect(existsSync("/etc/switchboard-test")).toBe(false);
    expect(existsSync(join(work, "outside", "planted"))).toBe(false);
    expect(existsSync(join(local, "stolen"))).toBe(false);
    expect(junk(local)).toEqual([]);
  });

  it("usage errors exit 2", async () => {
    expect((await cp([join(local, "tree"), `agent:files-1:${root}/t2`])).code).toBe(2); // a directory without -r
    expect((await cp([join(local, "small.txt"), join(local, "x")])).code).toBe(2);
    expect((await cp([join(local, "small.txt"), "agent:files-1:relative/path"])).code).toBe(2);
    expect((await cp([`pool:files:${root}/big.bin`, join(local, "x")])).code).toBe(2);
  });

  it("a checksum that does not match: DATA_LOSS naming both digests, no file under the final name", async () => {
    const data = Buffer.alloc(5 * MiB, 3);
    const wrong = createHash("sha256").update("not these bytes").digest("hex");
    const actual = createHash("sha256").update(data).digest("hex");
    const target = join(root, "mismatch.bin");
    const taskId = await client.submit({
      ...file({ op: "upload", path: target, size: data.length, sha256: wrong }),
      target: { agentId: "files-1" },
    });
    const input = client.openInput(taskId);
    for (let off = 0; off < data.length; off += 256 * 1024)
      await input.write(data.subarray(off, off + 256 * 1024));
    await input.end();
    let finished;
    for await (const ev of client.watch(taskId))
      if (ev.event?.$case === "finished") finished = ev.event.value;
    expect(finished?.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(finished?.error?.code).toBe(15); // DATA_LOSS
    expect(finished?.error?.message).toContain(wrong);
    expect(finished?.error?.message).toContain(actual);
    expect(existsSync(target)).toBe(false);
    expect(existsSync(join(root, uploadTempName("mismatch.bin", wrong)))).toBe(false);
  });
  it("a download whose bytes do not match the agent's digest: DATA_LOSS, nothing under the final name", async () => {
    // A partial download left from an earlier copy of a file that has changed on the agent since.
    writeFileSync(join(root, "changed.bin"), Buffer.alloc(8 * MiB, 1));
    const dest = join(local, "changed.bin");
    writeFileSync(join(local, ".changed.bin.sb-download"), Buffer.alloc(MiB, 2));
    const r = await cp(["--resume", `agent:files-1:${root}/changed.bin`, dest]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/SHA-256 mismatch .*changed since the interrupted copy.*DATA_LOSS/);
    expect(existsSync(dest)).toBe(false);
    expect(existsSync(join(local, ".changed.bin.sb-download"))).toBe(false);
  });
});

describe("interrupted transfers", () => {
  it("an upload whose CLI was killed carries on from where it stopped with --resume", async () => {
    const target = join(root, "killed-up.bin");
    const tmp = join(root, uploadTempName("killed-up.bin", resumeKeyOf(mid.path)));
    await killMidway(
      ["--no-progress", mid.path, `agent:files-1:${target}`],
      "part of the upload on the agent",
      () => tmp,
    );
    expect(existsSync(target)).toBe(false);
    const kept = sizeOf(tmp);
    expect(kept).toBeGreaterThan(0);

    const r = await cp(["--resume", "--output", "json", mid.path, `agent:files-1:${target}`]);
    expect(r.code).toBe(0);
    const m = /resuming at byte (\d+)/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect((JSON.parse(r.stdout) as { resumed_from: number }).resumed_from).toBe(Number(m![1]));
    expect(await sameBytes(mid.path, target)).toBe(true);
    expect(existsSync(tmp)).toBe(false);
  }, 180_000);

  it("a directory upload whose CLI was killed carries on with --resume: the agent kept the tar stream", async () => {
    const src = join(local, "killed-tree");
    mkdirSync(join(src, "sub"), { recursive: true });
    await makeFile(join(src, "sub/one.bin"), 96 * MiB);
    await makeFile(join(src, "two.bin"), 64 * MiB);
    writeFileSync(join(src, "small.txt"), "small\n");
    const target = join(root, "killed-tree");
    const spool = (): string | undefined => {
      const n = readdirSync(root).find((f) => f.startsWith(".killed-tree.sb-upload-") && f.endsWith(".tar"));
      return n === undefined ? undefined : join(root, n);
    };
    await killMidway(
      ["-r", "--no-progress", src, `agent:files-1:${target}`],
      "part of the tar stream on the agent",
      () => spool() ?? "",
    );
    expect(existsSync(target)).toBe(false);
    const kept = sizeOf(spool()!);
    expect(kept).toBeGreaterThan(0);

    const r = await cp(["-r", "--resume", "--output", "json", src, `agent:files-1:${target}`]);
    expect(r.code, r.stderr).toBe(0);
    const at = Number(/resuming at byte (\d+)/.exec(r.stderr)?.[1]);
    expect(at).toBeGreaterThan(0);
    expect((JSON.parse(r.stdout) as { resumed_from: number }).resumed_from).toBe(at);
    expect(describeTree(target)).toEqual(describeTree(src));
    expect(junk(root).filter((n) => n.startsWith(".killed-tree"))).toEqual([]);
  }, 180_000);

  it("an agent removes what an interrupted upload kept once nobody resumed it within partial_ttl_secs", async () => {
    const ttlRoot = join(work, "ttl-root");
    mkdirSync(ttlRoot);
    const config = join(work, "ttl-agent.toml");
    writeFileSync(config, `[files]\nroots = [${JSON.stringify(ttlRoot)}]\npartial_ttl_secs = 3\n`);
    await startAgent(hub, {
      agentId: "files-ttl",
      pool: "files-ttl",
      shell: false,
      args: ["--config", config],
    });
    const target = join(ttlRoot, "abandoned.bin");
    const tmp = join(ttlRoot, uploadTempName("abandoned.bin", resumeKeyOf(mid.path)));
    await killMidway(
      ["--no-progress", mid.path, `agent:files-ttl:${target}`],
      "part of the upload",
      () => tmp,
    );
    // Kept for a resume at first: the sweep runs every 0.75 s, so once the partial is a second old
    // (by its own clock, not a sleep) a sweep has passed over it while it was younger than 3 s ...
    await waitFor(() => Date.now() - statSync(tmp).mtimeMs > 1000, {
      message: "a sweep to pass over the young partial",
    });
    expect(existsSync(tmp)).toBe(true);
    // ... then removed, having been left alone longer than the time to live.
    await waitFor(() => !existsSync(tmp), {
      timeout: 15_000,
      message: "the abandoned partial to be removed",
    });
    expect(readdirSync(ttlRoot)).toEqual([]);
  }, 120_000);

  it("a download whose CLI was killed carries on from the local partial file with --resume", async () => {
    const source = join(root, "killed-down-src.bin");
    expect((await cp([mid.path, `agent:files-1:${source}`])).code).toBe(0);
    const dest = join(local, "killed-down.bin");
    const partial = join(local, ".killed-down.bin.sb-download");
    await killMidway(
      ["--no-progress", `agent:files-1:${source}`, dest],
      "part of the download here",
      () => partial,
    );
    expect(existsSync(dest)).toBe(false);
    // The hub cancels the task of a client that went away: the agent stops reading the source.
    await waitFor(
      async () =>
        (await client.listTasks({ agentId: "files-1", limit: 5 })).some(
          (t) => t.state === TaskState.TASK_STATE_CANCELLED && /client went away/.test(t.reason),
        ),
      { timeout: 10_000, message: "the orphaned download to be cancelled" },
    );

    const r = await cp(["--resume", `agent:files-1:${source}`, dest]);
    expect(r.code).toBe(0);
    const m = /resuming at byte (\d+)/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThan(0);
    expect(await sameBytes(mid.path, dest)).toBe(true);
    expect(existsSync(partial)).toBe(false);
  }, 180_000);

  it("a directory download whose CLI was killed carries on with --resume from the kept tar stream", async () => {
    const src = join(local, "down-tree-src");
    mkdirSync(join(src, "deep/er"), { recursive: true });
    await makeFile(join(src, "deep/er/one.bin"), 96 * MiB);
    await makeFile(join(src, "two.bin"), 64 * MiB);
    chmodSync(join(src, "two.bin"), 0o640);
    symlinkSync("deep/er/one.bin", join(src, "link"));
    const source = join(root, "down-tree");
    expect((await cp(["-r", src, `agent:files-1:${source}`])).code).toBe(0);
    const dest = join(local, "down-tree");
    const spool = join(local, ".down-tree.sb-download.tar");
    await killMidway(
      ["-r", "--no-progress", `agent:files-1:${source}`, dest],
      "part of the tar stream here",
      () => spool,
    );
    expect(existsSync(dest)).toBe(false);
    expect(sizeOf(spool)).toBeGreaterThan(0);

    const r = await cp(["-r", "--resume", `agent:files-1:${source}`, dest]);
    expect(r.code, r.stderr).toBe(0);
    expect(Number(/resuming at byte (\d+)/.exec(r.stderr)?.[1])).toBeGreaterThan(0);
    expect(describeTree(dest)).toEqual(describeTree(src));
    expect(junk(local).filter((n) => n.startsWith(".down-tree"))).toEqual([]);
  }, 180_000);

  it("an upload whose connection to the hub was cut fails clearly, then resumes", async () => {
    const proxy = await TcpProxy.start(hub.address);
    proxies.push(proxy);
    const target = join(root, "cut-client.bin");
    const tmp = join(root, uploadTempName("cut-client.bin", resumeKeyOf(mid.path)));
    const first = spawnCli([
      "--hub",
      proxy.address,
      "--token",
      hub.adminToken,
      "cp",
      "--no-progress",
      mid.path,
      `agent:files-1:${target}`,
    ]);
    await waitFor(() => sizeOf(tmp) >= 32 * MiB || first.child.exitCode !== null, {
      timeout: 60_000,
      interval: 5,
      message: "part of the upload on the agent",
    });
    proxy.cut();
    const code = await first.exited;
    expect(code).toBe(1);
    expect(first.stderr()).toMatch(/the copy broke after \d+ bytes.*UNAVAILABLE/);
    expect(first.stderr()).toContain("--resume");
    expect(existsSync(target)).toBe(false);

    const r = await cp(["--resume", mid.path, `agent:files-1:${target}`]);
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/resuming at byte [1-9]/);
    expect(await sameBytes(mid.path, target)).toBe(true);
  }, 180_000);

  it("an upload through an agent link that is cut carries on once the agent is back: the hub sends again what the break lost", async () => {
    const target = join(root, "cut-agent.bin");
    const tmp = join(root, uploadTempName("cut-agent.bin", resumeKeyOf(mid.path)));
    const first = spawnCli([...hub.cli, "cp", "--no-progress", mid.path, `agent:files-2:${target}`]);
    await waitFor(() => sizeOf(tmp) >= 32 * MiB || first.child.exitCode !== null, {
      timeout: 60_000,
      interval: 5,
      message: "part of the upload on the agent",
    });
    expect(first.child.exitCode).toBeNull(); // cut in the middle, not after the end
    // The agent's side drops; the hub's side stays open and silent, swallowing what the hub still sends.
    expect(proxies[0]!.connections).toBeGreaterThan(0); // the agent's link goes through it
    proxies[0]!.dropClientSide();
    const code = await first.exited;
    expect(first.stderr()).not.toMatch(/^error/m);
    expect(code).toBe(0);
    expect(await sameBytes(mid.path, target)).toBe(true);
    expect(existsSync(tmp)).toBe(false);
  }, 180_000);
});
