// Fuzzes a real hub process on both of its gRPC faces. Agent side: raw bytes, well-formed
// AgentMessages with wrong, missing, huge or out-of-range fields, events for tasks the sender
// does not hold, duplicates and out-of-order sequence numbers, floods of heartbeats, nested
// batches. Client side: raw bytes and odd requests to every method, and odd session requests.
// Every call must end with a status within a deadline (no hang), the hub must stay up, and a
// control agent and client must keep working throughout.
import { credentials, makeGenericClientConstructor, Metadata, type ServiceError } from "@grpc/grpc-js";
import fc from "fast-check";
import { SwitchboardClient, echo } from "../../src/client/index.js";
import { AgentMessage } from "../../src/gen/switchboard/v1/agent.js";
import { SessionRequest, SubmitRequest } from "../../src/gen/switchboard/v1/client.js";
import { agentToken, pidAlive, startAgent, startHub, type HubProc } from "../support/processes.js";

const raw = (b: Buffer): Buffer => b;
const method = (path: string, requestStream: boolean, responseStream: boolean) => ({
  path,
  requestStream,
  responseStream,
  requestSerialize: raw,
  requestDeserialize: raw,
  responseSerialize: raw,
  responseDeserialize: raw,
});
const CLIENT_UNARY = ["Execute", "Submit", "Cancel", "GetTask", "ListTasks"].map(
  (m) => `/switchboard.v1.ClientService/${m}`,
);
const ADMIN_UNARY = [
  "ListAgents",
  "GetAgent",
  "ClusterStatus",
  "CreateToken",
  "ListTokens",
  "RevokeToken",
  "SetAgentConcurrency",
].map((m) => `/switchboard.v1.AdminService/${m}`);
const RawClient = makeGenericClientConstructor(
  {
    connect: method("/switchboard.v1.AgentService/Connect", true, true),
    session: method("/switchboard.v1.ClientService/Session", true, true),
    run: method("/switchboard.v1.ClientService/Run", false, true),
    watch: method("/switchboard.v1.ClientService/Watch", false, true),
    ...Object.fromEntries([...CLIENT_UNARY, ...ADMIN_UNARY].map((p) => [p, method(p, false, false)])),
  },
  "Fuzz",
);

interface RawStream {
  write(b: Buffer): boolean;
  end(): void;
  cancel(): void;
  on(e: "error", l: (err: ServiceError) => void): unknown;
  on(e: "data", l: (b: Buffer) => void): unknown;
  on(e: "status" | "end" | "close", l: () => void): unknown;
}
type Unary = (
  req: Buffer,
  md: Metadata,
  opts: { deadline: number },
  cb: (err: ServiceError | null) => void,
) => unknown;
type RawClientT = Record<string, Unary> & {
  connect(md: Metadata): RawStream;
  session(md: Metadata): RawStream;
  run(req: Buffer, md: Metadata): RawStream;
  watch(req: Buffer, md: Metadata): RawStream;
  close(): void;
};

// ---- generators

const weirdString = fc.oneof(
  { weight: 5, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 1, arbitrary: fc.constant("") },
  { weight: 1, arbitrary: fc.string({ minLength: 2000, maxLength: 70_000 }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom("fuzz-1", "control-1", "../../etc/passwd", "\u0000", "x".repeat(200)),
  },
);
const weirdInt = fc.oneof(fc.nat({ max: 10 }), fc.integer(), fc.constant(2 ** 31 - 1), fc.constant(-1));
const weirdUint = fc.oneof(fc.nat({ max: 10 }), fc.nat(), fc.constant(4294967295));
const weirdLong = fc.oneof(fc.nat({ max: 20 }), fc.maxSafeNat(), fc.constant(0));
const bytes = fc.oneof(
  { weight: 5, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  { weight: 1, arbitrary: fc.uint8Array({ minLength: 100_000, maxLength: 300_000 }) },
);

function agentMessage(taskIds: () => string[]): fc.Arbitrary<AgentMessage> {
  const taskId = fc.oneof(
    weirdString,
    fc.constant(null).map(() => taskIds()[0] ?? "none"),
  );
  const hello = fc.record({
    agentId: weirdString,
    pool: weirdString,
    labels: fc.dictionary(weirdString, weirdString, { maxKeys: 3 }),
    hostname: weirdString,
    platform: weirdString,
    version: weirdString,
    taskKinds: fc.array(weirdString, { maxLength: 3 }),
    maxConcurrency: weirdUint,
    instanceId: weirdString,
    acceptsBatches: fc.boolean(),
    resume: fc.option(fc.record({ sessionId: weirdString, taskIds: fc.array(taskId, { maxLength: 5 }) }), {
      nil: undefined,
    }),
  });
  const event = fc.record({
    taskId,
    seq: weirdLong,
    event: fc.oneof(
      fc
        .record({ startedAtMs: weirdLong, pid: weirdUint })
        .map((value) => ({ $case: "started" as const, value })),
      fc
        .record({ stream: weirdInt, data: bytes.map((b) => Buffer.from(b)) })
        .map((value) => ({ $case: "output" as const, value })),
      fc
        .record({
          state: weirdInt,
          exitCode: weirdInt,
          signal: weirdString,
          durationMs: weirdLong,
          result: bytes.map((b) => Buffer.from(b)),
          reason: weirdString,
        })
        .map((value) => ({ $case: "finished" as const, value: { ...value, error: undefined } })),
      fc.constant(undefined),
    ),
  });
  const single = fc.oneof(
    hello.map((value) => ({ body: { $case: "hello" as const, value } })),
    fc.record({ grantedTotal: weirdLong }).map((value) => ({ body: { $case: "credits" as const, value } })),
    fc
      .record({
        sentAtMs: weirdLong,
        running: weirdUint,
        inboxDepth: weirdUint,
        outboxDepth: weirdUint,
        degraded: fc.boolean(),
        degradedReason: weirdString,
      })
      .map((value) => ({ body: { $case: "heartbeat" as const, value } })),
    event.map((value) => ({ body: { $case: "event" as const, value } })),
    fc.record({ reason: weirdString }).map((value) => ({ body: { $case: "goodbye" as const, value } })),
    fc.record({ id: weirdLong }).map((value) => ({ body: { $case: "probeReply" as const, value } })),
    fc.constant({ body: undefined }),
  );
  return fc.oneof(
    { weight: 6, arbitrary: single.map((m) => AgentMessage.fromPartial(m as AgentMessage)) },
    {
      weight: 1,
      arbitrary: fc.array(single, { maxLength: 5 }).map((messages) =>
        AgentMessage.fromPartial({
          body: { $case: "batch", value: { messages: messages as AgentMessage[] } },
        }),
      ),
    },
  );
}

const submitRequest: fc.Arbitrary<SubmitRequest> = fc
  .record({
    target: fc.record({
      agentId: weirdString,
      pool: fc.oneof(weirdString, fc.constant("control")),
      labels: fc.dictionary(weirdString, weirdString, { maxKeys: 2 }),
    }),
    spec: fc.oneof(
      bytes.map((payload) => ({
        kind: { $case: "echo" as const, value: { payload: Buffer.from(payload) } },
      })),
      fc
        .record({
          argv: fc.array(weirdString, { maxLength: 3 }),
          script: weirdString,
          cwd: weirdString,
          timeoutMs: weirdUint,
        })
        .map((v) => ({
          kind: { $case: "shell" as const, value: { ...v, env: {}, stdin: Buffer.alloc(0), killGraceMs: 0 } },
        })),
      fc.constant({ kind: undefined }),
    ),
    timeoutMs: fc.oneof(fc.constant(2000), weirdUint),
    waitForAgent: fc.constant(false),
  })
  .map((r) => SubmitRequest.fromPartial(r as SubmitRequest));

const garbage = fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b));

// ---- the run

export interface FuzzReport {
  inputs: number;
  calls: number;
  statuses: Record<string, number>;
  /** One example of the details that came with each status, for reading. */
  examples: Record<string, string>;
  controlChecks: number;
  elapsedMs: number;
}

export interface FuzzOptions {
  inputs: number;
  seed?: number;
  /** A call that gets no status within this is a hang. */
  callDeadlineMs?: number;
  log?: (line: string) => void;
}

export async function fuzzHub(opts: FuzzOptions): Promise<FuzzReport> {
  const seed = opts.seed ?? Date.now() % 2 ** 31;
  const deadlineMs = opts.callDeadlineMs ?? 10_000;
  const log = opts.log ?? (() => undefined);
  log(`fuzz seed ${seed}`);
  const hub: HubProc = await startHub({ args: ["--heartbeat-interval", "1s", "--offline-after", "5s"] });
  // No shell on the control agent: the fuzzer must never run what it generates.
  await startAgent(hub, { agentId: "control-1", pool: "control", shell: false });
  const fuzzToken = await agentToken(hub, "fuzz");
  const control = new SwitchboardClient({ hub: hub.address, token: hub.adminToken });
  const c = new RawClient(hub.address, credentials.createInsecure(), {
    "grpc.max_send_message_length": 32 * 1024 * 1024,
  }) as unknown as RawClientT;
  const md = (token: string) => {
    const m = new Metadata();
    m.set("authorization", `Bearer ${token}`);
    return m;
  };
  const report: FuzzReport = {
    inputs: 0,
    calls: 0,
    statuses: {},
    examples: {},
    controlChecks: 0,
    elapsedMs: 0,
  };
  const started = Date.now();
  const knownTasks: string[] = [];
  const count = (code: number | string, details = "") => {
    const k = String(code);
    report.statuses[k] = (report.statuses[k] ?? 0) + 1;
    if (details && !(k in report.examples)) report.examples[k] = details.slice(0, 200);
  };
  const rng = fc.sample(fc.integer(), { seed, numRuns: 1 })[0]!;
  let sampleSeed = rng;
  const sample = <T>(arb: fc.Arbitrary<T>, n: number): T[] =>
    fc.sample(arb, { seed: sampleSeed++, numRuns: n });

  const withDeadline = <T>(what: string, p: Promise<T>): Promise<T> =>
    new Promise<T>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new Error(`hang: ${what} got no status within ${deadlineMs} ms`)),
        deadlineMs,
      );
      p.then(
        (v) => {
          clearTimeout(t);
          resolve(v);
        },
        (e: unknown) => {
          clearTimeout(t);
          reject(e instanceof Error ? e : new Error(String(e)));
        },
      );
    });

  const streamRound = (open: () => RawStream, frames: Buffer[], what: string): Promise<void> =>
    withDeadline(
      what,
      new Promise<void>((resolve) => {
        const s = open();
        let done = false;
        const finish = (code: number | string, details = "") => {
          if (done) return;
          done = true;
          count(code, details);
          resolve();
        };
        s.on("data", () => undefined);
        s.on("error", (e: ServiceError) => finish(e.code, e.details));
        s.on("status", () => finish(0));
        for (const f of frames) s.write(f);
        s.end();
        // A stream the hub keeps open after we end ours (a live agent session) is cancelled by us.
        setTimeout(() => {
          if (!done) {
            s.cancel();
            finish("open");
          }
        }, 1500);
      }),
    );

  const unary = (path: string, req: Buffer, token: string): Promise<void> =>
    withDeadline(
      path,
      new Promise<void>((resolve) => {
        c[path]!(req, md(token), { deadline: Date.now() + deadlineMs }, (err) => {
          count(err ? err.code : 0, err?.details ?? "");
          resolve();
        });
      }),
    );

  try {
    while (report.inputs < opts.inputs) {
      // Agent side: a stream of up to 40 frames, most of them after a plausible Hello.
      const frames: Buffer[] = [];
      const hello = AgentMessage.fromPartial({
        body: {
          $case: "hello",
          value: {
            agentId: `fuzz-${report.calls % 3}`,
            pool: "fuzz",
            maxConcurrency: 4,
            taskKinds: ["echo"],
            acceptsBatches: true,
            instanceId: String(report.calls),
            // Now and then a resume of a session this hub never had, naming tasks of others.
            resume:
              report.calls % 7 === 0
                ? { sessionId: `ses_${report.calls}`, taskIds: knownTasks.slice(0, 3) }
                : undefined,
          },
        },
      });
      if (report.calls % 5 !== 0) frames.push(Buffer.from(AgentMessage.encode(hello).finish()));
      for (const m of sample(
        agentMessage(() => knownTasks),
        30,
      ))
        frames.push(Buffer.from(AgentMessage.encode(m).finish()));
      if (report.calls % 7 === 0) {
        const beat = Buffer.from(
          AgentMessage.encode(
            AgentMessage.fromPartial({ body: { $case: "heartbeat", value: { sentAtMs: 1 } } }),
          ).finish(),
        );
        for (let i = 0; i < 500; i++) frames.push(beat);
      }
      await streamRound(() => c.connect(md(fuzzToken)), frames, "AgentService/Connect");
      report.inputs += frames.length;
      report.calls++;
      // Bytes that are no message at all, on a stream of their own (the first one ends it).
      const junk = sample(garbage, 3);
      if (report.calls % 2 === 0) junk.unshift(Buffer.from(AgentMessage.encode(hello).finish()));
      await streamRound(() => c.connect(md(fuzzToken)), junk, "AgentService/Connect (garbage)");
      report.inputs += junk.length;
      report.calls++;

      // Client side: odd requests to every unary method, raw garbage too, and a session.
      const reqs = sample(submitRequest, 6).map((r) => Buffer.from(SubmitRequest.encode(r).finish()));
      const calls: Promise<void>[] = [];
      for (const path of [...CLIENT_UNARY, ...ADMIN_UNARY]) {
        const body = sample(fc.oneof(garbage, fc.constantFrom(...reqs)), 1)[0]!;
        calls.push(unary(path, body, report.calls % 4 === 0 ? fuzzToken : hub.adminToken));
      }
      await Promise.all(calls);
      report.inputs += calls.length;
      report.calls += calls.length;
      const sessionFrames = sample(
        fc.oneof(
          garbage,
          submitRequest.map((request) =>
            Buffer.from(
              SessionRequest.encode({
                ref: 1,
                body: { $case: "submit", value: { request, mode: 3 } },
              }).finish(),
            ),
          ),
          weirdString.map((taskId) =>
            Buffer.from(
              SessionRequest.encode({
                ref: 2,
                body: { $case: "cancel", value: { taskId, reason: "" } },
              }).finish(),
            ),
          ),
        ),
        8,
      );
      await streamRound(() => c.session(md(hub.adminToken)), sessionFrames, "ClientService/Session");
      report.inputs += sessionFrames.length;
      report.calls++;

      if (!pidAlive(hub.child.pid!)) throw new Error(`the hub died: ${hub.stderr().slice(-2000)}`);
      if (report.calls % 20 < 8) {
        const r = await withDeadline(
          "control echo",
          control.execute({ ...echo("alive"), target: { pool: "control" }, timeoutMs: 5000 }),
        );
        if (r.result.toString() !== "alive") throw new Error("the control echo came back wrong");
        report.controlChecks++;
        const recent = await control.listTasks({ limit: 5 });
        for (const t of recent) if (!knownTasks.includes(t.taskId)) knownTasks.unshift(t.taskId);
        knownTasks.length = Math.min(knownTasks.length, 20);
      }
      if (report.calls % 200 < 8)
        log(`${report.inputs} inputs, ${report.calls} calls, statuses ${JSON.stringify(report.statuses)}`);
    }
  } finally {
    c.close();
    control.close();
  }
  report.elapsedMs = Date.now() - started;
  return report;
}
