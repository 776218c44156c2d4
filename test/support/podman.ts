// A real Docker Engine API for tests, with no Docker daemon: podman's compatible service, in a directory of
// its own (its config, storage and state never touch the machine's), with one image, localhost/busybox,
// made from the busybox-static binary without any registry. stop() removes its containers and ends the
// service process it started, and nothing else.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

export const BUSYBOX_IMAGE = "localhost/busybox:latest";
const BUSYBOX = "/bin/busybox";
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

export interface PodmanService {
  /** The Engine API's unix socket, for [docker] socket. */
  socket: string;
  /** podman with this service's config, for checks behind the agent's back. */
  podman(args: string[]): Promise<string>;
  /** Removes every container of this service, ends the service process and deletes its directory. */
  stop(): Promise<void>;
}

/** Why podman cannot be used here, or undefined when the packages it needs are installed. */
function podmanMissing(): string | undefined {
  const missing: string[] = [];
  if (!onPath("podman")) missing.push("podman");
  if (!onPath("runc")) missing.push("runc");
  if (!existsSync(BUSYBOX)) missing.push("busybox-static");
  return missing.length > 0
    ? `missing Debian packages: ${missing.join(" ")} (npm run setup installs them, as root)`
    : undefined;
}

function onPath(program: string): boolean {
  const dirs = [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/sbin"];
  return dirs.some((d) => d !== "" && existsSync(join(d, program)));
}

/**
 * Starts `podman system service` on dir/podman.sock with the config that works on these machines (runc,
 * cgroupfs, a file events log, high ulimits, overlay storage inside dir), imports the busybox image and
 * waits until the socket answers /_ping. dir: default a fresh temporary directory.
 */
export async function startPodman(dir = mkdtempSync(join(tmpdir(), "sb-podman-"))): Promise<PodmanService> {
  const missing = podmanMissing();
  if (missing) throw new Error(`cannot set up podman for the docker tests: ${missing}`);
  mkdirSync(join(dir, "storage"), { recursive: true });
  const containersConf = join(dir, "containers.conf");
  const storageConf = join(dir, "storage.conf");
  writeFileSync(
    containersConf,
    `[containers]
default_ulimits = ["nofile=20000:20000", "nproc=20000:20000"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "${dir}/events.log"
tmp_dir = "${dir}/libpod-tmp"
`,
  );
  writeFileSync(
    storageConf,
    `[storage]
driver = "overlay"
runroot = "${dir}/storage/run"
graphroot = "${dir}/storage/root"
`,
  );
  const env = { ...process.env, CONTAINERS_CONF: containersConf, CONTAINERS_STORAGE_CONF: storageConf };
  const podman = async (args: string[], timeoutMs = 60_000): Promise<string> => {
    try {
      const { stdout } = await run("podman", args, { env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
      return stdout;
    } catch (e) {
      const err = e as Error & { stderr?: string };
      throw new Error(`podman ${args.join(" ")} failed: ${err.stderr?.trim() || err.message}`);
    }
  };

  await importBusybox(podman);

  const socket = join(dir, "podman.sock");
  rmSync(socket, { force: true });
  const service = spawn(
    "podman",
    ["--log-level=error", "system", "service", "--time=0", `unix://${socket}`],
    {
      env,
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  let serviceErr = "";
  service.stderr.on("data", (b: Buffer) => (serviceErr = (serviceErr + b.toString()).slice(-4000)));
  const exited = new Promise<void>((resolve) => service.once("exit", () => resolve()));

  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (service.exitCode !== null || service.signalCode !== null)
      throw new Error(
        `podman system service exited (${service.exitCode ?? service.signalCode}): ${serviceErr}`,
      );
    if (await pings(socket)) break;
    if (Date.now() > deadline) {
      await endService(service, exited);
      throw new Error(
        `podman system service did not answer on ${socket} within ${START_TIMEOUT_MS} ms: ${serviceErr}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }

  let stopped = false;
  return {
    socket,
    podman: (args) => podman(args),
    async stop(): Promise<void> {
      if (stopped) return;
      stopped = true;
      // Its containers first: their conmon processes outlive the service otherwise.
      await podman(["rm", "--all", "--force", "--time", "0"], 30_000).catch(() => undefined);
      await endService(service, exited);
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    },
  };
}

/** SIGTERM, then SIGKILL past the deadline; only this one process, which startPodman spawned. */
async function endService(service: ChildProcess, exited: Promise<void>): Promise<void> {
  if (service.exitCode !== null || service.signalCode !== null) return;
  service.kill("SIGTERM");
  const timer = setTimeout(() => service.kill("SIGKILL"), STOP_TIMEOUT_MS);
  await exited;
  clearTimeout(timer);
}

function pings(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socket, path: "/_ping", timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("error", () => resolve(false));
    req.on("timeout", () => req.destroy());
    req.end();
  });
}

/**
 * localhost/busybox:latest from a rootfs of the static busybox binary and a link per applet (sh, echo,
 * sleep, cat, seq...). The tarball is made once per machine and kept in the temporary directory.
 */
async function importBusybox(podman: (args: string[]) => Promise<string>): Promise<void> {
  const { stdout: ldd } = await run("ldd", [BUSYBOX]).catch((e: { stdout?: string }) => ({
    stdout: e.stdout ?? "",
  }));
  if (ldd.includes("=>"))
    throw new Error(
      `${BUSYBOX} is linked dynamically and cannot run in an empty image: install busybox-static`,
    );
  const tarball = join(tmpdir(), "switchboard-busybox-rootfs.tar");
  if (!existsSync(tarball)) {
    const rootfs = mkdtempSync(join(tmpdir(), "sb-busybox-rootfs-"));
    try {
      for (const d of ["bin", "tmp", "etc", "root"]) mkdirSync(join(rootfs, d));
      copyFileSync(BUSYBOX, join(rootfs, "bin/busybox"));
      const { stdout } = await run(BUSYBOX, ["--list"]);
      for (const applet of stdout.split("\n").map((l) => l.trim())) {
        if (applet === "" || applet === "busybox" || applet.includes("/")) continue;
        symlinkSync("busybox", join(rootfs, "bin", applet));
      }
      // Written aside and renamed, so that a parallel run never imports half a tarball.
      const partial = `${tarball}.${process.pid}`;
      await run("tar", ["-C", rootfs, "-cf", partial, "."]);
      renameSync(partial, tarball);
    } finally {
      rmSync(rootfs, { recursive: true, force: true });
    }
  }
  await podman(["import", "--quiet", tarball, BUSYBOX_IMAGE]);
}
