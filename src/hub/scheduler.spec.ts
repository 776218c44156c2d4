// Properties of the scheduler under random agents, credits, targets, submissions and finishes.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Code, SwitchboardError } from "../common/errors.js";
import { Scheduler, type SchedAgent, type SchedTask } from "./scheduler.js";

const POOLS = ["a", "b", "c"];

type Op =
  | {
      op: "agent";
      id: number;
      pool: number;
      credits: number;
      shell: boolean;
      accepting: boolean;
      impaired: boolean;
    }
  | { op: "leave"; id: number }
  | { op: "credit"; id: number; n: number }
  | { op: "submit"; kind: "echo" | "shell"; pool: number; agent: number | null; wait: boolean }
  | { op: "finish"; pick: number }
  | { op: "cancel"; pick: number };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  fc.record({
    op: fc.constant("agent" as const),
    id: fc.nat(5),
    pool: fc.nat(2),
    credits: fc.nat(4),
    shell: fc.boolean(),
    accepting: fc.boolean(),
    impaired: fc.boolean(),
  }),
  fc.record({ op: fc.constant("leave" as const), id: fc.nat(5) }),
  fc.record({ op: fc.constant("credit" as const), id: fc.nat(5), n: fc.integer({ min: 1, max: 3 }) }),
  fc.record({
    op: fc.constant("submit" as const),
    kind: fc.constantFrom("echo" as const, "shell" as const),
    pool: fc.nat(2),
    agent: fc.option(fc.nat(5), { nil: null }),
    wait: fc.boolean(),
  }),
  fc.record({ op: fc.constant("finish" as const), pick: fc.nat() }),
  fc.record({ op: fc.constant("cancel" as const), pick: fc.nat() }),
);

describe("Scheduler", () => {
  it("tells another hub what it could give a task: free credits of the agents that may run it", () => {
    const s = new Scheduler(10, () => 0.5);
    const agent = (
      id: string,
      pool: string,
      free: number,
      kinds = ["echo"],
      accepting = true,
    ): SchedAgent => ({
      id,
      pool,
      labels: { zone: pool === "a" ? "eu" : "us" },
      kinds: new Set(kinds),
      free,
      accepting,
      impaired: false,
    });
    const task = (target: SchedTask["target"], kind = "echo", allowedPools: string[] = []): SchedTask => ({
      id: "t",
      kind,
      target,
      allowedPools,
    });
    expect(s.capacity(task({ pool: "a" }))).toBeUndefined();
    s.upsertAgent(agent("a1", "a", 2));
    s.upsertAgent(agent("a2", "a", 0));
    s.upsertAgent(agent("a3", "a", 5, ["shell"]));
    s.upsertAgent(agent("a4", "a", 7, ["echo"], false));
    s.upsertAgent(agent("b1", "b", 3));
    expect(s.capacity(task({ pool: "a" }))).toBe(2); // busy a2 counts 0; a3 runs no echo; a4 takes nothing
    expect(s.capacity(task({ pool: "a" }, "shell"))).toBe(5);
    expect(s.capacity(task({ labels: { zone: "us" } }))).toBe(3);
    expect(s.capacity(task({ agentId: "a2" }))).toBe(0); // there, and busy
    expect(s.capacity(task({ pool: "b" }, "echo", ["a"]))).toBeUndefined(); // out of the caller's pools
    expect(s.capacity(task({ pool: "c" }))).toBeUndefined();
  });

  it("never exceeds credits, assigns only eligible agents, keeps FIFO and the queue bound", () => {
    let assignments = 0;
    fc.assert(
      fc.property(
        fc.array(opArb, { minLength: 60, maxLength: 150 }),
        fc.integer({ min: 1, max: 5 }),
        (ops, limit) => {
          const s = new Scheduler(limit, () => 0.5);
          const agents = new Map<
            string,
            SchedAgent & { granted: number; assigned: number; running: Set<string> }
          >();
          const tasks = new Map<string, SchedTask>();
          const onAgent = new Map<string, string>(); // task -> agent
          const queueOrder = new Map<string, string[]>(); // target key -> queued ids in order
          let n = 0;
          const key = (t: SchedTask) =>
            t.target.agentId ? `agent:${t.target.agentId}` : `pool:${t.target.pool}`;
          const checkAssign = (taskId: string, agentId: string) => {
            const a = agents.get(agentId)!;
            const t = tasks.get(taskId)!;
            expect(a).toBeDefined();
            expect(a.accepting).toBe(true);
            expect(a.kinds.has(t.kind)).toBe(true);
            if (t.target.agentId) expect(a.id).toBe(t.target.agentId);
            else expect(a.pool).toBe(t.target.pool);
            a.running.add(taskId);
            onAgent.set(taskId, agentId);
            // In flight never exceeds what the agent granted.
            expect(a.running.size).toBeLessThanOrEqual(a.granted);
            a.assigned++;
            assignments++;
          };
          const drain = (id: string) => {
            for (const { task, agentId } of s.drainQueuesFor(id)) {
              const order = queueOrder.get(key(task))!;
              // FIFO among tasks the agent can run: nothing eligible was queued before it.
              const idx = order.indexOf(task.id);
              for (const earlier of order.slice(0, idx)) {
                const e = tasks.get(earlier)!;
                const a = agents.get(agentId)!;
                expect(a.kinds.has(e.kind)).toBe(false);
              }
              order.splice(idx, 1);
              checkAssign(task.id, agentId);
            }
          };
          for (const o of ops) {
            switch (o.op) {
              case "agent": {
                const id = `ag${o.id}`;
                if (agents.has(id)) break;
                const a = {
                  id,
                  pool: POOLS[o.pool]!,
                  labels: {},
                  kinds: new Set(o.shell ? ["echo", "shell"] : ["echo"]),
                  free: o.credits,
                  accepting: o.accepting,
                  impaired: o.impaired,
                  granted: o.credits,
                  assigned: 0,
                  running: new Set<string>(),
                };
                agents.set(id, a);
                s.upsertAgent(a);
                drain(id);
                break;
              }
              case "leave": {
                const id = `ag${o.id}`;
                const a = agents.get(id);
                if (!a) break;
                s.removeAgent(id);
                agents.delete(id);
                for (const t of a.running) onAgent.delete(t);
                break;
              }
              case "credit": {
                const a = agents.get(`ag${o.id}`);
                if (!a) break;
                a.granted += o.n;
                a.free += o.n;
                drain(a.id);
                break;
              }
              case "submit": {
                const id = `t${n++}`;
                const t: SchedTask = {
                  id,
                  kind: o.kind,
                  target: o.agent !== null ? { agentId: `ag${o.agent}` } : { pool: POOLS[o.pool]! },
                  allowedPools: [],
                };
                tasks.set(id, t);
                const k = key(t);
                const queuedBefore = queueOrder.get(k)?.length ?? 0;
                try {
                  const d = s.submit(t, o.wait);
                  if ("assign" in d) {
                    expect(queuedBefore).toBe(0);
                    checkAssign(id, d.assign);
                  } else {
                    expect(queuedBefore).toBeLessThan(limit);
                    queueOrder.set(k, [...(queueOrder.get(k) ?? []), id]);
                  }
                } catch (e) {
                  expect(e).toBeInstanceOf(SwitchboardError);
                  const code = (e as SwitchboardError).code;
                  if (code === Code.RESOURCE_EXHAUSTED) expect(queuedBefore).toBe(limit); // only when full
                  if (code === Code.UNAVAILABLE) expect(o.wait).toBe(false); // only without wait
                }
                break;
              }
              case "finish": {
                const running = [...onAgent.keys()];
                if (running.length === 0) break;
                const id = running[o.pick % running.length]!;
                const a = agents.get(onAgent.get(id)!)!;
                a.running.delete(id);
                onAgent.delete(id);
                // The agent returns a credit when a task ends.
                a.granted++;
                a.free++;
                drain(a.id);
                break;
              }
              case "cancel": {
                const queued = [...queueOrder.values()].flat();
                if (queued.length === 0) break;
                const id = queued[o.pick % queued.length]!;
                expect(s.remove(id)).toBe(true);
                const order = queueOrder.get(key(tasks.get(id)!))!;
                order.splice(order.indexOf(id), 1);
                break;
              }
            }
            // Every assignment spends exactly one credit the agent granted; none goes negative.
            for (const a of agents.values()) {
              expect(a.free).toBe(a.granted - a.assigned);
              expect(a.free).toBeGreaterThanOrEqual(0);
            }
            expect(s.queuedCount()).toBe([...queueOrder.values()].reduce((x, q) => x + q.length, 0));
          }
        },
      ),
      { numRuns: 300 },
    );
    // The generator reaches the interesting paths.
    expect(assignments).toBeGreaterThan(500);
  });

  it("picks the agent with the most free credits, ties at random", () => {
    const seq = [0.9, 0.1, 0.9, 0.1];
    let i = 0;
    const s = new Scheduler(10, () => seq[i++ % seq.length]!);
    const mk = (id: string, free: number): SchedAgent => ({
      id,
      pool: "p",
      labels: {},
      kinds: new Set(["echo"]),
      free,
      accepting: true,
      impaired: false,
    });
    s.upsertAgent(mk("a", 1));
    s.upsertAgent(mk("b", 3));
    s.upsertAgent(mk("c", 3));
    const picks = new Set<string>();
    for (let k = 0; k < 4; k++) {
      const p = s.pick({ id: `t${k}`, kind: "echo", target: { pool: "p" }, allowedPools: [] });
      picks.add(p!.id);
    }
    expect([...picks].sort()).toEqual(["b", "c"]);
  });

  it("refuses with UNAVAILABLE, FAILED_PRECONDITION and RESOURCE_EXHAUSTED as documented", () => {
    const s = new Scheduler(1);
    const t = (id: string, kind = "echo"): SchedTask => ({
      id,
      kind,
      target: { pool: "p" },
      allowedPools: [],
    });
    expect(() => s.submit(t("1"), false)).toThrow(/no agent of pool p is connected/);
    expect(s.submit(t("1"), true)).toEqual({ queued: true });
    expect(() => s.submit(t("2"), true)).toThrow(/queue for pool p is full/);
    s.remove("1");
    s.upsertAgent({
      id: "a",
      pool: "p",
      labels: {},
      kinds: new Set(["echo"]),
      free: 0,
      accepting: true,
      impaired: false,
    });
    expect(() => s.submit(t("3", "shell"), false)).toThrow(/accepts shell tasks/);
  });

  it("matches labels and keeps a scoped requester inside its pools", () => {
    const s = new Scheduler(10);
    s.upsertAgent({
      id: "eu",
      pool: "p1",
      labels: { region: "eu" },
      kinds: new Set(["echo"]),
      free: 1,
      accepting: true,
      impaired: false,
    });
    s.upsertAgent({
      id: "us",
      pool: "p2",
      labels: { region: "us" },
      kinds: new Set(["echo"]),
      free: 1,
      accepting: true,
      impaired: false,
    });
    expect(
      s.submit({ id: "1", kind: "echo", target: { labels: { region: "us" } }, allowedPools: [] }, false),
    ).toEqual({ assign: "us" });
    expect(() =>
      s.submit({ id: "2", kind: "echo", target: { labels: { region: "us" } }, allowedPools: ["p1"] }, false),
    ).toThrow(/no connected agent/);
  });

  it("gives an impaired agent what names it, and a pool's work only when no healthy agent is there", () => {
    const s = new Scheduler(10);
    const mk = (id: string, free: number, impaired: boolean): SchedAgent => ({
      id,
      pool: "p",
      labels: {},
      kinds: new Set(["echo"]),
      free,
      accepting: true,
      impaired,
    });
    const task = (id: string, target: SchedTask["target"]): SchedTask => ({
      id,
      kind: "echo",
      target,
      allowedPools: [],
    });
    s.upsertAgent(mk("sick", 5, true));
    // Alone in its pool, it takes the pool's work: a datasource down must not stop its shell tasks.
    expect(s.submit(task("1", { pool: "p" }), false)).toEqual({ assign: "sick" });
    const well = mk("well", 1, false);
    s.upsertAgent(well);
    // A healthy agent wins over an impaired one with more free credits.
    expect(s.submit(task("2", { pool: "p" }), false)).toEqual({ assign: "well" });
    well.free = 0;
    s.upsertAgent(well);
    // The healthy agent is busy: the pool's task waits for it rather than going to the impaired one.
    expect(s.submit(task("3", { pool: "p" }), true)).toEqual({ queued: true });
    expect(s.drainQueuesFor("sick")).toEqual([]);
    // What names the impaired agent runs there at once.
    expect(s.submit(task("4", { agentId: "sick" }), false)).toEqual({ assign: "sick" });
    // Once the healthy agent is gone, the impaired one takes the queued pool task.
    s.removeAgent("well");
    expect(s.drainQueuesFor("sick").map((a) => a.task.id)).toEqual(["3"]);
  });
});
