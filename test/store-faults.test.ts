// Store faults: the hub's data dir is a 20 MiB tmpfs that fills up while shell tasks run, as a bad
// day would have it. Every task appends a line to its own marker file outside the tmpfs each time
// it runs, so a task run twice cannot hide behind one `succeeded`. What must hold: while the store
// cannot write, submissions are refused with UNAVAILABLE naming the cause and nothing new is
// dispatched; once there is room again the hub carries on by itself; after a restart (SIGTERM
// while the disk is full, or kill -9 while it is full) every accepted task ran at most once and
// ends in a state a client can see, and a refused submission never ran.
//
// The test mounts its own tmpfs, so it needs root; without root it fails (never skips).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, statfsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { SwitchboardClient, shell } from "../src/client/index.js";
import { TaskState, type TaskInfo } from "../src/gen/switchboard/v1/task.js";
import {
  freePort,
  spawnCli,
  startAgent,
  startHub,
  stopAll,
  tempDir,
  type HubProc,
} from "./support/processes.js";
import { waitFor } from "../src/common/wait-for.js";
import { submitRecorded, type Submission } from "./support/submissions.js";
import { isTerminalWire } from "../src/common/task-state.js";

const mounted: string[] = [];
const scratch: string[] = [];
const readers = new Set<Database.Database>();

afterAll(async () => {
  await stopAll(); // nothing may hold the tmpfs when it is unmounted
  for (const r of readers) r.close();
  for (const dir of mounted) {
    spawnSync("umount", [dir]);
    rmSync(dir, { recursive: true, force: true });
  }
  for (const dir of scratch) rmSync(dir, { recursive: true, force: true });
});

/** A fresh tmpfs of `mib` MiB to serve as the hub's data dir. */
function mountTmpfs(mib: number): string {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "test/store-faults.test.ts mounts a tmpfs as the hub's data dir (mount -t tmpfs) and must run as root",
    );
  }
  const dir = tempDir("store-tmpfs");
  execFileSync("mount", ["-t", "tmpfs", "-o", `size=${mib}m`, "tmpfs", dir]);
  mounted.push(dir);
  return dir;
}

/**
 * Fills the file system to its last block, as a runaway log or a big upload would, while a reader
 * holds a snapshot of the hub's database, as a backup would. (Without the reader, SQLite could
 * reuse the space its WAL file already has once a checkpoint went through, and a few commits would
 * still fit now and then.) Returns what frees both.
 */
function fill(dir: string): () => void {
  const reader = new Database(join(dir, "switchboard.db"), { readonly: true, fileMustExist: true });
  reader.exec("BEGIN");
  reader.prepare("SELECT COUNT(*) FROM tasks").get();
  readers.add(reader);
  spawnSync("dd", ["if=/dev/zero", `of=${join(dir, "filler")}`, "bs=1M"], { stdio: "ignore" });
  spawnSync("dd", ["if=/dev/zero", `of=${join(dir, "filler-tail")}`, "bs=4k"], { stdio: "ignore" });
  const s = statfsSync(dir);
  expect(s.bavail, `${dir} should be full`).toBe(0);
  return () => {
    rmSync(join(dir, "filler"), { force: true });
    rmSync(join(dir, "filler-tail"), { force: true });
    if (!readers.delete(reader)) return;
    reader.exec("COMMIT");
    reader.close();
  };
}

/** How many times submission n ran: the lines its command appended to its marker file. */
function runs(marks: string, n: number): number {
  const file = join(marks, String(n));
  if (!existsSync(file)) return 0;
  return readFileSync(file, "utf8").split("\n").filter(Boolean).length;
}

class Load {
  readonly subs: Submission[] = [];
  constructor(
    private client: SwitchboardClient,
    private readonly marks: string,
    private readonly pool: string,
  ) {}

  use(client: SwitchboardClient): void {
    this.client = client;
  }

  /** Submits one shell task that records each run; resolves with what the hub answered. */
  async submit(): Promise<Submission> {
    const sub: Submission = { n: this.subs.length };
    this.subs.push(sub);
    return submitRecorded(
      this.client,
      {
        ...shell({ argv: ["sh", "-c", `echo run >> ${join(this.marks, String(sub.n))}; sleep 0.1`] }),
        target: { pool: this.pool },
      },
      sub,
    );
  }

  accepted(): Submission[] {
    return this.subs.filter((s) => s.id !== undefined);
  }

  ran(): number {
    return this.subs.filter((s) => runs(this.marks, s.n) > 0).length;
  }
}

/** A task that prints a line every 100 ms until `stopFile` exists, followed by a client as it runs. */
function streamer(client: SwitchboardClient, pool: string, stopFile: string) {
  let lines = 0;
  let id: string | undefined;
  const ended = (async () => {
    const argv = ["sh", "-c", `while [ ! -e ${stopFile} ]; do echo tick; sleep 0.1; done`];
    for await (const ev of client.run(
      { ...shell({ argv }), target: { pool } },
      { onTaskId: (t) => (id = t) },
    )) {
      if (ev.event?.$case === "output")
        lines += Buffer.from(ev.event.value.data).toString().split("\n").length - 1;
      if (ev.event?.$case === "finished") return ev.event.value.state;
    }
    return undefined;
  })();
  ended.catch(() => undefined); // awaited by the test; a failure elsewhere must not surface here too
  return { lines: () => lines, id: () => id, ended };
}

/** Submits until the hub refuses one with UNAVAILABLE; returns that refusal. */
async function untilRefused(load: Load): Promise<{ code: string; message: string }> {
  return waitFor(
    async () => {
      const sub = await load.submit();
      return sub.err?.code === "UNAVAILABLE" ? sub.err : undefined;
    },
    { timeout: 30_000, interval: 100, message: "the hub to refuse submissions while its disk is full" },
  );
}

async function states(client: SwitchboardClient, subs: Submission[]): Promise<Map<number, TaskInfo>> {
  const out = new Map<number, TaskInfo>();
  for (const s of subs) out.set(s.n, (await client.getTask(s.id!)).info!);
  return out;
}

async function scenario(restart: "sigterm" | "kill"): Promise<void> {
  const data = mountTmpfs(20);
  const marks = tempDir("store-marks");
  scratch.push(marks);
  const port = await freePort();
  const args = ["--listen", `127.0.0.1:${port}`];
  let hub: HubProc = await startHub({ dataDir: data, args });
  const pool = `full-${restart}`;
  await startAgent(hub, { agentId: `tmpfs-${restart}`, pool, args: ["--pool-size", "6"] });
  let client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
  const load = new Load(client, marks, pool);
  const stopFile = join(marks, "stop-streaming");
  const watched = streamer(client, pool, stopFile);
  try {
    await waitFor(() => watched.lines() > 0, { timeout: 20_000, message: "the watched task to print" });
    // A backlog that keeps the agent busy and the hub dispatching while the disk fills.
    await Promise.all(Array.from({ length: 60 }, () => load.submit()));
    expect(load.accepted().length).toBe(60);
    await waitFor(() => load.ran() >= 6, { timeout: 20_000, message: "the first tasks to run" });

    // Full: new work is refused with a reason an operator can act on.
    let makeRoom = fill(data);
    const refusal = await untilRefused(load);
    expect(refusal.message).toMatch(/store cannot write/);
    expect(refusal.message).toMatch(/SQLITE_FULL|disk is full/);
    expect(refusal.message).toContain(data);

    // A client watching a running task still sees its output, and its end, as they happen.
    const linesBefore = watched.lines();
    await waitFor(() => watched.lines() >= linesBefore + 5, {
      timeout: 20_000,
      message: "more output of the watched task",
    });
    writeFileSync(stopFile, "");
    expect(await watched.ended).toBe(TaskState.TASK_STATE_SUCCEEDED);

    // Nothing new is dispatched while the store cannot record it: once what runs has ended, no
    // further task starts although the backlog is not done.
    let seen = -1;
    await waitFor(
      () => {
        const now = load.ran();
        const stable = now === seen;
        seen = now;
        return stable;
      },
      { timeout: 20_000, interval: 1_000, message: "the tasks running when the store failed to end" },
    );
    expect(load.ran()).toBeLessThan(load.accepted().length);

    // Room again: the hub notices by itself, takes work again and runs the backlog it held.
    makeRoom();
    await waitFor(async () => (await load.submit()).id !== undefined, {
      timeout: 30_000,
      interval: 200,
      message: "the hub to accept work again",
    });
    const held = load.accepted();
    await waitFor(() => held.every((s) => runs(marks, s.n) > 0), {
      timeout: 30_000,
      interval: 200,
      message: "the backlog to run",
    });

    // A second backlog, on the agent and in the queue when the disk fills again.
    const second = load.subs.length;
    await Promise.all(Array.from({ length: 30 }, () => load.submit()));
    await waitFor(() => runs(marks, second + 6) > 0, {
      timeout: 20_000,
      message: "the second backlog to start",
    });

    // Full again, and the hub goes down while it is.
    makeRoom = fill(data);
    expect((await untilRefused(load)).message).toMatch(/store cannot write/);
    if (restart === "sigterm") {
      // The drain waits for the store to write again before it exits: nothing it holds is lost.
      hub.kill("SIGTERM");
      await waitFor(() => /waiting for it before closing/.test(hub.stderr() + hub.stdout()), {
        timeout: 20_000,
        message: "the draining hub to wait for its store",
      });
      makeRoom();
      expect(await hub.exited).toBe(0);
    } else {
      hub.kill("SIGKILL");
      await hub.exited;
      makeRoom();
    }
    client.close();

    hub = await startHub({ dataDir: data, args });
    client = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
    load.use(client);
    const accepted = load.accepted();
    await waitFor(
      async () => {
        const listed = await client.listTasks({ pool, limit: 1000 });
        const ended = new Set(listed.filter((t) => isTerminalWire(t.state)).map((t) => t.taskId));
        return accepted.every((s) => ended.has(s.id!));
      },
      { timeout: 45_000, interval: 500, message: "every accepted task to end" },
    );

    const final = await states(client, accepted);
    // The watched task ended while the store could not write; that outcome was kept.
    expect((await client.getTask(watched.id()!)).info?.state).toBe(TaskState.TASK_STATE_SUCCEEDED);
    const twice = accepted.filter((s) => runs(marks, s.n) > 1).map((s) => s.n);
    expect(twice, "tasks that ran more than once").toEqual([]);
    for (const s of accepted) {
      const info = final.get(s.n)!;
      const ran = runs(marks, s.n);
      if (info.state === TaskState.TASK_STATE_SUCCEEDED) expect(ran, `task ${s.n} succeeded`).toBe(1);
      if (info.state === TaskState.TASK_STATE_LOST) expect(info.reason).toMatch(/hub restarted/);
      else expect(info.state, `task ${s.n}: ${info.reason}`).toBe(TaskState.TASK_STATE_SUCCEEDED);
    }
    // A refused submission was never run.
    const refused = load.subs.filter((s) => s.err !== undefined);
    expect(refused.length).toBeGreaterThan(0);
    expect(refused.filter((s) => runs(marks, s.n) > 0).map((s) => s.n)).toEqual([]);
    if (restart === "sigterm") {
      // The drain kept every outcome: nothing ends lost.
      const lost = accepted.filter((s) => final.get(s.n)!.state === TaskState.TASK_STATE_LOST);
      expect(lost.map((s) => s.n)).toEqual([]);
    }
  } finally {
    client.close();
  }
}

describe("the hub's store on a full disk", () => {
  it("SIGTERM while full: no task runs twice, none is lost, refused work never runs", async () => {
    await scenario("sigterm");
  }, 120_000);

  it("kill -9 while full: no task runs twice, every accepted task ends visibly", async () => {
    await scenario("kill");
  }, 120_000);
});

describe("a hub started on a full disk", () => {
  it("says so in one sentence naming hub.data_dir, without a stack trace, and leaves nothing listening", async () => {
    const dir = mountTmpfs(20);
    const first = await startHub({ dataDir: dir });
    first.kill("SIGTERM");
    expect(await first.exited).toBe(0);
    const free = fill(dir);
    try {
      const hub = spawnCli(["hub", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0", "--data", dir]);
      const code = await hub.exited;
      const err = hub.stderr();
      expect(code, err).not.toBe(0);
      expect(err).toMatch(
        new RegExp(`^error: hub\\.data_dir ${dir}: .*(ENOSPC|no space|SQLITE_FULL|full)`, "im"),
      );
      expect(err).not.toMatch(/^\s+at /m); // no stack trace without --log-level debug
      expect(existsSync(join(dir, "hub.json"))).toBe(false);
    } finally {
      free();
    }
  }, 60_000);
});
