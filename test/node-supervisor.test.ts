// The agent's node supervisor with real node processes: the built CLI's `storage-node`.
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { NodeSupervisor, type NodeSupervisorOptions } from "../src/agent/nodes/node-supervisor.js";
import { nodeListens } from "../src/agent/nodes/port-probe.js";
import { procStartOf } from "../src/agent/nodes/proc-stat.js";
import { healthz } from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";

const CLI = join(import.meta.dirname, "..", "dist", "src", "cli", "main.js");
const SUPERVISOR_JS = join(import.meta.dirname, "..", "dist", "src", "agent", "nodes", "node-supervisor.js");
const supervisors: NodeSupervisor[] = [];

afterEach(async () => {
  await Promise.all(supervisors.splice(0).map((s) => s.close()));
});

function options(root: string, over: Partial<NodeSupervisorOptions> = {}): NodeSupervisorOptions {
  return {
    dataPath: join(root, "nodes"),
    stateDir: join(root, "agent"),
    binary: process.execPath,
    binaryArgs: [CLI, "storage-node"],
    allowedBinaries: [process.execPath],
    maxNodes: 3,
    defaultMemoryMb: 512,
    restartFailedNodes: true,
    stopGraceMs: 3000,
    memoryCheckIntervalMs: 200,
    backoffInitialMs: 100,
    backoffMaxMs: 1000,
    crashLoopRestarts: 3,
    crashLoopWindowMs: 30_000,
    logMaxBytes: 1024 * 1024,
    logFiles: 3,
    portRangeStart: 23_000, // below the ephemeral port range
    readyCheck: "tcp",
    startupTimeoutMs: 10_000,
    nodeArgs: (n) => [
      "--port",
      String(n.port),
      "--data",
      n.storagePath,
      "--node-id",
      n.nodeId,
      "--test-faults",
    ],
    ...over,
  };
}

async function supervisor(root: string, over: Partial<NodeSupervisorOptions> = {}): Promise<NodeSupervisor> {
  const s = new NodeSupervisor(options(root, over));
  supervisors.push(s);
  await s.start();
  return s;
}

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

describe("node supervisor", () => {
  it("counts a port as the node's only when a process of its group holds the listening socket", async () => {
    const server: Server = createServer();
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    const sleeper = spawn("sleep", ["30"], { detached: true, stdio: "ignore" });
    try {
      expect(await nodeListens(port, process.pid)).toBe(true); // this process holds it
      expect(await nodeListens(port, sleeper.pid!)).toBe(false); // answers, but not the sleeper's
      await new Promise<void>((r) => server.close(() => r()));
      expect(await nodeListens(port, process.pid)).toBe(false); // nothing answers
    } finally {
      sleeper.kill("SIGKILL");
    }
  });

  it("spawns a node, captures its output, and stops it with SIGTERM", async () => {
    const root = mkdtempSync(join(tmpdir(), "nodes-"));
    const s = await supervisor(root);
    const port = await freePort();
    const rec = await s.spawn({ nodeId: "node-a", storagePath: "a", port, memoryMb: 0 });
    expect(rec).toMatchObject({ state: "running", port, memoryMb: 512, restartCount: 0 });
    expect(rec.pid).toBeGreaterThan(0);
    await waitFor(() => healthz(port), { timeout: 15_000, message: "the node to answer /healthz" });
    await waitFor(() => s.get("node-a")?.state === "running", { timeout: 5_000, message: "running" });
    await waitFor(() => readFileSync(s.logPaths("node-a")[0], "utf8").includes("listening on"), {
      timeout: 5_000,
      message: "its output in the log",
    });
    const stopped = await s.stop("node-a");
    expect(stopped.state).toBe("stopped");
    expect(stopped.lastExit).toMatchObject({ code: 0 });
    expect(procStartOf(rec.pid!)).toBeNull();
    expect(await healthz(port)).toBe(false);
  }, 30_000);

  it("restarts a crashed node with backoff and reports a crash loop", async () => {
    const root = mkdtempSync(join(tmpdir(), "nodes-"));
    const s = await supervisor(root);
    const port = await freePort();
    await s.spawn({ nodeId: "node-c", storagePath: "c", port, memoryMb: 0 });
    for (let i = 1; i <= 3; i++) {
      await waitFor(() => healthz(port), { timeout: 15_000, message: "the node to answer" });
      await fetch(`http://127.0.0.1:${port}/_test/crash`, { method: "POST" }).catch(() => undefined);
      await waitFor(() => (s.get("node-c")?.restartCount ?? 0) >= i, {
        timeout: 15_000,
        message: `restart ${i}`,
      });
    }
    expect(s.get("node-c")?.lastExit).toMatchObject({ code: 70, reason: "exited with code 70" });
    await fetch(`http://127.0.0.1:${port}/_test/crash`, { method: "POST" }).catch(() => undefined);
    await waitFor(() => /node node-c is crash-looping/.test(s.trouble() ?? ""), {
      timeout: 15_000,
      message: "a crash loop to be reported",
    });
  }, 60_000);

  it("kills a node whose process tree outgrows its memory limit, and restarts it", async () => {
    const root = mkdtempSync(join(tmpdir(), "nodes-"));
    const s = await supervisor(root);
    const port = await freePort();
    await s.spawn({ nodeId: "node-m", storagePath: "m", port, memoryMb: 150 });
    await waitFor(() => healthz(port), { timeout: 15_000, message: "the node to answer" });
    await fetch(`http://127.0.0.1:${port}/_test/grow?mb=200`, { method: "POST" }).catch(() => undefined);
    await waitFor(() => /^memory limit/.test(s.get("node-m")?.lastExit?.reason ?? ""), {
      timeout: 15_000,
      message: "the memory limit to end it",
    });
    await waitFor(async () => (s.get("node-m")?.restartCount ?? 0) >= 1 && (await healthz(port)), {
      timeout: 15_000,
      message: "the node back",
    });
  }, 60_000);

  it("refuses paths outside data_path, ports in use, too many nodes, other binaries, a second node-a", async () => {
    const root = mkdtempSync(join(tmpdir(), "nodes-"));
    const s = await supervisor(root, { maxNodes: 1 });
    const port = await freePort();
    await expect(s.spawn({ nodeId: "x", storagePath: "../../etc", port, memoryMb: 0 })).rejects.toThrow(
      /outside storage.data_path/,
    );
    await expect(
      s.spawn({ nodeId: "x", storagePath: "x", port, memoryMb: 0, binary: "/bin/sh" }),
    ).rejects.toThrow(/not allowed/);
    const busy: Server = createServer();
    await new Promise<void>((r) => busy.listen(0, () => r()));
    const busyPort = (busy.address() as { port: number }).port;
    try {
      await expect(s.spawn({ nodeId: "x", storagePath: "x", port: busyPort, memoryMb: 0 })).rejects.toThrow(
        /in use/,
      );
    } finally {
      busy.close();
    }
    await s.spawn({ nodeId: "node-a", storagePath: "a", port, memoryMb: 0 });
    await expect(
      s.spawn({ nodeId: "node-a", storagePath: "a", port: port + 1, memoryMb: 0 }),
    ).rejects.toThrow(/exists/);
    await expect(
      s.spawn({ nodeId: "node-b", storagePath: "b", port: await freePort(), memoryMb: 0 }),
    ).rejects.toThrow(/max_storage_nodes/);
  }, 30_000);

  it("after its own restart, adopts the nodes that still run and restarts the others", async () => {
    const root = mkdtempSync(join(tmpdir(), "nodes-"));
    const pa = await freePort();
    const pb = await freePort();
    // The first agent is a process of its own, killed with SIGKILL as a crash would end it.
    const script = `
      const { NodeSupervisor } = await import(${JSON.stringify(SUPERVISOR_JS)});
      const o = JSON.parse(process.argv[1]);
      o.nodeArgs = (n) => ["--port", String(n.port), "--data", n.storagePath, "--node-id", n.nodeId, "--test-faults"];
      const s = new NodeSupervisor(o);
      await s.start();
      const a = await s.spawn({ nodeId: "node-a", storagePath: "a", port: ${pa}, memoryMb: 0 });
      const b = await s.spawn({ nodeId: "node-b", storagePath: "b", port: ${pb}, memoryMb: 0 });
      console.log(JSON.stringify({ a: a.pid, b: b.pid }));
      setInterval(() => undefined, 1000);`;
    // Everything but nodeArgs (a function: the script defines its own).
    const plain: Partial<NodeSupervisorOptions> = { ...options(root) };
    delete plain.nodeArgs;
    const agent = spawn(process.execPath, ["--input-type=module", "-e", script, JSON.stringify(plain)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    agent.stdout.on("data", (b: Buffer) => (out += b.toString()));
    const pids = await waitFor(
      () => (out.includes("}") ? (JSON.parse(out) as { a: number; b: number }) : undefined),
      { timeout: 15_000, message: "the first agent's nodes" },
    );
    await waitFor(async () => (await healthz(pa)) && (await healthz(pb)), {
      timeout: 15_000,
      message: "both up",
    });
    agent.kill("SIGKILL");
    // node-b dies while no agent watches it.
    process.kill(-pids.b, "SIGKILL");
    await waitFor(() => procStartOf(pids.b) === null, { timeout: 5_000, message: "node-b gone" });
    const second = await supervisor(root);
    expect(second.get("node-a")).toMatchObject({ pid: pids.a });
    expect(["running", "starting"]).toContain(second.get("node-a")?.state);
    await waitFor(async () => (second.get("node-b")?.restartCount ?? 0) >= 1 && (await healthz(pb)), {
      timeout: 15_000,
      message: "node-b restarted",
    });
    expect(await healthz(pa)).toBe(true);
    // The adopted node is watched like any other, though it is not this supervisor's child: killed, it is
    // seen to end and restarted.
    process.kill(pids.a, "SIGKILL");
    const restarted = await waitFor(
      async () => {
        const r = second.get("node-a");
        return r?.state === "running" && r.pid !== pids.a && (await healthz(pa)) ? r : undefined;
      },
      { timeout: 30_000, message: "the adopted node-a restarted" },
    );
    expect(restarted.restartCount).toBe(1);
    expect(restarted.lastExit?.reason).toContain("adopted");
    expect((await second.stop("node-a")).state).toBe("stopped");
    expect(procStartOf(restarted.pid!)).toBeNull();
  }, 60_000);

  it("never runs more than maxNodes, whatever spawns at once; a stop cancels a spawn still in progress", async () => {
    const root = mkdtempSync(join(tmpdir(), "nodes-"));
    const marker = join(root, "started");
    const s = await supervisor(root, {
      maxNodes: 2,
      allowedBinaries: [process.execPath, "/bin/sh"],
      startupTimeoutMs: 20_000,
    });
    // Five at once, each between its admission and its launch while the others are admitted.
    const results = await Promise.allSettled(
      [1, 2, 3, 4, 5].map((i) => s.spawn({ nodeId: `n-${i}`, storagePath: `n-${i}`, port: 0, memoryMb: 0 })),
    );
    expect(results.filter((r) => r.status === "fulfilled")).toHaveLength(2);
    for (const r of results) {
      if (r.status === "rejected")
        expect(String(r.reason)).toMatch(/no free node slot: 2 of max_storage_nodes = 2/);
    }
    expect(s.list().filter((r) => r.state !== "stopped")).toHaveLength(2);
    for (const r of s.list()) await s.stop(r.nodeId);

    // A node that never listens: stopped while its spawn waits for it, the spawn ends, nothing is left.
    const slow = s.spawn({
      nodeId: "slow",
      storagePath: "slow",
      port: 0,
      memoryMb: 0,
      binary: "/bin/sh",
      args: ["-c", `echo $$ > ${marker}; exec sleep 60`],
    });
    const pid = await waitFor(() => (existsSync(marker) ? Number(readFileSync(marker, "utf8")) : undefined), {
      message: "the slow node's process",
    });
    const stopped = await s.stop("slow");
    expect(stopped.state).toBe("stopped");
    await expect(slow).rejects.toMatchObject({ code: 1 }); // CANCELLED
    expect(procStartOf(pid)).toBeNull();
    expect(s.get("slow")).toBeUndefined();
    // Stopped before it was even launched: it never starts.
    const early = s.spawn({ nodeId: "early", storagePath: "early", port: 0, memoryMb: 0 });
    const answer = await s.stop("early");
    expect(answer).toMatchObject({ nodeId: "early", state: "stopped", pid: null });
    await expect(early).rejects.toThrow(/cancelled/);
    expect(s.get("early")).toBeUndefined();
    expect(s.list()).toEqual(s.list().filter((r) => r.state === "stopped"));
  }, 60_000);

  it("checks a spawn without starting anything", async () => {
    const root = mkdtempSync(join(tmpdir(), "nodes-"));
    const s = await supervisor(root, { maxNodes: 1 });
    const preview = await s.check({ nodeId: "c", storagePath: "deep/c", port: 0, memoryMb: 0 });
    expect(preview).toMatchObject({
      nodeId: "c",
      state: "stopped",
      storagePath: join(root, "nodes", "deep", "c"),
    });
    expect(existsSync(join(root, "nodes", "deep", "c"))).toBe(false);
    expect(s.list()).toEqual([]);
    await expect(s.check({ nodeId: "c", storagePath: "../out", port: 0, memoryMb: 0 })).rejects.toThrow(
      /outside storage.data_path/,
    );
    await expect(
      s.check({ nodeId: "c", storagePath: "c", port: 0, memoryMb: 0, binary: "/bin/sh" }),
    ).rejects.toThrow(/not allowed/);
    await s.spawn({ nodeId: "one", storagePath: "one", port: 0, memoryMb: 0 });
    await expect(s.check({ nodeId: "c", storagePath: "c", port: 0, memoryMb: 0 })).rejects.toThrow(
      /no free node slot/,
    );
  }, 30_000);
});
