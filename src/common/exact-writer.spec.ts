import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { describe, expect, it } from "vitest";
import { AgentMessage, HubMessage } from "../gen/switchboard/v1/agent.js";
import { SessionRequest, SessionResponse, SubmitRequest } from "../gen/switchboard/v1/client.js";
import {
  OutputStream,
  TaskEvent,
  TaskInput,
  TaskResult,
  TaskState,
  type TaskSpec,
} from "../gen/switchboard/v1/task.js";
import { responseSerializer, serializer } from "./codec.js";
import { ExactWriter, type Encodes } from "./exact-writer.js";

/** What the generated encoder and the library's writer make of `message`. */
function reference<T>(type: Encodes<T>, message: T): Buffer {
  return Buffer.from(type.encode(message).finish());
}

function exact<T>(type: Encodes<T>, message: T): Buffer {
  return new ExactWriter().encode(type, message, (n) => Buffer.alloc(n));
}

/** A deterministic pseudo-random source, so that a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STRINGS = [
  "",
  "a",
  "task-0001",
  "ünïcödé ✓",
  "emoji 🎉 pair",
  "lone \ud800 surrogate",
  "x".repeat(200),
];

type Op = (w: BinaryWriter | ExactWriter) => void;

/** A random sequence of writer calls with nested messages (values drawn now): the same calls on both writers. */
function program(next: () => number, depth = 0): Op[] {
  const ops: Op[] = [];
  const count = 1 + Math.floor(next() * 8);
  for (let i = 0; i < count; i++) {
    const r = next();
    const coin = next() < 0.5;
    // Magnitudes spread evenly over the bits, so that every varint length comes up.
    const big = Math.floor(2 ** (next() * 53));
    const small = Math.floor(next() * 300);
    const neg = -Math.floor(2 ** (next() * 31));
    if (r < 0.12) {
      const v = coin ? small : Math.floor(2 ** (next() * 32)) >>> 0;
      ops.push((w) => w.uint32(v));
    } else if (r < 0.22) {
      const v = coin ? neg : small;
      ops.push((w) => w.int32(v));
    } else if (r < 0.32) {
      const v = coin ? String(big) : big;
      ops.push((w) => w.uint64(v));
    } else if (r < 0.42) {
      const v = coin ? -big : BigInt(big) * 3n;
      ops.push((w) => w.int64(v));
    } else if (r < 0.48) {
      ops.push((w) => w.bool(coin));
    } else if (r < 0.54) {
      const v = next() * 1e9 - 5e8;
      ops.push((w) => w.double(v));
    } else if (r < 0.66) {
      const v = STRINGS[Math.floor(next() * STRINGS.length)]!;
      ops.push((w) => w.string(v));
    } else if (r < 0.78) {
      const b = Buffer.alloc(next() < 0.2 ? 70_000 + small : small, small & 0xff);
      ops.push((w) => w.bytes(b));
    } else if (depth < 4) {
      const inner = program(next, depth + 1);
      ops.push((w) => {
        w.uint32(10).fork();
        for (const op of inner) op(w);
        w.join();
      });
    }
  }
  return ops;
}

const run = (ops: Op[]): Encodes<null> => ({
  encode(_m: null, writer?: BinaryWriter): BinaryWriter {
    const w = writer ?? new BinaryWriter();
    for (const op of ops) op(w);
    return w;
  },
});

const output = (data: Buffer): TaskEvent =>
  TaskEvent.fromPartial({
    taskId: "t-1",
    seq: 2 ** 40 + 7,
    event: { $case: "output", value: { stream: OutputStream.OUTPUT_STREAM_STDERR, data } },
  });

const shellSpec: TaskSpec = {
  kind: {
    $case: "shell",
    value: {
      command: "sh",
      args: ["-c", "echo ✓"],
      env: { A: "1", "B-ü": "two" },
      cwd: "/tmp",
      shell: false,
      user: "",
      group: "",
      limits: undefined,
      pty: false,
      terminalSize: undefined,
      secretEnv: {},
    },
  },
} as unknown as TaskSpec;

describe("ExactWriter", () => {
  it("writes what the library's writer writes, for random sequences of calls with nesting", () => {
    for (let seed = 1; seed <= 400; seed++) {
      const ops = program(rng(seed));
      const want = reference(run(ops), null);
      const got = exact(run(ops), null);
      expect(got.equals(want), `seed ${seed}`).toBe(true);
    }
  });

  it("encodes the protocol's messages byte for byte as the generated encoders do", () => {
    const big = Buffer.alloc(1024 * 1024 + 3, 7);
    const cases: [Encodes<never>, unknown][] = [
      [TaskEvent, output(big)],
      [TaskEvent, TaskEvent.fromPartial({ taskId: "t", seq: 1, gapBytes: 99 })],
      [
        TaskEvent,
        TaskEvent.fromPartial({
          taskId: "t",
          event: {
            $case: "finished",
            value: { state: TaskState.TASK_STATE_FAILED, exitCode: -1, signal: "SIGKILL", reason: "✗" },
          },
        }),
      ],
      [
        SessionResponse,
        SessionResponse.fromPartial({
          body: {
            $case: "batch",
            value: {
              responses: [
                { ref: 3, taskId: "a", body: { $case: "event", value: output(big) } },
                { ref: 2 ** 33, body: { $case: "error", value: { code: 5, message: "no such task" } } },
              ],
            },
          },
        }),
      ],
      [
        AgentMessage,
        AgentMessage.fromPartial({
          body: {
            $case: "hello",
            value: {
              agentId: "agent-✓",
              labels: { zone: "eu", rack: "r1" },
              taskKinds: ["echo", "shell"],
              maxConcurrency: 64,
              acceptsBatches: true,
            },
          },
        }),
      ],
      [
        AgentMessage,
        AgentMessage.fromPartial({
          body: {
            $case: "batch",
            value: {
              messages: [
                { body: { $case: "event", value: { epoch: 3, event: output(Buffer.from("hi\n")) } } },
                {
                  body: {
                    $case: "inputWindow",
                    value: { taskId: "t", bytes: 1 << 20, grantedTotal: 2 ** 45 },
                  },
                },
              ],
            },
          },
        } as never),
      ],
      [
        HubMessage,
        HubMessage.fromPartial({
          body: {
            $case: "input",
            value: { taskId: "t", data: big, offset: 2 ** 34 + 1, eof: true, sha256: "ab" },
          },
        }),
      ],
      [
        HubMessage,
        HubMessage.fromPartial({
          body: {
            $case: "assign",
            value: { taskId: "t", spec: shellSpec, deadlineMs: Date.now() + 1000, requester: "admin" },
          },
        }),
      ],
      [HubMessage, HubMessage.fromPartial({ body: { $case: "welcome", value: { hubTimeMs: -5 } } } as never)],
      [TaskInput, TaskInput.fromPartial({ taskId: "t", data: big, resize: { cols: 80, rows: 24 } })],
      [
        TaskResult,
        TaskResult.fromPartial({
          info: {
            taskId: "t",
            state: TaskState.TASK_STATE_SUCCEEDED,
            createdAtMs: Date.now(),
            labels: { a: "b" },
          },
          stdout: big,
          stderr: Buffer.from("warn"),
          outputTruncated: true,
        } as never),
      ],
      [SubmitRequest, SubmitRequest.fromPartial({ spec: shellSpec, target: { pool: "p" }, timeoutMs: 5000 })],
      [
        SessionRequest,
        SessionRequest.fromPartial({ ref: 1, body: { $case: "cancel", value: { taskId: "t" } } }),
      ],
    ];
    for (const [type, message] of cases) {
      const want = reference(type, message as never);
      const got = exact(type, message as never);
      expect(got.equals(want)).toBe(true);
      // And what it wrote decodes to a message that encodes the same again.
      const decoded = (type as unknown as { decode(b: Uint8Array): never }).decode(got);
      expect(reference(type, decoded).equals(want)).toBe(true);
    }
  });

  it("a response serializer reuses one buffer; a request serializer gives each message its own", () => {
    const resp = responseSerializer(TaskEvent);
    const a = resp(output(Buffer.alloc(1000, 1)));
    const aBytes = Buffer.from(a);
    const b = resp(output(Buffer.alloc(1000, 2)));
    expect(b.buffer).toBe(a.buffer); // the same memory, overwritten
    expect(b.equals(reference(TaskEvent, output(Buffer.alloc(1000, 2))))).toBe(true);
    expect(aBytes.equals(reference(TaskEvent, output(Buffer.alloc(1000, 1))))).toBe(true);

    const req = serializer(TaskEvent);
    const c = req(output(Buffer.alloc(1000, 3)));
    const d = req(output(Buffer.alloc(1000, 4)));
    expect(c.equals(reference(TaskEvent, output(Buffer.alloc(1000, 3))))).toBe(true);
    expect(d.equals(reference(TaskEvent, output(Buffer.alloc(1000, 4))))).toBe(true);
  });
});
