import Database from "better-sqlite3";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import { newTaskId } from "../../../common/ids.js";
import type { NewTask } from "../interfaces.js";
import type { SqliteStoreOptions } from "./options.js";
import { openSqliteStore, type SqliteStore } from "./store.js";
import { describeStoreConformance } from "../testing/conformance.js";
import { newTask, newToken, tempDir, type TempDir } from "../testing/fixtures.js";
import { waitFor } from "../../../common/wait-for.js";

let dir: TempDir;
const open: SqliteStore[] = [];

function openStore(opts: SqliteStoreOptions = {}, name = "hub.db"): SqliteStore {
  const store = openSqliteStore(dir.file(name), opts);
  open.push(store);
  return store;
}

/** A second connection to the store's file, as another process would see it. */
function peek(name = "hub.db"): Database.Database {
  return new Database(dir.file(name), { readonly: true });
}

beforeEach(() => {
  dir = tempDir();
});

afterEach(async () => {
  for (const store of open.splice(0)) await store.close();
  dir.remove();
});

describeStoreConformance("sqlite", {
  setup: () => Promise.resolve(),
  teardown: () => Promise.resolve(),
  open: (opts) => Promise.resolve(openStore(opts)),
});

async function insertAll(store: SqliteStore, tasks: NewTask[]): Promise<void> {
  await Promise.all(tasks.map((t) => store.insertTask(t)));
}

describe("tasks", () => {
  it("commits an insert before resolving it, and batches inserts together", async () => {
    const store = openStore({ flushIntervalMs: 50 });
    const reader = peek();
    const count = () => reader.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM tasks").get()?.n;
    const tasks = Array.from({ length: 100 }, () => newTask());
    const inserted = insertAll(store, tasks);
    expect(count()).toBe(0); // queued, not yet committed
    await inserted;
    expect(count()).toBe(100);
    reader.close();
  });

  it("commits at once when the batch reaches maxBatchOps", async () => {
    const store = openStore({ flushIntervalMs: 600_000, maxBatchOps: 10 });
    const tasks = Array.from({ length: 10 }, () => newTask());
    await insertAll(store, tasks); // would hang until the test timeout if it waited for the timer
    expect(await store.countTasks()).toBe(10);
  });

  it("refuses the inserts of a batch that cannot commit, holds the rest, and commits it later", async () => {
    const logged: string[] = [];
    const logger = pino({ level: "info" }, { write: (line: string) => void logged.push(line) });
    const store = openStore({ flushIntervalMs: 600_000, busyTimeoutMs: 0, logger });
    const queued = newTask();
    await Promise.all([store.insertTask(queued), store.flush()]);
    const locker = new Database(dir.file("hub.db"));
    locker.exec("BEGIN IMMEDIATE"); // another writer holds the lock
    const task = newTask();
    const inserted = store.insertTask(task);
    store.updateTask(queued.id, { state: "assigned", agentId: "agent-1" });
    await expect(store.flush()).rejects.toThrow(
      /^the hub's store cannot write: SQLITE_BUSY: database is locked \(data dir .+\); retrying$/,
    );
    await expect(inserted).rejects.toThrow(`task ${task.id} was not accepted; submit it again in a moment`);
    await expect(inserted).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    expect(logged.filter((l) => l.includes("store cannot write"))).toHaveLength(1);
    expect((await store.getTask(queued.id))?.state).toBe("assigned"); // held, and read as it will be

    locker.exec("ROLLBACK");
    locker.close();
    await waitFor(() => store.writeFailure === undefined, { message: "the store to write again" });
    const reader = peek();
    const row = reader
      .prepare<[string], { state: string }>("SELECT state FROM tasks WHERE id = ?")
      .get(queued.id);
    reader.close();
    expect(row?.state).toBe("assigned");
    await Promise.all([store.insertTask(task), store.flush()]);
    expect((await store.getTask(task.id))?.state).toBe("queued");
  });

  it("coalesces the updates of one task in a batch into one UPDATE", async () => {
    const setup = openStore();
    await setup.close();
    const db = new Database(dir.file("hub.db"));
    db.exec(`CREATE TABLE update_log (id TEXT);
      CREATE TRIGGER log_updates AFTER UPDATE ON tasks BEGIN INSERT INTO update_log VALUES (new.id); END;`);
    db.close();

    const store = openStore({ flushIntervalMs: 600_000 });
    const a = newTask();
    const b = newTask();
    await Promise.all([store.insertTask(a), store.insertTask(b), store.flush()]);
    store.updateTask(a.id, { state: "assigned", agentId: "agent-1", assignedAt: 1 });
    store.updateTask(b.id, { state: "assigned", agentId: "agent-2" });
    store.updateTask(a.id, { state: "running", startedAt: 2, agentId: undefined });
    store.updateTask(b.id, { state: "queued", agentId: null });
    store.updateTask(a.id, { state: "succeeded", finishedAt: 3, exitCode: 0 });
    await store.flush();

    const reader = peek();
    const logged = reader.prepare<[], { id: string }>("SELECT id FROM update_log").all();
    reader.close();
    expect(logged.map((r) => r.id).sort()).toEqual([a.id, b.id].sort());
    expect(await store.getTask(a.id)).toMatchObject({
      state: "succeeded",
      agentId: "agent-1", // undefined leaves a field alone
      assignedAt: 1,
      startedAt: 2,
      finishedAt: 3,
      exitCode: 0,
    });
    expect(await store.getTask(b.id)).toMatchObject({ state: "queued", agentId: null }); // null clears it
  });
});

describe("output", () => {
  it("rewrites a rolling tail at most every tailPersistIntervalMs, and on demand", async () => {
    const store = openStore({ outputCapBytes: 100, tailPersistIntervalMs: 600_000 });
    const task = newTask();
    await store.insertTask(task);
    const reader = peek();
    const tailBytes = () =>
      reader
        .prepare<[string], { data: Buffer }>(
          "SELECT data FROM task_output WHERE task_id = ? AND part = 'tail'",
        )
        .all(task.id)
        .reduce((n, r) => n + r.data.length, 0);
    const stdoutTotal = () =>
      reader.prepare<[string], { n: number }>("SELECT stdout_bytes AS n FROM tasks WHERE id = ?").get(task.id)
        ?.n;

    store.appendOutput(task.id, "stdout", new Uint8Array(60).fill(1)); // head 50, tail 10
    await waitFor(() => tailBytes() === 10, { message: "the first tail write" }); // a tail never written is due at once
    store.appendOutput(task.id, "stdout", new Uint8Array(30).fill(2)); // tail 40, not due for 10 minutes
    await waitFor(() => stdoutTotal() === 90, { message: "the batch with the new totals" });
    expect(tailBytes()).toBe(10);

    const out = await store.getOutput(task.id); // reading writes the tail first
    expect(out.stdout.tail).toEqual(Buffer.concat([new Uint8Array(10).fill(1), new Uint8Array(30).fill(2)]));
    expect(tailBytes()).toBe(40);
    reader.close();
  });

  it("writes a changed tail on its timer when nothing else is written", async () => {
    const store = openStore({ outputCapBytes: 20, tailPersistIntervalMs: 30 });
    const task = newTask();
    await store.insertTask(task);
    const reader = peek();
    const storedTail = () =>
      Buffer.concat(
        reader
          .prepare<[string], { data: Buffer }>(
            "SELECT data FROM task_output WHERE task_id = ? AND part = 'tail' ORDER BY seq",
          )
          .all(task.id)
          .map((r) => r.data),
      ).toString();
    store.appendOutput(task.id, "stdout", Buffer.from("0123456789abc"));
    await waitFor(() => storedTail() === "abc", { message: "the first tail write" });
    store.appendOutput(task.id, "stderr", Buffer.from("XYZ")); // not due yet: waits for the timer
    await waitFor(() => storedTail() === "abcXYZ", { message: "the timer's tail write" });
    reader.close();
  });

  it("drops a finished task's buffer from memory once committed, and carries on after it", async () => {
    const store = openStore({ outputCapBytes: 8 });
    const task = newTask();
    await store.insertTask(task);
    store.appendOutput(task.id, "stdout", Buffer.from("abcdefghij")); // head abcd, tail ghij, ef dropped
    expect(store.outputBuffersInMemory).toBe(1);
    store.updateTask(task.id, { state: "succeeded" });
    await store.flush();
    expect(store.outputBuffersInMemory).toBe(0);
    expect(Buffer.from((await store.getOutput(task.id)).stdout.tail).toString()).toBe("ghij");

    store.appendOutput(task.id, "stderr", Buffer.from("XY")); // late output: reloaded from the file
    const out = await store.getOutput(task.id);
    expect(Buffer.concat(out.chunks.map((c) => c.data)).toString()).toBe("abcdijXY");
    expect(out.chunks.map((c) => c.gapBefore)).toEqual([0, 4, 0]); // e..h dropped
    expect(out.stdout).toMatchObject({ totalBytes: 10, droppedBytes: 4 });
    expect(out.stderr).toMatchObject({ totalBytes: 2, droppedBytes: 0 });
    expect(store.outputBuffersInMemory).toBe(0); // late output of a finished task is not kept either
  });

  it("drops output for an unknown task with a log line, without failing its batch", async () => {
    const store = openStore({ flushIntervalMs: 600_000 });
    const task = newTask();
    const inserted = store.insertTask(task);
    store.appendOutput(newTaskId(), "stdout", Buffer.from("orphan"));
    store.appendOutput(task.id, "stdout", Buffer.from("kept"));
    await store.flush();
    await expect(inserted).resolves.toBeUndefined();
    expect(Buffer.from((await store.getOutput(task.id)).stdout.head).toString()).toBe("kept");
    expect(store.outputBuffersInMemory).toBe(1);
  });
});

describe("tokens", () => {
  it("batches touches, shows them at once and keeps the latest", async () => {
    const store = openStore({ flushIntervalMs: 600_000 });
    await store.insertToken(newToken());
    store.touchToken("tok_1", 3_000);
    store.touchToken("tok_1", 2_000);
    expect((await store.findTokenByHash("a".repeat(64)))?.lastUsedAt).toBe(3_000);
    await store.flush();
    const reader = peek();
    const row = reader.prepare<[], { t: number }>("SELECT last_used_at AS t FROM tokens").get();
    reader.close();
    expect(row?.t).toBe(3_000);
    store.touchToken("tok_1", 1_000); // older than the stored value: ignored
    await store.flush();
    expect((await store.findToken("tok_1"))?.lastUsedAt).toBe(3_000);
  });
});

describe("lifecycle", () => {
  it("rejects invalid options with a clear error", () => {
    expect(() => openStore({ flushIntervalMs: -1 })).toThrow(/flushIntervalMs must be an integer >= 0/);
    expect(() => openStore({ outputCapBytes: 1.5 })).toThrow(/outputCapBytes/);
  });

  it("creates the parent directory and uses WAL", async () => {
    const store = openStore({}, "nested/deeper/hub.db");
    await store.insertTask(newTask());
    const reader = peek("nested/deeper/hub.db");
    expect(reader.pragma("journal_mode", { simple: true })).toBe("wal");
    reader.close();
  });
});

describe("throughput", () => {
  it("takes 20,000 inserts and 60,000 updates", async () => {
    const store = openStore();
    const tasks = Array.from({ length: 20_000 }, () => newTask());
    const started = performance.now();
    await insertAll(store, tasks);
    const inserted = performance.now();
    for (const t of tasks) store.updateTask(t.id, { state: "assigned", agentId: "a1", assignedAt: 1 });
    for (const t of tasks) store.updateTask(t.id, { state: "running", startedAt: 2 });
    for (const t of tasks) store.updateTask(t.id, { state: "succeeded", finishedAt: 3, exitCode: 0 });
    await store.flush();
    const done = performance.now();
    expect(await store.countTasks()).toBe(20_000);
    expect(await store.listUnfinishedTasks()).toHaveLength(0);
    console.info(
      `store: ${Math.round(20_000 / ((inserted - started) / 1000))} inserts/s, ` +
        `${Math.round(60_000 / ((done - inserted) / 1000))} updates/s`,
    );
  });
});
