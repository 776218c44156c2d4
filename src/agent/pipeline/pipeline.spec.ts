// The pipeline under random interleavings of assigns, finishes, output, cancels, windows and a stream
// that blocks and drains (fast-check), plus the refusal paths one by one. A fake stream stands in for
// gRPC and a manual executor lets the test decide when each task ends.
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { silentLogger } from "../../common/logger.js";
import { Code } from "../../common/errors.js";
import type { AgentMessage, AgentTaskEvent, HubMessage } from "../../gen/switchboard/v1/agent.js";
import {
  Finished,
  OutputStream,
  ShellSpec,
  TaskState,
  type TaskSpec,
} from "../../gen/switchboard/v1/task.js";
import { EchoExecutor } from "../executors/echo/index.js";
import {
  stoppedFinished,
  type Execution,
  type ExecutionContext,
  type Executor,
} from "../executors/executor.js";
import { ShellExecutor } from "../executors/shell/index.js";
import { Outbox, type StreamWriter } from "../link/outbox.js";
import { Pipeline } from "./pipeline.js";
import { AgentStats } from "../stats.js";

/** Runs until the test says so; honours stops at once; pauses its output like a pipe would. */
class ManualExecutor implements Executor {
  readonly kind = "echo" as const;
  readonly live = new Map<
    string,
    { ctx: ExecutionContext; resolve: (f: Finished) => void; paused: boolean }
  >();

  admit(): undefined {
    return undefined;
  }

  start(_spec: TaskSpec, ctx: ExecutionContext): Execution {
    let resolve!: (f: Finished) => void;
    const done = new Promise<Finished>((r) => (resolve = r));
    const entry = { ctx, resolve, paused: false };
    this.live.set(ctx.taskId, entry);
    ctx.started(4242);
    return {
      done,
      stop: (req) => {
        if (this.live.delete(ctx.taskId)) resolve(stoppedFinished(req));
      },
    };
  }

  finish(taskId: string, state: TaskState): void {
    const e = this.live.get(taskId);
    if (!e) return;
    this.live.delete(taskId);
    e.resolve(Finished.fromPartial({ state, exitCode: state === TaskState.TASK_STATE_SUCCEEDED ? 0 : 1 }));
  }

  output(taskId: string, bytes: number): void {
    const e = this.live.get(taskId);
    if (!e || e.paused) return;
    if (!e.ctx.output.write(OutputStream.OUTPUT_STREAM_STDOUT, Buffer.alloc(bytes, 0x61))) {
      e.paused = true;
      e.ctx.output.onceWritable(() => (e.paused = false));
    }
  }
}

/** The hub's end of the stream: receives what the outbox writes; can refuse more until drained. */
class FakeStream implements StreamWriter {
  readonly received: AgentMessage[] = [];
  blocked = false;
  private drainCb: (() => void) | undefined;

  write(msg: AgentMessage): boolean {
    this.received.push(msg);
    return !this.blocked;
  }

  onceDrain(cb: () => void): void {
    this.drainCb = cb;
  }

  unblock(): void {
    this.blocked = false;
    const cb = this.drainCb;
    this.drainCb = undefined;
    cb?.();
  }

  events(): AgentTaskEvent[] {
    return this.received.flatMap((m) => (m.body?.$case === "event" ? [m.body.value] : []));
  }

  granted(): number {
    let g = 0;
    for (const m of this.received) if (m.body?.$case === "credits") g = m.body.value.grantedTotal;
    return g;
  }

  finishedOf(taskId: string): Finished[] {
    return this.events().flatMap((e) =>
      e.taskId === taskId && e.event?.$case === "finished" ? [e.event.value] : [],
    );
  }
}

/** Records the outbox depth each credit grant was made at, and which tasks have their Finished. */
class WatchedOutbox extends Outbox {
  readonly creditDepths: number[] = [];
  readonly finished = new Set<string>();
  override push(msg: AgentMessage): void {
    if (msg.body?.$case === "credits") this.creditDepths.push(this.depth);
    if (msg.body?.$case === "event" && msg.body.value.event?.$case === "finished")
      this.finished.add(msg.body.value.taskId);
    super.push(msg);
  }
}

const settle = async (): Promise<void> => {
  for (let i = 0; i < 4; i++) await new Promise((r) => setImmediate(r));
};

const echoSpec = (): TaskSpec => ({ kind: { $case: "echo", value: { payload: Buffer.from("x") } } });
const assign = (taskId: string, spec: TaskSpec | null = echoSpec()): HubMessage => ({
  body: { $case: "assign", value: { taskId, spec: spec ?? undefined, deadlineMs: 0, requester: "spec" } },
});

function setup(opts: {
  poolSize: number;
  capacity: number;
  threshold: number;
  window: number;
  executors?: Executor[];
}) {
  const outbox = new WatchedOutbox(opts.capacity, { shrank: () => pipeline.outboxShrank() });
  const manual = new ManualExecutor();
  const stats = new AgentStats();
  const pipeline = new Pipeline({
    agentId: "spec-agent",
    poolSize: opts.poolSize,
    threshold: opts.threshold,
    inboxCapacity: 100,
    outbox,
    executors: opts.executors ?? [manual],
    stats,
    logger: silentLogger(),
  });
  const stream = new FakeStream();
  outbox.attach(stream);
  pipeline.beginSession({ epoch: 1, initialOutputWindowBytes: opts.window });
  return { outbox, manual, pipeline, stream, stats };
}

type Command =
  | { t: "assign" }
  | { t: "assignBeyondCredits" }
  | { t: "finish"; i: number; ok: boolean }
  | { t: "output"; i: number; n: number }
  | { t: "cancel"; i: number }
  | { t: "window"; i: number; n: number }
  | { t: "block" }
  | { t: "unblock" };

const command: fc.Arbitrary<Command> = fc.oneof(
  { arbitrary: fc.constant<Command>({ t: "assign" }), weight: 4 },
  { arbitrary: fc.constant<Command>({ t: "assignBeyondCredits" }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant("finish" as const), i: fc.nat(), ok: fc.boolean() }), weight: 3 },
  {
    arbitrary: fc.record({
      t: fc.constant("output" as const),
      i: fc.nat(),
      n: fc.integer({ min: 1, max: 40 }),
    }),
    weight: 3,
  },
  { arbitrary: fc.record({ t: fc.constant("cancel" as const), i: fc.nat() }), weight: 1 },
  {
    arbitrary: fc.record({
      t: fc.constant("window" as const),
      i: fc.nat(),
      n: fc.integer({ min: 1, max: 60 }),
    }),
    weight: 2,
  },
  { arbitrary: fc.constant<Command>({ t: "block" }), weight: 2 },
  { arbitrary: fc.constant<Command>({ t: "unblock" }), weight: 1 },
);

describe("pipeline", () => {
  it("keeps every invariant under random interleavings", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          poolSize: fc.integer({ min: 1, max: 4 }),
          capacity: fc.integer({ min: 2, max: 20 }),
          threshold: fc.integer({ min: 10, max: 100 }),
          window: fc.integer({ min: 1, max: 50 }),
        }),
        fc.array(command, { maxLength: 80 }),
        async (params, commands) => {
          const { outbox, manual, pipeline, stream } = setup(params);
          const thresholdDepth = (params.capacity * params.threshold) / 100;
          const assigned: string[] = [];
          const windowOf = new Map<string, number>();
          let counted = 0;
          let next = 0;
          const pick = (i: number): string | undefined => {
            const live = [...manual.live.keys()];
            return live.length ? live[i % live.length] : undefined;
          };
          const check = (): void => {
            expect(pipeline.holding()).toBeLessThanOrEqual(params.poolSize);
            // Unused credits plus held tasks never exceed the executors: the hub cannot overload us.
            expect(pipeline.grantedTotal - counted + pipeline.holding()).toBeLessThanOrEqual(params.poolSize);
            // Grants after the initial one happen only below the threshold.
            for (const d of outbox.creditDepths.slice(1)) expect(d).toBeLessThan(thresholdDepth);
            for (const id of assigned) {
              const sent = stream
                .events()
                .filter((e) => e.taskId === id && e.event?.$case === "output")
                .reduce((n, e) => n + (e.event?.$case === "output" ? e.event.value.data.length : 0), 0);
              expect(sent).toBeLessThanOrEqual(windowOf.get(id)!);
            }
          };

          for (const c of commands) {
            switch (c.t) {
              case "assign":
              case "assignBeyondCredits": {
                // A correct hub assigns only within the credits it received; a faulty one does not care.
                const withinCredits = counted < stream.granted();
                if (c.t === "assign" && !withinCredits) break;
                const id = `t${next++}`;
                assigned.push(id);
                windowOf.set(id, params.window);
                if (counted < pipeline.grantedTotal) counted += 1;
                pipeline.handle(1, assign(id));
                break;
              }
              case "finish": {
                const id = pick(c.i);
                if (id)
                  manual.finish(id, c.ok ? TaskState.TASK_STATE_SUCCEEDED : TaskState.TASK_STATE_FAILED);
                break;
              }
              case "output": {
                const id = pick(c.i);
                if (id) manual.output(id, c.n);
                break;
              }
              case "cancel": {
                const id = assigned.length ? assigned[c.i % assigned.length]! : "unknown";
                pipeline.handle(1, {
                  body: { $case: "cancel", value: { taskId: id, reason: "by test", graceMs: 0 } },
                });
                break;
              }
              case "window": {
                const id = assigned.length ? assigned[c.i % assigned.length]! : "unknown";
                // The window counts for a task the agent still holds (running, or waiting to send its last output).
                if (windowOf.has(id) && !outbox.finished.has(id)) windowOf.set(id, windowOf.get(id)! + c.n);
                pipeline.handle(1, {
                  body: { $case: "window", value: { taskId: id, bytes: c.n, grantedTotal: 0 } },
                });
                break;
              }
              case "block":
                stream.blocked = true;
                break;
              case "unblock":
                stream.unblock();
                break;
            }
            await settle();
            check();
          }

          // Quiesce: open every window (a task may wait for one to send its last output), let every
          // task end, drain the stream.
          for (
            let round = 0;
            round < 50 && (manual.live.size > 0 || pipeline.holding() > 0 || outbox.depth > 0);
            round++
          ) {
            for (const id of assigned) {
              windowOf.set(id, Infinity);
              pipeline.handle(1, {
                body: { $case: "window", value: { taskId: id, bytes: 1e9, grantedTotal: 0 } },
              });
            }
            for (const id of manual.live.keys()) manual.finish(id, TaskState.TASK_STATE_SUCCEEDED);
            stream.unblock();
            await settle();
          }
          check();
          expect(pipeline.holding()).toBe(0);
          expect(outbox.depth).toBe(0);
          // Every slot is granted back once the outbox drained below the threshold.
          expect(pipeline.grantedTotal - counted).toBe(params.poolSize);
          expect(stream.granted()).toBe(pipeline.grantedTotal);

          const events = stream.events();
          for (const id of assigned) {
            const mine = events.filter((e) => e.taskId === id);
            expect(mine.map((e) => e.seq)).toEqual(mine.map((_, k) => k + 1));
            expect(mine.filter((e) => e.event?.$case === "finished")).toHaveLength(1);
            expect(mine.at(-1)?.event?.$case).toBe("finished");
            const started = mine.findIndex((e) => e.event?.$case === "started");
            if (started !== -1) expect(started).toBe(0);
            const firstOutput = mine.findIndex((e) => e.event?.$case === "output");
            if (firstOutput !== -1) expect(started).toBe(0);
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it("withholds credits while the outbox is above the threshold and grants the backlog below it", async () => {
    const { manual, pipeline, stream, outbox } = setup({
      poolSize: 2,
      capacity: 10,
      threshold: 50,
      window: 1e6,
    });
    expect(stream.granted()).toBe(2);
    pipeline.handle(1, assign("a"));
    pipeline.handle(1, assign("b"));
    await settle();
    stream.blocked = true;
    pipeline.handle(1, { body: { $case: "heartbeat", value: { hubTimeMs: 1 } } });
    for (let i = 0; i < 6; i++) manual.output("a", 1); // fills the outbox past 5 of 10
    await settle();
    expect(outbox.depth).toBeGreaterThanOrEqual(5);
    expect(pipeline.trouble()).toEqual({
      degraded: true,
      reason: expect.stringMatching(/^outbox above threshold/) as string,
    });
    manual.finish("b", TaskState.TASK_STATE_SUCCEEDED);
    manual.finish("a", TaskState.TASK_STATE_SUCCEEDED);
    await settle();
    expect(pipeline.grantedTotal).toBe(2); // withheld
    stream.unblock();
    await settle();
    expect(pipeline.grantedTotal).toBe(4); // the backlog, at once
    expect(stream.granted()).toBe(4);
    expect(pipeline.heartbeat()).toMatchObject({ degraded: false, running: 0, outboxDepth: 0 });
  });

  it("answers every Assign it cannot run with one Finished FAILED and never crashes", async () => {
    const shell = new ShellExecutor({
      enabled: false,
      agentId: "spec-agent",
      killGraceMs: 1,
      maxChunkBytes: 1024,
    });
    const { pipeline, stream, manual } = setup({ poolSize: 2, capacity: 100, threshold: 80, window: 100 });
    const p2 = setup({
      poolSize: 1,
      capacity: 100,
      threshold: 80,
      window: 100,
      executors: [new EchoExecutor(), shell],
    });
    const only = (s: FakeStream, id: string): Finished => {
      const f = s.finishedOf(id);
      expect(f, id).toHaveLength(1);
      return f[0]!;
    };

    p2.pipeline.handle(
      1,
      assign("sh", {
        kind: {
          $case: "shell",
          value: ShellSpec.fromPartial({
            argv: ["true"],
            script: "",
            cwd: "",
            env: {},
            stdin: Buffer.alloc(0),
            timeoutMs: 0,
            killGraceMs: 0,
          }),
        },
      }),
    );
    await settle();
    const denied = only(p2.stream, "sh");
    expect(denied.state).toBe(TaskState.TASK_STATE_FAILED);
    expect(denied.error).toEqual({
      code: Code.PERMISSION_DENIED,
      message: "shell tasks are disabled on agent spec-agent: set [shell] enabled = true in its config",
    });
    expect(p2.stream.granted()).toBe(2); // the refused task's slot came back

    pipeline.handle(1, assign("no-spec", null));
    pipeline.handle(1, assign("no-kind", { kind: undefined }));
    await settle();
    expect(only(stream, "no-spec").error?.code).toBe(Code.INVALID_ARGUMENT);
    expect(only(stream, "no-kind").error?.code).toBe(Code.UNIMPLEMENTED);

    pipeline.handle(1, assign("dup"));
    pipeline.handle(1, assign("dup"));
    await settle();
    const dupFinished = stream.finishedOf("dup");
    expect(dupFinished).toHaveLength(1);
    expect(dupFinished[0]!.error?.code).toBe(Code.ALREADY_EXISTS);
    expect(manual.live.has("dup")).toBe(true);

    // Beyond the credits: refused, and no slot is granted back for it.
    const grantedBefore = pipeline.grantedTotal;
    let extra = 0;
    while (pipeline.holding() < 2 || extra < 3) pipeline.handle(1, assign(`x${extra++}`));
    await settle();
    const exhausted = Array.from({ length: extra }, (_, k) => stream.finishedOf(`x${k}`)).flat();
    expect(exhausted.some((f) => f.error?.code === Code.RESOURCE_EXHAUSTED)).toBe(true);
    expect(pipeline.holding()).toBe(2);
    expect(pipeline.grantedTotal).toBe(grantedBefore);

    // Unknown tasks, empty and unknown messages: ignored.
    pipeline.handle(1, { body: { $case: "cancel", value: { taskId: "nope", reason: "", graceMs: 0 } } });
    pipeline.handle(1, { body: { $case: "window", value: { taskId: "nope", bytes: 5, grantedTotal: 0 } } });
    pipeline.handle(1, { body: undefined });
    pipeline.handle(99, assign("other-session"));
    await settle();
    expect(stream.finishedOf("other-session")).toHaveLength(0);
  });

  it("turns an executor that throws or rejects into one Finished FAILED INTERNAL", async () => {
    const throwing: Executor = {
      kind: "echo",
      admit: () => undefined,
      start: () => {
        throw new Error("boom");
      },
    };
    const rejecting: Executor = {
      kind: "shell",
      admit: () => undefined,
      start: (_spec, ctx) => {
        ctx.started(1);
        return { done: Promise.reject(new Error("lost its mind")), stop: () => undefined };
      },
    };
    const { pipeline, stream } = setup({
      poolSize: 2,
      capacity: 10,
      threshold: 80,
      window: 10,
      executors: [throwing, rejecting],
    });
    pipeline.handle(1, assign("throws"));
    pipeline.handle(
      1,
      assign("rejects", {
        kind: {
          $case: "shell",
          value: ShellSpec.fromPartial({
            argv: ["x"],
            script: "",
            cwd: "",
            env: {},
            stdin: Buffer.alloc(0),
            timeoutMs: 0,
            killGraceMs: 0,
          }),
        },
      }),
    );
    await settle();
    for (const id of ["throws", "rejects"]) {
      const f = stream.finishedOf(id);
      expect(f, id).toHaveLength(1);
      expect(f[0]!.state).toBe(TaskState.TASK_STATE_FAILED);
      expect(f[0]!.error?.code).toBe(Code.INTERNAL);
    }
    expect(pipeline.holding()).toBe(0);
    expect(stream.granted()).toBe(4);
  });

  it("cancels a task with the hub's reason; a queued one never starts", async () => {
    const { pipeline, stream, manual } = setup({ poolSize: 1, capacity: 100, threshold: 80, window: 100 });
    pipeline.handle(1, assign("run"));
    await settle();
    pipeline.handle(1, {
      body: { $case: "cancel", value: { taskId: "run", reason: "cancelled by client", graceMs: 0 } },
    });
    await settle();
    const f = stream.finishedOf("run");
    expect(f).toHaveLength(1);
    expect(f[0]!.state).toBe(TaskState.TASK_STATE_CANCELLED);
    expect(f[0]!.reason).toBe("cancelled by client");
    expect(manual.live.size).toBe(0);
  });

  it("stops a lost session's tasks, drops its events, and grants a new session only the free slots", async () => {
    const { pipeline, stream, manual, outbox } = setup({
      poolSize: 3,
      capacity: 100,
      threshold: 80,
      window: 100,
    });
    pipeline.handle(1, assign("a"));
    pipeline.handle(1, assign("b"));
    await settle();
    stream.blocked = true;
    manual.output("a", 10);
    manual.output("a", 10);
    await settle();
    expect(outbox.depth).toBeGreaterThan(0);
    outbox.detach();
    pipeline.endSession(1, "UNAVAILABLE");
    expect(outbox.depth).toBe(0);
    await settle();
    expect(manual.live.size).toBe(0); // stopped
    expect(pipeline.holding()).toBe(0);

    const fresh = new FakeStream();
    outbox.attach(fresh);
    pipeline.beginSession({ epoch: 2, initialOutputWindowBytes: 0 });
    expect(fresh.granted()).toBe(3);
    expect(fresh.events()).toEqual([]);
  });

  it("keeps a broken session's tasks running, resumes them, and re-sends what the hub missed", async () => {
    const { pipeline, stream, manual, outbox } = setup({
      poolSize: 2,
      capacity: 100,
      threshold: 80,
      window: 0,
    });
    pipeline.beginSession({
      epoch: 2,
      initialOutputWindowBytes: 0,
      sessionId: "ses_a",
      resumeGraceMs: 30_000,
    });
    pipeline.handle(2, assign("a"));
    await settle();
    manual.output("a", 5); // seq 2 (after Started)
    await settle();
    outbox.detach();
    pipeline.endSession(2, "UNAVAILABLE", true);
    expect(manual.live.size).toBe(1); // still running
    manual.output("a", 7); // seq 3, held while the link is down
    manual.live.get("a")!.ctx.grantInput(4096); // input window opened while the link is down
    await settle();
    expect(pipeline.resumeRequest()).toEqual({ sessionId: "ses_a", taskIds: ["a"] });
    // The hub had received Started only.
    pipeline.beginSession({
      epoch: 3,
      initialOutputWindowBytes: 0,
      sessionId: "ses_b",
      resumeGraceMs: 30_000,
      resume: { resumed: true, eventsReceived: 1, stopTaskIds: [], reason: "" },
    });
    const fresh = new FakeStream();
    outbox.attach(fresh);
    const seqs = fresh.events().map((e) => e.seq);
    expect(seqs).toEqual([2, 3]);
    // ...and that grant reaches the hub on the resumed session, not lost with the link.
    const windows = fresh.received.flatMap((m) => (m.body?.$case === "inputWindow" ? [m.body.value] : []));
    expect(windows).toEqual([{ taskId: "a", bytes: 4096, received: 0, grantedTotal: 4096 }]);
    manual.finish("a", TaskState.TASK_STATE_SUCCEEDED);
    await settle();
    expect(fresh.finishedOf("a")).toHaveLength(1); // on the resumed session
    expect(stream.finishedOf("a")).toHaveLength(0);
  });

  it("stops a held session's tasks when the hub does not resume it, or when the grace passes", async () => {
    const { pipeline, manual, outbox } = setup({ poolSize: 2, capacity: 100, threshold: 80, window: 0 });
    pipeline.beginSession({ epoch: 2, initialOutputWindowBytes: 0, sessionId: "ses_a", resumeGraceMs: 40 });
    pipeline.handle(2, assign("a"));
    await settle();
    outbox.detach();
    pipeline.endSession(2, "UNAVAILABLE", true);
    pipeline.beginSession({
      epoch: 3,
      initialOutputWindowBytes: 0,
      sessionId: "ses_b",
      resumeGraceMs: 40,
      resume: { resumed: false, eventsReceived: 0, stopTaskIds: ["a"], reason: "grace passed" },
    });
    await settle();
    expect(manual.live.size).toBe(0);
    expect(pipeline.holding()).toBe(0);
    // The agent's own clock: nobody resumes within the grace.
    pipeline.handle(3, assign("b"));
    await settle();
    outbox.detach();
    pipeline.endSession(3, "UNAVAILABLE", true);
    expect(manual.live.size).toBe(1);
    await new Promise((r) => setTimeout(r, 80));
    await settle();
    expect(manual.live.size).toBe(0);
    expect(pipeline.resumeRequest()).toBeUndefined();
  });
});
