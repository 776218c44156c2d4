// Probes of a node's TCP port: whether it answers, whether the listening socket is the node's own (so that
// another program on the port does not pass for a node that failed to bind), whether a port is free, and
// the first free port from a range.
import { closeSync, openSync, readdirSync, readlinkSync, readSync } from "node:fs";
import { connect, createServer } from "node:net";
import { Code, SwitchboardError } from "../../common/errors.js";
import { groupMembers } from "../executors/shell/index.js";

/** Whether something accepts a TCP connection on 127.0.0.1:port: what makes a node count as running. */
export function portAnswers(port: number): Promise<boolean> {
  return new Promise((res) => {
    const sock = connect({ port, host: "127.0.0.1" });
    sock.once("connect", () => {
      sock.destroy();
      res(true);
    });
    sock.once("error", () => res(false));
  });
}

/**
 * Whether the node answers on its port and, where /proc tells, the listening socket is its own (held by a
 * process of its process group): another program that took the port while the node was down, or an
 * ephemeral port handed to some client, must not make a node that failed to bind count as running.
 */
export async function nodeListens(port: number, pgid: number): Promise<boolean> {
  if (!(await portAnswers(port))) return false;
  let inodes = listeningInodes(port, true);
  if (inodes !== undefined && inodes.size === 0) inodes = listeningInodes(port, false);
  if (inodes === undefined) return true; // no /proc/net: answering is all we can know
  if (inodes.size === 0) return false;
  // Most often the node itself listens: look at its own descriptors before the rest of its group.
  if (holdsSocket(pgid, inodes)) return true;
  return groupMembers(pgid).some((pid) => pid !== pgid && holdsSocket(pid, inodes));
}

/** Whether one of the process's descriptors is a socket with one of these inodes. */
function holdsSocket(pid: number, inodes: ReadonlySet<string>): boolean {
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const link = readlinkSync(`/proc/${pid}/fd/${fd}`, "utf8");
      if (link.startsWith("socket:[") && inodes.has(link.slice(8, -1))) return true;
    }
  } catch {
    // gone meanwhile, or not ours to read
  }
  return false;
}

/**
 * Inodes of the TCP sockets listening on the port (IPv4 and IPv6); undefined where /proc/net is absent.
 * `listenersOnly`: read each table only while its entries are listening sockets, which the kernel lists
 * first: a few KiB instead of every connection on the host (reading all of a busy host's table costs
 * milliseconds). A caller that finds nothing that way asks again for the whole tables.
 */
function listeningInodes(port: number, listenersOnly: boolean): Set<string> | undefined {
  const suffix = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  const inodes = new Set<string>();
  let readAny = false;
  // Small reads: the kernel makes only as many entries as fit, so the table's tail is never made.
  const buf = Buffer.allocUnsafe(listenersOnly ? 4096 : 64 * 1024);
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let fd: number;
    try {
      fd = openSync(table, "r");
    } catch {
      continue;
    }
    readAny = true;
    try {
      let rest = "";
      let header = true;
      for (;;) {
        const n = readSync(fd, buf, 0, buf.length, null);
        if (n === 0) break;
        const lines = (rest + buf.toString("latin1", 0, n)).split("\n");
        rest = lines.pop() ?? "";
        let pastListeners = false;
        for (const line of lines) {
          if (header) {
            header = false;
            continue;
          }
          const f = line.trim().split(/\s+/);
          if (f.length <= 9) continue;
          // local_address is ADDR:PORT, st 0A is LISTEN, the inode is the tenth field
          if (f[3] !== "0A") pastListeners = true;
          else if (f[1]?.endsWith(suffix)) inodes.add(f[9]!);
        }
        if (listenersOnly && pastListeners) break;
      }
    } finally {
      closeSync(fd);
    }
    // Found among IPv4 listeners: the IPv6 table is not read (making it walks every IPv4 connection too).
    if (listenersOnly && inodes.size > 0) break;
  }
  return readAny ? inodes : undefined;
}

/** Whether nothing listens on the port (on any address). */
export function portFree(port: number): Promise<boolean> {
  return new Promise((resolvePort) => {
    const s = createServer();
    s.once("error", () => resolvePort(false));
    s.listen(port, () => s.close(() => resolvePort(true)));
  });
}

/** The first port from `start` that is not `taken` and that nothing listens on. */
export async function firstFreePort(start: number, taken: ReadonlySet<number>): Promise<number> {
  for (let p = start; p <= 65_535; p++) {
    if (!taken.has(p) && (await portFree(p))) return p;
  }
  throw new SwitchboardError(Code.RESOURCE_EXHAUSTED, `no free port from ${start} upwards on this agent`);
}
