import Database from "better-sqlite3";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { newTaskId } from "../../../common/ids.js";
import type { TaskStateName } from "../../../common/task-state.js";
import type { AgentRecord, NewTask, TaskPatch, TaskRecord, TokenRecord } from "../interfaces.js";
import type { SqliteStoreOptions } from "./options.js";
import { openSqliteStore, type SqliteStore } from "./store.js";
import { newTask, rejectionOf, tempDir, thrownBy, type TempDir } from "../testing/fixtures.js";
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

/** Byte fields as plain Uint8Array, so that records compare with toEqual. */
function plain(task: TaskRecord | undefined): TaskRecord | undefined {
  if (!task) return task;
  return {
    ...task,
    spec: new Uint8Array(task.spec),
    result: task.result && new Uint8Array(task.result),
  };
}

async function insertAll(store: SqliteStore, tasks: NewTask[]): Promise<void> {
  await Promise.all(tasks.map((t) => store.insertTask(t)));
}

describe("tasks", () => {
  it("round-trips every field", async () => {
    const store = openStore();
    const task = newTask({
      kind: "shell",
      target: { agentId: "agent-1", pool: "edge", labels: { zone: "a", gpu: "yes" } },
      spec: new Uint8Array([0, 255, 7, 0]),
      requester: "ci",
      createdAt: 1_700_000_000_123,
      deadlineAt: 1_700_000_060_000,
    });
    await store.insertTask(task);
    expect(plain(await store.getTask(task.id))).toEqual({
      id: task.id,
      kind: "shell",
      target: { agentId: "agent-1", pool: "edge", labels: { zone: "a", gpu: "yes" } },
      spec: new Uint8Array([0, 255, 7, 0]),
      state: "queued",
      agentId: null,
      requester: "ci",
      createdAt: 1_700_000_000_123,
      assignedAt: null,
      startedAt: null,
      finishedAt: null,
      deadlineAt: 1_700_000_060_000,
      exitCode: null,
      signal: null,
      errorCode: null,
      errorMessage: null,
      reason: null,
      durationMs: null,
      stdoutBytes: 0,
      stderrBytes: 0,
      result: null,
    } satisfies TaskRecord);

    // Every field a patch can set, so that each is seen to round-trip through a reopen.
    const patch = {
      state: "failed",
      agentId: "agent-1",
      assignedAt: 1_700_000_000_200,
      startedAt: 1_700_000_000_300,
      finishedAt: 1_700_000_001_300,
      exitCode: 137,
      signal: "SIGKILL",
      errorCode: Code.ABORTED,
      errorMessage: "killed",
      reason: "memory limit",
      durationMs: 1000,
      result: new Uint8Array([9, 8, 7]),
    } satisfies Required<TaskPatch>;
    store.updateTask(task.id, patch);
    store.appendOutput(task.id, "stdout", new Uint8Array(10));
    store.appendOutput(task.id, "stderr", new Uint8Array(3));
    await store.close();

    const reopened = openStore();
    expect(plain(await reopened.getTask(task.id))).toMatchObject({
      ...patch,
      stdoutBytes: 10,
      stderrBytes: 3,
    });
  });

  it("keeps empty byte fields empty, not null", async () => {
    const store = openStore();
    const task = newTask({ spec: new Uint8Array(0), state: "running" });
    await store.insertTask(task);
    store.updateTask(task.id, { result: new Uint8Array(0) });
    const got = await store.getTask(task.id);
    expect(got?.state).toBe("running");
    expect(got?.spec.length).toBe(0);
    expect(got?.result?.length).toBe(0);
  });

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

  it("reads see writes still waiting in the batch", async () => {
    const store = openStore({ flushIntervalMs: 600_000 });
    const task = newTask();
    void store.insertTask(task);
    store.updateTask(task.id, { state: "assigned", agentId: "a1" });
    expect(await store.getTask(task.id)).toMatchObject({ state: "assigned", agentId: "a1" });
    expect(await store.countTasks()).toBe(1);
  });

  it("rejects a duplicate id alone; the rest of its batch commits", async () => {
    const store = openStore({ flushIntervalMs: 600_000 });
    const first = newTask();
    await Promise.all([store.insertTask(first), store.flush()]);
    const other = newTask();
    const dup = store.insertTask({ ...first, kind: "shell" });
    const ok = store.insertTask(other);
    store.updateTask(other.id, { state: "assigned" });
    await store.flush();
    await expect(dup).rejects.toThrow(`a task with id ${first.id} exists already`);
    await expect(dup).rejects.toMatchObject({ code: Code.ALREADY_EXISTS });
    await expect(ok).resolves.toBeUndefined();
    expect((await store.getTask(first.id))?.kind).toBe("echo");
    expect((await store.getTask(other.id))?.state).toBe("assigned");
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

  describe("listings", () => {
    let store: SqliteStore;
    let ids: string[]; // in creation order
    const states: TaskStateName[] = ["queued", "running", "succeeded", "failed"];
    const stateOf = (i: number): TaskStateName => states[i % 4]!;

    beforeEach(async () => {
      store = openStore();
      store.upsertAgent(agent({ id: "edge-1", pool: "edge" }));
      const tasks = Array.from({ length: 30 }, (_, i) =>
        newTask({
          id: newTaskId(),
          createdAt: 1_000 + i,
          target: i % 3 === 0 ? { pool: "edge" } : { agentId: i % 3 === 1 ? "edge-1" : "core-1" },
          state: stateOf(i),
        }),
      );
      ids = tasks.map((t) => t.id);
      expect([...ids].sort()).toEqual(ids); // UUIDv7 sort by creation
      await insertAll(store, tasks);
      tasks.forEach((t, i) => {
        if (i % 3 !== 0) store.updateTask(t.id, { agentId: t.target.agentId ?? null });
      });
    });

    it("lists newest first with a default limit", async () => {
      expect((await store.listTasks({})).map((t) => t.id)).toEqual([...ids].reverse());
      expect((await store.listTasks({ limit: 5 })).map((t) => t.id)).toEqual(ids.slice(25).reverse());
      expect(await store.listTasks({ limit: 0 })).toHaveLength(1);
      expect(await store.listTasks({ limit: 5000 })).toHaveLength(30);
    });

    it("pages with beforeId", async () => {
      const seen: string[] = [];
      let beforeId: string | undefined;
      for (;;) {
        const page = await store.listTasks({ limit: 7, beforeId });
        if (page.length === 0) break;
        seen.push(...page.map((t) => t.id));
        beforeId = page.at(-1)?.id;
      }
      expect(seen).toEqual([...ids].reverse());
    });

    it("filters by agent, pool and state", async () => {
      const newestFirst = (pick: (i: number) => boolean) => ids.filter((_, i) => pick(i)).reverse();
      expect((await store.listTasks({ agentId: "edge-1" })).map((t) => t.id)).toEqual(
        newestFirst((i) => i % 3 === 1),
      );
      // The pool's tasks: targeted at it, or run by one of its agents.
      expect((await store.listTasks({ pool: "edge" })).map((t) => t.id)).toEqual(
        newestFirst((i) => i % 3 !== 2),
      );
      expect((await store.listTasks({ states: ["running", "failed"] })).map((t) => t.id)).toEqual(
        newestFirst((i) => i % 4 === 1 || i % 4 === 3),
      );
      expect(
        (await store.listTasks({ pool: "edge", states: ["queued"], beforeId: ids[20], limit: 2 })).map(
          (t) => t.id,
        ),
      ).toEqual(newestFirst((i) => i < 20 && i % 3 !== 2 && i % 4 === 0).slice(0, 2));
      expect(await store.listTasks({ agentId: "nobody" })).toEqual([]);
    });

    it("lists unfinished tasks oldest first, and counts", async () => {
      expect((await store.listUnfinishedTasks()).map((t) => t.id)).toEqual(ids.filter((_, i) => i % 4 < 2));
      expect(await store.countTasks()).toBe(30);
    });
  });
});

describe("output", () => {
  it("keeps output under the cap byte for byte, with totals on the task", async () => {
    const store = openStore();
    const task = newTask();
    await store.insertTask(task);
    store.appendOutput(task.id, "stdout", Buffer.from("line 1\n"));
    store.appendOutput(task.id, "stderr", Buffer.from("warning\n"));
    store.appendOutput(task.id, "stdout", Buffer.from("line 2\n"));
    store.appendOutput(task.id, "stdout", new Uint8Array(0));
    const out = await store.getOutput(task.id);
    expect(Buffer.from(out.stdout.head).toString()).toBe("line 1\nline 2\n");
    expect(Buffer.from(out.stderr.head).toString()).toBe("warning\n");
    expect(out.stdout).toMatchObject({ droppedBytes: 0, totalBytes: 14 });
    expect(out.stdout.tail.length).toBe(0);
    expect(out.chunks.map((c) => [c.stream, Buffer.from(c.data).toString(), c.gapBefore])).toEqual([
      ["stdout", "line 1\n", 0],
      ["stderr", "warning\n", 0],
      ["stdout", "line 2\n", 0],
    ]);
    expect(await store.getTask(task.id)).toMatchObject({ stdoutBytes: 14, stderrBytes: 8 });
  });

  it("returns empty output for a task without any", async () => {
    const store = openStore();
    const empty = { head: new Uint8Array(0), tail: new Uint8Array(0), droppedBytes: 0, totalBytes: 0 };
    const out = await store.getOutput(newTaskId());
    expect({
      ...out.stdout,
      head: new Uint8Array(out.stdout.head),
      tail: new Uint8Array(out.stdout.tail),
    }).toEqual(empty);
    expect(out.chunks).toEqual([]);
  });

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

  it("survives a reopen and continues the stream exactly", async () => {
    const all: Buffer[] = [];
    const task = newTask();
    let store = openStore({ outputCapBytes: 64 });
    await store.insertTask(task);
    for (let i = 0; i < 20; i++) {
      const chunk = Buffer.from(`${i}:${"x".repeat(i % 7)};`);
      all.push(chunk);
      store.appendOutput(task.id, i % 3 ? "stdout" : "stderr", chunk);
    }
    await store.close();
    store = openStore({ outputCapBytes: 64 });
    for (let i = 20; i < 30; i++) {
      const chunk = Buffer.from(`${i}:${"y".repeat(i % 5)};`);
      all.push(chunk);
      store.appendOutput(task.id, i % 3 ? "stdout" : "stderr", chunk);
    }
    const whole = Buffer.concat(all);
    const out = await store.getOutput(task.id);
    const kept = Buffer.concat(out.chunks.map((c) => c.data));
    expect(kept.toString()).toBe(
      whole.subarray(0, 32).toString() + whole.subarray(whole.length - 32).toString(),
    );
    expect(out.chunks.reduce((n, c) => n + c.gapBefore, 0)).toBe(whole.length - 64);
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

function agent(overrides: Partial<AgentRecord> = {}): AgentRecord {
  return {
    id: "agent-1",
    pool: "default",
    labels: { zone: "a" },
    hostname: "host-1",
    platform: "linux/amd64",
    version: "0.1.0",
    taskKinds: ["echo", "shell"],
    maxConcurrency: 4,
    firstSeenAt: 1_000,
    lastSeenAt: 2_000,
    lastSessionId: "ses_1",
    connected: true,
    tokenId: "tok_1",
    ...overrides,
  };
}

describe("agents", () => {
  it("upserts, keeps the first first-seen time, lists and disconnects all", async () => {
    const store = openStore();
    store.upsertAgent(agent());
    store.upsertAgent(agent({ id: "agent-2", pool: "edge", lastSessionId: null, connected: false }));
    expect(await store.getAgent("agent-1")).toEqual(agent());
    store.upsertAgent(agent({ firstSeenAt: 5_000, lastSeenAt: 6_000, taskKinds: ["sql"], labels: {} }));
    expect(await store.getAgent("agent-1")).toEqual(
      agent({ firstSeenAt: 1_000, lastSeenAt: 6_000, taskKinds: ["sql"], labels: {} }),
    );
    expect((await store.listAgents()).map((a) => [a.id, a.connected])).toEqual([
      ["agent-1", true],
      ["agent-2", false],
    ]);
    store.upsertAgent(agent({ id: "agent-3" })); // still in the batch: must not stay connected
    store.markAllAgentsDisconnected();
    expect((await store.listAgents()).every((a) => !a.connected)).toBe(true);
    expect(await store.getAgent("nobody")).toBeUndefined();
  });

  it("keeps the token an id belongs to, and forgets an id at once, pending writes included", async () => {
    const store = openStore();
    store.upsertAgent(agent({ tokenId: null }));
    expect((await store.getAgent("agent-1"))?.tokenId).toBeNull();
    store.upsertAgent(agent({ tokenId: "tok_2" }));
    expect((await store.listAgents()).map((a) => a.tokenId)).toEqual(["tok_2"]);
    store.upsertAgent(agent({ lastSeenAt: 9_000 })); // still in the batch when it is forgotten
    expect(await store.forgetAgent("agent-1")).toBe(true);
    expect(await store.getAgent("agent-1")).toBeUndefined();
    expect(await store.listAgents()).toEqual([]);
    expect(await store.forgetAgent("agent-1")).toBe(false);
  });
});

function token(overrides: Partial<TokenRecord> = {}): TokenRecord {
  return {
    id: "tok_1",
    name: "ci",
    role: "operator",
    pools: ["edge"],
    agentId: null,
    allowTakeover: false,
    hash: "a".repeat(64),
    createdAt: 1_000,
    revokedAt: null,
    lastUsedAt: null,
    ...overrides,
  };
}

describe("tokens", () => {
  it("finds by hash, id and live name", async () => {
    const store = openStore();
    await store.insertToken(token());
    await store.insertToken(
      token({ id: "tok_2", name: "agent-x", role: "agent", pools: [], agentId: "x", hash: "b".repeat(64) }),
    );
    expect(await store.findTokenByHash("a".repeat(64))).toEqual(token());
    expect(await store.findTokenByHash("c".repeat(64))).toBeUndefined();
    expect(await store.findToken("tok_2")).toMatchObject({
      name: "agent-x",
      agentId: "x",
      role: "agent",
      pools: [],
    });
    expect((await store.findToken("ci"))?.id).toBe("tok_1");
    expect(await store.findToken("nobody")).toBeUndefined();
  });

  it("keeps names unique among live tokens only", async () => {
    const store = openStore();
    await store.insertToken(token());
    const dup = () => store.insertToken(token({ id: "tok_2", hash: "b".repeat(64) }));
    await expect(dup()).rejects.toThrow(SwitchboardError);
    await expect(dup()).rejects.toThrow(/live token named "ci"/);
    await expect(store.insertToken(token({ id: "tok_3", name: "other" }))).rejects.toThrow(/same secret/);

    await store.revokeToken("tok_1", 5_000);
    await store.revokeToken("tok_1", 9_000); // already revoked: the first time stays
    await dup();
    expect((await store.findToken("ci"))?.id).toBe("tok_2"); // the name finds the live one
    expect((await store.findToken("tok_1"))?.revokedAt).toBe(5_000); // the id finds a revoked one too
    expect((await store.findTokenByHash("a".repeat(64)))?.revokedAt).toBe(5_000);
    expect((await store.listTokens(false)).map((t) => t.id)).toEqual(["tok_2"]);
    expect((await store.listTokens(true)).map((t) => t.id)).toEqual(["tok_1", "tok_2"]);
    expect(await rejectionOf(store.revokeToken("tok_404", 1))).toMatchObject({ code: Code.NOT_FOUND });
  });

  it("batches touches, shows them at once and keeps the latest", async () => {
    const store = openStore({ flushIntervalMs: 600_000 });
    await store.insertToken(token());
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

describe("audit", () => {
  it("lists newest first, filtered by action and subject", async () => {
    const store = openStore();
    store.audit({ at: 1, actor: "ci", action: "task.submit", subject: "t1", detail: { kind: "shell" } });
    store.audit({ at: 2, actor: "ci", action: "task.cancel", subject: "t1" });
    store.audit({ at: 3, actor: "admin", action: "token.revoke", subject: "tok_1", detail: { n: 1 } });
    store.audit({ at: 4, actor: "ci", action: "task.submit", subject: "t2" });
    const all = await store.listAudit({});
    expect(all.map((e) => e.at)).toEqual([4, 3, 2, 1]);
    expect(all[3]).toEqual({
      id: 1,
      at: 1,
      actor: "ci",
      action: "task.submit",
      subject: "t1",
      detail: { kind: "shell" },
    });
    expect(all[2]?.detail).toBeUndefined();
    expect((await store.listAudit({ action: "task.submit" })).map((e) => e.subject)).toEqual(["t2", "t1"]);
    expect((await store.listAudit({ subject: "t1" })).map((e) => e.action)).toEqual([
      "task.cancel",
      "task.submit",
    ]);
    expect(await store.listAudit({ subject: "t1", action: "task.cancel" })).toHaveLength(1);
    expect((await store.listAudit({ limit: 2 })).map((e) => e.at)).toEqual([4, 3]);
  });
});

describe("lifecycle", () => {
  it("refuses work once closed, and closes once", async () => {
    const store = openStore();
    const closing = store.close();
    expect(store.close()).toBe(closing);
    await closing;
    const closed = { code: Code.UNAVAILABLE, message: "the store is closed" };
    await expect(store.insertTask(newTask())).rejects.toMatchObject(closed);
    expect(thrownBy(() => store.updateTask("x", { state: "lost" }))).toMatchObject(closed);
    expect(await rejectionOf(store.getTask("x"))).toMatchObject(closed);
    await expect(store.flush()).rejects.toMatchObject(closed);
  });

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
