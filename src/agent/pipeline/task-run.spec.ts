// A run's input as the hub numbers it (TaskInput.offset): what the hub sends again after a broken link is
// skipped where the run has it, a message that overlaps is cut to its new part, and nothing follows eof.
import { describe, expect, it } from "vitest";
import { silentLogger } from "../../common/logger.js";
import type { Finished } from "../../gen/switchboard/v1/task.js";
import type { Execution, ExecutionContext, Executor, InputChunk } from "../executors/executor.js";
import { TaskRun } from "./task-run.js";

/** Takes input and records it; ends when the test says. */
class InputSink implements Executor {
  readonly kind = "echo" as const;
  readonly chunks: InputChunk[] = [];
  ctx: ExecutionContext | undefined;

  admit(): undefined {
    return undefined;
  }

  start(_spec: unknown, ctx: ExecutionContext): Execution {
    this.ctx = ctx;
    return {
      done: new Promise<Finished>(() => undefined),
      stop: () => undefined,
      input: (c) => this.chunks.push(c),
    };
  }
}

function run(): { r: TaskRun; sink: InputSink; grants: { bytes: number; received: number }[] } {
  const sink = new InputSink();
  const grants: { bytes: number; received: number }[] = [];
  const r = new TaskRun({
    assign: {
      taskId: "t1",
      spec: { kind: { $case: "echo", value: { payload: Buffer.alloc(0) } } },
      deadlineMs: 0,
      requester: "",
    },
    epoch: 1,
    executor: sink,
    outputWindowBytes: Infinity,
    room: { hasRoom: () => true, onceRoom: (cb) => cb() },
    owner: {
      emit: () => undefined,
      ended: () => undefined,
      grantInput: (run, bytes) => grants.push({ bytes, received: run.inputReceived }),
    },
    logger: silentLogger(),
  });
  r.start();
  return { r, sink, grants };
}

const data = (s: string): Buffer => Buffer.from(s);
const text = (chunks: InputChunk[]): string => Buffer.concat(chunks.map((c) => c.data)).toString();

describe("TaskRun input offsets", () => {
  it("skips input it has, cuts an overlapping message, and takes nothing after eof", () => {
    const { r, sink, grants } = run();
    r.input({ data: data("abc"), eof: false }, 0);
    r.input({ data: data("def"), eof: false }, 3);
    // The link broke; the hub sends again from offset 3, and then more.
    r.input({ data: data("def"), eof: false }, 3);
    r.input({ data: data("efgh"), eof: false }, 4);
    r.input({ data: data(""), eof: false, resize: { cols: 80, rows: 24 } }, 2); // a resize it had
    r.input({ data: data("ij"), eof: true }, 8);
    r.input({ data: data("ij"), eof: true }, 8); // eof again
    r.input({ data: data("zz"), eof: false }, 10);
    expect(text(sink.chunks)).toBe("abcdefghij");
    expect(sink.chunks.filter((c) => c.eof)).toHaveLength(1);
    expect(sink.chunks.some((c) => c.resize)).toBe(false);
    expect(r.inputReceived).toBe(10);
    sink.ctx!.grantInput(10);
    expect(grants).toEqual([{ bytes: 10, received: 10 }]);
  });

  it("takes every message as it comes when the hub does not number them", () => {
    const { r, sink } = run();
    r.input({ data: data("ab"), eof: false });
    r.input({ data: data("ab"), eof: false });
    r.input({ data: data(""), eof: true });
    expect(text(sink.chunks)).toBe("abab");
    expect(r.state).toBe("running");
  });
});
