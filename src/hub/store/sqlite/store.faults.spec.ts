// The store on a bad day: commits fail for want of the disk. The fault is real and sits at the
// store's edge: another connection holds the database's write lock (SQLITE_BUSY, as a backup tool
// or a second process would), or a connection whose file may not grow (SQLITE_FULL). What must
// hold: nothing is dropped, inserts are refused with a sentence that names the cause, the first
// failure and the recovery are logged once each however many retries come between, the store
// carries on by itself once it can write, and close() gives a draining hub the time it allows.
import Database from "better-sqlite3";
import { pino } from "pino";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code } from "../../../common/errors.js";
import { newTaskId } from "../../../common/ids.js";
import type { AgentRecord, NodeRow } from "../interfaces.js";
import { isWriteFault } from "./errors.js";
import { MAX_HELD_AUDITS } from "../batch-settings.js";
import type { SqliteStoreOptions } from "./options.js";
import { openSqliteStore, type SqliteStore } from "./store.js";
import { newTask, rejectionOf, tempDir, thrownBy, type TempDir } from "../testing/fixtures.js";
import type { StoreWriteFailure } from "../write-failure.js";
import { waitFor } from "../../../common/wait-for.js";

let dir: TempDir;
const open: SqliteStore[] = [];
let locker: Database.Database | undefined;

beforeEach(() => {
  dir = tempDir();
});

afterEach(async () => {
  unlock();
  for (const store of open.splice(0)) await store.close();
  dir.remove();
});

interface Logged {
  level: number;
  msg: string;
}

function openStore(opts: SqliteStoreOptions = {}): { store: SqliteStore; logs: Logged[] } {
  const logs: Logged[] = [];
  const logger = pino(
    { level: "debug" },
    { write: (line: string) => void logs.push(JSON.parse(line) as Logged) },
  );
  const store = openSqliteStore(dir.file("hub.db"), {
    flushIntervalMs: 600_000,
    busyTimeoutMs: 0,
    retryFirstMs: 5,
    logger,
    ...opts,
  });
  open.push(store);
  return { store, logs };
}

/** Another writer takes the database's write lock and keeps it. */
function lock(): void {
  locker = new Database(dir.file("hub.db"));
  locker.exec("BEGIN IMMEDIATE");
}

function unlock(): void {
  if (!locker) return;
  locker.exec("ROLLBACK");
  locker.close();
  locker = undefined;
}

function peek<T>(sql: string, ...params: unknown[]): T[] {
  const reader = new Database(dir.file("hub.db"), { readonly: true });
  try {
    return reader.prepare(sql).all(...params) as T[];
  } finally {
    reader.close();
  }
}

const count = (logs: Logged[], text: string): number => logs.filter((l) => l.msg.includes(text)).length;

function node(id: string): NodeRow {
  return {
    id,
    agentId: "agent-1",
    desired: "running",
    spec: new Uint8Array([1]),
    record: null,
    recordAt: null,
    reschedule: false,
    pool: "default",
    labels: {},
    createdAt: 1,
    updatedAt: 2,
  };
}

function agent(id: string): AgentRecord {
  return {
    id,
    pool: "default",
    labels: {},
    hostname: "h",
    platform: "linux/amd64",
    version: "0.1.0",
    taskKinds: ["shell"],
    maxConcurrency: 4,
    firstSeenAt: 1,
    lastSeenAt: 2,
    lastSessionId: null,
    connected: true,
    tokenId: null,
  };
}

describe("a store that cannot write", () => {
  it("holds every write, refuses inserts, retries quietly and commits it all by itself", async () => {
    const { store, logs } = openStore();
    const changes: (StoreWriteFailure | undefined)[] = [];
    store.onWriteFailureChange((f) => changes.push(f));
    const running = newTask();
    await Promise.all([store.insertTask(running), store.flush()]);
    store.appendOutput(running.id, "stdout", Buffer.from("before\n"));
    await store.flush();

    lock();
    store.updateTask(running.id, { state: "running", startedAt: 5 });
    store.appendOutput(running.id, "stdout", Buffer.from("while the disk was away\n"));
    store.updateTask(running.id, { state: "succeeded", finishedAt: 6, exitCode: 0 });
    store.audit({ at: 7, actor: "ci", action: "task.cancel", subject: running.id });
    store.upsertAgent(agent("agent-9"));
    await store.upsertNode(node("node-1")); // written at once, normally: held now
    const committedBefore = store.commitCount;
    const committed = store.committed();
    await expect(store.flush()).rejects.toMatchObject({ code: Code.UNAVAILABLE });

    // Why, in a sentence a client can act on, and once to the listener.
    expect(store.writeFailure).toMatchObject({ code: "SQLITE_BUSY", location: dir.path });
    expect(changes).toEqual([store.writeFailure]);
    const refused = newTask();
    const insert = store.insertTask(refused);
    await expect(insert).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    await expect(insert).rejects.toThrow(
      `the hub's store cannot write: SQLITE_BUSY: database is locked (data dir ${dir.path}); retrying: task ${refused.id} was not accepted`,
    );
    expect(await rejectionOf(store.revokeToken("tok_1", 1))).toMatchObject({ code: Code.UNAVAILABLE });

    // Reads show what is held; the node registry too.
    expect(await store.getTask(running.id)).toMatchObject({
      state: "succeeded",
      exitCode: 0,
      stdoutBytes: 31,
    });
    expect((await store.listTasks({})).find((t) => t.id === running.id)?.state).toBe("succeeded");
    expect((await store.listUnfinishedTasks()).map((t) => t.id)).not.toContain(running.id);
    expect((await store.listNodes()).map((n) => n.id)).toEqual(["node-1"]);
    expect((await store.listAgents()).map((a) => a.id)).toContain("agent-9");

    // It retries on its own, and says so once, not once per attempt.
    await waitFor(() => count(logs, "store commit failed again") >= 3, { message: "a few retries" });
    expect(count(logs, "store cannot write")).toBe(1);
    expect(store.commitCount).toBe(committedBefore);

    unlock();
    await committed;
    expect(store.writeFailure).toBeUndefined();
    expect(changes).toEqual([expect.objectContaining({ code: "SQLITE_BUSY" }), undefined]);
    expect(count(logs, "store writable again")).toBe(1);
    expect(store.commitCount).toBeGreaterThan(committedBefore);

    // Everything held is in the file, and the spell is in the audit log.
    expect(peek<{ state: string }>("SELECT state FROM tasks WHERE id = ?", running.id)).toEqual([
      { state: "succeeded" },
    ]);
    expect(Buffer.from((await store.getOutput(running.id)).stdout.head).toString()).toBe(
      "before\nwhile the disk was away\n",
    );
    expect(peek("SELECT id FROM nodes")).toEqual([{ id: "node-1" }]);
    expect(peek("SELECT id FROM agents")).toEqual([{ id: "agent-9" }]);
    const [outage] = await store.listAudit({ action: "store.unwritable" });
    expect(outage?.detail).toMatchObject({ cause: "SQLITE_BUSY: database is locked" });
    expect(await store.listAudit({ action: "task.cancel" })).toHaveLength(1);

    // And it takes new work again.
    await Promise.all([store.insertTask(refused), store.flush()]);
    expect((await store.getTask(refused.id))?.state).toBe("queued");
  });

  it("holds a batch with a bad write in it whole, and drops only that write once it can commit", async () => {
    const { store, logs } = openStore();
    const task = newTask();
    await Promise.all([store.insertTask(task), store.flush()]);
    lock();
    store.updateTask(task.id, { state: "running", startedAt: 1 });
    store.appendOutput(newTaskId(), "stdout", Buffer.from("output of a task the store never had"));
    store.appendOutput(task.id, "stdout", Buffer.from("kept"));
    await expect(store.flush()).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    expect(count(logs, "one by one")).toBe(0); // the disk's fault: not taken for the writes'
    unlock();
    await waitFor(() => store.writeFailure === undefined, { message: "the store to write again" });
    expect(count(logs, "store writes failed and were dropped")).toBe(1);
    expect(peek<{ state: string }>("SELECT state FROM tasks WHERE id = ?", task.id)).toEqual([
      { state: "running" },
    ]);
    expect(Buffer.from((await store.getOutput(task.id)).stdout.head).toString()).toBe("kept");
  });

  it("keeps at most MAX_HELD_AUDITS audit entries, and counts the rest", async () => {
    const { store, logs } = openStore();
    await Promise.all([store.insertTask(newTask()), store.flush()]);
    lock();
    store.updateTask(newTask().id, {}); // any write: it fails and the store holds its batch
    await expect(store.flush()).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    const extra = 25;
    for (let i = 0; i < MAX_HELD_AUDITS + extra; i++) {
      store.audit({ at: i, actor: "ci", action: "agent.connect", subject: `agent-${i}` });
    }
    expect(count(logs, "holds as many audit entries as it may")).toBe(1);
    unlock();
    await waitFor(() => store.writeFailure === undefined, {
      timeout: 20_000,
      message: "the store to write again",
    });
    // The outage's own entry is one of those held.
    const kept = MAX_HELD_AUDITS - 1;
    expect(peek<{ n: number }>("SELECT COUNT(*) AS n FROM audit WHERE action = 'agent.connect'")).toEqual([
      { n: kept },
    ]);
    const [outage] = await store.listAudit({ action: "store.unwritable" });
    expect(outage?.detail).toMatchObject({ dropped_audit_entries: MAX_HELD_AUDITS + extra - kept });
  });

  it("close() waits for the store to write again, within what the caller allows", async () => {
    const { store, logs } = openStore();
    const task = newTask();
    await Promise.all([store.insertTask(task), store.flush()]);
    lock();
    store.updateTask(task.id, { state: "succeeded", finishedAt: 1 });
    await expect(store.flush()).rejects.toMatchObject({ code: Code.UNAVAILABLE });
    const closing = store.close({ waitWritableMs: 30_000 });
    await waitFor(() => count(logs, "waiting for it before closing") === 1, { message: "close to wait" });
    unlock();
    await closing;
    expect(peek<{ state: string }>("SELECT state FROM tasks WHERE id = ?", task.id)).toEqual([
      { state: "succeeded" },
    ]);
  });

  it("close() gives up after waitWritableMs, says what it could not save, and rejects", async () => {
    const { store, logs } = openStore();
    const task = newTask();
    await Promise.all([store.insertTask(task), store.flush()]);
    lock();
    store.updateTask(task.id, { state: "succeeded", finishedAt: 1 });
    const waiting = expect(store.committed()).rejects.toThrow("the store is closed");
    open.splice(open.indexOf(store), 1);
    await expect(store.close({ waitWritableMs: 50 })).rejects.toThrow(/SQLITE_BUSY/);
    await waiting;
    expect(count(logs, "store closed without the writes it held")).toBe(1);
    unlock();
    expect(peek<{ state: string }>("SELECT state FROM tasks WHERE id = ?", task.id)).toEqual([
      { state: "queued" },
    ]);
  });
});

describe("isWriteFault", () => {
  it("tells the disk's faults from a write's own", () => {
    const db = new Database(dir.file("small.db"));
    try {
      db.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
      db.prepare("INSERT INTO t VALUES (1, NULL)").run();
      const dup = thrownBy(() => db.prepare("INSERT INTO t VALUES (1, NULL)").run());
      expect(dup).toMatchObject({ code: "SQLITE_CONSTRAINT_PRIMARYKEY" });
      expect(isWriteFault(dup)).toBe(false);
      // The file may not grow past its current size: SQLite's own "database or disk is full".
      const pages = db.pragma("page_count", { simple: true }) as number;
      db.pragma(`max_page_count = ${pages}`);
      const full = thrownBy(() => db.prepare("INSERT INTO t VALUES (2, ?)").run(Buffer.alloc(1 << 20)));
      expect(full).toMatchObject({ code: "SQLITE_FULL", message: "database or disk is full" });
      expect(isWriteFault(full)).toBe(true);
      expect(isWriteFault(new TypeError("bad bind"))).toBe(false);
    } finally {
      db.close();
    }
  });
});
