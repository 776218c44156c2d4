// The Store contract, as one suite every backend runs (the SQLite file, PostgreSQL): what the hub may
// rely on whichever store it was given. Tests of one backend's own mechanics (its files, its locks,
// its statements) stay in that backend's spec.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code, SwitchboardError } from "../../../common/errors.js";
import { newTaskId } from "../../../common/ids.js";
import type { TaskStateName } from "../../../common/task-state.js";
import type { NewTask, Store, TaskPatch, TaskRecord } from "../interfaces.js";
import { newAgent, newTask, newToken, rejectionOf, thrownBy } from "./fixtures.js";

/** How a backend is set up for the suite: fresh storage per test, and stores opened on it. */
export interface StoreBackend {
  /** Fresh, empty storage for the next test (a directory, a schema). */
  setup(): Promise<void>;
  /** Drops what setup made; every store the suite opened is closed by then. */
  teardown(): Promise<void>;
  /** A store on this test's storage; opened again, it sees what the last one committed. */
  open(opts?: { flushIntervalMs?: number; outputCapBytes?: number }): Promise<Store>;
}

/** Byte fields as plain Uint8Array, so that records compare with toEqual. */
function plain(task: TaskRecord | undefined): TaskRecord | undefined {
  if (!task) return task;
  return {
    ...task,
    spec: new Uint8Array(task.spec),
    result: task.result && new Uint8Array(task.result),
  };
}

async function insertAll(store: Store, tasks: NewTask[]): Promise<void> {
  await Promise.all(tasks.map((t) => store.insertTask(t)));
}

/** Runs the Store contract against `backend`. */
export function describeStoreConformance(name: string, backend: StoreBackend): void {
  describe(`${name} store conformance`, () => {
    const opened: Store[] = [];
    const f = {
      open: async (opts?: Parameters<StoreBackend["open"]>[0]): Promise<Store> => {
        const store = await backend.open(opts);
        opened.push(store);
        return store;
      },
    };

    beforeEach(async () => {
      await backend.setup();
    });

    afterEach(async () => {
      for (const store of opened.splice(0)) await store.close();
      await backend.teardown();
    });

    describe("tasks", () => {
      it("round-trips every field", async () => {
        const store = await f.open();
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

        const reopened = await f.open();
        expect(plain(await reopened.getTask(task.id))).toMatchObject({
          ...patch,
          stdoutBytes: 10,
          stderrBytes: 3,
        });
      });

      it("keeps empty byte fields empty, not null", async () => {
        const store = await f.open();
        const task = newTask({ spec: new Uint8Array(0), state: "running" });
        await store.insertTask(task);
        store.updateTask(task.id, { result: new Uint8Array(0) });
        const got = await store.getTask(task.id);
        expect(got?.state).toBe("running");
        expect(got?.spec.length).toBe(0);
        expect(got?.result?.length).toBe(0);
      });

      it("reads see writes still waiting in the batch", async () => {
        const store = await f.open({ flushIntervalMs: 600_000 });
        const task = newTask();
        void store.insertTask(task);
        store.updateTask(task.id, { state: "assigned", agentId: "a1" });
        expect(await store.getTask(task.id)).toMatchObject({ state: "assigned", agentId: "a1" });
        expect(await store.countTasks()).toBe(1);
      });

      it("rejects a duplicate id alone; the rest of its batch commits", async () => {
        const store = await f.open({ flushIntervalMs: 600_000 });
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

      it("rejects a duplicate id that commits alone, and one among other inserts", async () => {
        const store = await f.open();
        const first = newTask();
        await store.insertTask(first);
        // Alone in its commit (the one-row statement), then beside a new task (the multi-row one).
        await expect(store.insertTask({ ...first, kind: "shell" })).rejects.toMatchObject({
          code: Code.ALREADY_EXISTS,
        });
        const other = newTask();
        const [dup, ok] = await Promise.allSettled([store.insertTask({ ...first }), store.insertTask(other)]);
        expect(dup).toMatchObject({ status: "rejected", reason: { code: Code.ALREADY_EXISTS } });
        expect(ok.status).toBe("fulfilled");
        expect((await store.getTask(first.id))?.kind).toBe("echo");
        expect(await store.countTasks()).toBe(2);
      });

      describe("listings", () => {
        let store: Store;
        let ids: string[]; // in creation order
        const states: TaskStateName[] = ["queued", "running", "succeeded", "failed"];
        const stateOf = (i: number): TaskStateName => states[i % 4]!;

        beforeEach(async () => {
          store = await f.open();
          store.upsertAgent(newAgent({ id: "edge-1", pool: "edge" }));
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
          expect((await store.listUnfinishedTasks()).map((t) => t.id)).toEqual(
            ids.filter((_, i) => i % 4 < 2),
          );
          expect(await store.countTasks()).toBe(30);
        });
      });
    });

    describe("output", () => {
      it("keeps output under the cap byte for byte, with totals on the task", async () => {
        const store = await f.open();
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
        const store = await f.open();
        const empty = { head: new Uint8Array(0), tail: new Uint8Array(0), droppedBytes: 0, totalBytes: 0 };
        const out = await store.getOutput(newTaskId());
        expect({
          ...out.stdout,
          head: new Uint8Array(out.stdout.head),
          tail: new Uint8Array(out.stdout.tail),
        }).toEqual(empty);
        expect(out.chunks).toEqual([]);
      });

      it("survives a reopen and continues the stream exactly", async () => {
        const all: Buffer[] = [];
        const task = newTask();
        let store = await f.open({ outputCapBytes: 64 });
        await store.insertTask(task);
        for (let i = 0; i < 20; i++) {
          const chunk = Buffer.from(`${i}:${"x".repeat(i % 7)};`);
          all.push(chunk);
          store.appendOutput(task.id, i % 3 ? "stdout" : "stderr", chunk);
        }
        await store.close();
        store = await f.open({ outputCapBytes: 64 });
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
    });

    describe("agents", () => {
      it("upserts, keeps the first first-seen time, lists and disconnects all", async () => {
        const store = await f.open();
        store.upsertAgent(newAgent());
        store.upsertAgent(newAgent({ id: "agent-2", pool: "edge", lastSessionId: null, connected: false }));
        expect(await store.getAgent("agent-1")).toEqual(newAgent());
        store.upsertAgent(
          newAgent({ firstSeenAt: 5_000, lastSeenAt: 6_000, taskKinds: ["sql"], labels: {} }),
        );
        expect(await store.getAgent("agent-1")).toEqual(
          newAgent({ firstSeenAt: 1_000, lastSeenAt: 6_000, taskKinds: ["sql"], labels: {} }),
        );
        expect((await store.listAgents()).map((a) => [a.id, a.connected])).toEqual([
          ["agent-1", true],
          ["agent-2", false],
        ]);
        store.upsertAgent(newAgent({ id: "agent-3" })); // still in the batch: must not stay connected
        store.markAllAgentsDisconnected();
        expect((await store.listAgents()).every((a) => !a.connected)).toBe(true);
        expect(await store.getAgent("nobody")).toBeUndefined();
      });

      it("keeps the token an id belongs to, and forgets an id at once, pending writes included", async () => {
        const store = await f.open();
        store.upsertAgent(newAgent({ tokenId: null }));
        expect((await store.getAgent("agent-1"))?.tokenId).toBeNull();
        store.upsertAgent(newAgent({ tokenId: "tok_2" }));
        expect((await store.listAgents()).map((a) => a.tokenId)).toEqual(["tok_2"]);
        store.upsertAgent(newAgent({ lastSeenAt: 9_000 })); // still in the batch when it is forgotten
        expect(await store.forgetAgent("agent-1")).toBe(true);
        expect(await store.getAgent("agent-1")).toBeUndefined();
        expect(await store.listAgents()).toEqual([]);
        expect(await store.forgetAgent("agent-1")).toBe(false);
      });
    });

    describe("tokens", () => {
      it("finds by hash, id and live name", async () => {
        const store = await f.open();
        await store.insertToken(newToken());
        await store.insertToken(
          newToken({
            id: "tok_2",
            name: "agent-x",
            role: "agent",
            pools: [],
            agentId: "x",
            hash: "b".repeat(64),
          }),
        );
        expect(await store.findTokenByHash("a".repeat(64))).toEqual(newToken());
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
        const store = await f.open();
        await store.insertToken(newToken());
        const dup = () => store.insertToken(newToken({ id: "tok_2", hash: "b".repeat(64) }));
        await expect(dup()).rejects.toThrow(SwitchboardError);
        await expect(dup()).rejects.toThrow(/live token named "ci"/);
        await expect(store.insertToken(newToken({ id: "tok_3", name: "other" }))).rejects.toThrow(
          /same secret/,
        );

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
    });

    describe("audit", () => {
      it("lists newest first, filtered by action and subject", async () => {
        const store = await f.open();
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
        expect((await store.listAudit({ action: "task.submit" })).map((e) => e.subject)).toEqual([
          "t2",
          "t1",
        ]);
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
        const store = await f.open();
        const closing = store.close();
        expect(store.close()).toBe(closing);
        await closing;
        const closed = { code: Code.UNAVAILABLE, message: "the store is closed" };
        await expect(store.insertTask(newTask())).rejects.toMatchObject(closed);
        expect(thrownBy(() => store.updateTask("x", { state: "lost" }))).toMatchObject(closed);
        expect(await rejectionOf(store.getTask("x"))).toMatchObject(closed);
        await expect(store.flush()).rejects.toMatchObject(closed);
      });
    });
  });
}
