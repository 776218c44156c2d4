// The SDK against a stand-in hub: a real grpc-js server on loopback whose ClientService answers
// by script, so that the client's own behaviour (pipelining, failure of a broken session,
// abort, re-attach) can be driven exactly.
import {
  Server,
  ServerCredentials,
  status,
  type ServerDuplexStream,
  type ServerWritableStream,
  type ServiceError,
} from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  ClientServiceService,
  type ClientServiceServer,
  type SessionRequest,
  type SessionResponse,
  type WatchRequest,
} from "../gen/switchboard/v1/client.js";
import { TaskState, type TaskEvent, type TaskResult } from "../gen/switchboard/v1/task.js";
import { echo, shell, SwitchboardClient, SwitchboardError } from "./index.js";

function fail(code: status, details: string): ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: undefined as never });
}

function result(taskId: string, payload: Buffer): TaskResult {
  return {
    info: undefined,
    stdout: Buffer.alloc(0),
    stderr: Buffer.alloc(0),
    result: Buffer.concat([Buffer.from(`${taskId}:`), payload]),
    outputTruncated: false,
  };
}

const state = {
  sessions: 0,
  cancels: [] as string[],
  watchCalls: [] as WatchRequest[],
  acceptDelayMs: 0,
  batches: 0,
};

function onSession(call: ServerDuplexStream<SessionRequest, SessionResponse>): void {
  state.sessions++;
  let n = 0;
  const onRequest = (req: SessionRequest): void => {
    const body = req.body;
    if (body?.$case === "cancel") {
      state.cancels.push(body.value.taskId);
      call.write({
        ref: req.ref,
        taskId: body.value.taskId,
        body: { $case: "cancelled", value: { state: TaskState.TASK_STATE_CANCELLED } },
      });
      return;
    }
    if (body?.$case !== "submit") return;
    const spec = body.value.request?.spec?.kind;
    const payload = spec?.$case === "echo" ? spec.value.payload : Buffer.alloc(0);
    const text = payload.toString();
    if (text === "break") {
      call.emit("error", fail(status.UNAVAILABLE, "the stand-in hub went away"));
      return;
    }
    if (text === "refuse") {
      call.write({
        ref: req.ref,
        taskId: "",
        body: {
          $case: "error",
          value: { code: status.RESOURCE_EXHAUSTED, message: "queue for pool p is full" },
        },
      });
      return;
    }
    const taskId = `t${++n}`;
    const accept = (): void => {
      call.write({ ref: req.ref, taskId, body: { $case: "accepted", value: { taskId } } });
      if (text === "hang") return;
      // Answer out of order: later submissions may finish first.
      setTimeout(
        () => call.write({ ref: req.ref, taskId, body: { $case: "result", value: result(taskId, payload) } }),
        Math.random() * 5,
      );
    };
    if (state.acceptDelayMs) setTimeout(accept, state.acceptDelayMs);
    else accept();
  };
  call.on("data", (req: SessionRequest) => {
    if (req.body?.$case === "batch") {
      state.batches++;
      req.body.value.requests.forEach(onRequest);
    } else {
      onRequest(req);
    }
  });
  call.on("end", () => call.end());
}

function event(seq: number, e: TaskEvent["event"]): TaskEvent {
  return { taskId: "w1", seq, event: e, gapBytes: 0 };
}

function onWatch(call: ServerWritableStream<WatchRequest, TaskEvent>): void {
  state.watchCalls.push(call.request);
  const all = [
    event(1, { $case: "queued", value: { queuedAtMs: 1 } }),
    event(2, { $case: "output", value: { stream: 1, data: Buffer.from("a") } }),
    event(3, { $case: "output", value: { stream: 1, data: Buffer.from("b") } }),
    event(4, {
      $case: "finished",
      value: {
        state: TaskState.TASK_STATE_SUCCEEDED,
        exitCode: 0,
        signal: "",
        error: undefined,
        durationMs: 1,
        result: Buffer.alloc(0),
        reason: "",
      },
    }),
  ];
  const from = all.filter((e) => e.seq > call.request.afterSeq);
  if (state.watchCalls.length === 1) {
    // The first attach breaks after two events, the way a hub restart would.
    call.write(from[0]!);
    call.write(from[1]!);
    setTimeout(() => call.emit("error", fail(status.UNAVAILABLE, "connection reset")), 10);
    return;
  }
  // Re-sends one event the client has already seen: it must be dropped, not repeated.
  call.write(all[1]!);
  for (const e of from) call.write(e);
  call.end();
}

let server: Server;
let address: string;
const clients: SwitchboardClient[] = [];

function newClient(): SwitchboardClient {
  const c = new SwitchboardClient({ hub: address, token: "t" });
  clients.push(c);
  return c;
}

beforeAll(async () => {
  server = new Server();
  const impl: Partial<ClientServiceServer> = { session: onSession, watch: onWatch };
  server.addService(ClientServiceService, impl as ClientServiceServer);
  const port = await new Promise<number>((res, rej) =>
    server.bindAsync("127.0.0.1:0", ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
  );
  address = `127.0.0.1:${port}`;
});

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  state.sessions = 0;
  state.cancels = [];
  state.watchCalls = [];
  state.acceptDelayMs = 0;
  state.batches = 0;
});

afterAll(() => server.forceShutdown());

describe("SwitchboardClient", () => {
  it("pipelines many tasks over one session and matches each answer to its call", async () => {
    const c = newClient();
    const payloads = Array.from({ length: 200 }, (_, i) => `p${i}`);
    const results = await Promise.all(payloads.map((p) => c.execute({ ...echo(p), target: { pool: "p" } })));
    results.forEach((r, i) => expect(r.result.toString()).toMatch(new RegExp(`^t\\d+:p${i}$`)));
    expect(state.sessions).toBe(1);
    // Submissions made in one turn travel together.
    expect(state.batches).toBeGreaterThan(0);
    const ids = await Promise.all([1, 2, 3].map(() => c.submit({ ...echo("x"), target: { pool: "p" } })));
    expect(new Set(ids).size).toBe(3);
    expect(state.sessions).toBe(1);
  });

  it("rejects one refused call with its status and keeps the session for the others", async () => {
    const c = newClient();
    const [bad, good] = await Promise.allSettled([
      c.execute({ ...echo("refuse"), target: { pool: "p" } }),
      c.execute({ ...echo("fine"), target: { pool: "p" } }),
    ]);
    expect(bad.status).toBe("rejected");
    const err = (bad as PromiseRejectedResult).reason as SwitchboardError;
    expect(err).toBeInstanceOf(SwitchboardError);
    expect(err.codeName).toBe("RESOURCE_EXHAUSTED");
    expect(err.message).toMatch(/full/);
    expect(good.status).toBe("fulfilled");
    expect(state.sessions).toBe(1);
  });

  it("fails every call on a broken session, then opens a new one", async () => {
    const c = newClient();
    const hanging = c.execute({ ...echo("hang"), target: { pool: "p" } });
    await new Promise((r) => setTimeout(r, 20));
    const breaking = c.execute({ ...echo("break"), target: { pool: "p" } });
    await expect(hanging).rejects.toMatchObject({ codeName: "UNAVAILABLE" });
    await expect(breaking).rejects.toMatchObject({ codeName: "UNAVAILABLE" });
    const r = await c.execute({ ...echo("again"), target: { pool: "p" } });
    expect(r.result.toString()).toMatch(/:again$/);
    expect(state.sessions).toBe(2);
  });

  it("cancels on the hub when the caller aborts, even before the task was accepted", async () => {
    const c = newClient();
    state.acceptDelayMs = 50;
    const ac = new AbortController();
    const p = c.execute({ ...echo("hang"), target: { pool: "p" }, signal: ac.signal });
    ac.abort();
    await expect(p).rejects.toMatchObject({ codeName: "CANCELLED" });
    await expect.poll(() => state.cancels, { timeout: 2000 }).toEqual(["t1"]);
    // An aborted signal refuses at once, without a round trip.
    await expect(c.submit({ ...echo("x"), target: { pool: "p" }, signal: ac.signal })).rejects.toMatchObject({
      codeName: "CANCELLED",
    });
  });

  it("re-attaches a watch after the stream breaks, with no gap and no duplicate", async () => {
    const c = newClient();
    const seen: number[] = [];
    for await (const ev of c.watch("w1")) seen.push(ev.seq);
    expect(seen).toEqual([1, 2, 3, 4]);
    expect(state.watchCalls.map((w) => w.afterSeq)).toEqual([0, 2]);
  });

  it("says which hub it cannot reach", async () => {
    const c = new SwitchboardClient({ hub: "127.0.0.1:1", token: "t" });
    clients.push(c);
    await expect(c.getTask("x")).rejects.toThrow(/cannot reach hub at 127\.0\.0\.1:1/);
  });

  it("refuses a shell spec with both or neither of argv and script", () => {
    expect(() => shell({})).toThrow(/exactly one/);
    expect(() => shell({ argv: ["ls"], script: "ls" })).toThrow(/exactly one/);
    expect(shell({ argv: ["ls"] }).spec.kind?.$case).toBe("shell");
  });
});
